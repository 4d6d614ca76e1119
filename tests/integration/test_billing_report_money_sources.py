"""The report's money, weekly sections and revenue reconciliation from real parts: CloudWatch and
DynamoDB on moto, the Stripe API on a local HTTP server (tests.support.FakeStripeApi)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billwatch.billing.stripe_api import StripeApi, StripeErrorCode, configured_api_key
from billwatch.billing.stripe_events import MAX_AMOUNT
from billwatch.core.config import load_settings
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import BillingAccount, bind_billing_table
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_policy import QuotaPolicy
from billwatch.reporting.accounts import TOP_NEAR_LIMITS, AccountsReport
from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
from billwatch.reporting.model import (
    NOT_LISTENING,
    AccountNearLimit,
    Cohort,
    CurrencyMoney,
    Known,
    Missing,
    Money,
    ReportPeriod,
    RevenueCheck,
    report_window,
)
from billwatch.reporting.revenue_reconciliation import (
    NO_STRIPE_KEY,
    NOT_FROM_START,
    DriftThreshold,
    RevenueReconciler,
)
from billwatch.reporting.scoring import build_report
from devtools import stripe_events as se
from tests.integration.test_billing_report_sources import END, NAMESPACE, START, cloudwatch, put, put_gauges
from tests.scenarios import DynamoDBOutage

__all__ = ["cloudwatch"]  # the fixture, imported for these tests

WEEK_START, _ = report_window(ReportPeriod.WEEKLY, END)
START_SECOND, END_SECOND = int(START.timestamp()), int(END.timestamp())
THRESHOLD = DriftThreshold(percent=1.0, minimum=1)


def source(client: Any) -> CloudWatchReportSource:
    return CloudWatchReportSource(client, NAMESPACE, stage="test")


def put_money(
    client: Any, metric: Metric, amount: float, currency: str, tier: str, hours_ago: float = 2
) -> None:
    """A money point the way MetricsRecorder publishes it: [service], [service, Currency], and both labels."""
    put(client, metric.value, [amount], hours_ago=hours_ago)
    put(client, metric.value, [amount], hours_ago=hours_ago, Currency=currency)
    put(client, metric.value, [amount], hours_ago=hours_ago, Currency=currency, Tier=tier)


# ------------------------------------------------------------------------------------- money


def test_money_per_currency_and_plan_from_cloudwatch(cloudwatch) -> None:
    put(cloudwatch, Metric.WEBHOOK_RECEIVED.value, [40.0])
    put_money(cloudwatch, Metric.PAYMENT_AMOUNT, 1500.0, "USD", "PRO")
    put_money(cloudwatch, Metric.PAYMENT_AMOUNT, 400.0, "USD", "FREE", hours_ago=5)
    put_money(cloudwatch, Metric.PAYMENT_AMOUNT, 250.5, "EUR", "PRO")
    put_money(cloudwatch, Metric.REFUND_AMOUNT, 20.0, "USD", "PRO")
    put_money(cloudwatch, Metric.PAYMENT_FAILED_AMOUNT, 35.0, "EUR", "PRO")
    put_money(cloudwatch, Metric.PAYMENT_AMOUNT, 99.0, "USD", "PRO", hours_ago=30)  # the day before
    put_gauges(cloudwatch, paying=lambda hour: 10, usd=lambda hour: 12_500)
    for hour in range(24):
        put(
            cloudwatch, Metric.PLAN_MRR.value, [9000.0], hours_ago=24 - hour - 0.1, Currency="USD", Tier="PRO"
        )

    money = source(cloudwatch).read(START, END).money

    assert money == Known(
        Money(
            (
                CurrencyMoney("EUR", Known(250.5), Known(0.0), Known(35.0), Known({"PRO": 250.5}), Known({})),
                CurrencyMoney(
                    "USD",
                    paid=Known(1900.0),
                    refunded=Known(20.0),
                    failed=Known(0.0),  # billwatch listened all day and counted no failed payment
                    paid_by_plan=Known({"FREE": 400.0, "PRO": 1500.0}),
                    mrr_by_plan=Known({"PRO": 9000.0}),
                ),
            ),
            listening=True,
        )
    )


def test_a_day_billwatch_did_not_listen_is_missing_not_zero(cloudwatch) -> None:
    assert source(cloudwatch).read(START, END).money == Missing(NOT_LISTENING)
    assert source(cloudwatch).read(START, END).ran_whole_window is False  # no probe reading either

    put_money(cloudwatch, Metric.PAYMENT_AMOUNT, 50.0, "USD", "PRO")  # e.g. a reconciliation replay
    (usd,) = source(cloudwatch).read(START, END).money.value.by_currency
    assert usd.paid == Known(50.0)
    assert usd.refunded == Missing(NOT_LISTENING) and usd.failed == Missing(NOT_LISTENING)
    assert usd.mrr_by_plan == Missing("no data")  # the probe did not run either


def test_the_weekly_report_reads_purchases_per_day(cloudwatch) -> None:
    def midday(day: int) -> float:
        return (7 - day) * 24 - 12

    for day in (0, 1, 3, 4, 5, 6):
        put(cloudwatch, Metric.WEBHOOK_RECEIVED.value, [10.0], hours_ago=midday(day))
    put(cloudwatch, Metric.PAYMENT_AMOUNT.value, [300.0], hours_ago=midday(0), Currency="USD")
    put(cloudwatch, Metric.PAYMENT_AMOUNT.value, [20.0], hours_ago=midday(3), Currency="EUR")

    data = source(cloudwatch).read(WEEK_START, END, ReportPeriod.WEEKLY)

    days = data.purchases_by_day.value
    assert [day.start for day in days] == [WEEK_START + dt.timedelta(days=n) for n in range(7)]
    assert days[0].paid == Known({"EUR": 0.0, "USD": 300.0})
    assert days[1].paid == Known({"EUR": 0.0, "USD": 0.0})  # webhooks, no payment: nothing was paid
    assert days[2].paid == Missing(NOT_LISTENING)  # no webhook at all: not measured
    assert days[3].paid == Known({"EUR": 20.0, "USD": 0.0})
    assert source(cloudwatch).read(START, END).purchases_by_day is None  # the daily report has none


def test_a_day_the_probe_read_no_mrr_in_a_currency_is_a_reading_of_zero(cloudwatch) -> None:
    # EUR subscriptions all ended 10 days ago: the probe kept reading the gauges, with no EUR MRR.
    for days_ago in range(40, 0, -1):
        put(cloudwatch, Metric.PAYING_SUBSCRIPTIONS.value, [3.0], hours_ago=24 * days_ago - 1)
        if days_ago > 10:
            put(cloudwatch, Metric.MRR.value, [500.0 + days_ago], hours_ago=24 * days_ago - 1, Currency="EUR")

    data = source(cloudwatch).read(WEEK_START, END, ReportPeriod.WEEKLY)

    eur = data.mrr_history.value["EUR"]
    assert len(eur) == 40 and [reading.mrr for reading in eur[-11:]] == [511.0] + [0.0] * 10
    (forecast,) = build_report(data, ReportPeriod.WEEKLY).forecasts.value
    assert forecast.last_reading == eur[-1].day and forecast.months_ahead[0] == Known(0.0)


def test_the_weekly_report_forecasts_mrr_from_its_daily_readings(cloudwatch) -> None:
    # 60 days of readings growing by 5 a day, one day's readings lost (the probe did not run).
    for days_ago in range(60, 0, -1):
        if days_ago != 20:
            put(
                cloudwatch,
                Metric.MRR.value,
                [1000.0 - 5 * days_ago] * 2,
                hours_ago=24 * days_ago - 1,
                Currency="USD",
            )

    data = source(cloudwatch).read(WEEK_START, END, ReportPeriod.WEEKLY)
    report = build_report(data, ReportPeriod.WEEKLY)

    assert [reading.mrr for reading in data.mrr_history.value["USD"]][:2] == [700.0, 705.0]
    (usd,) = report.forecasts.value
    assert usd.readings == 59
    # From the report's end, a day after the last reading's.
    assert usd.months_ahead == tuple(Known(pytest.approx(1000.0 + 5 * days)) for days in (30, 60, 90))
    assert usd.backtest_error == Known(pytest.approx(0.0, abs=1e-9))


# ------------------------------------------------------------------------ revenue reconciliation


def recorded(usd_net: float | None = None, *, listening: bool = True) -> Known[Money]:
    currencies = ()
    if usd_net is not None:
        currencies = (CurrencyMoney("USD", Known(usd_net), Known(0.0), Known(0.0), Known({}), Known({})),)
    return Known(Money(currencies, listening=listening))


@pytest.fixture
def reconciler(stripe_api, metrics) -> RevenueReconciler:
    recorder = MetricsRecorder(NAMESPACE, "billwatch")

    def count(code: StripeErrorCode) -> None:
        recorder.add(Metric.STRIPE_API_ERROR, Code=code.value)

    api = StripeApi(lambda: "rk_test_report", stripe_api.url, count, max_network_retries=0)
    reconciler = RevenueReconciler(api, THRESHOLD, recorder)
    reconciler.recorder = recorder  # flushed by the test, as the job flushes it
    return reconciler


def charges(stripe_api, *amounts: int, currency: str = "usd", kind: str = "charge") -> None:
    stripe_api.balance_transactions += [
        se.balance_transaction(amount=amount, created=START_SECOND + 60 * n, currency=currency, type=kind)
        for n, amount in enumerate(amounts)
    ]


def test_a_day_that_matches_stripe_is_reconciled_without_drift(reconciler, stripe_api, metrics) -> None:
    charges(stripe_api, 150_000, 40_000)
    charges(stripe_api, -2_000, kind="refund")
    # Outside the window: the day before, and the report's own minute.
    stripe_api.balance_transactions.append(se.balance_transaction(amount=999, created=START_SECOND - 1))
    stripe_api.balance_transactions.append(se.balance_transaction(amount=999, created=END_SECOND))

    checks = reconciler.check(START, END, recorded(1880.0), ran_whole_window=True)
    reconciler.recorder.flush()

    assert checks == Known((RevenueCheck("USD", 1880.0, Known(1880.0), Known(0.0), over_threshold=False),))
    assert metrics.total("RevenueReconciled", Currency="USD") == 1
    assert metrics.total("RevenueDrift") == 0
    query = next(path for path, _ in stripe_api.requests if path.startswith("/v1/balance_transactions"))
    assert f"created%5Bgte%5D={START_SECOND}" in query and f"created%5Blt%5D={END_SECOND}" in query


@pytest.mark.parametrize(
    ("recorded_usd", "drifted"), [(1881.0, False), (1862.0, False), (1861.0, True), (1700.0, True)]
)
def test_drift_over_the_threshold_is_counted(reconciler, stripe_api, metrics, recorded_usd, drifted) -> None:
    charges(stripe_api, 188_000)  # 1 % of 1,880 is 18.80

    (check,) = reconciler.check(START, END, recorded(recorded_usd), ran_whole_window=True).value
    reconciler.recorder.flush()

    assert check.drift == Known(pytest.approx(recorded_usd - 1880.0))
    assert check.over_threshold is drifted
    assert metrics.total("RevenueDrift", Currency="USD") == (1 if drifted else 0)
    assert metrics.total("RevenueDrift") == (1 if drifted else 0)
    assert metrics.total("RevenueReconciled") == 1


def test_a_currency_only_one_side_knows_is_drift(reconciler, stripe_api, metrics) -> None:
    charges(stripe_api, 5_000, currency="eur")  # billwatch listened and recorded no EUR at all

    checks = reconciler.check(START, END, recorded(12.0), ran_whole_window=True).value
    reconciler.recorder.flush()

    assert [(c.currency, c.stripe_gross, c.recorded, c.over_threshold) for c in checks] == [
        ("EUR", 50.0, Known(0.0), True),
        ("USD", 0.0, Known(12.0), True),
    ]
    assert (
        metrics.total("RevenueDrift", Currency="EUR") == 1
        and metrics.total("RevenueDrift", Currency="USD") == 1
    )


def test_every_page_of_balance_transactions_is_counted(reconciler, stripe_api) -> None:
    charges(stripe_api, *([100] * 250))  # three pages of 100

    (check,) = reconciler.check(START, END, recorded(250.0), ran_whole_window=True).value

    assert check.stripe_gross == 250.0 and check.drift == Known(0.0)
    pages = [path for path, _ in stripe_api.requests if path.startswith("/v1/balance_transactions")]
    assert len(pages) == 3 and "starting_after=" in pages[-1]


def test_without_a_stripe_key_nothing_is_compared(metrics) -> None:
    recorder = MetricsRecorder(NAMESPACE, "billwatch")
    checks = RevenueReconciler(None, THRESHOLD, recorder).check(
        START, END, recorded(10.0), ran_whole_window=True
    )
    recorder.flush()

    assert checks == Missing(NO_STRIPE_KEY)
    assert metrics.total("RevenueReconciled") == 0


def test_stripe_failing_leaves_the_day_uncompared_and_counts_the_error(
    reconciler, stripe_api, metrics
) -> None:
    stripe_api.failing_paths["/v1/balance_transactions"] = (500, {"type": "api_error", "message": "down"})

    checks = reconciler.check(START, END, recorded(10.0), ran_whole_window=True)
    reconciler.recorder.flush()

    assert checks == Missing("Stripe could not be read (api_error)")
    assert metrics.total("StripeApiError", Code="api_error") == 1
    assert metrics.total("RevenueReconciled") == 0 and metrics.total("RevenueDrift") == 0


def test_an_unreadable_stripe_key_leaves_the_day_uncompared(aws_credentials, metrics) -> None:
    settings = load_settings(
        {"BILLING_TABLE_NAME": "b", "IDEMPOTENCY_TABLE_NAME": "i", "STRIPE_API_KEY_SECRET_ID": "gone"},
        webhook_secret=False,
    )
    with mock_aws():
        api = StripeApi(configured_api_key(settings), "http://127.0.0.1:9", max_network_retries=0)
        checks = RevenueReconciler(api, THRESHOLD, MetricsRecorder(NAMESPACE, "billwatch")).check(
            START, END, recorded(10.0), ran_whole_window=True
        )

    assert checks == Missing("the Stripe key could not be read (STRIPE_API_KEY_SECRET_ID)")


def test_a_balance_transaction_of_the_wrong_shape_leaves_the_day_uncompared(
    reconciler, stripe_api, metrics
) -> None:
    charges(stripe_api, 100)
    stripe_api.balance_transactions[0]["source"]["amount_captured"] = "100"

    checks = reconciler.check(START, END, recorded(1.0), ran_whole_window=True)
    reconciler.recorder.flush()

    assert checks == Missing(
        "Stripe sent a balance transaction that is not valid "
        f"(balance transaction 0: source's amount_captured is not an amount from 0 to {MAX_AMOUNT})"
    )
    assert metrics.total("RevenueDrift") == 0


def test_a_first_run_is_not_compared(reconciler, stripe_api, metrics) -> None:
    charges(stripe_api, 100_000)

    for money in (recorded(400.0), recorded(listening=False), Missing(NOT_LISTENING)):
        assert reconciler.check(START, END, money, ran_whole_window=False) == Missing(NOT_FROM_START)
    reconciler.recorder.flush()

    assert metrics.total("RevenueReconciled") == 0 and metrics.total("RevenueDrift") == 0
    assert not stripe_api.requests  # nothing to compare with: Stripe is not asked


@pytest.mark.parametrize(
    "money", [Missing(NOT_LISTENING), recorded(listening=False)], ids=["none", "mrr-only"]
)
def test_a_day_billwatch_ran_and_recorded_nothing_while_stripe_took_money_is_drift(
    reconciler, stripe_api, metrics, money
) -> None:
    # The day it matters most: the endpoint was down, or its secret rotated; no webhook all day.
    charges(stripe_api, 100_000)

    checks = reconciler.check(START, END, money, ran_whole_window=True)
    reconciler.recorder.flush()

    assert checks == Known((RevenueCheck("USD", 1000.0, Known(0.0), Known(-1000.0), over_threshold=True),))
    assert metrics.total("RevenueDrift", Currency="USD") == 1


def test_a_quiet_day_without_webhooks_is_no_drift(reconciler, stripe_api, metrics) -> None:
    charges(stripe_api, 50)  # 0.50: under the minimum of 1

    quiet = reconciler.check(START, END, Missing(NOT_LISTENING), ran_whole_window=True)
    charges_nowhere = reconciler.check(
        START - (END - START), START - dt.timedelta(seconds=1), Missing(NOT_LISTENING), ran_whole_window=True
    )
    reconciler.recorder.flush()

    assert quiet == Known((RevenueCheck("USD", 0.5, Known(0.0), Known(-0.5), over_threshold=False),))
    assert charges_nowhere == Known(())  # nothing moved on either side
    assert metrics.total("RevenueDrift") == 0


def test_eur_charges_settled_in_usd_reconcile_without_drift(reconciler, stripe_api, metrics) -> None:
    stripe_api.balance_transactions += [
        se.balance_transaction(amount=5390, created=START_SECOND + 60, charged=(4900, "eur")),
        se.balance_transaction(amount=5412, created=START_SECOND + 120, charged=(4900, "eur")),
        se.balance_transaction(
            amount=-1080, created=START_SECOND + 180, type="refund", charged=(1000, "eur")
        ),
    ]
    eur = CurrencyMoney("EUR", Known(98.0), Known(10.0), Known(0.0), Known({}), Known({}))

    checks = reconciler.check(START, END, Known(Money((eur,), listening=True)), ran_whole_window=True)
    reconciler.recorder.flush()

    assert checks == Known((RevenueCheck("EUR", 88.0, Known(88.0), Known(0.0), over_threshold=False),))
    assert metrics.total("RevenueDrift") == 0 and metrics.total("RevenueReconciled", Currency="EUR") == 1
    query = next(path for path, _ in stripe_api.requests if path.startswith("/v1/balance_transactions"))
    assert "expand%5B0%5D=data.source" in query


def test_a_stripe_slower_than_the_timeout_leaves_the_day_uncompared(stripe_api, metrics) -> None:
    stripe_api.delay_seconds = 0.5
    charges(stripe_api, 100_000)
    recorder = MetricsRecorder(NAMESPACE, "billwatch")
    api = StripeApi(lambda: "rk_test_report", stripe_api.url, max_network_retries=0, timeout_seconds=0.1)

    checks = RevenueReconciler(api, THRESHOLD, recorder).check(
        START, END, recorded(1000.0), ran_whole_window=True
    )

    assert checks == Missing("Stripe could not be read (connection)")


def test_stripe_paging_past_the_budget_leaves_the_day_uncompared(stripe_api, metrics) -> None:
    stripe_api.delay_seconds = 0.2
    charges(stripe_api, *([100] * 250))  # three pages: 0.6 s, over a 0.3 s budget
    recorder = MetricsRecorder(NAMESPACE, "billwatch")
    api = StripeApi(lambda: "rk_test_report", stripe_api.url, max_network_retries=0, timeout_seconds=5)

    checks = RevenueReconciler(api, THRESHOLD, recorder, budget_seconds=0.3).check(
        START, END, recorded(250.0), ran_whole_window=True
    )
    recorder.flush()

    assert checks == Missing("Stripe did not list the balance transactions within 0.3 s")
    assert metrics.total("RevenueReconciled") == 0


# ----------------------------------------------------------------- accounts near their limits, cohorts


NOW = dt.datetime(2026, 12, 10, tzinfo=dt.UTC).timestamp()
MONTH_START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()


def account_item(pk: str, **numbers: float) -> dict[str, Any]:
    return {"pk": {"S": pk}, **{name: {"N": str(value)} for name, value in numbers.items()}}


@pytest.fixture
def accounts(aws) -> AccountsReport:
    bind_billing_table(aws["BillingStateTable"])
    catalog = load_catalog_text(shipped_catalog_text(), "plans.json")
    return AccountsReport(QuotaPolicy(catalog), clock=lambda: NOW)


def test_the_accounts_near_or_over_their_limits_from_the_billing_table(aws, accounts) -> None:
    dynamodb = boto3.client("dynamodb")
    table = aws["BillingStateTable"]
    for item in (
        account_item("acct_over", usage_since=MONTH_START, used_exports=12),  # 120 % of FREE's 10
        account_item("acct_near", usage_since=MONTH_START, used_api_calls=800),  # 80 %
        account_item("acct_granted", usage_since=MONTH_START, used_exports=8, granted_exports=10),  # 18 of 20
        account_item("acct_below", usage_since=MONTH_START, used_api_calls=799),
        account_item("acct_last_month", usage_since=MONTH_START - 86400, used_exports=10),  # a past period
        account_item("health#last-probe", usage_since=MONTH_START, used_exports=50),  # the stack's own
        account_item("cus_provisional", usage_since=MONTH_START, used_exports=50),
    ):
        dynamodb.put_item(TableName=table, Item=item)
    dynamodb.put_item(
        TableName=table,
        Item={
            **account_item("acct_merged", usage_since=MONTH_START, used_exports=50),
            "merged_into": {"S": "acct_over"},
        },
    )

    near, _ = accounts.read()

    assert near.value.accounts == (
        AccountNearLimit("acct_over", "exports", 12, 10),
        AccountNearLimit("acct_granted", "exports", 18, 20),
        AccountNearLimit("acct_near", "api_calls", 800, 1000),
    )
    assert (near.value.total, near.value.shown) == (3, TOP_NEAR_LIMITS)


def test_the_near_limit_list_is_bounded_and_the_scan_reads_every_page(aws, accounts, monkeypatch) -> None:
    monkeypatch.setattr("billwatch.reporting.accounts.PAGE_SIZE", 7)
    for n in range(TOP_NEAR_LIMITS + 5):
        BillingAccount(f"acct_{n:02}", usage_since=MONTH_START).save()
        boto3.client("dynamodb").update_item(
            TableName=aws["BillingStateTable"],
            Key={"pk": {"S": f"acct_{n:02}"}},
            UpdateExpression="SET used_exports = :n",
            ExpressionAttributeValues={":n": {"N": str(8 + n % 4)}},
        )

    near, _ = accounts.read()

    assert near.value.total == TOP_NEAR_LIMITS + 5
    assert len(near.value.accounts) == TOP_NEAR_LIMITS
    shares = [entry.share for entry in near.value.accounts]
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.1


def test_monthly_cohorts_count_the_subscriptions_still_paying(aws, accounts) -> None:
    october, november = dt.datetime(2026, 10, 5, tzinfo=dt.UTC), dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC)
    paying = {"active_tier": "PRO", "mrr": 2900, "mrr_currency": "usd"}
    for pk, started, still in (
        ("acct_1", october, True),
        ("acct_2", october, False),  # churned: no live subscription
        ("acct_3", october, True),
        ("acct_4", november, True),
    ):
        BillingAccount(pk, subscription_started_at=started.timestamp(), **(paying if still else {})).save()
    BillingAccount("acct_no_start", **paying).save()  # started before billwatch kept start dates
    BillingAccount("acct_trial", subscription_started_at=november.timestamp(), active_tier="PRO").save()
    # A subscription whose customer names no account yet: it pays (PayingSubscriptions counts it).
    BillingAccount("cus_unlinked", subscription_started_at=november.timestamp(), **paying).save()
    # A provisional item already merged into its account is a redirect: counted there, not here.
    BillingAccount(
        "cus_merged", subscription_started_at=october.timestamp(), merged_into="acct_1", **paying
    ).save()

    _, cohorts = accounts.read()

    assert cohorts == Known((Cohort("2026-10", 3, 2), Cohort("2026-11", 3, 2)))


def test_an_unreadable_billing_table_leaves_both_sections_missing(aws, accounts, monkeypatch) -> None:
    with DynamoDBOutage(monkeypatch, {"Scan"}).during():
        near, cohorts = accounts.read()

    assert isinstance(near, Missing) and near.reason.startswith("the billing table could not be read")
    assert cohorts == near
