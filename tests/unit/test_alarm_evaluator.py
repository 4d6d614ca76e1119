"""devtools.alarm_evaluator against the semantics documented in the Amazon CloudWatch User Guide."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.alarm_evaluator import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    AlarmTimeline,
    Evaluation,
    MetricKey,
    MetricStore,
    evaluate_alarm,
    evaluate_composite,
)
from devtools.template import resolve

NAMESPACE = "Billwatch"
FAILED = MetricKey.of(NAMESPACE, "WebhookFailed", service="billwatch")
NOW = 1_700_000_100.0  # periods end here; nothing needs to be aligned to the minute
PERIOD = 300
TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")


def alarm_on(key: MetricKey = FAILED, **overrides: Any) -> dict[str, Any]:
    """Properties of a Sum > 0 alarm, 3 out of 3 five-minute periods; an override of None drops a key."""
    properties: dict[str, Any] = {
        "Namespace": key.namespace,
        "MetricName": key.name,
        "Dimensions": [{"Name": name, "Value": value} for name, value in sorted(key.dimensions)],
        "Statistic": "Sum",
        "Period": PERIOD,
        "EvaluationPeriods": 3,
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    for name, value in overrides.items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value
    return properties


def store_with(pattern: str, key: MetricKey = FAILED, at: float = NOW, period: int = PERIOD) -> MetricStore:
    """The user guide's notation, oldest period first, up to `at`: X breaches (5), 0 does not, - missing."""
    store = MetricStore()
    symbols = pattern.split()
    for age, symbol in zip(range(len(symbols), 0, -1), symbols, strict=True):
        if symbol != "-":
            store.put(key, at - age * period + 1, 5.0 if symbol == "X" else 0.0)
    return store


# ------------------------------------------------------------------ missing data, the doc tables

RETAIN = "Retain current state"

# Amazon CloudWatch User Guide, "Configuring how CloudWatch alarms treat missing data" (a section of
# "Using Amazon CloudWatch alarms" in earlier editions), "How alarm state is evaluated when data is
# missing": both example tables. EvaluationPeriods 3, evaluation range 5; DatapointsToAlarm 3 in the
# first table, 2 in the second (Period 5 minutes). Columns: data points (oldest first), DatapointsToAlarm,
# then the state for MISSING, IGNORE, BREACHING, NOT BREACHING.
MISSING_DATA_TABLE = [
    ("0 - X - X", 3, OK, OK, OK, OK),
    ("0 - - - -", 3, OK, OK, OK, OK),
    ("- - - - -", 3, INSUFFICIENT_DATA, RETAIN, ALARM, OK),
    ("0 X X - X", 3, ALARM, ALARM, ALARM, ALARM),
    ("- - X - -", 3, ALARM, RETAIN, ALARM, OK),
    ("0 - X - X", 2, ALARM, ALARM, ALARM, ALARM),
    ("0 0 X 0 X", 2, ALARM, ALARM, ALARM, ALARM),
    ("0 - X - -", 2, OK, OK, ALARM, OK),
    ("- - - - 0", 2, OK, OK, ALARM, OK),
    ("- - - X -", 2, ALARM, RETAIN, ALARM, OK),
]
# Rows of earlier editions of the same tables, since replaced by the "premature alarm state" rows above
# but still consistent with them (the page now only says "- - - - X" does not go to ALARM at once).
EARLIER_MISSING_DATA_ROWS = [
    ("- - - - X", 3, INSUFFICIENT_DATA, RETAIN, ALARM, OK),
    ("X - - - -", 3, ALARM, RETAIN, ALARM, OK),
    ("- - - - X", 2, INSUFFICIENT_DATA, RETAIN, ALARM, OK),
]


def table_cases(rows: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    for pattern, to_alarm, *states in rows:
        for treatment, state in zip(TREATMENTS, states, strict=True):
            name = pattern.replace("-", "_").replace(" ", "")
            yield pytest.param(pattern, to_alarm, treatment, state, id=f"{name}-{to_alarm}of3-{treatment}")


@pytest.mark.parametrize(
    ("pattern", "to_alarm", "treatment", "expected"),
    [*table_cases(MISSING_DATA_TABLE), *table_cases(EARLIER_MISSING_DATA_ROWS)],
)
def test_missing_data_table(pattern: str, to_alarm: int, treatment: str, expected: str) -> None:
    properties = alarm_on(DatapointsToAlarm=to_alarm, TreatMissingData=treatment)
    store = store_with(pattern)
    for previous in (OK, ALARM, INSUFFICIENT_DATA):
        evaluation = evaluate_alarm(properties, store, NOW, previous_state=previous)
        assert evaluation.state == (previous if expected == RETAIN else expected), f"from {previous}"
    # The table's first column is the whole evaluation range: five periods, oldest first.
    assert evaluation.datapoints == [{"-": None, "X": 5.0, "0": 0.0}[symbol] for symbol in pattern.split()]


def test_real_datapoints_from_farther_back_in_the_range_come_before_any_fill() -> None:
    # "... the most recent real data points that were successfully retrieved, including the necessary
    # extra data points from farther back in the evaluation range. In this case, the value you set for
    # how to treat missing data is not needed and is ignored."
    for treatment in TREATMENTS:
        assert (
            evaluate_alarm(alarm_on(TreatMissingData=treatment), store_with("X X X - -"), NOW).state == ALARM
        )
    two_of_three = alarm_on(DatapointsToAlarm=2, TreatMissingData="breaching")
    assert evaluate_alarm(two_of_three, store_with("0 0 0 - -"), NOW).state == OK


def test_only_the_shortfall_is_filled() -> None:
    # "CloudWatch uses missing data points only as few times as possible": 2 real datapoints, so one
    # breaching fill, which with the one real breach is not 3.
    evaluation = evaluate_alarm(alarm_on(TreatMissingData="breaching"), store_with("0 - X - -"), NOW)
    assert evaluation.state == OK
    assert "[0.0, 5.0, missing (breaching)]" in evaluation.reason


def test_breaching_fill_alarms_once_the_last_good_datapoint_leaves_the_range() -> None:
    # Second row of the first table: "The next time this alarm is evaluated, if the data is still missing
    # it will go to ALARM, as that non-breaching data point will no longer be in the evaluation range."
    properties = alarm_on(TreatMissingData="breaching")
    store = store_with("0 - - - -")
    assert evaluate_alarm(properties, store, NOW).state == OK
    assert evaluate_alarm(properties, store, NOW + PERIOD).state == ALARM


def test_the_evaluation_range_is_evaluation_periods_plus_two() -> None:
    store = store_with("X - - - - -")  # the X is one period older than the range
    evaluation = evaluate_alarm(alarm_on(), store, NOW)
    assert (evaluation.state, evaluation.datapoints) == (INSUFFICIENT_DATA, [None] * 5)
    # One period earlier it is the range's oldest datapoint: the premature-alarm rule ("X - - - -").
    assert evaluate_alarm(alarm_on(), store, NOW - PERIOD).state == ALARM


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.lists(st.sampled_from("0X-"), min_size=5, max_size=5).filter(lambda p: p.count("-") <= 2),
    to_alarm=st.integers(min_value=1, max_value=3),
)
def test_treatment_does_not_matter_with_enough_real_datapoints(pattern: list[str], to_alarm: int) -> None:
    store = store_with(" ".join(pattern))
    newest_three = [symbol for symbol in pattern if symbol != "-"][-3:]
    expected = ALARM if newest_three.count("X") >= to_alarm else OK
    states = {
        evaluate_alarm(
            alarm_on(DatapointsToAlarm=to_alarm, TreatMissingData=treatment), store, NOW, previous
        ).state
        for treatment in TREATMENTS
        for previous in (OK, ALARM, INSUFFICIENT_DATA)
    }
    assert states == {expected}


def test_alarms_on_dynamodb_metrics_always_ignore_missing_data() -> None:
    # "Alarms that evaluate metrics in the AWS/DynamoDB namespace always ignore missing data even if
    # you choose a different option for TreatMissingData."
    throttles = MetricKey.of("AWS/DynamoDB", "ThrottledRequests", TableName="billing")
    empty = MetricStore()
    assert evaluate_alarm(alarm_on(throttles, TreatMissingData="breaching"), empty, NOW, OK).state == OK
    assert evaluate_alarm(alarm_on(TreatMissingData="breaching"), empty, NOW, OK).state == ALARM


def test_an_alarm_on_a_metric_that_has_no_data_at_all() -> None:
    empty = MetricStore()
    evaluation = evaluate_alarm(alarm_on(), empty, NOW)
    assert (evaluation.state, evaluation.datapoints) == (INSUFFICIENT_DATA, [None] * 5)
    assert "all 5 datapoints of the evaluation range are missing" in evaluation.reason
    assert evaluate_alarm(alarm_on(TreatMissingData="breaching"), empty, NOW).state == ALARM
    assert evaluate_alarm(alarm_on(TreatMissingData="notBreaching"), empty, NOW).state == OK
    ignored = evaluate_alarm(alarm_on(TreatMissingData="ignore"), empty, NOW, previous_state=ALARM)
    assert ignored.state == ALARM and ignored.reason.startswith("Missing data ignored: keeping ALARM")


def test_dimensions_are_matched_exactly() -> None:
    store = MetricStore()
    store.put(
        MetricKey.of(NAMESPACE, "WebhookFailed", service="billwatch", EventType="invoice.paid"), NOW - 1, 5
    )
    assert evaluate_alarm(alarm_on(EvaluationPeriods=1), store, NOW).state == INSUFFICIENT_DATA
    store.put(FAILED, NOW - 1, 5)
    assert evaluate_alarm(alarm_on(EvaluationPeriods=1), store, NOW).state == ALARM


def test_invalid_alarm_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="TreatMissingData"):
        evaluate_alarm(alarm_on(TreatMissingData="notbreaching"), MetricStore(), NOW)
    with pytest.raises(ValueError, match="previous_state"):
        evaluate_alarm(alarm_on(), MetricStore(), NOW, previous_state="PENDING")
    with pytest.raises(ValueError, match="EvaluationPeriods must be a positive whole number"):
        evaluate_alarm(alarm_on(EvaluationPeriods="2.5"), MetricStore(), NOW)
    with pytest.raises(ValueError, match="Threshold"):
        evaluate_alarm(alarm_on(Threshold=None), MetricStore(), NOW)


# -------------------------------------------------------------------------- statistics, operators


@pytest.mark.parametrize(
    ("statistic", "expected"),
    [("SampleCount", 5), ("Average", 4), ("Sum", 20), ("Minimum", 1), ("Maximum", 10)],
)
def test_statistics_aggregate_the_values_of_each_period(statistic: str, expected: float) -> None:
    store = MetricStore()
    for offset, value in enumerate([4, 1, 10, 3, 2]):
        store.put(FAILED, NOW - PERIOD + offset, value)
    store.put(FAILED, NOW, 100)  # periods are [start, end): this one belongs to the next period
    store.put(FAILED, NOW - PERIOD - 1, 100)  # and this one to the previous period
    evaluation = evaluate_alarm(alarm_on(Statistic=statistic, EvaluationPeriods=1), store, NOW)
    assert evaluation.datapoints == [None, 1 if statistic == "SampleCount" else 100, expected]


@pytest.mark.parametrize(
    ("statistic", "values", "expected"),
    [
        ("p50", range(1, 11), 5),  # rank ceil(5.0) = 5
        ("p90", range(1, 6), 5),  # rank ceil(4.5) = 5
        ("p20", range(1, 6), 1),  # rank ceil(1.0) = 1
        ("p99", range(1, 101), 99),
        ("p99.9", range(1, 1001), 999),  # rank 999; 99.9 / 100 * 1000 in floats is 999.0000000000001
        ("p33.4", [30, 10, 20], 20),  # rank ceil(1.002) = 2 of the sorted values
        ("p0", [7, 3, 9], 3),
        ("p100", [7, 3, 9], 9),
    ],
)
def test_percentiles_are_nearest_rank(statistic: str, values: Sequence[int], expected: float) -> None:
    store = MetricStore()
    for value in reversed(values):
        store.put(FAILED, NOW - 10, value)
    properties = alarm_on(Statistic=None, ExtendedStatistic=statistic, EvaluationPeriods=1)
    assert evaluate_alarm(properties, store, NOW).datapoints[-1] == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"Statistic": "Median"},
        {"Statistic": None, "ExtendedStatistic": "p100.1"},
        {"Statistic": None, "ExtendedStatistic": "tm99"},
        {"Statistic": None},
        {"ExtendedStatistic": "p99"},
    ],
)
def test_unsupported_or_ambiguous_statistics_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="tatistic"):
        evaluate_alarm(alarm_on(**overrides), MetricStore(), NOW)


@pytest.mark.parametrize(
    ("comparison", "below", "at", "above"),
    [
        ("GreaterThanThreshold", OK, OK, ALARM),
        ("GreaterThanOrEqualToThreshold", OK, ALARM, ALARM),
        ("LessThanThreshold", ALARM, OK, OK),
        ("LessThanOrEqualToThreshold", ALARM, ALARM, OK),
    ],
)
def test_comparison_operators_below_at_and_above_the_threshold(
    comparison: str, below: str, at: str, above: str
) -> None:
    # Numbers as CloudFormation passes parameters: strings.
    properties = alarm_on(
        ComparisonOperator=comparison,
        Threshold="0.05",
        Statistic="Maximum",
        Period="60",
        EvaluationPeriods="1",
    )
    for value, expected in ((0.04, below), (0.05, at), (0.06, above)):
        store = MetricStore()
        store.put(FAILED, NOW - 1, value)
        assert evaluate_alarm(properties, store, NOW).state == expected, value


@pytest.mark.parametrize(
    "comparison",
    [
        "LessThanLowerOrGreaterThanUpperThreshold",
        "LessThanLowerThreshold",
        "GreaterThanUpperThreshold",
        "Above",
    ],
)
def test_other_comparison_operators_are_refused_by_name(comparison: str) -> None:
    with pytest.raises(ValueError, match=comparison):
        evaluate_alarm(alarm_on(ComparisonOperator=comparison), MetricStore(), NOW)


def test_reasons_name_the_evaluated_datapoints_and_the_threshold() -> None:
    evaluation = evaluate_alarm(alarm_on(), store_with("0 0 X X X"), NOW)
    assert evaluation.state == ALARM
    assert evaluation.reason == (
        "Threshold Crossed: 3 of the evaluated datapoints [5.0, 5.0, 5.0] were greater than the threshold "
        "(0.0) (3 out of the last 3 needed for ALARM)"
    )


# ------------------------------------------------------------------------------------- M out of N


def test_m_out_of_n_counts_breaches_anywhere_in_the_last_n_datapoints() -> None:
    three_of_five = alarm_on(EvaluationPeriods=5, DatapointsToAlarm=3)  # evaluation range 7
    assert evaluate_alarm(three_of_five, store_with("0 0 X 0 X 0 X"), NOW).state == ALARM
    assert evaluate_alarm(three_of_five, store_with("0 0 X 0 X 0 0"), NOW).state == OK
    assert evaluate_alarm(three_of_five, store_with("X X X 0 0 0 0"), NOW).state == OK


def test_datapoints_to_alarm_defaults_to_evaluation_periods() -> None:
    store = store_with("0 0 X X 0")
    assert evaluate_alarm(alarm_on(), store, NOW).state == OK
    assert evaluate_alarm(alarm_on(DatapointsToAlarm="2"), store, NOW).state == ALARM


def test_datapoints_to_alarm_above_evaluation_periods_is_refused() -> None:
    with pytest.raises(ValueError, match="DatapointsToAlarm"):
        evaluate_alarm(alarm_on(DatapointsToAlarm=4), MetricStore(), NOW)


# ------------------------------------------------------------------------------------ metric math

MATH_PERIOD = 60
MATH_KEYS = {
    query_id: MetricKey.of(NAMESPACE, query_id.upper(), service="billwatch")
    for query_id in ("m1", "m2", "m3")
}


def metric_query(query_id: str, period: int = MATH_PERIOD) -> dict[str, Any]:
    key = MATH_KEYS[query_id]
    dimensions = [{"Name": name, "Value": value} for name, value in sorted(key.dimensions)]
    metric = {"Namespace": key.namespace, "MetricName": key.name, "Dimensions": dimensions}
    return {
        "Id": query_id,
        "MetricStat": {"Metric": metric, "Period": period, "Stat": "Maximum"},
        "ReturnData": False,
    }


def math_alarm(expression: str, evaluation_periods: int = 3, **overrides: Any) -> dict[str, Any]:
    return {
        "Metrics": [
            *(metric_query(query_id) for query_id in MATH_KEYS),
            {"Id": "e1", "Expression": expression, "Label": "under test", "ReturnData": True},
        ],
        "EvaluationPeriods": evaluation_periods,
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        **overrides,
    }


def evaluate_math(expression: str, evaluation_periods: int = 3, **columns: list[float | None]) -> Evaluation:
    """The expression over metrics m1..m3 given one value per period of the evaluation range, oldest first."""
    store = MetricStore()
    for query_id, column in columns.items():
        assert len(column) == evaluation_periods + 2
        for age, value in zip(range(len(column), 0, -1), column, strict=True):
            if value is not None:
                store.put(MATH_KEYS[query_id], NOW - age * MATH_PERIOD + 1, value)
    return evaluate_alarm(math_alarm(expression, evaluation_periods), store, NOW)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [  # "Comparison and logical operators": metric1 [30, 20, 0, 0], metric2 [20, -, 20, -]
        ("m1 < m2", [0, 0, 1, 0]),
        ("m1 >= 30", [1, 0, 0, 0]),
        ("m1 > 15 AND m2 > 15", [1, 0, 0, 0]),
        ("m1 > 15 && m2 > 15", [1, 0, 0, 0]),
    ],
)
def test_comparison_and_logical_operators_follow_the_doc_example(
    expression: str, expected: list[float]
) -> None:
    evaluation = evaluate_math(expression, evaluation_periods=2, m1=[30, 20, 0, 0], m2=[20, None, 20, None])
    assert evaluation.datapoints == expected


IF_COLUMNS: dict[str, list[float | None]] = {  # "Using IF expressions": the three example series
    "m1": [1, 1, 0, 0, None],
    "m2": [30, None, 0, 0, 30],
    "m3": [0, 0, 20, None, 20],
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("IF(m1, m2, m3)", [30, 0, 20, None, None]),
        ("IF(m1, 5, m3)", [5, 5, 20, None, None]),
        ("IF(m1, m2, 5)", [30, 0, 5, 5, None]),
        ("IF(m2 > 10, m2)", [30, None, None, None, 30]),  # no false value: the datapoint is dropped
        ("IF(m3 > 10, 1, 0)", [0, 0, 1, None, 1]),
        ("IF(0, m2)", [None] * 5),  # a false scalar condition without a false value: an empty series
        ("IF(1, m2, m3)", [30, None, 0, 0, 30]),
    ],
)
def test_if_follows_the_doc_examples(expression: str, expected: list[float | None]) -> None:
    assert evaluate_math(expression, **IF_COLUMNS).datapoints == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * m1 ^ 2", [5, 14, 29]),
        ("(2 + 3) * m1", [5, 10, 15]),
        ("m1 - 1 - 1", [-1, 0, 1]),
        ("m1 / 2 / 2", [0.25, 0.5, 0.75]),
        ("2 ^ 3 ^ m1", [8, 512, 2**27]),  # right-associative
        ("-m1 ^ 2", [-1, -4, -9]),  # ^ binds tighter than unary minus
        ("- -m1 + 10", [11, 12, 13]),
        ("m1 > 1 OR m1 < 2 AND m1 > 5", [0, 1, 1]),  # AND binds tighter than OR
        ("NOT m1 > 1", [1, 0, 0]),
        ("!(m1 == 2)", [1, 0, 1]),
        ("m1 != 2 || m1 <= 1", [1, 0, 1]),
        ("ABS(m1 - 2)", [1, 0, 1]),
        ("MAX(m1, 2)", [2, 2, 3]),
        ("MIN([m1, 2.5, 4])", [1, 2, 2.5]),
        ("1.5e1 + m1 * .5", [15.5, 16, 16.5]),
    ],
)
def test_arithmetic_precedence_and_functions(expression: str, expected: list[float]) -> None:
    assert evaluate_math(expression, evaluation_periods=1, m1=[1, 2, 3]).datapoints == expected


def test_a_missing_value_counts_as_zero_next_to_a_value_and_division_by_zero_drops_the_datapoint() -> None:
    # "Missing values in a time series are treated as 0. If the value of a data point causes a function
    # to attempt to divide by zero, the data point is dropped."
    evaluation = evaluate_math("100 * m1 / m2", m1=[1, 2, None, 5, None], m2=[10, 0, 20, None, None])
    assert evaluation.datapoints == [10, None, 0, None, None]
    assert evaluate_math(
        "m1 + m2", m1=[1, None, None], m2=[None, 2, None], evaluation_periods=1
    ).datapoints == [
        1,
        2,
        None,
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("MIN([m1, m2])", [-3, -2, None]), ("MAX(m1, m2)", [-1, -2, None]), ("MIN(m1, m2, 0)", [-3, -2, None])],
)
def test_min_and_max_take_the_values_present_in_each_period(expression: str, expected: list[float]) -> None:
    # The docs say nothing of missing values here; a gap is skipped, not taken as 0.
    evaluation = evaluate_math(expression, evaluation_periods=1, m1=[-1, None, None], m2=[-3, -2, None])
    assert evaluation.datapoints == expected


def test_an_error_rate_alarm_with_no_invocations_has_no_datapoints() -> None:
    evaluation = evaluate_math("100 * m1 / m2", m1=[0] * 5, m2=[0] * 5)
    assert (evaluation.state, evaluation.datapoints) == (INSUFFICIENT_DATA, [None] * 5)


def test_fill_gives_every_period_of_the_range_a_value() -> None:
    assert evaluate_math("FILL(m1, 0)", evaluation_periods=1, m1=[None, 4, None]).datapoints == [0, 4, 0]
    # With no data at all the alarm sees the filler throughout, so it is never INSUFFICIENT_DATA ...
    quiet = evaluate_math("FILL(m1, 0)")
    assert (quiet.state, quiet.datapoints) == (OK, [0] * 5)
    # ... and, as the docs warn, a breaching filler pins it in ALARM.
    assert evaluate_math("FILL(m1, 1)").state == ALARM


def test_diff_is_each_value_minus_the_one_before_it() -> None:
    # The oldest value has nothing before it; a gap is bridged to the preceding value.
    assert evaluate_math("DIFF(m1)", m1=[1, 4, None, 2, 2]).datapoints == [None, 3, None, -2, 0]
    assert evaluate_math("DIFF(FILL(m1, 0))", m1=[1, 4, None, 2, None]).datapoints == [None, 3, -4, 2, -2]
    assert evaluate_math("DIFF(m1)").state == INSUFFICIENT_DATA  # no data, no difference


def test_expressions_may_use_other_expressions_and_the_only_expression_is_returned() -> None:
    store = MetricStore()
    store.put(MATH_KEYS["m1"], NOW - 1, 4)
    properties = math_alarm("e0 + 1")
    properties["Metrics"][-1].pop("ReturnData")  # the only expression without ReturnData: returned
    properties["Metrics"].append({"Id": "e0", "Expression": "m1 * 2", "ReturnData": False})
    assert evaluate_alarm(properties, store, NOW).datapoints[-1] == 9


def test_a_single_metric_can_be_returned_from_metrics() -> None:
    store = MetricStore()
    store.put(MATH_KEYS["m2"], NOW - 1, 7)
    properties = {
        **math_alarm("m1"),
        "Metrics": [metric_query("m1"), {**metric_query("m2"), "ReturnData": "true"}],
    }
    assert evaluate_alarm(properties, store, NOW).datapoints[-1] == 7


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("STDDEV(m1)", "STDDEV"),
        ("m9 + 1", "m9"),
        ("FILL(m1, REPEAT)", "REPEAT"),
        ("MIN(m1)", "MIN"),
        ("FILL(m1)", "FILL"),
        ("1 + 2", "single number"),
        ("m1 +", "unexpected end"),
        ("(m1 + 1", "expected ')'"),
        ("m1 $ 2", "'$'"),
        ("m1 m2", "unexpected 'm2'"),
        ("[m1, m2]", "unexpected '['"),
        ("FILL(5, 0)", "time series as its first argument"),
        ("FILL(m1, m2)", "filler"),
        ("DIFF(3) + m1", "DIFF needs a time series"),
        ("DIFF(m1, m2)", "wrong number of arguments (2) for DIFF"),
        ("e1 + 1", "refers to itself"),
        ("", "empty"),
    ],
)
def test_bad_expressions_are_refused_naming_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate_alarm(math_alarm(expression), MetricStore(), NOW)


def test_bad_metric_math_definitions_are_refused() -> None:
    two_returned = math_alarm("m1")
    two_returned["Metrics"][0]["ReturnData"] = True
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_alarm(two_returned, MetricStore(), NOW)
    nothing_returned = math_alarm("m1")
    nothing_returned["Metrics"][-1]["ReturnData"] = False
    with pytest.raises(ValueError, match="ReturnData"):
        evaluate_alarm(nothing_returned, MetricStore(), NOW)
    capital_id = math_alarm("m1")
    capital_id["Metrics"][-1]["Id"] = "E1"
    with pytest.raises(ValueError, match="'E1'"):
        evaluate_alarm(capital_id, MetricStore(), NOW)
    mixed_periods = math_alarm("m1")
    mixed_periods["Metrics"][0] = metric_query("m1", period=300)
    with pytest.raises(ValueError, match="one Period"):
        evaluate_alarm(mixed_periods, MetricStore(), NOW)
    with pytest.raises(ValueError, match="not both"):
        evaluate_alarm({**math_alarm("m1"), "MetricName": "Errors"}, MetricStore(), NOW)


# ------------------------------------------------------------------------------- composite alarms

CHILD_STATES = {
    "CPUUtilizationTooHigh": ALARM,
    "DiskReadOpsTooHigh": OK,
    "NetworkOutTooHigh": OK,
    "DeploymentInProgress": INSUFFICIENT_DATA,
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # the examples of "Combining alarms" / "Creating a composite alarm"
        ("ALARM(CPUUtilizationTooHigh) AND ALARM(DiskReadOpsTooHigh)", OK),
        ("ALARM(CPUUtilizationTooHigh) AND NOT ALARM(DeploymentInProgress)", ALARM),
        (
            '(ALARM("CPUUtilizationTooHigh") OR\n ALARM("DiskReadOpsTooHigh")) AND\n OK("NetworkOutTooHigh")',
            ALARM,
        ),
        ("TRUE", ALARM),
        ("FALSE", OK),
        ("OK(CPUUtilizationTooHigh)", OK),
        ("INSUFFICIENT_DATA(DeploymentInProgress)", ALARM),
        # NOT binds tighter than AND, AND tighter than OR
        ("ALARM(CPUUtilizationTooHigh) OR ALARM(DiskReadOpsTooHigh) AND ALARM(NetworkOutTooHigh)", ALARM),
        ("NOT ALARM(DiskReadOpsTooHigh) AND ALARM(NetworkOutTooHigh)", OK),
        ("NOT NOT ALARM(CPUUtilizationTooHigh)", ALARM),
        (
            "((ALARM(CPUUtilizationTooHigh) AND (OK(DiskReadOpsTooHigh) OR FALSE))"
            " AND NOT (OK(NetworkOutTooHigh)))",
            OK,
        ),
        (
            "(ALARM(CPUUtilizationTooHigh) AND (OK(DiskReadOpsTooHigh) OR FALSE))"
            " AND NOT ALARM(NetworkOutTooHigh)",
            ALARM,
        ),
        ("alarm(CPUUtilizationTooHigh) and not False", ALARM),
    ],
)
def test_composite_rules(rule: str, expected: str) -> None:
    assert evaluate_composite(rule, CHILD_STATES) == expected


def test_alarm_names_may_be_quoted_padded_or_arns() -> None:
    states = {"billwatch-dev webhook failures (5xx)": ALARM, "billwatch-dev-dlq": OK}
    assert (
        evaluate_composite(
            'ALARM("billwatch-dev webhook failures (5xx)") AND OK( billwatch-dev-dlq )', states
        )
        == ALARM
    )
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:billwatch-dev-dlq"
    assert evaluate_composite(f"OK({arn})", states) == ALARM
    assert evaluate_composite(f'ALARM("{arn}")', {arn: ALARM}) == ALARM


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ALARM(a) AND", "expected ALARM(...)"),
        ("ALARM(a", "expected ')' after the alarm name"),
        ("(ALARM(a)", "expected ')'"),
        ("ALARM()", "empty alarm name"),
        ('ALARM("a)', "unterminated"),
        ("ALARM(a) ALARM(b)", "unexpected text at position 9"),
        ("ALARM(a) XOR ALARM(b)", "unexpected text"),
        ("ALARM a", "expected '('"),
        ("AT_LEAST(2, ALARM, (a, b))", "'AT_LEAST'"),
        ("ALARMS(a)", "'ALARMS'"),
        ("ALARM(unknown-alarm)", "unknown alarm 'unknown-alarm'"),
        ("TRUE OR ALARM(unknown-alarm)", "unknown alarm 'unknown-alarm'"),  # reported though TRUE decides
    ],
)
def test_bad_composite_rules_are_refused_naming_the_problem(rule: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate_composite(rule, {"a": OK, "b": OK})


# ---------------------------------------------------------------------------------------- resolve

PARAMETERS = {
    "Stage": "prod",
    "MetricsNamespace": "Billwatch",
    "AlertTopicArn": "",
    "FailureThreshold": "0.05",
}


def test_sub_substitutes_parameters_pseudo_parameters_attributes_and_escapes() -> None:
    text = "${AWS::StackName}-${Stage} ${AWS::Region} ${AWS::AccountId} ${AWS::Partition} ${AWS::URLSuffix}"
    assert resolve({"Fn::Sub": text}, PARAMETERS) == "billwatch-prod us-east-1 123456789012 aws amazonaws.com"
    node = {"Fn::Sub": "${Queue.Arn} ${Queue} ${!Literal}"}
    assert (
        resolve(node, PARAMETERS, refs={"Queue": "https://q", "Queue.Arn": "arn:q"})
        == "arn:q https://q ${Literal}"
    )


def test_sub_with_a_variable_map_resolves_its_variables_first() -> None:
    node = {"Fn::Sub": ["${Name}-errors-${Stage}", {"Name": {"Ref": "WebhookFunction"}}]}
    assert (
        resolve(node, PARAMETERS, refs={"WebhookFunction": "billwatch-webhook"})
        == "billwatch-webhook-errors-prod"
    )


def test_ref_to_parameters_and_resources() -> None:
    assert resolve({"Ref": "Stage"}, PARAMETERS) == "prod"
    assert resolve({"Ref": "DeadLetterQueue"}, PARAMETERS) == "DeadLetterQueue"
    assert (
        resolve({"Ref": "DeadLetterQueue"}, PARAMETERS, refs={"DeadLetterQueue": "https://dlq"})
        == "https://dlq"
    )
    with pytest.raises(KeyError, match="Stagee"):
        resolve({"Ref": "Stagee"}, PARAMETERS, refs={"DeadLetterQueue": "https://dlq"})
    with pytest.raises(KeyError, match="AWS::Regoin"):
        resolve({"Ref": "AWS::Regoin"}, PARAMETERS)


def test_get_att() -> None:
    node = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert resolve(node, PARAMETERS) == "DeadLetterQueue.Arn"
    assert resolve(node, PARAMETERS, refs={"DeadLetterQueue.Arn": "arn:aws:sqs:dlq"}) == "arn:aws:sqs:dlq"
    assert resolve(node, PARAMETERS, refs={"DeadLetterQueue": "https://dlq"}) == "DeadLetterQueue.Arn"
    with pytest.raises(KeyError, match="DeadLetterQeueu"):
        resolve(
            {"Fn::GetAtt": ["DeadLetterQeueu", "Arn"]}, PARAMETERS, refs={"DeadLetterQueue": "https://dlq"}
        )


def test_if_and_no_value_drop_keys_and_list_items() -> None:
    node = {
        "AlarmActions": [
            {"Fn::If": ["HasTopic", {"Ref": "AlertTopicArn"}, {"Ref": "AWS::NoValue"}]},
            "arn:static",
        ],
        "OKActions": {"Fn::If": ["HasTopic", [{"Ref": "AlertTopicArn"}], {"Ref": "AWS::NoValue"}]},
        "AlarmDescription": {"Fn::If": ["HasTopic", "paged", "not paged"]},
    }
    assert resolve(node, PARAMETERS, conditions={"HasTopic": False}) == {
        "AlarmActions": ["arn:static"],
        "AlarmDescription": "not paged",
    }
    with_topic = {**PARAMETERS, "AlertTopicArn": "arn:topic"}
    assert resolve(node, with_topic, conditions={"HasTopic": True}) == {
        "AlarmActions": ["arn:topic", "arn:static"],
        "OKActions": ["arn:topic"],
        "AlarmDescription": "paged",
    }
    assert resolve({"Ref": "AWS::NoValue"}, PARAMETERS) is None


def test_if_resolves_only_the_chosen_branch_and_needs_a_known_condition() -> None:
    # The other branch may name a resource that the condition leaves out of the stack.
    node = {"Fn::If": ["HasTopic", {"Ref": "AlertTopic"}, "none"]}
    assert resolve(node, PARAMETERS, refs={"DeadLetterQueue": "q"}, conditions={"HasTopic": False}) == "none"
    with pytest.raises(KeyError, match="HasTopci"):
        resolve({"Fn::If": ["HasTopci", 1, 2]}, PARAMETERS, conditions={"HasTopic": True})
    with pytest.raises(KeyError, match="HasTopic"):
        resolve(node, PARAMETERS)


def test_join() -> None:
    node = {"Fn::Join": ["/", ["alarms", {"Ref": "Stage"}, {"Ref": "AWS::NoValue"}, 3]]}
    assert resolve(node, PARAMETERS) == "alarms/prod/3"


def test_condition_functions_compute_template_conditions() -> None:
    template_conditions = {  # in the style of template.yaml's Conditions
        "HasAlertTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlertTopicArn"}, ""]}]},
        "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "PageOnCall": {"Fn::And": [{"Condition": "IsProd"}, {"Condition": "HasAlertTopic"}]},
        "Notify": {"Fn::Or": [{"Condition": "IsProd"}, {"Condition": "HasAlertTopic"}]},
    }
    conditions: dict[str, bool] = {}
    for name, expression in template_conditions.items():
        conditions[name] = resolve(expression, PARAMETERS, conditions=conditions)
    assert conditions == {"HasAlertTopic": False, "IsProd": True, "PageOnCall": False, "Notify": True}


def test_unsupported_intrinsics_are_refused() -> None:
    with pytest.raises(ValueError, match="Fn::Select"):
        resolve({"Fn::Select": [0, ["a"]]}, PARAMETERS)


def test_a_resolved_template_alarm_evaluates() -> None:
    resource_properties = {
        "AlarmName": {"Fn::Sub": "${AWS::StackName}-${Stage}-webhook-failure-rate"},
        "Metrics": [
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": {"Ref": "MetricsNamespace"},
                        "MetricName": metric_name,
                        "Dimensions": [{"Name": "service", "Value": "billwatch"}],
                    },
                    "Period": 300,
                    "Stat": "Sum",
                },
                "ReturnData": False,
            }
            for query_id, metric_name in (("failed", "WebhookFailed"), ("received", "WebhookReceived"))
        ]
        + [{"Id": "rate", "Expression": "FILL(failed, 0) / received", "ReturnData": True}],
        "EvaluationPeriods": 1,
        "Threshold": {"Ref": "FailureThreshold"},
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Fn::If": ["HasAlertTopic", {"Ref": "AlertTopicArn"}, {"Ref": "AWS::NoValue"}]}],
    }
    properties = resolve(resource_properties, PARAMETERS, conditions={"HasAlertTopic": False})
    assert (
        properties["AlarmName"] == "billwatch-prod-webhook-failure-rate" and properties["AlarmActions"] == []
    )
    store = MetricStore()
    for _ in range(20):
        store.put(MetricKey.of("Billwatch", "WebhookReceived", service="billwatch"), NOW - 10, 1)
    assert evaluate_alarm(properties, store, NOW).state == OK  # no failure at all: FILL makes it 0
    store.put(FAILED, NOW - 10, 1)
    assert evaluate_alarm(properties, store, NOW).state == ALARM  # 1 / 20 = 0.05, at the threshold


# ----------------------------------------------------------------------------------- metric store


def powertools_document(timestamp_ms: int, **members: Any) -> dict[str, Any]:
    """An EMF line as billwatch's MetricsRecorder (Powertools) writes it, plus a second directive."""
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Billwatch",
                    "Dimensions": [["service"], ["service", "EventType"], ["service", "EventType", "Reason"]],
                    "Metrics": [{"Name": "WebhookFailed", "Unit": "Count"}],
                },
                {"Namespace": "Billwatch/Latency", "Dimensions": [[]], "Metrics": [{"Name": "Duration"}]},
            ],
        },
        "service": "billwatch",
        "EventType": "invoice.paid",
        "Reason": "signature",
        "WebhookFailed": [1.0, 1.0],
        "Duration": 12.5,
        "account_id": "acct_1",
        **members,
    }


def test_put_emf_stores_every_metric_under_every_dimension_set() -> None:
    store = MetricStore()
    store.put_emf(powertools_document(1_700_000_000_500))
    by_type = MetricKey.of("Billwatch", "WebhookFailed", service="billwatch", EventType="invoice.paid")
    by_reason = MetricKey.of(
        "Billwatch", "WebhookFailed", service="billwatch", EventType="invoice.paid", Reason="signature"
    )
    duration = MetricKey("Billwatch/Latency", "Duration", frozenset())
    assert store.keys() == {FAILED, by_type, by_reason, duration}
    for key in (FAILED, by_type, by_reason):
        assert store.values(key, 1_700_000_000.5, 1_700_000_000.6) == [1.0, 1.0]  # Timestamp is in ms
    assert store.values(FAILED, 1_700_000_000, 1_700_000_000.5) == []  # end is exclusive
    assert store.values(duration, 0, 2e9) == [12.5]


def test_put_emf_timestamp_overrides_the_document() -> None:
    store = MetricStore()
    store.put_emf(powertools_document(1_700_000_000_500), timestamp=NOW - 1)
    assert store.values(FAILED, NOW - 1, NOW) == [1.0, 1.0]
    assert evaluate_alarm(alarm_on(EvaluationPeriods=1), store, NOW).datapoints[-1] == 2


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"WebhookFailed": 1}, "_aws"),
        (powertools_document(1, Duration="12"), "'Duration'"),
        (powertools_document(1, Duration=True), "'Duration'"),
        (powertools_document(1, WebhookFailed=[1, "x"]), "'WebhookFailed'"),
        ({k: v for k, v in powertools_document(1).items() if k != "Duration"}, "no 'Duration' member"),
        ({k: v for k, v in powertools_document(1).items() if k != "Reason"}, "'Reason'"),
        (powertools_document(1, EventType=7), "'EventType'"),
        ({**powertools_document(1), "_aws": {"CloudWatchMetrics": []}}, "Timestamp"),
        ({**powertools_document(1), "_aws": {"Timestamp": 1}}, "CloudWatchMetrics"),
        (
            {**powertools_document(1), "_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "N"}]}},
            "Namespace",
        ),
    ],
)
def test_put_emf_refuses_documents_that_break_the_specification(
    document: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        MetricStore().put_emf(document)


def test_store_values_are_a_half_open_window_in_time_order() -> None:
    store = MetricStore()
    for timestamp, value in ((20, 2), (10, 1), (30, 3), (20, 4)):
        store.put(FAILED, timestamp, value)
    assert store.values(FAILED, 10, 30) == [1, 2, 4]
    assert store.values(FAILED, 0, 100) == [1, 2, 4, 3]
    assert store.values(MetricKey.of(NAMESPACE, "Other"), 0, 100) == []
    assert MetricKey.of("N", "M", b="2", a="1") == MetricKey("N", "M", frozenset({("a", "1"), ("b", "2")}))


# -------------------------------------------------------------------------------------- timeline

START = 1_699_999_980.0  # a minute boundary


def one_value_a_minute(store: MetricStore, key: MetricKey, values: Sequence[float]) -> None:
    for minute, value in enumerate(values):
        store.put(key, START + minute * 60 + 30, value)


def per_minute(key: MetricKey = FAILED, **overrides: Any) -> dict[str, Any]:
    return alarm_on(key, **{"Period": 60, "EvaluationPeriods": 1, **overrides})


def test_a_three_minute_breach_goes_insufficient_data_ok_alarm_ok() -> None:
    store = MetricStore()
    one_value_a_minute(store, FAILED, [0, 0, 0, 0, 0, 5, 5, 5, 0, 0, 0, 0])
    timeline = AlarmTimeline({"failures": per_minute()}, {}, store)
    # At START nothing has been published yet: still INSUFFICIENT_DATA, no transition.
    assert timeline.run(START, START + 12 * 60) == {
        "failures": [(START + 60, OK), (START + 6 * 60, ALARM), (START + 9 * 60, OK)]
    }
    assert timeline.fired("failures")


def test_three_out_of_three_fires_only_on_a_sustained_breach() -> None:
    store = MetricStore()
    one_value_a_minute(store, FAILED, [0, 0, 0, 5, 5, 0, 0, 5, 5, 5, 0, 0])
    timeline = AlarmTimeline({"sustained": per_minute(EvaluationPeriods=3)}, {}, store)
    transitions = timeline.run(START, START + 12 * 60)["sustained"]
    assert transitions == [(START + 60, OK), (START + 10 * 60, ALARM), (START + 11 * 60, OK)]
    timeline.run(START, START + 9 * 60)  # the two-minute breach alone
    assert not timeline.fired("sustained")


def test_after_the_metric_stops_missing_re_evaluates_the_last_datapoints_and_ignore_keeps_alarm() -> None:
    # "CloudWatch alarms might repeatedly re-evaluate the last set of data points for a period of time
    # after the metric has stopped flowing." Here until they leave the three-period evaluation range.
    store = MetricStore()
    one_value_a_minute(store, FAILED, [5, 5, 5])
    alarms = {"missing": per_minute(), "ignore": per_minute(TreatMissingData="ignore")}
    assert AlarmTimeline(alarms, {}, store).run(START, START + 10 * 60) == {
        "missing": [(START + 60, ALARM), (START + 6 * 60, INSUFFICIENT_DATA)],
        "ignore": [(START + 60, ALARM)],
    }


def stopped_switch(**overrides: Any) -> dict[str, Any]:
    """The template's dead-man's switch: 1 in the first silent minute after runs, 0 in a minute with one."""
    return {
        "Metrics": [
            {"Id": "stopped", "Expression": "IF(runs > 0 OR DIFF(runs) < 0, runs == 0)"},
            {"Id": "runs", "Expression": "FILL(counted, 0)", "ReturnData": False},
            {**metric_query("m1"), "Id": "counted"},
        ],
        "EvaluationPeriods": 1,
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "ignore",
        **overrides,
    }


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        pytest.param([None] * 21, [], id="never-ran"),
        pytest.param([None] * 4 + [1] * 17, [(START + 5 * 60, OK)], id="started-late"),
        pytest.param([1] * 3 + [None] * 18, [(START + 60, OK), (START + 4 * 60, ALARM)], id="stopped-stays"),
        pytest.param(
            [1] * 3 + [None] * 4 + [1] * 14,
            [(START + 60, OK), (START + 4 * 60, ALARM), (START + 8 * 60, OK)],
            id="stopped-then-back",
        ),
    ],
)
def test_the_stopped_switch_tells_never_ran_from_stopped(
    runs: list[float | None], expected: list[tuple[float, str]]
) -> None:
    store = MetricStore()
    for minute, value in enumerate(runs):
        if value is not None:
            store.put(MATH_KEYS["m1"], START + minute * 60 + 30, value)
    # Evaluated long after a silence left the evaluation range: ignore holds ALARM.
    transitions = AlarmTimeline({"switch": stopped_switch()}, {}, store).run(START, START + 20 * 60)
    assert transitions["switch"] == expected


def test_composite_alarms_follow_their_children_within_the_same_step() -> None:
    latency = MetricKey.of(NAMESPACE, "WebhookProcessingTime", service="billwatch")
    store = MetricStore()
    one_value_a_minute(store, FAILED, [0, 0, 5, 5, 5, 5, 0, 0, 0])
    one_value_a_minute(store, latency, [0, 0, 0, 0, 5, 5, 5, 5, 0])
    alarms = {"failures": per_minute(), "latency": per_minute(latency)}
    composites = {  # the parent first: it must still see its child's state of the same step
        "page": "ALARM(both)",
        "both": 'ALARM(failures) AND ALARM("arn:aws:cloudwatch:us-east-1:123456789012:alarm:latency")',
    }
    timeline = AlarmTimeline(alarms, composites, store)
    transitions = timeline.run(START, START + 9 * 60)
    assert transitions["failures"] == [(START + 60, OK), (START + 3 * 60, ALARM), (START + 7 * 60, OK)]
    assert transitions["latency"] == [(START + 60, OK), (START + 5 * 60, ALARM), (START + 9 * 60, OK)]
    assert transitions["both"] == [(START, OK), (START + 5 * 60, ALARM), (START + 7 * 60, OK)]
    assert transitions["page"] == transitions["both"]
    assert timeline.fired("page")


def test_timeline_refuses_unknown_references_cycles_clashes_and_unknown_names() -> None:
    store = MetricStore()
    with pytest.raises(ValueError, match="'missing-child'"):
        AlarmTimeline({"a": per_minute()}, {"c": "ALARM(a) OR ALARM(missing-child)"}, store)
    with pytest.raises(ValueError, match="cycle: c1 -> c2 -> c1"):
        AlarmTimeline({"a": per_minute()}, {"c1": "ALARM(c2) OR ALARM(a)", "c2": "ALARM(c1)"}, store)
    with pytest.raises(ValueError, match="both a metric and a composite"):
        AlarmTimeline({"a": per_minute()}, {"a": "TRUE"}, store)
    timeline = AlarmTimeline({"a": per_minute()}, {}, store)
    with pytest.raises(ValueError, match="step"):
        timeline.run(START, START + 60, step=0)
    with pytest.raises(KeyError, match="nope"):
        timeline.fired("nope")
    assert not timeline.fired("a")  # not run yet


# ------------------------------------------------------------------------- anomaly detection bands

REQUESTS = MetricKey.of(NAMESPACE, "WebhookReceived", service="billwatch")
DAY_OF_PERIODS = 24 * 3600 // PERIOD  # the band's training window: 288 five-minute periods
BOTH_SIDES = "LessThanLowerOrGreaterThanUpperThreshold"


def anomaly_alarm(
    comparison: str = BOTH_SIDES, band: str = "ANOMALY_DETECTION_BAND(m1, 2)"
) -> dict[str, Any]:
    """Properties of an anomaly detection alarm on REQUESTS Sum, one five-minute period, as the guide
    shows them: the metric and its band both return data, the band is the ThresholdMetricId."""
    metric = {
        "Namespace": NAMESPACE,
        "MetricName": REQUESTS.name,
        "Dimensions": [{"Name": "service", "Value": "billwatch"}],
    }
    return {
        "Metrics": [
            {
                "Id": "m1",
                "MetricStat": {"Metric": metric, "Period": PERIOD, "Stat": "Sum"},
                "ReturnData": True,
            },
            {"Id": "ad1", "Expression": band, "ReturnData": True},
        ],
        "ThresholdMetricId": "ad1",
        "ComparisonOperator": comparison,
        "EvaluationPeriods": 1,
    }


def history(values: Sequence[float], at: float = NOW) -> MetricStore:
    """One datapoint per five-minute period, oldest first, the last in the period ending at ``at``."""
    store = MetricStore()
    for age, value in zip(range(len(values), 0, -1), values, strict=True):
        store.put(REQUESTS, at - age * PERIOD + 1, value)
    return store


def steady(periods: int = DAY_OF_PERIODS) -> list[float]:
    """95 and 105 in turn: mean 100, standard deviation just over 5."""
    return [95.0 if n % 2 else 105.0 for n in range(periods)]


def test_a_steady_noisy_series_stays_inside_its_band() -> None:
    # Uniform noise of ±10 has a standard deviation of 20 / √12 ≈ 5.8, so it never leaves 2 of them.
    noise = random.Random(7)
    store = history([noise.uniform(90, 110) for _ in range(2 * DAY_OF_PERIODS)])
    timeline = AlarmTimeline({"volume": anomaly_alarm()}, {}, store)
    assert timeline.run(NOW - 6 * 3600, NOW, step=PERIOD) == {"volume": [(NOW - 6 * 3600, OK)]}


@pytest.mark.parametrize(
    ("comparison", "fires"),
    [(BOTH_SIDES, True), ("GreaterThanUpperThreshold", True), ("LessThanLowerThreshold", False)],
)
def test_a_step_up_is_above_the_band(comparison: str, fires: bool) -> None:
    evaluation = evaluate_alarm(anomaly_alarm(comparison), history([*steady(), 160.0]), NOW)
    assert evaluation.state == (ALARM if fires else OK)
    assert evaluation.datapoints[-1] == 160.0


@pytest.mark.parametrize(
    ("comparison", "fires"),
    [(BOTH_SIDES, True), ("LessThanLowerThreshold", True), ("GreaterThanUpperThreshold", False)],
)
def test_a_sudden_drop_is_below_the_band(comparison: str, fires: bool) -> None:
    evaluation = evaluate_alarm(anomaly_alarm(comparison), history([*steady(), 40.0]), NOW)
    assert evaluation.state == (ALARM if fires else OK)


def test_the_band_needs_a_quarter_of_its_training_window() -> None:
    # 72 of the 288 five-minute periods of the day before: 6 hours of history.
    young = evaluate_alarm(anomaly_alarm(), history([*steady(70), 160.0]), NOW)
    assert young.state == INSUFFICIENT_DATA
    assert evaluate_alarm(anomaly_alarm(), history([*steady(72), 160.0]), NOW).state == ALARM


def test_a_datapoint_older_than_the_training_window_does_not_train_the_band() -> None:
    store = history([1000.0, *steady(DAY_OF_PERIODS), 125.0])
    assert evaluate_alarm(anomaly_alarm(), store, NOW).state == ALARM  # the 1000 would widen it to 125


@pytest.mark.parametrize(
    ("band", "fires"),
    [
        ("ANOMALY_DETECTION_BAND(m1, 2)", True),  # upper edge about 110
        ("ANOMALY_DETECTION_BAND(m1)", True),  # 2 is the default
        ("ANOMALY_DETECTION_BAND(m1, 4.5)", True),  # about 122.6
        ("ANOMALY_DETECTION_BAND(m1, 6)", False),  # about 130
    ],
)
def test_the_band_width_is_in_standard_deviations(band: str, fires: bool) -> None:
    evaluation = evaluate_alarm(anomaly_alarm(band=band), history([*steady(), 125.0]), NOW)
    assert evaluation.state == (ALARM if fires else OK)


@pytest.mark.parametrize(
    ("level", "inside", "outside"),
    [(100.0, 110.0, 110.5), (0.0, 2.0, 2.5)],  # a floor of 5 % of the mean, and of 1 near zero
)
def test_a_flat_series_still_has_a_band(level: float, inside: float, outside: float) -> None:
    flat = [level] * DAY_OF_PERIODS
    assert evaluate_alarm(anomaly_alarm(), history([*flat, inside]), NOW).state == OK
    assert evaluate_alarm(anomaly_alarm(), history([*flat, outside]), NOW).state == ALARM


def test_missing_periods_and_m_out_of_n_work_as_for_thresholds() -> None:
    two_of_three = {**anomaly_alarm(), "EvaluationPeriods": 3, "DatapointsToAlarm": 2}
    store = history([*steady(), 160.0, 100.0, 160.0])
    evaluation = evaluate_alarm(two_of_three, store, NOW)
    assert evaluation.state == ALARM
    assert "2 of the evaluated datapoints [160.0, 100.0, 160.0] were outside the anomaly detection band" in (
        evaluation.reason
    )
    silent = {**anomaly_alarm(), "TreatMissingData": "notBreaching"}
    assert evaluate_alarm(silent, history(steady()), NOW + 10 * PERIOD).state == OK


def test_the_band_may_be_of_an_expression() -> None:
    properties = anomaly_alarm(band="ANOMALY_DETECTION_BAND(filled, 2)")
    properties["Metrics"] = [
        {**properties["Metrics"][0], "ReturnData": False},
        {"Id": "filled", "Expression": "FILL(m1, 0)"},
        properties["Metrics"][1],
    ]
    # FILL gives the whole training window a value: a day of zeros, then a burst.
    store = history([5.0])
    assert evaluate_alarm(properties, store, NOW).state == ALARM
    assert (
        evaluate_alarm({**properties, "ComparisonOperator": "LessThanLowerThreshold"}, store, NOW).state == OK
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda p: p.update(Threshold=0), "not a Threshold"),
        (
            lambda p: p.pop("ThresholdMetricId"),
            "LessThanLowerOrGreaterThanUpperThreshold needs a ThresholdMetricId",
        ),
        (lambda p: p.update(ComparisonOperator="GreaterThanThreshold", Threshold=0), "cannot have"),
        (lambda p: p.update(ThresholdMetricId="m1"), "must be an ANOMALY_DETECTION_BAND"),
        (lambda p: p.update(ThresholdMetricId="nope"), "not the Id of a metric math query"),
        (lambda p: p["Metrics"][1].update(Expression="ANOMALY_DETECTION_BAND(m9, 2)"), "unknown metric"),
        (lambda p: p["Metrics"][1].update(Expression="ANOMALY_DETECTION_BAND(m1, 0)"), "more than 0"),
        (lambda p: p["Metrics"][1].update(Expression="m1 * 2"), "is not ANOMALY_DETECTION_BAND"),
        (lambda p: p["Metrics"][0].update(ReturnData=False), "ReturnData"),
        (
            lambda p: p["Metrics"].append({"Id": "e1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2) + 1"}),
            "unsupported function 'ANOMALY_DETECTION_BAND'",
        ),
    ],
)
def test_malformed_anomaly_detection_alarms_are_refused(change: Any, problem: str) -> None:
    properties = anomaly_alarm()
    change(properties)
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate_alarm(properties, history(steady()), NOW)
