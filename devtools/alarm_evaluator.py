"""Evaluate CloudWatch alarm definitions locally, the way ``promtool test rules`` tests Prometheus rules.

Feed a :class:`MetricStore` with datapoints (directly, or from Embedded Metric Format log lines),
then ask what state an ``AWS::CloudWatch::Alarm`` would be in at a given time, what an
``AWS::CloudWatch::CompositeAlarm`` rule evaluates to, or how a set of alarms moves through
time (:class:`AlarmTimeline`). :func:`devtools.template.resolve` turns template fragments with
intrinsics into the plain properties these functions take. :func:`statistic` and
:func:`evaluate_math` offer the statistics and the metric math to other readers of the store (the
local dashboards).

Semantics follow the Amazon CloudWatch User Guide: "Using Amazon CloudWatch alarms" and its
"Configuring how CloudWatch alarms treat missing data" section (with "Avoiding premature
transitions to alarm state"), "Alarms based on metric math" ("Creating a CloudWatch alarm based
on a metric math expression"), "Combining alarms" ("Creating a composite alarm") and "Metric
math syntax and functions".

Covered:

* Single-metric alarms: Namespace / MetricName / Dimensions (matched exactly, as CloudWatch
  does), Statistic (SampleCount, Average, Sum, Minimum, Maximum) or ExtendedStatistic
  percentiles ``p0`` .. ``p100`` including decimals such as ``p99.9``, computed by nearest rank:
  the value at rank ``ceil(p / 100 * n)`` (at least 1) of the period's sorted values.
* Period, EvaluationPeriods, DatapointsToAlarm ("M out of N"), Threshold and the four static
  ComparisonOperators; numbers may arrive as strings ("5", "0.05").
* TreatMissingData missing / notBreaching / breaching / ignore over an evaluation range of
  EvaluationPeriods + 2 periods, using the most recent real datapoints in that range and
  filling only as many missing ones as needed (see :func:`evaluate_alarm`). Alarms on the
  ``AWS/DynamoDB`` namespace always ignore missing data, as documented.
* Metric math alarms (``Metrics``): MetricStat queries and expressions with numbers, ids,
  ``+ - * / ^``, unary minus, parentheses, ``== != < > <= >=``, ``AND && OR || NOT !``, and the
  functions FILL(series, number), IF(condition, a[, b]), ABS, DIFF(series) (each value minus
  the one before it; the oldest of the evaluation range has none, as if nothing older were
  fetched), and MIN / MAX over two or more series or scalars (``MIN(a, b)`` or
  ``MIN([a, b])``), parsed by a small recursive-descent parser (no ``eval``). Series align by
  period. As the docs say, where one of two series has a value and the other has none, the
  missing one counts as 0 (arithmetic, comparisons, AND/OR); a period where neither has one, or
  that divides by zero, gets no datapoint.
* Composite alarm rules: ALARM(), OK(), INSUFFICIENT_DATA(), TRUE, FALSE, AND, OR, NOT and
  parentheses, alarm names bare or double-quoted, names or ARNs.
* Anomaly detection alarms ("Create a CloudWatch alarm based on anomaly detection"): ``Metrics``
  with an expression ``ANOMALY_DETECTION_BAND(id[, width])`` (width in standard deviations,
  default 2) whose Id is the alarm's ``ThresholdMetricId``, no Threshold, and the comparison
  operators LessThanLowerOrGreaterThanUpperThreshold, LessThanLowerThreshold and
  GreaterThanUpperThreshold. The alarm judges the series ``id`` (a MetricStat or an
  expression) against the band; the band's argument and the band may both have ReturnData true.

The anomaly band is an approximation. CloudWatch trains a proprietary machine-learning model on
up to two weeks of the metric's history, with hourly, daily and weekly seasonality and trend. This
evaluator instead takes, for each period, the datapoints of the same series in the
TRAINING_WINDOW_SECONDS (24 h) of periods just before it, and sets the band to
``mean ± width * max(stdev, STDDEV_FLOOR_RELATIVE * |mean|, STDDEV_FLOOR_ABSOLUTE)`` (sample
standard deviation; the floors give a flat series a band, and a series flat at 0 one unit each
side). A period whose training window holds fewer than a quarter of its periods' datapoints (at
least 2) has no band and counts as missing, so a young metric is INSUFFICIENT_DATA (or whatever
TreatMissingData makes of it). Not modelled: seasonality and trend (a daily peak is an anomaly
here unless the last 24 h were as busy), excluded training time ranges, the clamping of bands to
a metric's possible range, retraining delays, and when a metric began: FILL inside the band's
argument fills the whole training window too, so such a band trains on zeros from the start.
Anomalous periods train the band of later periods, as they would CloudWatch's model unless
excluded.

Not covered (each raises ValueError when met, rather than being evaluated wrongly): Metrics
Insights queries, trimmed/winsorized statistics (``tm99``, ``wm99``, ...), metric math
functions other than those above (including FILL with REPEAT / LINEAR, SEARCH, METRICS(), and
single-series aggregates such as MIN(m1), which the docs advise against in alarms because they
depend on how much extra data the alarm fetches), ANOMALY_DETECTION_BAND anywhere but as the
ThresholdMetricId, AT_LEAST in composite rules. Not modelled at all:
EvaluateLowSampleCountPercentile, Unit filters, ingestion delay (a datapoint counts from the
moment it is put), alarm actions, and the exact, undocumented size of CloudWatch's evaluation
range.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
from bisect import bisect_left, insort
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Any

from devtools.emf import emf_metrics, emf_timestamp
from devtools.percentiles import nearest_rank, percentile_statistic

OK = "OK"
ALARM = "ALARM"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
ALARM_STATES = (OK, ALARM, INSUFFICIENT_DATA)

# CloudWatch fetches more periods than EvaluationPeriods in case some are missing; the docs call
# this the evaluation range and only say its size depends on the period and the resolution. Their
# examples use 5 periods for EvaluationPeriods 3, so this evaluator uses EvaluationPeriods + 2.
EVALUATION_RANGE_EXTRA_PERIODS = 2

TREAT_MISSING_DATA = ("missing", "ignore", "breaching", "notBreaching")

# The anomaly band's approximation of CloudWatch's model (see the module docstring).
TRAINING_WINDOW_SECONDS = 24 * 3600
MINIMUM_TRAINING_SHARE = Fraction(1, 4)
STDDEV_FLOOR_RELATIVE = 0.05
STDDEV_FLOOR_ABSOLUTE = 1.0
DEFAULT_BAND_WIDTH = 2.0


# ----------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricKey:
    namespace: str
    name: str
    dimensions: frozenset[tuple[str, str]]  # exact dimension set, as CloudWatch matches it

    @classmethod
    def of(cls, namespace: str, name: str, **dimensions: str) -> MetricKey:
        return cls(namespace, name, frozenset(dimensions.items()))


class MetricStore:
    """Raw datapoints per metric; statistics are computed per alarm period when evaluated."""

    def __init__(self) -> None:
        self._points: dict[MetricKey, list[tuple[float, float]]] = {}

    def put(self, key: MetricKey, timestamp: float, value: float) -> None:
        insort(self._points.setdefault(key, []), (float(timestamp), float(value)))

    def put_emf(self, document: Mapping[str, Any], timestamp: float | None = None) -> None:
        """Every metric of one Embedded Metric Format document, under each of its dimension sets.

        ``timestamp`` (epoch seconds) overrides ``_aws.Timestamp`` (epoch milliseconds).
        """
        moment = emf_timestamp(document) if timestamp is None else timestamp
        for metric in emf_metrics(document):
            key = MetricKey(metric.namespace, metric.name, frozenset(metric.dimensions))
            for value in metric.values:
                self.put(key, moment, value)

    def values(self, key: MetricKey, start: float, end: float) -> list[float]:
        """Raw values of ``key`` with ``start <= timestamp < end``, oldest first."""
        points = self._points.get(key, [])
        first = bisect_left(points, (start, -math.inf))
        last = bisect_left(points, (end, -math.inf))
        return [value for _, value in points[first:last]]

    def keys(self) -> set[MetricKey]:
        return set(self._points)

    def points(self, key: MetricKey) -> list[tuple[float, float]]:
        """Every (timestamp, value) of ``key``, oldest first."""
        return list(self._points.get(key, []))


# -------------------------------------------------------------------------------- statistics

Statistic = Callable[[list[float]], float]

_STATISTICS: dict[str, Statistic] = {
    "SampleCount": lambda values: float(len(values)),
    "Average": lambda values: math.fsum(values) / len(values),
    "Sum": math.fsum,
    "Minimum": min,
    "Maximum": max,
}


def statistic(name: Any) -> Statistic:
    """The function that computes statistic ``name`` (e.g. Sum, p95) from one period's values."""
    if name in _STATISTICS:
        return _STATISTICS[name]
    if (percent := percentile_statistic(name)) is not None:
        return lambda values: nearest_rank(values, percent)
    raise ValueError(
        f"unsupported statistic {name!r}: use SampleCount, Average, Sum, Minimum, Maximum or p0..p100"
    )


# ---------------------------------------------------------------------------- metric alarms


@dataclass(frozen=True)
class Evaluation:
    state: str  # "OK" | "ALARM" | "INSUFFICIENT_DATA"
    datapoints: list[float | None]  # the evaluation range, oldest first; None = missing
    reason: str  # human-readable, like CloudWatch's StateReason


_COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}


@dataclass(frozen=True)
class Band:
    lower: float
    upper: float


_BAND_COMPARISONS: dict[str, tuple[Callable[[float, Band], bool], str]] = {
    "LessThanLowerOrGreaterThanUpperThreshold": (
        lambda value, band: value < band.lower or value > band.upper,
        "outside",
    ),
    "LessThanLowerThreshold": (lambda value, band: value < band.lower, "below"),
    "GreaterThanUpperThreshold": (lambda value, band: value > band.upper, "above"),
}

Series = dict[int, float]  # period index in the evaluation range (0 = oldest) -> value
Point = tuple[float, bool]  # a period's value, and whether it breaches


@dataclass(frozen=True)
class _MetricStat:
    key: MetricKey
    period: int
    statistic: Statistic

    @property
    def namespaces(self) -> set[str]:
        return {self.key.namespace}

    def series(self, store: MetricStore, starts: Sequence[float]) -> Series:
        series: Series = {}
        for index, start in enumerate(starts):
            values = store.values(self.key, start, start + self.period)
            if values:
                series[index] = self.statistic(values)
        return series


@dataclass(frozen=True)
class _AnomalyBand:
    """``ANOMALY_DETECTION_BAND(metric_id, width)``, approximated as the module docstring says."""

    metric_id: str
    width: float
    period: int

    @property
    def training_periods(self) -> int:
        return math.ceil(TRAINING_WINDOW_SECONDS / self.period)

    def evaluate(
        self, source: _MetricStat | _MetricMath, store: MetricStore, starts: Sequence[float]
    ) -> tuple[Series, dict[int, Band]]:
        """The source's series over ``starts`` and the band of each period that has one."""
        training = self.training_periods
        earlier = [starts[0] - (training - index) * self.period for index in range(training)]
        history = source.series(store, [*earlier, *starts])
        series: Series = {}
        bands: dict[int, Band] = {}
        for index in range(len(starts)):
            position = training + index
            if position in history:
                series[index] = history[position]
            band = self._band([history[i] for i in range(index, position) if i in history])
            if band is not None:
                bands[index] = band
        return series, bands

    def _band(self, training: list[float]) -> Band | None:
        if len(training) < max(2, math.ceil(self.training_periods * MINIMUM_TRAINING_SHARE)):
            return None
        mean = statistics.fmean(training)
        spread = max(statistics.stdev(training), STDDEV_FLOOR_RELATIVE * abs(mean), STDDEV_FLOOR_ABSOLUTE)
        return Band(mean - self.width * spread, mean + self.width * spread)


@dataclass(frozen=True)
class _MetricAlarm:
    source: _MetricStat | _MetricMath
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float | None  # None for an anomaly detection alarm, which has a band instead
    band: _AnomalyBand | None
    comparison: str
    treat_missing_data: str

    def points(self, store: MetricStore, starts: Sequence[float]) -> list[Point | None]:
        """Each period's value and whether it breaches; None where it has no value (or no band)."""
        if self.band is None:
            threshold = self.threshold
            assert threshold is not None  # nosec B101 # an alarm without a band has a Threshold (_metric_alarm)
            compare = _COMPARISONS[self.comparison][0]
            series = self.source.series(store, starts)
            return [
                (series[index], compare(series[index], threshold)) if index in series else None
                for index in range(len(starts))
            ]
        outside = _BAND_COMPARISONS[self.comparison][0]
        series, bands = self.band.evaluate(self.source, store, starts)
        return [
            (series[index], outside(series[index], bands[index]))
            if index in series and index in bands
            else None
            for index in range(len(starts))
        ]

    @property
    def phrase(self) -> str:
        if self.band is None:
            return f"{_COMPARISONS[self.comparison][1]} the threshold ({self.threshold})"
        side = _BAND_COMPARISONS[self.comparison][1]
        return f"{side} the anomaly detection band ({self.band.width} standard deviations)"


def _listing(items: Sequence[float | str]) -> str:
    return f"[{', '.join(str(item) for item in items)}]"


def evaluate_alarm(
    properties: Mapping[str, Any],
    store: MetricStore,
    at: float,
    previous_state: str = INSUFFICIENT_DATA,
) -> Evaluation:
    """The state an AWS::CloudWatch::Alarm (resolved Properties) would be set to at ``at``.

    Periods end at ``at``: the newest is ``[at - Period, at)``. Per "How alarm state is evaluated
    when data is missing", CloudWatch reads an evaluation range longer than EvaluationPeriods
    (here EvaluationPeriods + 2 periods) and then

    * with at least EvaluationPeriods real datapoints in the range, evaluates the most recent
      EvaluationPeriods of them, reaching back over gaps; TreatMissingData is not consulted;
    * with fewer, keeps every real datapoint of the range and fills only the shortfall up to
      EvaluationPeriods with TreatMissingData ("uses missing data points only as few times as
      possible").

    ALARM when at least DatapointsToAlarm of the evaluated datapoints breach, otherwise OK, except
    for ``missing`` and ``ignore``, whose fills are neither breaching nor not: they give
    INSUFFICIENT_DATA (``ignore``: the previous state) when no real datapoint decides, and ALARM
    (``ignore``: the previous state) in the documented premature-alarm case, where every real
    datapoint breaches and the oldest is at least DatapointsToAlarm periods old.
    """
    if previous_state not in ALARM_STATES:
        raise ValueError(f"previous_state must be one of {ALARM_STATES}, got {previous_state!r}")
    alarm = _parse_alarm(properties)
    range_periods = alarm.evaluation_periods + EVALUATION_RANGE_EXTRA_PERIODS
    starts = [at - (range_periods - index) * alarm.period for index in range(range_periods)]
    points = alarm.points(store, starts)
    state, reason = _decide(alarm, points, previous_state)
    return Evaluation(state, [None if point is None else point[0] for point in points], reason)


def _decide(alarm: _MetricAlarm, points: list[Point | None], previous_state: str) -> tuple[str, str]:
    needed, to_alarm = alarm.evaluation_periods, alarm.datapoints_to_alarm
    real_points = [point for point in points if point is not None]
    if len(real_points) >= needed:
        evaluated = real_points[-needed:]
        breaches = sum(breach for _, breach in evaluated)
        return _threshold_state(alarm, breaches, _listing([value for value, _ in evaluated]))

    real = [value for value, _ in real_points]
    fills = needed - len(real)
    breaching = sum(breach for _, breach in real_points)
    treatment = alarm.treat_missing_data
    if treatment in ("breaching", "notBreaching"):
        listing = _listing([*real, *[f"missing ({treatment})"] * fills])
        return _threshold_state(alarm, breaching + fills * (treatment == "breaching"), listing)

    # "missing" and "ignore": the fills count neither way, so only the real datapoints decide.
    if breaching >= to_alarm or breaching < len(real):
        return _threshold_state(alarm, breaching, _listing(real))

    def unresolved(state: str, reason: str) -> tuple[str, str]:
        if treatment == "ignore":
            return previous_state, f"Missing data ignored: keeping {previous_state} ({reason})"
        return state, reason

    if not real:
        return unresolved(
            INSUFFICIENT_DATA,
            f"Insufficient Data: all {len(points)} datapoints of the evaluation range are missing",
        )
    oldest_age = len(points) - next(index for index, point in enumerate(points) if point is not None)
    if oldest_age >= to_alarm:
        return unresolved(
            ALARM,
            f"Threshold Crossed: the only datapoints in the evaluation range {_listing(real)} are "
            f"{alarm.phrase} and the oldest is {oldest_age} periods old, "
            f"at least DatapointsToAlarm ({to_alarm})",
        )
    return unresolved(
        INSUFFICIENT_DATA,
        f"Insufficient Data: the only datapoints {_listing(real)} are {alarm.phrase} but the oldest is "
        f"{oldest_age} periods old, less than DatapointsToAlarm ({to_alarm})",
    )


def _threshold_state(alarm: _MetricAlarm, breaching: int, listing: str) -> tuple[str, str]:
    state = ALARM if breaching >= alarm.datapoints_to_alarm else OK
    return state, (
        f"Threshold Crossed: {breaching} of the evaluated datapoints {listing} were {alarm.phrase} "
        f"({alarm.datapoints_to_alarm} out of the last {alarm.evaluation_periods} needed for ALARM)"
    )


def _parse_alarm(properties: Mapping[str, Any]) -> _MetricAlarm:
    comparison = properties.get("ComparisonOperator")
    if comparison not in _COMPARISONS and comparison not in _BAND_COMPARISONS:
        raise ValueError(
            f"unsupported ComparisonOperator {comparison!r}: only "
            f"{', '.join([*_COMPARISONS, *_BAND_COMPARISONS])} are evaluated"
        )
    banded = comparison in _BAND_COMPARISONS
    if banded != ("ThresholdMetricId" in properties):
        raise ValueError(
            f"ComparisonOperator {comparison} {'needs' if banded else 'cannot have'} a ThresholdMetricId: "
            "only the band operators compare with an ANOMALY_DETECTION_BAND"
        )
    if banded and "Threshold" in properties:
        raise ValueError("an anomaly detection alarm has a ThresholdMetricId, not a Threshold")
    source: _MetricStat | _MetricMath
    if "Metrics" in properties:
        if "MetricName" in properties:
            raise ValueError("an alarm has either MetricName or Metrics, not both")
        source = _MetricMath(properties["Metrics"], properties.get("ThresholdMetricId"))
        period = source.period
    elif banded:
        raise ValueError("an anomaly detection alarm needs Metrics with its ANOMALY_DETECTION_BAND")
    else:
        period = _integer(properties, "Period")
        source = _metric_stat(properties, period)
    evaluation_periods = _integer(properties, "EvaluationPeriods")
    datapoints_to_alarm = _integer(properties, "DatapointsToAlarm", default=evaluation_periods)
    if not 1 <= datapoints_to_alarm <= evaluation_periods:
        raise ValueError(
            f"DatapointsToAlarm ({datapoints_to_alarm}) must be between 1 and EvaluationPeriods "
            f"({evaluation_periods})"
        )
    treatment = properties.get("TreatMissingData", "missing")
    if treatment not in TREAT_MISSING_DATA:
        raise ValueError(f"TreatMissingData must be one of {TREAT_MISSING_DATA}, got {treatment!r}")
    if "AWS/DynamoDB" in source.namespaces:
        # The docs: alarms on AWS/DynamoDB metrics always ignore missing data, whatever is set.
        treatment = "ignore"
    return _MetricAlarm(
        source=source,
        period=period,
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=datapoints_to_alarm,
        threshold=None if banded else _number(properties, "Threshold"),
        band=source.band if isinstance(source, _MetricMath) else None,
        comparison=comparison,
        treat_missing_data=treatment,
    )


def _metric_stat(properties: Mapping[str, Any], period: int) -> _MetricStat:
    for required in ("Namespace", "MetricName"):
        if not properties.get(required):
            raise ValueError(f"metric alarm has no {required}")
    if ("Statistic" in properties) == ("ExtendedStatistic" in properties):
        raise ValueError("a metric alarm needs exactly one of Statistic and ExtendedStatistic")
    dimensions = frozenset(
        (str(dimension["Name"]), str(dimension["Value"])) for dimension in properties.get("Dimensions") or []
    )
    return _MetricStat(
        MetricKey(str(properties["Namespace"]), str(properties["MetricName"]), dimensions),
        period,
        statistic(properties.get("Statistic", properties.get("ExtendedStatistic"))),
    )


def _number(properties: Mapping[str, Any], key: str) -> float:
    if key not in properties:
        raise ValueError(f"alarm has no {key}")
    try:
        return float(properties[key])
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {properties[key]!r}") from None


def _integer(properties: Mapping[str, Any], key: str, default: int | None = None) -> int:
    if key not in properties and default is not None:
        return default
    value = _number(properties, key)
    if not value.is_integer() or value < 1:
        raise ValueError(f"{key} must be a positive whole number, got {properties[key]!r}")
    return int(value)


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ------------------------------------------------------------------------------ metric math

Value = float | Series
Node = Callable[["_MathContext"], Value]

_METRIC_ID = re.compile(r"[a-z][A-Za-z0-9_]*")
_ANOMALY_DETECTION_BAND = re.compile(
    r"\s*ANOMALY_DETECTION_BAND\(\s*(?P<id>[a-z][A-Za-z0-9_]*)\s*(?:,\s*(?P<width>\d+(?:\.\d+)?)\s*)?\)\s*"
)


class _MetricMath:
    """The ``Metrics`` of a metric math alarm: MetricStat queries and expressions over them."""

    def __init__(self, queries: Sequence[Mapping[str, Any]], threshold_metric_id: str | None = None) -> None:
        self._stats: dict[str, _MetricStat] = {}
        expressions: dict[str, str] = {}
        band_expression: str | None = None
        for query in queries:
            query_id = str(query.get("Id", ""))
            if not _METRIC_ID.fullmatch(query_id):
                raise ValueError(f"metric math Id {query_id!r} must start with a lowercase letter")
            if query_id in self._stats or query_id in expressions:
                raise ValueError(f"metric math Id {query_id!r} is used twice")
            if query_id == threshold_metric_id:
                if "Expression" not in query:
                    raise ValueError(f"ThresholdMetricId {query_id!r} must be an ANOMALY_DETECTION_BAND")
                band_expression = str(query["Expression"])
            elif "Expression" in query:
                expressions[query_id] = str(query["Expression"])
            elif "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                self._stats[query_id] = _metric_stat(
                    {
                        "Namespace": metric.get("Namespace"),
                        "MetricName": metric.get("MetricName"),
                        "Dimensions": metric.get("Dimensions"),
                        "Statistic": stat.get("Stat"),
                    },
                    _integer(stat, "Period"),
                )
            else:
                raise ValueError(f"metric math query {query_id!r} has neither Expression nor MetricStat")
        if threshold_metric_id is not None and band_expression is None:
            raise ValueError(
                f"ThresholdMetricId {threshold_metric_id!r} is not the Id of a metric math query"
            )
        periods = {stat.period for stat in self._stats.values()}
        if len(periods) != 1:
            raise ValueError(
                f"a metric math alarm needs its metrics to share one Period, got {sorted(periods)}"
            )
        self.period = periods.pop()
        self.namespaces = {stat.key.namespace for stat in self._stats.values()}
        known_ids = set(self._stats) | set(expressions)
        self._expressions = {
            query_id: _ExpressionParser(text, known_ids).parse() for query_id, text in expressions.items()
        }
        if threshold_metric_id is None:
            self.band = None
            self._returned = self._returned_id(queries, expressions)
            return
        self.band = self._anomaly_band(str(band_expression), known_ids)
        self._returned = self.band.metric_id
        returned = {str(query["Id"]) for query in queries if _is_true(query.get("ReturnData", True))}
        if self._returned not in returned or returned - {self._returned, threshold_metric_id}:
            raise ValueError(
                f"an anomaly detection alarm returns its band and the series {self._returned!r} in it, "
                f"nothing else; got ReturnData for {sorted(returned)}"
            )

    def _anomaly_band(self, expression: str, known_ids: Container[str]) -> _AnomalyBand:
        match = _ANOMALY_DETECTION_BAND.fullmatch(expression)
        if not match:
            raise ValueError(
                f"the ThresholdMetricId expression {expression!r} is not ANOMALY_DETECTION_BAND(id, width)"
            )
        if match["id"] not in known_ids:
            raise ValueError(f"ANOMALY_DETECTION_BAND of unknown metric or expression id {match['id']!r}")
        width = float(match["width"]) if match["width"] else DEFAULT_BAND_WIDTH
        if width <= 0:
            raise ValueError(f"the band width of {expression!r} must be more than 0 standard deviations")
        return _AnomalyBand(match["id"], width, self.period)

    @staticmethod
    def _returned_id(queries: Sequence[Mapping[str, Any]], expressions: Mapping[str, str]) -> str:
        flagged = [str(query["Id"]) for query in queries if _is_true(query.get("ReturnData"))]
        if len(flagged) > 1:
            raise ValueError(f"exactly one metric math query may have ReturnData true, got {flagged}")
        if flagged:
            return flagged[0]
        candidates = [
            str(query["Id"])
            for query in queries
            if str(query.get("Id")) in expressions and "ReturnData" not in query
        ]
        if len(candidates) != 1:
            raise ValueError("no metric math query has ReturnData true, and there is no single expression")
        return candidates[0]

    def series(self, store: MetricStore, starts: Sequence[float]) -> Series:
        def evaluate_query(query_id: str, context: _MathContext) -> Value:
            if query_id in self._stats:
                return self._stats[query_id].series(store, starts)
            return self._expressions[query_id](context)

        result = _MathContext(evaluate_query, len(starts)).lookup(self._returned)
        if not isinstance(result, dict):
            raise ValueError(f"metric math {self._returned!r} gives a single number, not a time series")
        return result


class _MathContext:
    """One evaluation of metric math over a number of periods: each id's value, computed once."""

    def __init__(self, evaluate_query: Callable[[str, _MathContext], Value], periods: int) -> None:
        self.indexes = range(periods)
        self._evaluate_query = evaluate_query
        self._values: dict[str, Value] = {}
        self._in_progress: set[str] = set()

    def lookup(self, query_id: str) -> Value:
        if query_id not in self._values:
            if query_id in self._in_progress:
                raise ValueError(f"metric math expression {query_id!r} refers to itself")
            self._in_progress.add(query_id)
            self._values[query_id] = self._evaluate_query(query_id, self)
            self._in_progress.discard(query_id)
        return self._values[query_id]


def evaluate_math(
    expressions: Mapping[str, str], series: Mapping[str, Series], periods: int
) -> dict[str, Value]:
    """Each metric math expression's value (a series, or a number) over ``periods`` aligned periods.

    ``expressions`` maps ids to expression texts and ``series`` the metrics they may refer to,
    each as period index (0 .. periods - 1) -> value; expressions may refer to each other. The
    operators and functions are those of alarms (see the module docstring); anything else, or an
    unknown id, raises ValueError.
    """
    if clash := set(expressions) & set(series):
        raise ValueError(f"metric math ids used by both a metric and an expression: {sorted(clash)}")
    known_ids = {*expressions, *series}
    nodes = {query_id: _ExpressionParser(text, known_ids).parse() for query_id, text in expressions.items()}

    def evaluate_query(query_id: str, context: _MathContext) -> Value:
        return series[query_id] if query_id in series else nodes[query_id](context)

    context = _MathContext(evaluate_query, periods)
    return {query_id: context.lookup(query_id) for query_id in expressions}


_EXPRESSION_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<symbol>==|!=|<=|>=|&&|\|\||[-+*/^<>!(),\[\]]))"
)

_COMPARISON_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while text[position:].strip():
        match = _EXPRESSION_TOKEN.match(text, position)
        if not match:
            raise ValueError(f"unexpected character {text[position:].strip()[0]!r} in expression {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _ExpressionParser:
    """Recursive descent, loosest first: OR, AND, NOT, comparison, + -, * /, unary minus, ^.

    The docs do not give the precedence; this is the usual one, with ^ binding tighter than
    unary minus (so -2^2 is -4) and right-associative.
    """

    def __init__(self, text: str, known_ids: Container[str]) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._position = 0
        self._known_ids = known_ids

    def parse(self) -> Node:
        if not self._tokens:
            raise ValueError("empty metric math expression")
        node = self._or()
        if self._position < len(self._tokens):
            raise self._error(f"unexpected {self._tokens[self._position][1]!r}")
        return node

    def _error(self, problem: str) -> ValueError:
        return ValueError(f"{problem} in metric math expression {self._text!r}")

    def _peek(self) -> str | None:
        return self._tokens[self._position][1] if self._position < len(self._tokens) else None

    def _accept(self, *texts: str) -> str | None:
        token = self._peek()
        if token in texts:
            self._position += 1
            return token
        return None

    def _expect(self, text: str) -> None:
        if not self._accept(text):
            found = self._peek()
            raise self._error(f"expected {text!r} but found {'the end' if found is None else repr(found)}")

    def _or(self) -> Node:
        node = self._and()
        while self._accept("OR", "||"):
            node = _binary(node, self._and(), lambda a, b: float(bool(a) or bool(b)))
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._accept("AND", "&&"):
            node = _binary(node, self._not(), lambda a, b: float(bool(a) and bool(b)))
        return node

    def _not(self) -> Node:
        if self._accept("NOT", "!"):
            return _unary(self._not(), lambda value: float(value == 0))
        return self._comparison()

    def _comparison(self) -> Node:
        node = self._additive()
        while symbol := self._accept(*_COMPARISON_OPERATORS):
            node = _binary(node, self._additive(), _as_number(_COMPARISON_OPERATORS[symbol]))
        return node

    def _additive(self) -> Node:
        node = self._multiplicative()
        while symbol := self._accept("+", "-"):
            node = _binary(node, self._multiplicative(), operator.add if symbol == "+" else operator.sub)
        return node

    def _multiplicative(self) -> Node:
        node = self._unary()
        while symbol := self._accept("*", "/"):
            node = _binary(node, self._unary(), operator.mul if symbol == "*" else _divide)
        return node

    def _unary(self) -> Node:
        if self._accept("-"):
            return _unary(self._unary(), operator.neg)
        return self._power()

    def _power(self) -> Node:
        base = self._primary()
        if self._accept("^"):
            return _binary(base, self._unary(), _power)
        return base

    def _primary(self) -> Node:
        if self._position >= len(self._tokens):
            raise self._error("unexpected end")
        kind, text = self._tokens[self._position]
        self._position += 1
        if kind == "number":
            number = float(text)
            return lambda _context: number
        if text == "(":
            node = self._or()
            self._expect(")")
            return node
        if kind == "name" and self._peek() == "(":
            return self._call(text)
        if kind == "name" and _METRIC_ID.fullmatch(text):
            if text not in self._known_ids:
                raise self._error(f"unknown metric or expression id {text!r}")
            return lambda context: context.lookup(text)
        if kind == "name":
            raise self._error(f"unknown identifier {text!r}")
        raise self._error(f"unexpected {text!r}")

    def _call(self, function: str) -> Node:
        self._expect("(")
        if function in ("MIN", "MAX") and self._accept("["):
            arguments = self._arguments("]")
            self._expect(")")
        else:
            arguments = self._arguments(")")
        if function == "ABS" and len(arguments) == 1:
            return _unary(arguments[0], abs)
        if function == "FILL" and len(arguments) == 2:
            return _fill(*arguments)
        if function == "IF" and len(arguments) in (2, 3):
            return _if(*arguments)
        if function == "DIFF" and len(arguments) == 1:
            return _diff(arguments[0])
        if function in ("MIN", "MAX") and len(arguments) >= 2:
            return _elementwise(min if function == "MIN" else max, arguments)
        if function in ("ABS", "FILL", "IF", "DIFF", "MIN", "MAX"):
            raise self._error(f"wrong number of arguments ({len(arguments)}) for {function}")
        raise self._error(f"unknown or unsupported function {function!r}")

    def _arguments(self, closing: str) -> list[Node]:
        if self._accept(closing):
            return []
        arguments = [self._or()]
        while self._accept(","):
            arguments.append(self._or())
        self._expect(closing)
        return arguments


def _divide(numerator: float, denominator: float) -> float | None:
    # "If the value of a data point causes a function to attempt to divide by zero, the data
    # point is dropped."
    return None if denominator == 0 else numerator / denominator


def _power(base: float, exponent: float) -> float | None:
    try:
        return math.pow(base, exponent)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None  # 0 ^ -1 or (-8) ^ 0.5 has no real value: no datapoint, as for division


def _combine(left: Value, right: Value, function: Callable[[float, float], float | None]) -> Value:
    if not isinstance(left, dict) and not isinstance(right, dict):
        result = function(left, right)
        if result is None:
            raise ValueError(f"constant metric math operation on {left} and {right} has no value")
        return result
    if isinstance(left, dict) and isinstance(right, dict):
        # "Missing values in a time series are treated as 0" where the other series has a value
        # (basic arithmetic, and the comparison operator example in the docs).
        pairs: dict[int, tuple[float, float]] = {
            index: (left.get(index, 0.0), right.get(index, 0.0)) for index in sorted(left | right)
        }
    elif isinstance(left, dict) and not isinstance(right, dict):
        pairs = {index: (value, right) for index, value in left.items()}
    elif isinstance(right, dict) and not isinstance(left, dict):
        pairs = {index: (left, value) for index, value in right.items()}
    combined: Series = {}
    for index, (a, b) in pairs.items():
        result = function(a, b)
        if result is not None:
            combined[index] = result
    return combined


def _as_number(compare: Callable[[float, float], bool]) -> Callable[[float, float], float]:
    """A comparison as metric math answers it: 1.0 where it holds, 0.0 where it does not."""
    return lambda a, b: float(compare(a, b))


def _binary(left: Node, right: Node, function: Callable[[float, float], float | None]) -> Node:
    return lambda context: _combine(left(context), right(context), function)


def _unary(operand: Node, function: Callable[[float], float]) -> Node:
    def evaluate(context: _MathContext) -> Value:
        value = operand(context)
        if isinstance(value, dict):
            return {index: function(item) for index, item in value.items()}
        return function(value)

    return evaluate


def _fill(series_node: Node, filler_node: Node) -> Node:
    def evaluate(context: _MathContext) -> Value:
        series, filler = series_node(context), filler_node(context)
        if not isinstance(series, dict):
            raise ValueError("FILL needs a time series as its first argument")
        if isinstance(filler, dict):
            raise ValueError("FILL with a time series as the filler is not supported; use a number")
        # Every period of the range gets a value, so FILL of a metric with no data at all is
        # the filler throughout; the docs warn that this pins the newest datapoint.
        return {index: series.get(index, filler) for index in context.indexes}

    return evaluate


def _diff(series_node: Node) -> Node:
    """DIFF: "the difference between each value in the time series and the preceding value from
    that time series", so a gap is bridged and the first value has no datapoint."""

    def evaluate(context: _MathContext) -> Value:
        series = series_node(context)
        if not isinstance(series, dict):
            raise ValueError("DIFF needs a time series as its argument")
        indexes = sorted(series)
        return {index: series[index] - series[previous] for previous, index in pairwise(indexes)}

    return evaluate


def _if(condition_node: Node, true_node: Node, false_node: Node | None = None) -> Node:
    """IF as in "Using IF expressions": per timestamp of a series condition, a missing true
    value counts as 0, and a missing (or omitted) false value drops the datapoint."""

    def evaluate(context: _MathContext) -> Value:
        condition = condition_node(context)
        when_true = true_node(context)
        when_false = None if false_node is None else false_node(context)
        if not isinstance(condition, dict):
            return when_true if condition else ({} if when_false is None else when_false)
        result: Series = {}
        for index, flag in condition.items():
            if flag:
                result[index] = when_true.get(index, 0.0) if isinstance(when_true, dict) else when_true
            elif isinstance(when_false, dict):
                if index in when_false:
                    result[index] = when_false[index]
            elif when_false is not None:
                result[index] = when_false
        return result

    return evaluate


def _elementwise(function: Callable[[list[float]], float], argument_nodes: list[Node]) -> Node:
    def evaluate(context: _MathContext) -> Value:
        arguments = [node(context) for node in argument_nodes]
        scalars = [argument for argument in arguments if not isinstance(argument, dict)]
        series = [argument for argument in arguments if isinstance(argument, dict)]
        if not series:
            return function(scalars)
        indexes = sorted(set().union(*series))
        # Unlike arithmetic, the docs say nothing of missing values here: take those present.
        return {index: function([*scalars, *(s[index] for s in series if index in s)]) for index in indexes}

    return evaluate


# --------------------------------------------------------------------------- composite alarms

Rule = Callable[[Mapping[str, str]], bool]

_RULE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATE_FUNCTIONS = {"ALARM": ALARM, "OK": OK, "INSUFFICIENT_DATA": INSUFFICIENT_DATA}


def evaluate_composite(alarm_rule: str, states: Mapping[str, str]) -> str:
    """ALARM when an AWS::CloudWatch::CompositeAlarm AlarmRule holds for ``states``, else OK.

    ``states`` maps alarm names (or ARNs) to states; a rule may name an alarm by ARN while
    ``states`` only has its name. Keywords are case-insensitive; NOT binds tighter than AND,
    which binds tighter than OR (the docs do not say, this is the usual order).
    """
    rule, _ = _parse_rule(alarm_rule)
    return ALARM if rule(states) else OK


def _parse_rule(text: str) -> tuple[Rule, set[str]]:
    parser = _RuleParser(text)
    return parser.parse(), parser.references


def _alarm_named(reference: str, names: Container[str]) -> str | None:
    if reference in names:
        return reference
    _, separator, name = reference.partition(":alarm:")
    if reference.startswith("arn:") and separator and name in names:
        return name
    return None


def _state_of(states: Mapping[str, str], reference: str) -> str:
    name = _alarm_named(reference, states)
    if name is None:
        raise ValueError(f"AlarmRule refers to unknown alarm {reference!r}")
    return states[name]


def _rule_all(rules: list[Rule], combine: Callable[[list[bool]], bool]) -> Rule:
    # Every operand is evaluated, so an unknown alarm is reported whatever the others are.
    return lambda states: combine([rule(states) for rule in rules])


class _RuleParser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._position = 0
        self.references: set[str] = set()

    def parse(self) -> Rule:
        if not self._text.strip():
            raise ValueError("AlarmRule is empty")
        rule = self._or()
        self._skip_space()
        if self._position < len(self._text):
            raise self._error("unexpected text")
        return rule

    def _error(self, problem: str) -> ValueError:
        return ValueError(f"{problem} at position {self._position} of AlarmRule {self._text!r}")

    def _skip_space(self) -> None:
        while self._position < len(self._text) and self._text[self._position].isspace():
            self._position += 1

    def _word(self) -> str | None:
        self._skip_space()
        match = _RULE_WORD.match(self._text, self._position)
        return match.group().upper() if match else None

    def _keyword(self, keyword: str) -> bool:
        if self._word() == keyword:
            self._position += len(keyword)
            return True
        return False

    def _expect(self, character: str) -> None:
        self._skip_space()
        if not self._text.startswith(character, self._position):
            raise self._error(f"expected {character!r}")
        self._position += 1

    def _or(self) -> Rule:
        rules = [self._and()]
        while self._keyword("OR"):
            rules.append(self._and())
        return rules[0] if len(rules) == 1 else _rule_all(rules, any)

    def _and(self) -> Rule:
        rules = [self._not()]
        while self._keyword("AND"):
            rules.append(self._not())
        return rules[0] if len(rules) == 1 else _rule_all(rules, all)

    def _not(self) -> Rule:
        if self._keyword("NOT"):
            negated = self._not()
            return lambda states: not negated(states)
        return self._primary()

    def _primary(self) -> Rule:
        self._skip_space()
        if self._text.startswith("(", self._position):
            self._position += 1
            rule = self._or()
            self._expect(")")
            return rule
        word = self._word()
        if word is None:
            raise self._error("expected ALARM(...), OK(...), INSUFFICIENT_DATA(...), TRUE, FALSE or '('")
        if word in ("TRUE", "FALSE"):
            self._position += len(word)
            constant = word == "TRUE"
            return lambda _states: constant
        if word not in _STATE_FUNCTIONS:
            raise self._error(f"unknown or unsupported function or keyword {word!r}")
        self._position += len(word)
        self._expect("(")
        name = self._alarm_name()
        self._expect(")")
        self.references.add(name)
        wanted = _STATE_FUNCTIONS[word]
        return lambda states: _state_of(states, name) == wanted

    def _alarm_name(self) -> str:
        self._skip_space()
        if self._text.startswith('"', self._position):
            end = self._text.find('"', self._position + 1)
            if end < 0:
                raise self._error("unterminated quoted alarm name")
            name = self._text[self._position + 1 : end]
            self._position = end + 1
        else:
            end = self._text.find(")", self._position)
            if end < 0:
                raise self._error("expected ')' after the alarm name")
            name = self._text[self._position : end].strip()
            self._position = end
        if not name:
            raise self._error("empty alarm name")
        return name


# ---------------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class StateChange:
    alarm: str
    old_state: str
    new_state: str
    reason: str
    at: float


class AlarmStates:
    """Every alarm's state, moved on one CloudWatch evaluation at a time, composite alarms included.

    Each :meth:`evaluate` judges every metric alarm with its current state as ``previous_state``,
    then every composite alarm, children before parents, on the states of that same moment. Every
    alarm starts in INSUFFICIENT_DATA.
    """

    def __init__(
        self, alarms: Mapping[str, Mapping[str, Any]], composites: Mapping[str, str], store: MetricStore
    ) -> None:
        if clash := set(alarms) & set(composites):
            raise ValueError(f"alarm names used by both a metric and a composite alarm: {sorted(clash)}")
        self._alarms = dict(alarms)
        self._store = store
        names = {*alarms, *composites}
        self._rules: dict[str, Rule] = {}
        children: dict[str, set[str]] = {}
        for name, alarm_rule in composites.items():
            self._rules[name], references = _parse_rule(alarm_rule)
            children[name] = set()
            for reference in references:
                child = _alarm_named(reference, names)
                if child is None:
                    raise ValueError(f"composite alarm {name!r} refers to unknown alarm {reference!r}")
                if child in composites:
                    children[name].add(child)
        self._composite_order = _children_first(children)
        self.states = dict.fromkeys(sorted(names), INSUFFICIENT_DATA)

    def evaluate(self, now: float) -> list[StateChange]:
        """One evaluation round at ``now``: the alarms whose state changed, metric alarms first."""
        changes = []

        def record(name: str, state: str, reason: str) -> None:
            if state != self.states[name]:
                changes.append(StateChange(name, self.states[name], state, reason, now))
                self.states[name] = state

        for name, properties in self._alarms.items():
            evaluation = evaluate_alarm(properties, self._store, now, self.states[name])
            record(name, evaluation.state, evaluation.reason)
        for name in self._composite_order:
            state = ALARM if self._rules[name](self.states) else OK
            record(name, state, f"the alarm rule evaluated to {'TRUE' if state == ALARM else 'FALSE'}")
        return changes


class AlarmTimeline:
    """Steps evaluation through time like CloudWatch does (every `step` seconds, default 60),
    carrying each alarm's state forward (see :class:`AlarmStates`)."""

    def __init__(
        self, alarms: Mapping[str, Mapping[str, Any]], composites: Mapping[str, str], store: MetricStore
    ) -> None:
        self._definitions = (dict(alarms), dict(composites), store)
        self._names = {*alarms, *composites}
        AlarmStates(*self._definitions)  # refuses bad definitions now, not at the first run
        self._transitions: dict[str, list[tuple[float, str]]] = {}

    def run(self, start: float, end: float, step: float = 60) -> dict[str, list[tuple[float, str]]]:
        """Alarm name -> [(time, new_state), ...] for every change; every alarm starts INSUFFICIENT_DATA
        (not listed as a transition). Evaluates at start, start + step, ... up to end inclusive."""
        if step <= 0 or end < start:
            raise ValueError("run needs step > 0 and end >= start")
        states = AlarmStates(*self._definitions)
        transitions: dict[str, list[tuple[float, str]]] = {name: [] for name in self._names}
        # A small epsilon keeps end itself when (end - start) / step lands just below a whole number.
        for index in range(math.floor((end - start) / step + 1e-9) + 1):
            for change in states.evaluate(start + index * step):
                transitions[change.alarm].append((change.at, change.new_state))
        self._transitions = transitions
        return {name: list(changes) for name, changes in transitions.items()}

    def fired(self, name: str) -> bool:
        """Whether ``name`` reached ALARM at least once in the last run."""
        if name not in self._names:
            raise KeyError(f"no alarm named {name!r} in this timeline")
        return any(state == ALARM for _, state in self._transitions.get(name, []))


def _children_first(children: Mapping[str, set[str]]) -> list[str]:
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            # The docs: "the evaluation of composite alarms stops if CloudWatch detects a cycle".
            raise ValueError(f"composite alarms form a cycle: {' -> '.join(cycle)}")
        visiting.append(name)
        for child in sorted(children[name]):
            visit(child)
        visiting.pop()
        order.append(name)

    for name in children:
        visit(name)
    return order
