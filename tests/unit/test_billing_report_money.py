"""The billing report's money, revenue reconciliation, weekly sections and MRR forecast, from seeded
data: what each figure says, and that a figure not measured says why instead of showing 0."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billwatch.billing.stripe_events import STRIPE_EPOCH, Bounds, MalformedEvent, subscription_change
from billwatch.core.config import ConfigError, load_report_settings
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.reporting.forecast import HORIZON_DAYS, MIN_READINGS, forecast
from billwatch.reporting.model import (
    NO_DATA,
    NOT_LISTENING,
    AccountNearLimit,
    Cohort,
    CurrencyMoney,
    DayPurchases,
    Known,
    Missing,
    Money,
    MrrReading,
    NearLimits,
    ReportPeriod,
    RevenueCheck,
)
from billwatch.reporting.renderers import render_console, render_document, render_email, render_slack
from billwatch.reporting.revenue_reconciliation import (
    DriftThreshold,
    InvalidBalanceTransaction,
    gross_by_currency,
)
from billwatch.reporting.scoring import build_report
from devtools import stripe_events as se
from tests.unit.test_billing_report import END, START, healthy_day

DAY = dt.timedelta(days=1)
CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")


def usd(**changes: object) -> CurrencyMoney:
    money = CurrencyMoney(
        "USD",
        paid=Known(1900.0),
        refunded=Known(20.0),
        failed=Known(35.5),
        paid_by_plan=Known({"pro": 1500.0, "starter": 400.0}),
        mrr_by_plan=Known({"pro": 9000.0, "starter": 3500.0}),
    )
    return dataclasses.replace(money, **changes)


def readings(values: list[float], start: dt.datetime = END - 90 * DAY) -> list[MrrReading]:
    return [MrrReading(start + n * DAY, value) for n, value in enumerate(values)]


def sections(report) -> dict[str, list[str]]:
    return {section["heading"]: section["lines"] for section in render_document(report)["sections"]}


# ------------------------------------------------------------------------------------- money


def test_money_is_listed_per_currency_with_refunds_failures_and_plans() -> None:
    report = build_report(healthy_day(money=Known(Money((usd(),), listening=True))))

    assert sections(report)["Money"] == [
        "USD: paid 1,900.00, refunded 20.00, failed invoices 35.50",
        "USD paid by plan: pro 1,500.00, starter 400.00",
        "USD MRR by plan: pro 9,000.00, starter 3,500.00",
    ]


def test_money_not_measured_says_why_and_never_zero() -> None:
    unmeasured = usd(
        refunded=Missing(NOT_LISTENING),
        paid_by_plan=Missing(NOT_LISTENING),
        mrr_by_plan=Missing("no gauge reading in the last hour"),
    )
    report = build_report(healthy_day(money=Known(Money((unmeasured,), listening=False))))

    lines = sections(report)["Money"]
    assert lines[0] == f"USD: paid 1,900.00, refunded {NOT_LISTENING}, failed invoices 35.50"
    assert lines[2] == "USD MRR by plan: no gauge reading in the last hour"
    assert unmeasured.recorded_net == Missing(NOT_LISTENING)
    nothing = build_report(healthy_day(money=Missing(NOT_LISTENING)))
    assert sections(nothing)["Money"] == [NOT_LISTENING]
    assert "0.00" not in render_console(nothing).split("Money")[1].split("Incidents")[0]


def test_a_currency_billwatch_counted_nothing_in_took_in_nothing_only_while_it_listened() -> None:
    assert Money((usd(),), listening=True).recorded_net("EUR") == Known(0.0)
    assert Money((usd(),), listening=False).recorded_net("EUR") == Missing(NOT_LISTENING)
    assert Money((usd(),), listening=True).recorded_net("USD") == Known(1880.0)


def test_the_weekly_report_lists_purchases_per_day_and_the_days_not_measured() -> None:
    days = (
        DayPurchases(START, Known({"USD": 300.0, "EUR": 20.0})),
        DayPurchases(START + DAY, Known({"USD": 0.0})),
        DayPurchases(START + 2 * DAY, Missing(NOT_LISTENING)),
    )
    report = build_report(healthy_day(purchases_by_day=Known(days)), ReportPeriod.WEEKLY)

    assert sections(report)["Purchases per day"] == [
        "2026-11-30: EUR 20.00, USD 300.00",
        "2026-12-01: USD 0.00",
        f"2026-12-02: {NOT_LISTENING}",
    ]


# --------------------------------------------------------------------- revenue reconciliation


def test_the_reconciliation_lists_stripe_gross_recorded_and_drift_and_acts_on_drift() -> None:
    checks = (
        RevenueCheck("EUR", 250.0, Missing(NOT_LISTENING), Missing(NOT_LISTENING), over_threshold=False),
        RevenueCheck("USD", 1900.0, Known(1850.0), Known(-50.0), over_threshold=True),
        RevenueCheck("GBP", 100.0, Known(100.0), Known(0.0), over_threshold=False),
    )
    report = build_report(healthy_day(revenue_checks=Known(checks)))

    assert sections(report)["Revenue reconciliation"] == [
        f"EUR: Stripe 250.00, not compared: {NOT_LISTENING}",
        "USD: Stripe 1,900.00, recorded 1,850.00, drift -50.00 (-2.63%): over the threshold",
        "GBP: Stripe 100.00, recorded 100.00, drift +0.00 (+0.00%): within the threshold",
    ]
    (drift,) = [item for item in report.action_items if "Revenue drift" in item.what]
    assert (
        drift.what == "Revenue drift USD: billwatch recorded -50.00 against Stripe's gross volume of 1,900.00"
    )
    assert drift.runbook == "runbooks/reconciliation.md"


def test_a_reconciliation_that_could_not_run_says_why() -> None:
    report = build_report(
        healthy_day(revenue_checks=Missing("no Stripe key (StripeApiKeySecretArn is empty)"))
    )
    assert sections(report)["Revenue reconciliation"] == [
        "not compared: no Stripe key (StripeApiKeySecretArn is empty)"
    ]
    quiet = build_report(healthy_day(revenue_checks=Known(())))
    assert sections(quiet)["Revenue reconciliation"] == ["no money moved in Stripe or billwatch"]
    # A daily report without the reconciliation wired in has no such section at all.
    assert "Revenue reconciliation" not in sections(build_report(healthy_day()))


@pytest.mark.parametrize(
    ("drift", "gross", "over"),
    [
        (-19.0, 1900.0, False),  # 1 % of 1,900 is 19: not above it
        (-19.01, 1900.0, True),
        (0.99, 10.0, False),  # 9.9 % of a quiet day, but under the minimum of 1
        (1.01, 10.0, True),
        (5.0, 0.0, True),  # billwatch recorded money Stripe does not have
    ],
)
def test_a_drift_counts_above_both_the_share_and_the_minimum(drift: float, gross: float, over: bool) -> None:
    assert DriftThreshold(percent=1.0, minimum=1).exceeded(drift, gross) is over


def test_charges_settled_in_another_currency_count_in_the_charges_own() -> None:
    start = 1_800_000_000
    transactions = [  # 10 EUR charged, settled as 10.78 USD; 2 EUR refunded at 10.80 USD / 10 EUR
        se.balance_transaction(amount=1078, created=start, charged=(1000, "eur")),
        se.balance_transaction(amount=-216, created=start + 1, type="refund", charged=(200, "eur")),
        se.balance_transaction(amount=500, created=start + 2),
    ]
    assert transactions[0]["currency"] == "usd" and transactions[0]["exchange_rate"] == 1.078
    assert gross_by_currency(transactions, start, start + 86400) == {"eur": 800, "usd": 500}


def test_balance_transactions_add_up_to_gross_volume_before_fees() -> None:
    start = 1_800_000_000
    transactions = [
        se.balance_transaction(amount=1999, created=start),
        {**se.balance_transaction(amount=500, created=start + 1, type="payment"), "fee": 45, "net": 455},
        se.balance_transaction(amount=-1000, created=start + 2, type="refund"),
        se.balance_transaction(amount=-99, created=start + 3, type="payment_refund"),
        se.balance_transaction(amount=-700, created=start + 4, type="payout"),  # not a purchase
        se.balance_transaction(amount=-30, created=start + 5, type="stripe_fee"),
        se.balance_transaction(amount=5000, created=start + 6, currency="jpy"),
    ]
    assert gross_by_currency(transactions, start, start + 86400) == {"usd": 1400, "jpy": 5000}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"source": "ch_1"}, "source is not an expanded charge"),  # not expanded
        ({"source": None}, "source is not an expanded charge"),
        ({"type": "refund"}, "source is not an expanded refund"),  # a charge's source
        ({"source": {"object": "charge", "amount_captured": "1999", "currency": "usd"}}, "source's amount_c"),
        ({"source": {"object": "charge", "amount_captured": True, "currency": "usd"}}, "source's amount_c"),
        ({"source": {"object": "charge", "amount_captured": -5, "currency": "usd"}}, "source's amount_c"),
        ({"source": {"object": "charge", "amount_captured": 10**13, "currency": "usd"}}, "from 0 to"),
        ({"source": {"object": "refund", "currency": "usd"}, "type": "refund"}, "source's amount is not"),
        (
            {"source": {"object": "charge", "amount_captured": 1, "currency": "US$"}},
            "currency is not a three",
        ),
        (
            {"source": {"object": "charge", "amount_captured": 1}},
            "source's currency is not a three-letter code",
        ),
        ({"created": 1_700_000_000}, "created is outside the window"),
        ({"type": None}, "type is not a Stripe type"),
        ({"type": "charge; drop"}, "type is not a Stripe type"),
    ],
)
def test_a_balance_transaction_of_the_wrong_shape_stops_the_comparison(change: dict, problem: str) -> None:
    start = 1_800_000_000
    transaction = {**se.balance_transaction(amount=1999, created=start), **change}
    with pytest.raises(InvalidBalanceTransaction, match=problem) as refused:
        gross_by_currency([transaction], start, start + 86400)
    assert str(refused.value).startswith("balance transaction 0: ")


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=30))
def test_charges_less_refunds_of_the_same_amounts_net_to_nothing(amounts: list[int]) -> None:
    start = 1_800_000_000
    transactions = [
        se.balance_transaction(amount=a, created=start, id=f"txn_{n}") for n, a in enumerate(amounts)
    ]
    transactions += [
        se.balance_transaction(amount=-a, created=start, type="refund", id=f"txn_r{n}")
        for n, a in enumerate(amounts)
    ]
    assert gross_by_currency(transactions, start, start + 1) == ({"usd": 0} if amounts else {})


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REVENUE_DRIFT_PERCENT": "0"}, "REVENUE_DRIFT_PERCENT must be a percentage above 0"),
        ({"REVENUE_DRIFT_PERCENT": "101"}, "REVENUE_DRIFT_PERCENT must be a percentage above 0"),
        ({"REVENUE_DRIFT_PERCENT": "1%"}, "REVENUE_DRIFT_PERCENT must be a percentage"),
        ({"REVENUE_DRIFT_MINIMUM": "-1"}, "REVENUE_DRIFT_MINIMUM must be at least 0"),
        ({"REVENUE_DRIFT_MINIMUM": "1.5"}, "REVENUE_DRIFT_MINIMUM must be an integer"),
    ],
)
def test_a_bad_drift_threshold_names_itself(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_report_settings({"STAGE": "test", **env})


def test_the_drift_threshold_defaults_to_one_percent_and_one_unit() -> None:
    settings = load_report_settings({"STAGE": "test"})
    assert (settings.revenue_drift_percent, settings.revenue_drift_minimum) == (1.0, 1)
    tuned = load_report_settings(
        {"STAGE": "test", "REVENUE_DRIFT_PERCENT": "0.5", "REVENUE_DRIFT_MINIMUM": "10"}
    )
    assert (tuned.revenue_drift_percent, tuned.revenue_drift_minimum) == (0.5, 10)


# ------------------------------------------------------------------------- the weekly sections


def test_the_weekly_report_lists_the_accounts_near_their_limits_highest_first() -> None:
    near = NearLimits(
        (AccountNearLimit("acct_b", "exports", 12, 10), AccountNearLimit("acct_a", "api_calls", 850, 1000)),
        total=3,
        shown=2,
    )
    report = build_report(healthy_day(near_limits=Known(near)), ReportPeriod.WEEKLY)

    assert sections(report)["Accounts near or over their limits"] == [
        "acct_b exports: 12 of 10 (120%)",
        "acct_a api_calls: 850 of 1000 (85%)",
        "1 more not shown (the top 2)",
    ]


def test_the_cohort_table_lists_each_month_started_and_still_paying() -> None:
    cohorts = (Cohort("2026-10", 4, 3), Cohort("2026-11", 2, 2))
    report = build_report(healthy_day(cohorts=Known(cohorts)), ReportPeriod.WEEKLY)

    assert sections(report)["Cohort retention"] == [
        "2026-10: 4 started, 3 still paying (75%)",
        "2026-11: 2 started, 2 still paying (100%)",
    ]
    unread = build_report(healthy_day(cohorts=Missing("the billing table could not be read (ClientError)")))
    assert sections(unread)["Cohort retention"] == ["the billing table could not be read (ClientError)"]


def test_a_linear_mrr_history_forecasts_exactly_with_no_error() -> None:
    # 90 days growing by 10 a day from 1,000: the last reading is 1,890, the day before the end.
    predicted = forecast("USD", readings([1000.0 + 10 * n for n in range(90)]), END)

    assert predicted.readings == 90
    assert predicted.months_ahead == tuple(Known(pytest.approx(1900.0 + 10 * days)) for days in HORIZON_DAYS)
    assert predicted.backtest_error == Known(pytest.approx(0.0, abs=1e-12))
    assert predicted.last_reading == END - DAY


def test_the_horizon_is_measured_from_the_reports_end_not_the_last_reading() -> None:
    # The last reading's day is 6 days before the end (still fresh): 30 days ahead is 36 after it.
    predicted = forecast("USD", readings([1000.0 + 10 * n for n in range(60)], END - 65 * DAY), END)
    assert predicted.months_ahead[0] == Known(pytest.approx(1590.0 + 10 * 36))


def test_readings_that_stopped_long_ago_have_no_forecast_and_say_when() -> None:
    # The review's case: 30 readings growing 100 a day, the last 60 days before the end.
    stale = readings([1000.0 + 100 * n for n in range(30)], END - 90 * DAY)
    predicted = forecast("USD", stale, END)
    reason = "the last MRR reading is more than 7 days before the report's end"
    assert predicted.months_ahead == (Missing(reason),) * 3 and predicted.backtest_error == Missing(reason)

    report = build_report(healthy_day(mrr_history=Known({"USD": stale})), ReportPeriod.WEEKLY)
    assert sections(report)["MRR forecast"][1] == (
        f"USD: no forecast ({reason}; last reading {stale[-1].day:%Y-%m-%d})"
    )


@given(
    st.floats(min_value=-50, max_value=50),
    st.floats(min_value=5_000, max_value=100_000),
    st.integers(min_value=MIN_READINGS, max_value=90),
)
def test_any_straight_line_is_forecast_exactly(slope: float, intercept: float, days: int) -> None:
    predicted = forecast("USD", readings([intercept + slope * n for n in range(days)], END - days * DAY), END)

    assert predicted.months_ahead == tuple(
        Known(pytest.approx(max(0.0, intercept + slope * (days + ahead)), abs=1e-6)) for ahead in HORIZON_DAYS
    )
    assert predicted.backtest_error == Known(pytest.approx(0.0, abs=1e-9))


def test_the_backtest_error_is_the_mape_of_the_last_third() -> None:
    # Flat at 100 for 60 days, then 110 for 30: a line fitted on the flat part forecasts 100 where
    # 110 was read, an error of 10 / 110 each day.
    predicted = forecast("USD", readings([100.0] * 60 + [110.0] * 30), END)
    assert predicted.backtest_error == Known(pytest.approx(10 / 110))


def test_days_without_a_reading_are_left_out_not_read_as_zero() -> None:
    every_other_day = [r for n, r in enumerate(readings([500.0 + 2 * n for n in range(90)])) if n % 2 == 0]
    predicted = forecast("EUR", every_other_day, END)
    assert predicted.readings == 45
    assert predicted.months_ahead[0] == Known(pytest.approx(500.0 + 2 * 90 + 2 * 30))


def test_a_falling_line_never_forecasts_negative_mrr() -> None:
    predicted = forecast("USD", readings([900.0 - 10 * n for n in range(60)], END - 60 * DAY), END)
    assert predicted.months_ahead[-1] == Known(0.0)


def test_too_little_history_has_no_forecast_and_says_so() -> None:
    predicted = forecast("USD", readings([1000.0] * (MIN_READINGS - 1)), END)
    reason = f"{MIN_READINGS - 1} days of MRR readings, a forecast needs {MIN_READINGS}"
    assert predicted.months_ahead == (Missing(reason),) * 3 and predicted.backtest_error == Missing(reason)

    report = build_report(
        healthy_day(mrr_history=Known({"USD": readings([1000.0] * 5)})), ReportPeriod.WEEKLY
    )
    lines = sections(report)["MRR forecast"]
    assert lines[0].startswith("Method: a least-squares line through the daily MRR of the last 90 days")
    assert lines[1] == (
        "USD: no forecast (5 days of MRR readings, a forecast needs 28; "
        f"last reading {END - 86 * DAY:%Y-%m-%d})"
    )


def test_a_forecast_is_stated_with_its_method_and_error() -> None:
    history = {"USD": readings([1000.0 + 10 * n for n in range(90)])}
    report = build_report(healthy_day(mrr_history=Known(history)), ReportPeriod.WEEKLY)

    assert sections(report)["MRR forecast"][1] == (
        "USD: 30 days 2,200.00, 60 days 2,500.00, 90 days 2,800.00 (90 days of readings; "
        f"last reading {END - DAY:%Y-%m-%d}; backtest MAPE 0.0 %)"
    )


def test_every_rendering_carries_the_new_sections() -> None:
    data = healthy_day(
        money=Known(Money((usd(),), listening=True)),
        purchases_by_day=Known((DayPurchases(START, Missing(NO_DATA)),)),
        revenue_checks=Known((RevenueCheck("USD", 1900.0, Known(1880.0), Known(-20.0), True),)),
        near_limits=Known(NearLimits((AccountNearLimit("acct_a", "exports", 9, 10),), 1, 20)),
        cohorts=Known((Cohort("2026-11", 2, 1),)),
        mrr_history=Known({"USD": readings([1000.0] * 30, END - 30 * DAY)}),
    )
    report = build_report(data, ReportPeriod.WEEKLY)
    headings = (
        "Money",
        "Purchases per day",
        "Revenue reconciliation",
        "Accounts near or over their limits",
        "Cohort retention",
        "MRR forecast",
    )
    slack = render_slack(report)
    slack_headings = [b["text"]["text"].split("\n")[0] for b in slack["blocks"][1:-1]]
    email = render_email(report)
    for heading in headings:
        assert heading in sections(report)
        assert f"*{heading}*" in slack_headings
        assert f"<h3>{heading}</h3>" in email.html
        assert f"\n{heading}\n" in render_console(report)
    assert "acct_a exports: 9 of 10 (90%)" in email.text


# ------------------------------------------------------------------- the subscription's start


def test_a_subscription_keeps_its_start_date_for_the_cohorts() -> None:
    subscription = se.subscription(id="sub_1", customer="cus_1", created=1_780_000_000)
    change, _ = subscription_change("evt_1", 1_780_000_000, 0, subscription, CATALOG, Bounds(1_780_000_100))
    assert change.fields["subscription_started_at"] == 1_780_000_000


@pytest.mark.parametrize(
    ("start_date", "problem"),
    [
        ("1780000000", "data.object.start_date must be an integer or null"),
        (STRIPE_EPOCH - 1, "data.object.start_date is .* outside the plausible range"),
        (1_780_000_100 + 7200, "data.object.start_date is .* outside the plausible range"),
    ],
)
def test_a_start_date_that_is_no_moment_is_refused_by_name(start_date: object, problem: str) -> None:
    subscription = {
        **se.subscription(id="sub_1", customer="cus_1", created=1_780_000_000),
        "start_date": start_date,
    }
    with pytest.raises(MalformedEvent, match=problem):
        subscription_change("evt_1", 1_780_000_000, 0, subscription, CATALOG, Bounds(1_780_000_100))
