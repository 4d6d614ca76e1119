"""The health probe end to end: its handler on moto, Stripe stood in for by a server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest

from billwatch.billing.webhook_marker import MARKER_KEY
from billwatch.core.config import load_settings
from billwatch.core.models import JobCheckpoint, WebhookMarker
from billwatch.health.probe import ActiveSubscriptionsGauge, QuotaResetCheck
from billwatch.licensing.plans import load_plan_catalog
from billwatch.licensing.quota_reset import SCHEDULE_CHECKPOINT, SegmentDispatcher, build_quota_reset
from devtools import stripe_events as se
from tests.support import Clock, LambdaContext, WebhookClient, load_handler, webhook_endpoint

NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 2026-12-02 15:00 in New York: inside business hours.
WEDNESDAY_AFTERNOON = int(dt.datetime(2026, 12, 2, 15, 0, tzinfo=NEW_YORK).timestamp())
CHECKS = {
    "stripe_api",
    "stripe_webhook_endpoint",
    "dynamodb",
    "webhook_freshness",
    "quota_reset",
    "dead_letter_queues",
}
STRIPE_CHECKS = {"stripe_api", "stripe_webhook_endpoint"}
SEGMENTS = 2


@pytest.fixture
def probe_env(aws, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("QUOTA_RESET_SEGMENTS", str(SEGMENTS))
    for name in ("WEBHOOK_DLQ_URL", "QUOTA_RESET_DLQ_URL", "STRIPE_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    return aws


@pytest.fixture
def with_stripe(probe_env, stripe_api, monkeypatch) -> Any:
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_health_probe_key")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    return stripe_api


@pytest.fixture
def dead_letter_queues(probe_env, monkeypatch) -> dict[str, str]:
    sqs = boto3.client("sqs")
    urls = {
        "webhook": sqs.create_queue(QueueName="billwatch-webhook-dlq")["QueueUrl"],
        "quota_reset": sqs.create_queue(QueueName="billwatch-quota-reset-dlq")["QueueUrl"],
    }
    monkeypatch.setenv("WEBHOOK_DLQ_URL", urls["webhook"])
    monkeypatch.setenv("QUOTA_RESET_DLQ_URL", urls["quota_reset"])
    return urls


def health_handler(now: int = WEDNESDAY_AFTERNOON) -> Any:
    handler = load_handler("health_probe")
    handler.probe.clock = Clock(now)
    return handler


def scheduled(handler: Any) -> dict[str, Any]:
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-12-02T20:00:00Z"}
    return handler.lambda_handler(event, LambdaContext())


def get_health(handler: Any, query: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    event = {
        "version": "2.0",
        "routeKey": "GET /health",
        "rawPath": "/health",
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "requestContext": {"http": {"method": "GET", "path": "/health"}},
        "headers": {},
    }
    if query:
        event["queryStringParameters"] = query
    response = handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"]), response["body"]


UNLABELLED_PROBE_METRICS = (
    "HealthProbeRun",
    "WebhooksStalled",
    "WebhooksQuiet",
    "StripeWebhookEndpointDisabled",
    "StripeWebhookEndpointMissing",
    "StripeWebhookDeliveryFailures",
    "TimeSinceLastWebhook",
    "PayingSubscriptions",
)


def labelled(metrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(metric, labels) of every point, read from its most specific dimension set."""
    return {
        (m.name, tuple(sorted((k, v) for k, v in m.dimensions.items() if k != "service")))
        for m in metrics.read()
        if len(m.dimensions) > 1 or m.name in UNLABELLED_PROBE_METRICS
    }


def values(metrics, name: str, **labels: str) -> list[float]:
    """Every value of a metric in the dimension set of exactly these labels, in order."""
    wanted = {"service": "billwatch", **labels}
    return [m.value for m in metrics.read() if m.name == name and m.dimensions == wanted]


def run_quota_reset(run_id: str, segments: range) -> None:
    job = build_quota_reset(load_settings(webhook_secret=False))
    for segment in segments:
        assert job.run_segment(run_id, segment, SEGMENTS).finished


# --- the scheduled run ---------------------------------------------------------------------------


def test_a_scheduled_run_emits_exactly_the_expected_metrics(with_stripe, dead_letter_queues, metrics) -> None:
    report = scheduled(health_handler())
    assert report["status"] == "ok", report
    per_check = {
        (name, (("Check", check),)) for name in ("HealthCheck", "HealthCheckLatency") for check in CHECKS
    }
    assert labelled(metrics) == per_check | {
        ("DeadLetterQueueDepth", (("Queue", "webhook"),)),
        ("DeadLetterQueueDepth", (("Queue", "quota_reset"),)),
        ("ActiveSubscriptions", (("Tier", "FREE"),)),
        ("ActiveSubscriptions", (("Tier", "PRO"),)),
        ("PayingSubscriptions", ()),
        ("WebhooksStalled", ()),  # no webhook yet: age unknown, so no TimeSinceLastWebhook
        ("WebhooksQuiet", ()),
        ("StripeWebhookEndpointDisabled", ()),
        ("StripeWebhookEndpointMissing", ()),
        ("StripeWebhookDeliveryFailures", ()),
        ("HealthProbeRun", ()),
    }
    assert metrics.total("HealthProbeRun") == 1
    assert all(metrics.total("HealthCheck", Check=check) == 1 for check in CHECKS)
    assert metrics.total("WebhooksStalled") == 0 and metrics.total("WebhooksQuiet") == 0
    assert metrics.total("StripeWebhookEndpointDisabled") == 0
    assert metrics.total("StripeWebhookDeliveryFailures") == 0
    assert metrics.total("DeadLetterQueueDepth", Queue="webhook") == 0


def test_checks_without_configuration_are_skipped_and_emit_nothing(probe_env, metrics) -> None:
    handler = health_handler()
    report = scheduled(handler)
    for check in STRIPE_CHECKS:
        assert report["checks"][check]["status"] == "skipped"
        assert report["checks"][check]["reason"] == "no_stripe_key"
    assert report["checks"]["dead_letter_queues"] == {"status": "skipped"}
    emitted = {labels for name, labels in labelled(metrics) if name == "HealthCheck"}
    assert emitted == {(("Check", check),) for check in CHECKS - STRIPE_CHECKS - {"dead_letter_queues"}}
    assert not {
        "StripeWebhookEndpointDisabled",
        "StripeWebhookEndpointMissing",
        "StripeWebhookDeliveryFailures",
    } & {name for name, _ in labelled(metrics)}
    # /health says plainly what goes unseen without a key.
    unseen = get_health(handler)[1]["checks"]["stripe_webhook_endpoint"]["cannot_see"]
    assert any("StripeWebhookDown cannot fire" in blind_spot for blind_spot in unseen)


@pytest.mark.parametrize(
    ("endpoints", "state"),
    [
        ([("https://billing.example.com/webhooks/stripe", "disabled")], "disabled"),
        ([("https://old.example.com/webhooks/stripe", "enabled")], "elsewhere"),
        ([], "missing"),
        (
            [
                ("https://old.example.com/webhooks/stripe", "disabled"),
                ("https://billing.example.com/webhooks/stripe", "enabled"),
            ],
            "enabled",
        ),
    ],
)
def test_the_webhook_endpoint_must_be_enabled_with_this_stacks_url(
    with_stripe, metrics, monkeypatch, endpoints: list[tuple[str, str]], state: str
) -> None:
    monkeypatch.setenv("WEBHOOK_ENDPOINT_URL", "https://billing.example.com/webhooks/stripe")
    with_stripe.webhook_endpoints = [webhook_endpoint(url, status) for url, status in endpoints]
    report = scheduled(health_handler())
    check = report["checks"]["stripe_webhook_endpoint"]
    assert (check["endpoint"], check["url_checked"]) == (state, True)
    assert check["status"] == ("ok" if state == "enabled" else "failed")
    assert metrics.total("StripeWebhookEndpointDisabled") == int(state == "disabled")
    assert metrics.total("StripeWebhookEndpointMissing") == int(state in ("elsewhere", "missing"))
    assert report["status"] == ("ok" if state == "enabled" else "degraded")


DENIED = (403, {"type": "invalid_request_error", "message": "The key lacks a permission"})


def test_a_disabled_endpoint_is_said_even_when_reading_the_events_fails(
    with_stripe, metrics, monkeypatch
) -> None:
    monkeypatch.setenv("WEBHOOK_ENDPOINT_URL", "https://billing.example.com/webhooks/stripe")
    with_stripe.webhook_endpoints = [
        webhook_endpoint("https://billing.example.com/webhooks/stripe", "disabled")
    ]
    with_stripe.failing_paths["/v1/events"] = DENIED
    check = scheduled(health_handler())["checks"]["stripe_webhook_endpoint"]
    assert (check["status"], check["endpoint"], check["error"]) == ("failed", "disabled", "permission")
    assert metrics.total("StripeWebhookEndpointDisabled") == 1  # StripeWebhookEndpointDisabled can page
    assert metrics.total("StripeApiError", Code="permission") == 1  # and StripeAPIErrorRate sees the key


def test_a_key_without_the_webhook_endpoints_permission_is_counted_as_a_stripe_api_error(
    with_stripe, metrics
) -> None:
    with_stripe.failing_paths["/v1/webhook_endpoints"] = DENIED
    report = scheduled(health_handler())
    assert report["checks"]["stripe_api"]["status"] == "ok"
    assert report["checks"]["stripe_webhook_endpoint"] == {
        "status": "failed",
        "error": "permission",
        "latency_ms": report["checks"]["stripe_webhook_endpoint"]["latency_ms"],
    }
    assert metrics.total("StripeApiError", Code="permission") == 1


def test_endpoints_are_compared_by_url_whatever_the_host_case_and_a_trailing_slash(
    with_stripe, metrics, monkeypatch
) -> None:
    monkeypatch.setenv("WEBHOOK_ENDPOINT_URL", "https://billing.example.com/webhooks/stripe")
    with_stripe.webhook_endpoints = [webhook_endpoint("https://Billing.Example.com/webhooks/stripe/")]
    report = scheduled(health_handler())
    assert report["checks"]["stripe_webhook_endpoint"]["endpoint"] == "enabled"


def test_events_stripe_failed_to_deliver_are_counted_within_the_lookback(with_stripe, metrics) -> None:
    now = WEDNESDAY_AFTERNOON
    for n, (age, delivered) in enumerate([(60, False), (1800, False), (7200, False), (120, True)]):
        event = se.event("invoice.paid", se.invoice(customer=f"cus_{n}"), created=now - age)
        with_stripe.add_event(event, delivered=delivered)
    report = scheduled(health_handler(now))
    check = report["checks"]["stripe_webhook_endpoint"]
    assert (check["status"], check["undelivered_events"], check["lookback_seconds"]) == ("failed", 2, 3600)
    assert metrics.total("StripeWebhookDeliveryFailures") == 2
    assert any("/v1/events?" in path and "delivery_success=false" in path for path, _ in with_stripe.requests)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (429, {"type": "invalid_request_error", "message": "Too many requests"}, "rate_limit"),
        (
            401,
            {"type": "invalid_request_error", "message": "Invalid API Key provided: rk_test_*****"},
            "authentication",
        ),
        (403, {"type": "invalid_request_error", "message": "The key lacks permission"}, "permission"),
        (500, {"type": "api_error", "message": "Internal error"}, "api_error"),
    ],
)
def test_stripe_api_errors_are_classified_and_degrade(with_stripe, metrics, status, error, code) -> None:
    with_stripe.failure = (status, error)
    handler = health_handler()
    report = scheduled(handler)
    assert report["checks"]["stripe_api"]["status"] == "failed"
    assert metrics.total("StripeApiError", Code=code) == len(STRIPE_CHECKS)  # one per check's failed request
    assert metrics.total("HealthCheck", Check="stripe_api") == 0
    assert len(with_stripe.requests) == len(STRIPE_CHECKS)  # one each, no retries in the probe

    with_stripe.requests.clear()
    answer, body, text = get_health(handler, {"deep": "1"})
    assert answer == 200 and body["status"] == "degraded"
    assert body["checks"]["stripe_api"] == {
        "status": "failed",
        "error": code,
        "latency_ms": body["checks"]["stripe_api"]["latency_ms"],
    }
    assert "rk_test" not in text and error["message"] not in text
    # A deep request emits no metrics, and a second one within 30 s is answered from the cache.
    before = len(metrics.read())
    assert get_health(handler, {"deep": "1"})[1] == body
    assert len(metrics.read()) == before and len(with_stripe.requests) == len(STRIPE_CHECKS)


def test_dynamodb_failing_is_down_and_503(probe_env, metrics) -> None:
    handler = health_handler()
    scheduled(handler)
    boto3.client("dynamodb").delete_table(TableName=probe_env["BillingStateTable"])

    report = scheduled(handler)  # the metrics still go out without the snapshot
    assert report["status"] == "down"
    assert values(metrics, "HealthCheck", Check="dynamodb") == [1, 0]
    assert metrics.total("HealthProbeRun") == 2
    for query in (None, {"deep": "1"}):
        status, body, text = get_health(handler, query)
        assert (status, body["status"]) == (503, "down")
        assert body["checks"]["dynamodb"]["status"] == "failed"
        assert probe_env["BillingStateTable"] not in text and "Traceback" not in text


def test_a_dead_letter_is_degraded(probe_env, dead_letter_queues, metrics) -> None:
    boto3.client("sqs").send_message(QueueUrl=dead_letter_queues["webhook"], MessageBody="{}")
    handler = health_handler()
    report = scheduled(handler)
    assert report["status"] == "degraded"
    assert report["checks"]["dead_letter_queues"]["messages"] == {"webhook": 1, "quota_reset": 0}
    assert metrics.total("DeadLetterQueueDepth", Queue="webhook") == 1
    assert metrics.total("HealthCheck", Check="dead_letter_queues") == 0
    status, body, text = get_health(handler, {"deep": "1"})
    assert (status, body["status"]) == (200, "degraded")
    assert "billwatch-webhook-dlq" not in text and "sqs" not in text.lower()


# --- the quota reset, on the schedule's own phase -------------------------------------------------

# The hourly rule was created at 14:47 UTC, with the stack: EventBridge starts its runs at :47.
CREATED = int(dt.datetime(2026, 12, 2, 14, 47, tzinfo=dt.UTC).timestamp())
HOUR, MINUTE = 3600, 60
GRACE = 1800


@pytest.fixture
def quota_reset_check(probe_env, monkeypatch) -> QuotaResetCheck:
    health_handler()  # binds the tables, as the probe's cold start does
    # The segments' asynchronous invocations are run by the tests themselves.
    monkeypatch.setattr(SegmentDispatcher, "start", lambda self, *args: None)
    return QuotaResetCheck(SEGMENTS, GRACE)


def scheduled_reset(moment: int, finished: range = range(SEGMENTS)) -> str:
    """The schedule starts a run at ``moment`` (as EventBridge does); ``finished`` segments complete."""
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "time": iso(moment)}
    run_id = load_handler("quota_reset").lambda_handler(event, LambdaContext())["run_id"]
    run_quota_reset(run_id, finished)
    return run_id


def iso(moment: int) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def judged(check: QuotaResetCheck, moment: int) -> tuple[str, str]:
    result = check.run(moment)
    return result.status.value, result.details["state"]


def test_a_fresh_stack_waits_for_the_first_run_an_hour_after_it_started(quota_reset_check) -> None:
    # The probe's first run is when the stack began to be watched; nothing was due before.
    for minute in (0, 14, 44, 60, 89):
        assert judged(quota_reset_check, CREATED + minute * MINUTE) == ("ok", "waiting"), minute

    scheduled_reset(CREATED + HOUR)
    assert judged(quota_reset_check, CREATED + HOUR + 5 * MINUTE) == ("ok", "finished")


def test_a_first_run_that_never_starts_fails_once_it_was_due(quota_reset_check) -> None:
    assert judged(quota_reset_check, CREATED) == ("ok", "waiting")
    due_and_late = CREATED + HOUR + GRACE
    assert judged(quota_reset_check, due_and_late - 1) == ("ok", "waiting")
    result = quota_reset_check.run(due_and_late)
    assert result.status.value == "failed"
    assert result.details == {
        "state": "never_started",
        "run": None,
        "segments": SEGMENTS,
        "segments_finished": 0,
    }


def test_runs_at_47_past_the_hour_are_healthy_every_minute(quota_reset_check) -> None:
    assert judged(quota_reset_check, CREATED) == ("ok", "waiting")
    for hour in range(1, 4):
        started = CREATED + hour * HOUR
        run_id = scheduled_reset(started, finished=range(1))
        # Minutes in, one segment is still sweeping: running, not failing.
        assert quota_reset_check.run(started + 10 * MINUTE).details == {
            "state": "running",
            "run": run_id,
            "segments": SEGMENTS,
            "segments_finished": 1,
            "started_seconds_ago": 600,
        }
        run_quota_reset(run_id, range(1, SEGMENTS))
        # Up to the next start, and in particular from :30 to :47, when the old check wanted
        # the run of the new hour to be done already.
        for minute in range(11, 60):
            assert judged(quota_reset_check, started + minute * MINUTE) == ("ok", "finished"), (hour, minute)


def test_a_run_that_does_not_finish_within_the_grace_period_fails(quota_reset_check) -> None:
    started = CREATED + HOUR
    scheduled_reset(started, finished=range(1))
    assert judged(quota_reset_check, started + GRACE - 1) == ("ok", "running")
    assert judged(quota_reset_check, started + GRACE) == ("failed", "unfinished")


def test_runs_that_stop_fail_once_the_next_one_is_late(quota_reset_check, metrics) -> None:
    last = CREATED + 2 * HOUR
    scheduled_reset(CREATED + HOUR)
    scheduled_reset(last)
    assert judged(quota_reset_check, last + HOUR + GRACE - 1) == ("ok", "finished")
    assert judged(quota_reset_check, last + HOUR + GRACE) == ("failed", "stopped")
    # Through the probe: the status and the metric the dashboards read.
    report = scheduled(health_handler(now=last + 2 * HOUR))
    assert report["status"] == "degraded"
    assert report["checks"]["quota_reset"]["state"] == "stopped"
    assert metrics.total("HealthCheck", Check="quota_reset") == 0


def test_a_retried_older_start_does_not_move_the_schedule_back(quota_reset_check) -> None:
    scheduled_reset(CREATED + 2 * HOUR)
    scheduled_reset(CREATED + HOUR)  # Lambda retrying the previous hour's start, late
    schedule = JobCheckpoint.get(JobCheckpoint.key(SCHEDULE_CHECKPOINT), consistent_read=True)
    assert schedule.updated_at.timestamp() == CREATED + 2 * HOUR
    assert judged(quota_reset_check, CREATED + 3 * HOUR + GRACE - 1) == ("ok", "finished")


# --- webhook freshness -----------------------------------------------------------------------------


def test_verified_webhooks_move_the_marker_and_a_long_silence_is_a_stall(
    webhooks: WebhookClient, metrics
) -> None:
    sub = se.subscription(id="sub_fresh", customer="cus_fresh", metadata={"account_id": "acct_fresh"})
    assert webhooks.post(se.event("customer.subscription.created", sub)).status == 200
    received = WebhookMarker.get(MARKER_KEY).received_at
    handler = health_handler(now=received + 60)
    report = scheduled(handler)
    assert report["checks"]["webhook_freshness"] == {
        "status": "ok",
        "age_seconds": 60,
        "quiet": False,
        "stalled": False,
        "latency_ms": report["checks"]["webhook_freshness"]["latency_ms"],
    }
    assert metrics.total("TimeSinceLastWebhook") == 60 and metrics.total("WebhooksStalled") == 0

    # A week later, on a Wednesday afternoon in New York: far more than 6 business hours of silence.
    later = dt.datetime.fromtimestamp(received + 7 * 86400, NEW_YORK)
    wednesday = later + dt.timedelta(days=(2 - later.weekday()) % 7)
    handler.probe.clock = Clock(int(wednesday.replace(hour=15).timestamp()))
    report = scheduled(handler)
    assert report["checks"]["webhook_freshness"]["status"] == "failed"
    assert report["checks"]["webhook_freshness"]["stalled"] is True
    assert values(metrics, "WebhooksStalled") == [0, 1]
    assert values(metrics, "HealthCheck", Check="webhook_freshness") == [1, 0]


def test_the_marker_never_fails_a_webhook(webhooks: WebhookClient, monkeypatch, metrics) -> None:
    def unavailable(*_args, **_kwargs):
        raise RuntimeError("DynamoDB is having a bad day")

    monkeypatch.setattr(WebhookMarker, "update", unavailable)
    sub = se.subscription(id="sub_m", customer="cus_m", metadata={"account_id": "acct_m"})
    assert webhooks.post(se.event("customer.subscription.created", sub)).status == 200
    assert any("arrival marker" in log["message"] for log in metrics.logs() if log["level"] == "WARNING")


def test_the_marker_adds_one_request_per_container_and_minute(webhooks: WebhookClient, aws_calls) -> None:
    def deliver(event_type: str, created: int) -> str:
        sub = se.subscription(id="sub_s", customer="cus_s", metadata={"account_id": "acct_steady"})
        return webhooks.post(se.event(event_type, sub, created=created)).body["outcome"]

    assert deliver("customer.subscription.created", 1_760_000_000) == "applied"
    assert aws_calls.count("UpdateItem") == 3  # idempotency, state and the marker
    first = WebhookMarker.get(MARKER_KEY).received_at
    for step in range(1, 4):
        aws_calls.clear()
        assert deliver("customer.subscription.updated", 1_760_000_000 + step) == "applied"
        # Steady state, as before the marker: put in-progress, apply, complete.
        assert aws_calls == ["PutItem", "UpdateItem", "UpdateItem"]
    assert WebhookMarker.get(MARKER_KEY).received_at == first


# --- the active subscriptions gauge ----------------------------------------------------------------


def gauge_points() -> list:
    return ActiveSubscriptionsGauge(load_plan_catalog(load_settings(webhook_secret=False))).points()


def active_counts() -> dict[str, float]:
    return {p.labels["Tier"]: p.value for p in gauge_points() if p.metric.value == "ActiveSubscriptions"}


def mrr() -> dict[str, float]:
    return {p.labels["Currency"]: p.value for p in gauge_points() if p.metric.value == "MRR"}


def paying() -> float:
    return next(p.value for p in gauge_points() if p.metric.value == "PayingSubscriptions")


def test_the_gauge_follows_a_subscription_lifecycle(webhooks: WebhookClient) -> None:
    def deliver(event_type: str, created: int, **fields) -> None:
        sub = se.subscription(id="sub_g", customer="cus_g", metadata={"account_id": "acct_g"}, **fields)
        assert webhooks.post(se.event(event_type, sub, created=created)).status == 200

    assert active_counts() == {"FREE": 0, "PRO": 0}
    deliver("customer.subscription.created", 1_760_000_000, lookup_key=None)
    assert active_counts() == {"FREE": 1, "PRO": 0}
    deliver("customer.subscription.updated", 1_760_000_100, lookup_key="pro_monthly")
    assert active_counts() == {"FREE": 0, "PRO": 1}
    assert mrr() == {"USD": 20.0} and paying() == 1  # the factory's price: 2000 cents a month
    deliver("customer.subscription.updated", 1_760_000_150, lookup_key="pro_monthly", status="trialing")
    # A trial is live, but brings no revenue yet.
    assert active_counts() == {"FREE": 0, "PRO": 1} and mrr() == {} and paying() == 0
    deliver("customer.subscription.deleted", 1_760_000_200, lookup_key="pro_monthly", status="canceled")
    assert active_counts() == {"FREE": 0, "PRO": 0} and mrr() == {} and paying() == 0


def test_plan_mrr_splits_each_currencys_mrr_by_plan_and_adds_up_to_it(webhooks: WebhookClient) -> None:
    from billwatch.core.models import BillingAccount

    live = [("acct_p1", "PRO", 2000, "usd"), ("acct_p2", "PRO", 3000, "usd"), ("acct_f1", "FREE", 500, "usd")]
    live.append(("acct_e1", "PRO", 1500, "eur"))
    for pk, tier, amount, currency in live:
        BillingAccount(pk, active_tier=tier, mrr=amount, mrr_currency=currency).save()

    plan_mrr = {
        (p.labels["Currency"], p.labels["Tier"]): p.value
        for p in gauge_points()
        if p.metric.value == "PlanMRR"
    }
    assert plan_mrr == {("USD", "PRO"): 50.0, ("USD", "FREE"): 5.0, ("EUR", "PRO"): 15.0}
    assert mrr() == {"USD": 55.0, "EUR": 15.0}


def test_the_gauge_counts_a_merged_customer_once(webhooks: WebhookClient) -> None:
    # The subscription arrives before anything names the account: it is stored under the customer.
    sub = se.subscription(id="sub_merge", customer="cus_merge", metadata={})
    webhooks.post(se.event("customer.subscription.created", sub, created=1_760_000_000))
    assert active_counts()["PRO"] == 1
    session = se.checkout_session(id="cs_merge", customer="cus_merge", client_reference_id="acct_merge")
    webhooks.post(se.event("checkout.session.completed", session, created=1_760_000_100))
    assert active_counts()["PRO"] == 1
    from billwatch.core.models import BillingAccount

    assert BillingAccount.get("acct_merge").active_tier == "PRO"
    assert BillingAccount.get("cus_merge").active_tier is None


# --- GET /health -------------------------------------------------------------------------------------


def test_shallow_health_reports_the_last_snapshot_and_its_age(probe_env) -> None:
    handler = health_handler()
    status, body, _ = get_health(handler)
    assert (status, body) == (
        200,
        {"status": "degraded", "checks": {"probe": {"status": "failed", "reason": "never_ran"}}},
    )

    scheduled(handler)
    handler.probe.clock = Clock(WEDNESDAY_AFTERNOON + 30)
    status, body, _ = get_health(handler)
    assert status == 200 and body["checks"]["probe"] == {"status": "ok", "age_seconds": 30}
    assert set(body["checks"]) == CHECKS | {"probe"}
    assert body["checks"]["dynamodb"]["status"] == "ok"

    handler.probe.clock = Clock(WEDNESDAY_AFTERNOON + 3 * 60 + 1)  # three intervals of 1 minute
    status, body, _ = get_health(handler)
    assert (status, body["status"]) == (200, "degraded")
    assert body["checks"]["probe"] == {"status": "failed", "reason": "stale", "age_seconds": 181}


@pytest.mark.parametrize(
    "stored",
    [
        # What a buyer's client_reference_id could write onto the key before ids were checked.
        {"merged_into": {"S": "acct_1"}, "last_checkout_status": {"S": "completed"}},
        {"probed_at": {"N": "1796600000"}, "report": {"S": "not json"}},
        {"probed_at": {"N": "1796600000"}, "report": {"S": "[1, 2]"}},
        {"probed_at": {"N": "1796600000"}, "report": {"S": '{"dynamodb": "ok"}'}},
        {"report": {"S": "{}"}, "subscription_status": {"S": "active"}},
    ],
)
def test_whatever_the_snapshot_item_holds_get_health_answers(probe_env, stored) -> None:
    import boto3

    boto3.client("dynamodb").put_item(
        TableName=os.environ["BILLING_TABLE_NAME"], Item={"pk": {"S": "health#last-probe"}, **stored}
    )
    status, body, _ = get_health(health_handler())
    assert (status, body["checks"]["probe"]) == (200, {"status": "failed", "reason": "unreadable"})


def test_a_read_timeout_on_the_arrival_marker_never_fails_a_webhook(
    webhooks: WebhookClient, monkeypatch
) -> None:
    from botocore.client import BaseClient
    from botocore.exceptions import ReadTimeoutError

    original = BaseClient._make_api_call

    def timing_out(self: BaseClient, operation: str, params: dict) -> Any:
        if operation == "UpdateItem" and params["Key"].get("pk", {}).get("S") == "marker#webhook-received":
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", timing_out)
    sub = se.subscription(id="sub_t", customer="cus_t", metadata={"account_id": "acct_t"})
    assert webhooks.post(se.event("customer.subscription.created", sub)).status == 200


@pytest.mark.parametrize("value", ["0", "true", "yes", "1,1", ""])
def test_any_other_deep_value_is_400_naming_the_parameter(probe_env, value) -> None:
    status, body, _ = get_health(health_handler(), {"deep": value})
    assert status == 400 and "deep" in body["message"]


def test_no_health_body_shows_internals(with_stripe, dead_letter_queues, probe_env) -> None:
    with_stripe.failure = (
        401,
        {"type": "invalid_request_error", "message": "Invalid API Key rk_test_health"},
    )
    boto3.client("sqs").send_message(QueueUrl=dead_letter_queues["quota_reset"], MessageBody="{}")
    handler = health_handler()
    bodies = [get_health(handler)[2]]
    scheduled(handler)
    bodies += [get_health(handler)[2], get_health(handler, {"deep": "1"})[2]]
    boto3.client("dynamodb").delete_table(TableName=probe_env["IdempotencyTable"])
    handler.probe.clock = Clock(WEDNESDAY_AFTERNOON + 60)  # past the deep cache
    bodies.append(get_health(handler, {"deep": "1"})[2])
    internals = [
        *probe_env.values(),
        *dead_letter_queues.values(),
        "rk_test",
        "arn:",
        "Traceback",
        "Invalid API Key",
    ]
    internals += ["127.0.0.1", "Exception", "Error", "queue/", "amazonaws"]
    for body in bodies:
        assert [internal for internal in internals if internal in body] == [], body
    assert json.loads(bodies[-1])["checks"]["dynamodb"] == {
        "status": "failed",
        "error": "unreachable",
        "latency_ms": json.loads(bodies[-1])["checks"]["dynamodb"]["latency_ms"],
    }
