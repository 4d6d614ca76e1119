"""CloudWatchReportSource on moto: a day of billwatch metrics and alarm history, and an empty window.

moto 5.2.5 computes no percentiles in GetMetricData and does not implement DescribeAlarmHistory,
so the shims of devtools/moto_patches.py stand in for CloudWatch there: nearest-rank percentiles
over the stored values, and the alarm history answered from the state changes moto records for each
alarm (on a test clock here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudwatch import models as moto_cloudwatch

from billwatch.core.metrics import Metric
from billwatch.core.severities import Severity
from billwatch.reporting.cloudwatch_source import NO_API_ID, CloudWatchReportSource
from billwatch.reporting.model import (
    NO_DATA,
    ActionItem,
    FeatureUsage,
    Incident,
    Known,
    Missing,
    ReportPeriod,
    SloStatus,
    report_window,
)
from billwatch.reporting.renderers import render_console
from billwatch.reporting.scoring import build_report
from devtools.moto_patches import install_alarm_history, install_percentiles

NAMESPACE = "Billwatch"
REGION = "us-east-1"
END = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
START, _ = report_window(ReportPeriod.DAILY, END)
RUNBOOK = "https://runbooks.example/platform.md"


class Clock:
    """moto's notion of now (naive UTC, as moto keeps it), moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now.replace(tzinfo=None)


@pytest.fixture
def cloudwatch(aws_credentials: None) -> Iterator[Any]:
    undo_percentiles, undo_history = install_percentiles(), install_alarm_history()
    try:
        with mock_aws():
            yield boto3.client("cloudwatch", region_name=REGION)
    finally:
        undo_history()
        undo_percentiles()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(moto_cloudwatch, "utcnow", clock)
    return clock


def put(
    client: Any,
    metric: str,
    values: list[float],
    hours_ago: float = 2,
    service: str = "billwatch",
    **labels: str,
) -> None:
    dimensions = [
        {"Name": "service", "Value": service},
        *({"Name": n, "Value": v} for n, v in labels.items()),
    ]
    moment = END - dt.timedelta(hours=hours_ago)
    client.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {"MetricName": metric, "Dimensions": dimensions, "Value": v, "Timestamp": moment} for v in values
        ],
    )


def put_emitted(client: Any, metric: Metric, value: float, **labels: str) -> None:
    """A point the way MetricsRecorder publishes it: aggregate, and with its labels."""
    put(client, metric.value, [value])
    if labels:
        put(client, metric.value, [value], **labels)


def put_gauges(
    client: Any,
    paying: Any,
    usd: Any,
    eur: Any = None,
    hours: range = range(24),
) -> None:
    """The health probe's readings: a few a minute apart in each hour of the window."""
    for hour in hours:
        hours_ago = 24 - hour - 0.1
        put(client, Metric.PAYING_SUBSCRIPTIONS.value, [paying(hour)] * 3, hours_ago=hours_ago)
        for currency, amount in (("USD", usd), ("EUR", eur)):
            if amount is not None and amount(hour) is not None:
                put(client, Metric.MRR.value, [amount(hour)] * 3, hours_ago=hours_ago, Currency=currency)


def alarm(client: Any, name: str, severity: str, notifies: bool = True) -> None:
    client.put_metric_alarm(
        AlarmName=name,
        AlarmActions=[f"arn:aws:sns:{REGION}:123456789012:billwatch-test-alarms-{severity}"]
        if notifies
        else [],
        AlarmDescription=f"[{severity}] Something went wrong. Runbook: {RUNBOOK}",
        Namespace=NAMESPACE,
        MetricName="WebhookFailed",
        Statistic="Sum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )


def set_state(client: Any, clock: Clock, name: str, state: str, hours_ago: float) -> None:
    clock.now = END - dt.timedelta(hours=hours_ago)
    client.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"to {state}")


def seed_a_day(client: Any, clock: Clock) -> None:
    put_emitted(client, Metric.WEBHOOK_RECEIVED, 1000, EventType="invoice.paid")
    put_emitted(client, Metric.WEBHOOK_FAILED, 2, EventType="invoice.paid")
    put(client, Metric.WEBHOOK_FAILED.value, [2], EventType="invoice.paid", Reason="ClientError")
    put(client, Metric.WEBHOOK_PROCESSING_TIME.value, [float(ms) for ms in range(10, 1010, 10)])
    put(client, Metric.WEBHOOK_RECEIVED.value, [500], hours_ago=30)  # the day before
    put(client, Metric.WEBHOOK_RECEIVED.value, [700], service="other")
    put(client, Metric.CHECKOUT_COMPLETED.value, [1, 1, 1])
    put(client, Metric.CHECKOUT_EXPIRED.value, [1])
    put(client, Metric.SUBSCRIPTIONS_NEW.value, [3, 1])
    put(client, Metric.SUBSCRIPTIONS_CHURNED.value, [1])
    put(client, Metric.SUBSCRIPTIONS_UPGRADED.value, [1, 1])
    put(client, Metric.PAYMENT_SUCCEEDED.value, [18])
    put(client, Metric.PAYMENT_FAILED.value, [2])
    for feature, units in {"api_calls": 900, "exports": 40, "sso": 1, "a": 5, "b": 6, "c": 7}.items():
        put_emitted(client, Metric.USAGE_COUNTED, units, Feature=feature)
    put_emitted(client, Metric.LIMIT_HIT, 5, Threshold="80")
    put_emitted(client, Metric.LIMIT_HIT, 2, Threshold="100")
    put(client, Metric.RECONCILE_RUN.value, [1])
    put_gauges(
        client, paying=lambda hour: 100 if hour < 12 else 103, usd=lambda hour: 1000 if hour < 12 else 1200
    )
    put_emitted(client, Metric.RECONCILE_DRIFT, 2, Field="status")
    put_emitted(client, Metric.RECONCILE_HEALED, 1, Field="status")

    clock.now = START - dt.timedelta(days=2)
    alarm(client, "billwatch-test-HttpApi5xx", "warning")
    alarm(client, "billwatch-test-StripeWebhookDown", "critical")
    alarm(client, "billwatch-prod-HttpApi5xx", "warning")
    alarm(client, "billwatch-test-WebhooksAbsent", "info", notifies=False)  # a building block
    set_state(client, clock, "billwatch-test-HttpApi5xx", "ALARM", hours_ago=6)
    set_state(client, clock, "billwatch-test-HttpApi5xx", "OK", hours_ago=4.5)
    set_state(client, clock, "billwatch-test-StripeWebhookDown", "ALARM", hours_ago=1.25)
    set_state(client, clock, "billwatch-prod-HttpApi5xx", "ALARM", hours_ago=1)
    set_state(client, clock, "billwatch-test-WebhooksAbsent", "ALARM", hours_ago=3)


def test_a_day_of_billwatch_metrics_and_alarms(cloudwatch: Any, clock: Clock, aws_calls: list[str]) -> None:
    seed_a_day(cloudwatch, clock)
    aws_calls.clear()

    source = CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test")
    report = build_report(source.read(START, END))

    # One for the window's sums, one for the gauges' hourly readings.
    assert aws_calls.count("GetMetricData") == 2
    availability, api_p95, api_error_rate, p95, error_rate = report.slos
    assert availability.actual == Known(pytest.approx(0.998))
    assert p95.actual == Known(950.0)
    assert error_rate.actual == Known(pytest.approx(0.002))
    assert [slo.status for slo in (availability, p95, error_rate)] == [SloStatus.MISSED] * 3
    # Without the HTTP API's id, its own SLOs are not judged (and availability falls back on webhooks).
    assert (api_p95.status, api_error_rate.status) == (SloStatus.NOT_JUDGED, SloStatus.NOT_JUDGED)
    business = report.business
    assert business.checkouts_completed == Known(3.0)
    assert business.checkout_conversion == Known(0.75)
    assert (business.subscriptions_new, business.upgrades) == (Known(4.0), Known(2.0))
    assert business.subscriptions_reactivated == Missing(NO_DATA)
    assert business.subscriptions_churned == Known(1.0)
    assert (business.paying_at_start, business.churn_rate) == (Known(100.0), Known(0.01))
    assert business.payment_failure_rate == Known(0.1)
    assert business.accounts_at_limit == Known(2.0)
    (usd,) = business.mrr.value
    assert (usd.currency, usd.now, usd.change) == ("usd", Known(1200.0), Known(200.0))
    assert usd.change_share == Known(pytest.approx(0.2))
    assert business.top_features == Known(
        tuple(
            FeatureUsage(f, u) for f, u in [("api_calls", 900), ("exports", 40), ("c", 7), ("b", 6), ("a", 5)]
        )
    )
    assert report.reconciliation.drift_by_field == Known({"status": 2.0})
    assert report.reconciliation.healed_by_field == Known({"status": 1.0})
    assert report.incidents == Known(
        (
            Incident(
                "HttpApi5xx",
                Severity.WARNING,
                END - dt.timedelta(hours=6),
                END - dt.timedelta(hours=4.5),
                runbook=RUNBOOK,
            ),
            Incident(
                "StripeWebhookDown",
                Severity.CRITICAL,
                END - dt.timedelta(hours=1.25),
                None,
                runbook=RUNBOOK,
            ),
        )
    )
    assert "  2 in the window: 1 critical, 1 warning, 0 info; 1 still firing" in render_console(report)
    assert business.payments_succeeded == Known(18.0)
    assert "StripeWebhookDown (critical): still firing, 1h 15m so far" in render_console(report)


def put_api(client: Any, name: str, values: list[float], hours_ago: float, api_id: str = "api123") -> None:
    client.put_metric_data(
        Namespace="AWS/ApiGateway",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "ApiId", "Value": api_id}],
                "Values": values,
                "Timestamp": END - dt.timedelta(hours=hours_ago),
            }
        ],
    )


def test_availability_from_the_http_api(cloudwatch: Any, clock: Clock) -> None:
    put_api(cloudwatch, "Count", [4000.0], hours_ago=3)
    put_api(cloudwatch, "5xx", [2.0], hours_ago=3)

    source = CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test", http_api_id="api123")
    availability = build_report(source.read(START, END)).slos[0]

    assert availability.actual == Known(pytest.approx(0.9995))
    assert availability.status is SloStatus.MET


def test_the_api_slos_and_peaks_from_the_http_api(cloudwatch: Any, clock: Clock) -> None:
    # Two busy minutes hours apart, 3 client and 2 server errors, and a slow spell.
    put_api(cloudwatch, "Count", [1200.0], hours_ago=3)
    put_api(cloudwatch, "Count", [600.0, 300.0], hours_ago=2)
    put_api(cloudwatch, "4xx", [3.0], hours_ago=3)
    put_api(cloudwatch, "5xx", [2.0], hours_ago=2)
    put_api(cloudwatch, "Latency", [float(ms) for ms in range(10, 410, 10)], hours_ago=3)
    put_api(cloudwatch, "Latency", [900.0] * 20, hours_ago=5)
    put_api(cloudwatch, "Count", [99_999.0], hours_ago=2, api_id="another-api")

    source = CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test", http_api_id="api123")
    report = build_report(source.read(START, END))

    slos = {slo.name: slo for slo in report.slos}
    assert slos["API error rate"].actual == Known(pytest.approx(5 / 2100))
    assert slos["API error rate"].status is SloStatus.MISSED
    assert slos["API p95 latency"].actual == Known(900.0)
    assert slos["API p95 latency"].status is SloStatus.MISSED
    assert report.performance.peak_requests_per_second == Known(pytest.approx(1200 / 60))
    assert report.performance.peak_latency_p95_ms == Known(900.0)
    assert ActionItem("API error rate missed its SLO", "runbooks/platform.md") in report.action_items


def test_a_window_without_any_data(cloudwatch: Any, clock: Clock) -> None:
    report = build_report(CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test").read(START, END))

    assert all(slo.actual == Missing(NO_DATA) for slo in report.slos if not slo.name.startswith("API"))
    assert all(slo.actual == Missing(NO_API_ID) for slo in report.slos if slo.name.startswith("API"))
    assert report.business.top_features == Missing(NO_DATA)
    assert report.business.mrr == Missing(NO_DATA)
    assert report.business.churn_rate == Missing(NO_DATA)
    assert report.reconciliation.drift_by_field == Missing(NO_DATA)
    assert report.incidents == Known(())
    assert report.health.score == Missing("no SLO could be judged")
    text = render_console(report)
    assert "Availability: no data" in text
    assert "Incidents\n  none" in text


def test_mrr_of_a_currency_that_started_in_the_window_grew_from_zero(cloudwatch: Any, clock: Clock) -> None:
    put_gauges(
        cloudwatch, paying=lambda hour: 10, usd=lambda hour: 500, eur=lambda hour: 90 if hour >= 20 else None
    )

    mrr = build_report(
        CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test").read(START, END)
    ).business.mrr

    eur, usd = mrr.value
    assert (eur.now, eur.change, eur.change_share) == (
        Known(90.0),
        Known(90.0),
        Missing("no MRR at the start"),
    )
    assert (usd.change, usd.change_share) == (Known(0.0), Known(0.0))


def test_without_a_gauge_reading_at_the_start_mrr_has_no_change(cloudwatch: Any, clock: Clock) -> None:
    # The probe was down for the window's first six hours.
    put_gauges(cloudwatch, paying=lambda hour: 10, usd=lambda hour: 500, hours=range(6, 24))

    report = build_report(CloudWatchReportSource(cloudwatch, NAMESPACE, stage="test").read(START, END))

    (usd,) = report.business.mrr.value
    assert usd.now == Known(500.0)
    assert usd.change == Missing("no gauge reading in the first hour")
    assert report.business.paying_at_start == Missing("no gauge reading in the first hour")
    assert report.business.churn_rate == Missing("no gauge reading in the first hour")
    assert "MRR: USD 500.00 (change: no gauge reading in the first hour)" in render_console(report)
