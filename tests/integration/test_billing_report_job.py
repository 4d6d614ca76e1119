"""The BillingReport function on moto: a day of seeded metrics becomes one report on each channel.

Slack and the webhook receiver are local HTTP servers, email is moto's SES. moto computes no
percentiles and has no DescribeAlarmHistory, so devtools.moto_cloudwatch fills both in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billwatch.alerting.channels.webhook import SIGNATURE_HEADER
from billwatch.core.models import BillingAccount
from devtools import stripe_events as se
from devtools.moto_patches import install_alarm_history, install_percentiles
from tests.alert_receivers import AlertReceivers, Answer, alert_receivers
from tests.support import LambdaContext, load_handler

REGION = "us-east-1"
SENDER = "reports@billwatch.test"
HOOK_SECRET = "report-hook-secret-for-tests"
# 08:00 in New York: what the daily schedule's scheduled-time says, in UTC.
SCHEDULED = dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)
SCHEDULED_EVENT = {"period": "daily", "scheduled_time": "2026-12-01T13:00:00Z"}


def routes(receivers: AlertReceivers) -> dict[str, Any]:
    return {
        "repeat_interval_seconds": {"critical": 7200, "warning": 14400, "info": 43200},
        "stale_after_seconds": 86400,
        "route": {"receiver": "team"},
        "receivers": {
            "team": {"channels": [{"type": "log"}]},
            "billing-report": {
                "channels": [
                    {"type": "slack", "webhook_url_secret": "slack"},
                    {"type": "email", "to": ["finance@billwatch.test"]},
                    {"type": "pagerduty", "routing_key_secret": "pd", "events_url": receivers.url("/pd")},
                    {"type": "webhook", "url": receivers.url("/hook"), "signing_secret": "hook"},
                ]
            },
        },
        "reports": {"receiver": "billing-report"},
    }


@pytest.fixture
def receivers() -> Iterator[AlertReceivers]:
    with alert_receivers() as running:
        yield running


@pytest.fixture
def report_env(aws, receivers: AlertReceivers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes(receivers)))
    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    secrets = {"slack": receivers.url("/slack"), "pd": "R0UT1NGKEY", "hook": HOOK_SECRET}
    for name, value in {
        "ALERT_ROUTES_PATH": str(path),
        "ALERT_SECRETS": json.dumps(secrets),
        "ALERT_EMAIL_SENDER": SENDER,
        "STAGE": "test",
        "REPORT_TIMEZONE": "America/New_York",
    }.items():
        monkeypatch.setenv(name, value)
    undo_percentiles, undo_history = install_percentiles(), install_alarm_history()
    yield
    undo_history()
    undo_percentiles()


def put(metric: str, values: list[float], at: dt.datetime, **labels: str) -> None:
    dimensions = [{"Name": "service", "Value": "billwatch"}]
    dimensions += [{"Name": name, "Value": value} for name, value in labels.items()]
    boto3.client("cloudwatch").put_metric_data(
        Namespace="Billwatch",
        MetricData=[
            {"MetricName": metric, "Dimensions": dimensions, "Value": value, "Timestamp": at}
            for value in values
        ],
    )


def seed_a_day() -> None:
    during = SCHEDULED - dt.timedelta(hours=5)
    put("WebhookReceived", [1000.0], during)
    put("WebhookProcessingTime", [120.0] * 19 + [400.0], during)
    put("PaymentSucceeded", [48.0], during)
    put("PaymentFailed", [2.0], during)
    put("SubscriptionsNew", [3.0], during)
    put("SubscriptionsChurned", [1.0], during)
    # The probe's gauges: every hour of the window, MRR growing from 1,000 to 1,150 USD.
    for hour in range(24):
        moment = SCHEDULED - dt.timedelta(hours=24 - hour) + dt.timedelta(minutes=1)
        put("PayingSubscriptions", [200.0 if hour < 12 else 202.0], moment)
        put("MRR", [1000.0 if hour < 12 else 1150.0], moment, Currency="USD")


def test_the_scheduled_report_reaches_slack_email_and_the_webhook(report_env, receivers) -> None:
    seed_a_day()
    handler = load_handler("billing_report")

    outcome = handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())

    assert outcome["report_id"] == "billing-report-daily-20261201T1300Z"
    assert outcome["delivered"] == ("slack", "email", "webhook") and outcome["failed"] == ()
    assert receivers.requests("/pd") == []  # a report is not an incident: nobody is paged
    (slack,) = receivers.requests("/slack")
    assert slack.json["text"] == f"Billing report 2026-12-01: health {outcome['health_score']}/100"
    business = next(
        b["text"]["text"] for b in slack.json["blocks"] if b["text"]["text"].startswith("*Business")
    )
    assert "Subscriptions: 3 new, no data reactivated, no data upgraded, 1 churned" in business
    assert "Churn rate: 0.50 % of 200 paying at the start" in business
    assert "MRR: USD 1,150.00 (+150.00, 15.0 %)" in business
    assert "Payments failed: 2 (4.0 %)" in business
    context = slack.json["blocks"][-1]["elements"][0]["text"]
    assert context == "2026-11-30 08:00 EST to 2026-12-01 08:00 EST"

    (email,) = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert email.subject == slack.json["text"]
    assert email.destinations["ToAddresses"] == ["finance@billwatch.test"]
    assert "Webhook p95 latency: 120 ms (target ≤ 500 ms): met" in email.body

    (hook,) = receivers.requests("/hook")
    assert hook.json["type"] == "billing_report" and hook.json["end"] == "2026-12-01T13:00:00Z"
    assert hook.headers["billwatch-notification-id"] == outcome["report_id"]
    timestamp, signature = (part.split("=", 1)[1] for part in hook.headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(HOOK_SECRET.encode(), f"{timestamp}.".encode() + hook.raw_body, hashlib.sha256)
    assert signature == expected.hexdigest()


def test_a_failing_channel_does_not_stop_the_others(report_env, receivers, metrics) -> None:
    receivers.respond("/slack", [Answer(404, body="no_service")])
    handler = load_handler("billing_report")

    outcome = handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())

    assert (outcome["delivered"], outcome["failed"]) == (("email", "webhook"), ("slack",))
    assert metrics.total("AlertDeliveryFailed", Channel="slack") == 1
    assert metrics.total("AlertDelivered", Channel="email") == 1


def test_a_report_no_channel_took_raises_so_that_lambda_retries(report_env, receivers, metrics) -> None:
    receivers.respond("/slack", [Answer(404)])
    receivers.respond("/hook", [Answer(410)])
    boto3.client("ses").delete_identity(Identity=SENDER)
    handler = load_handler("billing_report")

    with pytest.raises(Exception, match="no channel took the billing report billing-report-daily-"):
        handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())
    assert metrics.total("AlertDeliveryFailed") == 3


def test_a_window_without_data_says_so(report_env, receivers) -> None:
    handler = load_handler("billing_report")

    handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())

    (slack,) = receivers.requests("/slack")
    assert slack.json["text"] == "Billing report 2026-12-01: health no SLO could be judged"
    text = json.dumps(slack.json)
    assert "Payments failed: no data (no data)" in text and "MRR: no data" in text
    assert "0.0 %" not in text


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"period": "monthly"}, "period: Input should be 'daily' or 'weekly'"),
        ({"scheduled_time": "2026-12-01T13:00:00"}, "scheduled_time: Input should have timezone info"),
        ({"period": "daily", "extra": 1}, "extra: Extra inputs are not permitted"),
        ([], "input: Input should be a valid dictionary"),
    ],
)
def test_bad_input_is_refused_by_name_and_sends_nothing(report_env, receivers, event, problem) -> None:
    handler = load_handler("billing_report")

    with pytest.raises(ValueError, match="not a billing report request") as refused:
        handler.lambda_handler(event, LambdaContext())

    assert problem in str(refused.value)
    assert receivers.requests() == []


def test_an_unknown_report_receiver_fails_the_cold_start_by_name(
    report_env, receivers, tmp_path, monkeypatch
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(routes(receivers) | {"reports": {"receiver": "nobody"}}))
    monkeypatch.setenv("ALERT_ROUTES_PATH", str(path))

    with pytest.raises(ValueError, match=r"reports\.receiver: .*no receiver named 'nobody'"):
        load_handler("billing_report")


def test_the_daily_report_reconciles_revenue_with_stripe(
    report_env, receivers, stripe_api, monkeypatch, metrics
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_report")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    seed_a_day()
    during = SCHEDULED - dt.timedelta(hours=5)
    for labels in ({}, {"Currency": "USD"}, {"Currency": "USD", "Tier": "PRO"}):
        put("PaymentAmount", [960.0], during, **labels)
    window_start = int((SCHEDULED - dt.timedelta(days=1)).timestamp())
    stripe_api.balance_transactions += [
        se.balance_transaction(amount=50_000, created=window_start + 60),
        se.balance_transaction(amount=50_000, created=window_start + 120),
    ]
    handler = load_handler("billing_report")

    handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())

    (slack,) = receivers.requests("/slack")
    text = json.dumps(slack.json)
    assert "USD: paid 960.00, refunded 0.00, failed invoices 0.00" in text
    assert "USD: Stripe 1,000.00, recorded 960.00, drift -40.00 (-4.00%): over the threshold" in text
    assert "Revenue drift USD: billwatch recorded -40.00" in text
    assert metrics.total("RevenueDrift", Currency="USD") == 1
    assert metrics.total("RevenueReconciled", Currency="USD") == 1


def test_a_slow_stripe_leaves_the_reconciliation_uncompared_and_the_report_goes_out(
    report_env, receivers, stripe_api, monkeypatch, metrics
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_report")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    # The job's own limit, made short: the test does not wait out 5 s.
    monkeypatch.setattr("billwatch.reporting.job.STRIPE_TIMEOUT_SECONDS", 0.2)
    stripe_api.delay_seconds = 0.6
    seed_a_day()
    handler = load_handler("billing_report")

    outcome = handler.lambda_handler(SCHEDULED_EVENT, LambdaContext())

    assert outcome["delivered"]
    (slack,) = receivers.requests("/slack")
    assert "not compared: Stripe could not be read (connection)" in json.dumps(slack.json)
    # Not retried: each retry would wait out the timeout again.
    assert len([path for path, _ in stripe_api.requests if path.startswith("/v1/balance_transactions")]) == 1
    assert metrics.total("StripeApiError", Code="connection") == 1


def test_the_weekly_report_carries_its_own_sections(report_env, receivers, monkeypatch) -> None:
    BillingAccount(
        "acct_busy", usage_since=SCHEDULED.timestamp() - 3600, subscription_started_at=1_790_000_000
    ).save()
    boto3.client("dynamodb").update_item(
        TableName=os.environ["BILLING_TABLE_NAME"],
        Key={"pk": {"S": "acct_busy"}},
        UpdateExpression="SET used_exports = :n",
        ExpressionAttributeValues={":n": {"N": "9"}},
    )
    handler = load_handler("billing_report")

    handler.lambda_handler({"period": "weekly", "scheduled_time": "2026-12-01T13:00:00Z"}, LambdaContext())

    (hook,) = receivers.requests("/hook")
    sections = {section["heading"]: section["lines"] for section in hook.json["sections"]}
    assert sections["Accounts near or over their limits"] == ["acct_busy exports: 9 of 10 (90%)"]
    assert sections["Cohort retention"] == ["2026-09: 1 started, 0 still paying (0%)"]
    assert sections["MRR forecast"][1:] == ["no MRR readings"]
    assert len(sections["Purchases per day"]) == 7
    assert "Revenue reconciliation" not in sections  # reconciled once a day, by the daily report
