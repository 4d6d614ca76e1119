"""Each channel over real HTTP against the recording receivers (SES through moto)."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billwatch.alerting.channels.base import Channel, DeliveryFailed
from billwatch.alerting.channels.factory import build_channel
from billwatch.alerting.channels.notification import NotificationContent
from billwatch.alerting.channels.pagerduty import pagerduty_event
from billwatch.alerting.channels.retry import RetryStage
from billwatch.alerting.channels.webhook import NOTIFICATION_ID_HEADER, SIGNATURE_HEADER
from billwatch.alerting.config import (
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
    channel_name,
)
from billwatch.alerting.inputs import AlertStatus, Notification, NotificationKind
from billwatch.core.severities import Severity
from tests.alert_receivers import AlertReceivers, Answer, alarm_alert, alert_receivers, usage_alert
from tests.support import MetricsCapture

SLACK_PATH = "/services/T0SECRET/B0SECRET/slacktokensecret"
SLACK = SlackChannelConfig(type="slack", webhook_url_secret="slack_webhook_url")
ROUTING_KEY = "pd-routing-key-secret-0123456789"
SIGNING_SECRET = "whsec_alerts_signing_secret"
SENDER = "alerts@billwatch.example.com"
NO_SECRETS: Callable[[str], str] = dict[str, str]().__getitem__
FIRING = Notification(alarm_alert(), NotificationKind.FIRING, "oncall-critical")
RESOLVED = Notification(
    alarm_alert(status=AlertStatus.RESOLVED, since="2025-03-01T10:20:00.000Z"),
    NotificationKind.RESOLVED,
    "oncall-critical",
)


class RecordingSleep:
    """Takes note of each wait instead of waiting; ``budget`` is the invocation's time left."""

    def __init__(self, budget: float | None = None) -> None:
        self.delays: list[float] = []
        self.budget = budget

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    def time_left(self) -> float:
        assert self.budget is not None
        return self.budget - sum(self.delays)


@dataclass(frozen=True)
class Sending:
    """A channel behind the retry stage, as the dispatcher sends on it."""

    channel: Channel[Any]
    retry: RetryStage

    def send(self, notification: Notification) -> None:
        self.retry.deliver(self.channel, NotificationContent(notification))


@pytest.fixture
def receivers() -> Iterator[AlertReceivers]:
    with alert_receivers() as server:
        yield server


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def secrets_from(receivers: AlertReceivers) -> Callable[[str], str]:
    return {
        "slack_webhook_url": receivers.url(SLACK_PATH),
        "pagerduty_routing_key": ROUTING_KEY,
        "webhook_signing_secret": SIGNING_SECRET,
    }.__getitem__


def slack_send(
    receivers: AlertReceivers, sleep: RecordingSleep, notification: Notification = FIRING, **retries: Any
) -> None:
    channel = build_channel(SLACK, secrets_from(receivers), email_sender=None)
    Sending(channel, RetryStage(sleep=sleep, **retries)).send(notification)


def failure_of(send: Callable[[], None]) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        send()
    return caught.value


# --- Slack and the retry policy


def test_slack_takes_a_block_kit_message(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    slack_send(receivers, sleep)
    (request,) = receivers.requests(SLACK_PATH)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json["blocks"][0]["text"]["text"] == ":rotating_light: CRITICAL: HighWebhookFailureRate"
    assert request.json["text"].startswith(":rotating_light: CRITICAL: HighWebhookFailureRate")
    assert sleep.delays == []


def test_a_429_waits_as_long_as_retry_after_says(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    receivers.respond(SLACK_PATH, [Answer(429, body="rate_limited", retry_after=2), Answer(200)])
    slack_send(receivers, sleep)
    assert len(receivers.requests(SLACK_PATH)) == 2
    assert sleep.delays == [2.0]


def test_retry_after_may_be_an_http_date(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    in_three_seconds = email.utils.formatdate(time.time() + 3, usegmt=True)
    receivers.respond(SLACK_PATH, [Answer(429, retry_after=in_three_seconds), Answer(200)])
    slack_send(receivers, sleep)
    assert len(receivers.requests(SLACK_PATH)) == 2
    (delay,) = sleep.delays
    assert 1.0 < delay <= 3.0


def test_server_errors_are_retried_with_growing_backoff(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    receivers.respond(SLACK_PATH, [Answer(500), Answer(500), Answer(200)])
    slack_send(receivers, sleep, base_delay=0.5)
    assert len(receivers.requests(SLACK_PATH)) == 3
    first, second = sleep.delays
    assert 0.25 <= first <= 0.5 <= second <= 1.0


def test_backoff_stops_growing_at_max_delay() -> None:
    retry = RetryStage(base_delay=0.5, max_delay=2.0)
    assert all(1.0 <= retry.backoff(failed) <= 2.0 for failed in (3, 4, 10))


@pytest.mark.parametrize(("status", "body"), [(404, "no_service"), (400, "invalid_payload"), (403, "x")])
def test_client_errors_fail_permanently_at_once(
    receivers: AlertReceivers, sleep: RecordingSleep, status: int, body: str
) -> None:
    receivers.respond(SLACK_PATH, [Answer(status, body=body)])
    failure = failure_of(lambda: slack_send(receivers, sleep))
    assert len(receivers.requests(SLACK_PATH)) == 1
    assert (failure.channel, failure.permanent, failure.status) == ("slack", True, status)
    assert f"HTTP {status}" in str(failure)
    assert sleep.delays == []


def test_slacks_error_code_is_quoted_but_other_bodies_are_not(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    receivers.respond(SLACK_PATH, [Answer(410, body="channel_is_archived")])
    assert str(failure_of(lambda: slack_send(receivers, sleep))).endswith("HTTP 410 channel_is_archived")
    receivers.respond(SLACK_PATH, [Answer(400, body={"echo": ROUTING_KEY})])
    assert str(failure_of(lambda: slack_send(receivers, sleep))).endswith("HTTP 400")


def test_a_redirect_is_not_followed(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    receivers.respond(SLACK_PATH, [Answer(302, headers={"Location": receivers.url("/elsewhere")})])
    failure = failure_of(lambda: slack_send(receivers, sleep))
    assert (failure.permanent, failure.status) == (True, 302)
    assert receivers.requests("/elsewhere") == []


def test_persistent_server_errors_fail_for_now_after_every_attempt(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    receivers.respond(SLACK_PATH, [Answer(500)])
    failure = failure_of(lambda: slack_send(receivers, sleep, attempts=3))
    assert len(receivers.requests(SLACK_PATH)) == 3
    assert len(sleep.delays) == 2
    assert (failure.permanent, failure.status) == (False, 500)
    assert "HTTP 500 (attempt 3 of 3; no attempts left)" in str(failure)


def test_a_slow_receiver_times_out_and_is_retried(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    receivers.respond(SLACK_PATH, [Answer(200, delay=1.0)])
    started = time.monotonic()
    failure = failure_of(lambda: slack_send(receivers, sleep, attempts=2, timeout=0.2))
    assert time.monotonic() - started < 1.0
    assert len(receivers.requests(SLACK_PATH)) == 2
    assert failure.permanent is False
    assert "timed out after 0.2 s" in str(failure)


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    sleep = RecordingSleep()
    config = WebhookChannelConfig(
        type="webhook", url=f"http://127.0.0.1:{port}/hook", signing_secret="webhook_signing_secret"
    )
    channel = build_channel(config, {"webhook_signing_secret": SIGNING_SECRET}.__getitem__, email_sender=None)
    failure = failure_of(lambda: Sending(channel, RetryStage(sleep=sleep, attempts=2)).send(FIRING))
    assert failure.permanent is False
    assert "connection failed (ConnectionRefusedError)" in str(failure)
    assert len(sleep.delays) == 1


def test_backoff_never_sleeps_past_the_deadline(receivers: AlertReceivers) -> None:
    sleep = RecordingSleep(budget=2.0)
    receivers.respond(SLACK_PATH, [Answer(500)])
    failure = failure_of(
        lambda: slack_send(receivers, sleep, attempts=10, base_delay=0.5, deadline=sleep.time_left)
    )
    assert sum(sleep.delays) <= 2.0
    assert len(receivers.requests(SLACK_PATH)) == len(sleep.delays) + 1 < 10
    assert failure.permanent is False
    assert "no time left in this invocation" in str(failure)


def test_a_retry_after_beyond_the_deadline_or_the_cap_is_not_waited_for(receivers: AlertReceivers) -> None:
    sleep = RecordingSleep(budget=3.0)
    receivers.respond(SLACK_PATH, [Answer(429, retry_after=5), Answer(200)])
    failure = failure_of(lambda: slack_send(receivers, sleep, deadline=sleep.time_left))
    assert "no time left in this invocation to wait 5.00 s" in str(failure)
    receivers.respond(SLACK_PATH, [Answer(429, retry_after=60), Answer(200)])
    failure = failure_of(lambda: slack_send(receivers, sleep, max_retry_after=30))
    assert "Retry-After 60 s is over the 30 s limit" in str(failure)
    assert (failure.permanent, failure.status) == (False, 429)
    assert len(receivers.requests(SLACK_PATH)) == 2
    assert sleep.delays == []


def test_no_request_is_started_without_time_left(receivers: AlertReceivers, sleep: RecordingSleep) -> None:
    failure = failure_of(lambda: slack_send(receivers, sleep, deadline=lambda: 0.0))
    assert receivers.requests() == []
    assert (failure.permanent, str(failure)) == (
        False,
        "slack delivery failed for now: no time left in this invocation",
    )


# --- PagerDuty


def pagerduty(receivers: AlertReceivers, sleep: RecordingSleep) -> Sending:
    config = PagerDutyChannelConfig(
        type="pagerduty", routing_key_secret="pagerduty_routing_key", events_url=receivers.url("/v2/enqueue")
    )
    channel = build_channel(config, secrets_from(receivers), email_sender=None)
    return Sending(channel, RetryStage(sleep=sleep))


def test_pagerduty_triggers_then_resolves_the_same_incident(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    receivers.respond("/v2/enqueue", [Answer(202, body={"status": "success", "message": "Event processed"})])
    channel = pagerduty(receivers, sleep)
    channel.send(FIRING)
    channel.send(Notification(alarm_alert(), NotificationKind.REPEAT, "oncall-critical"))
    channel.send(RESOLVED)
    trigger, repeat, resolve = (request.json for request in receivers.requests("/v2/enqueue"))
    assert trigger == {"routing_key": ROUTING_KEY, **pagerduty_event(FIRING)}
    assert trigger["payload"] == {
        "summary": "HighWebhookFailureRate: More than 5% of Stripe webhooks failed over the last 600 s.",
        "source": "billwatch",
        "severity": "critical",
        "timestamp": "2025-03-01T10:00:00.000Z",
        "component": "cloudwatch",
        "group": "webhook-failures",
        "class": "HighWebhookFailureRate",
        "custom_details": {
            "state": "Firing since 2025-03-01T10:00:00.000Z",
            "reason": "Threshold Crossed: 1 datapoint [7.5 (01/03/25 10:00:00)] was greater than 5.0",
            "evaluation": "7.5 > 5 (threshold)",
            "value": 7.5,
            "threshold": 5.0,
            "comparison": "GreaterThanThreshold",
            "labels": {"source": "cloudwatch", "group": "webhook-failures"},
            "receiver": "oncall-critical",
        },
    }
    assert [event["event_action"] for event in (trigger, repeat, resolve)] == [
        "trigger",
        "trigger",
        "resolve",
    ]
    assert trigger["dedup_key"] == repeat["dedup_key"] == resolve["dedup_key"]
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(Severity.CRITICAL, "critical"), (Severity.WARNING, "warning"), (Severity.INFO, "info")],
)
def test_pagerduty_receives_the_mapped_severity_and_a_cut_summary(
    receivers: AlertReceivers, sleep: RecordingSleep, severity: Severity, expected: str
) -> None:
    alert = alarm_alert(severity=severity, summary="s" * 3000)
    pagerduty(receivers, sleep).send(Notification(alert, NotificationKind.FIRING, "oncall"))
    (request,) = receivers.requests("/v2/enqueue")
    assert request.json["payload"]["severity"] == expected
    assert len(request.json["payload"]["summary"]) == 1024
    assert request.json["payload"]["summary"].endswith("s…")


# --- generic webhook


def verify_billwatch_signature(secret: str, header: str, body: bytes, now: float) -> bool:
    """The procedure of docs/alert-webhooks.md, as a receiver would write it."""
    timestamp, candidates = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > 300:
        return False
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def webhook(receivers: AlertReceivers, sleep: RecordingSleep) -> Sending:
    config = WebhookChannelConfig(
        type="webhook", url=receivers.url("/hooks/billwatch"), signing_secret="webhook_signing_secret"
    )
    channel = build_channel(config, secrets_from(receivers), email_sender=None)
    return Sending(channel, RetryStage(sleep=sleep))


def test_a_webhook_is_signed_so_the_receiver_can_verify_it(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    webhook(receivers, sleep).send(FIRING)
    (request,) = receivers.requests("/hooks/billwatch")
    header, now = request.headers[SIGNATURE_HEADER], time.time()
    assert verify_billwatch_signature(SIGNING_SECRET, header, request.raw_body, now)
    assert not verify_billwatch_signature("whsec_wrong", header, request.raw_body, now)
    tampered = request.raw_body.replace(b"critical", b"info")
    assert tampered != request.raw_body
    assert not verify_billwatch_signature(SIGNING_SECRET, header, tampered, now)
    assert not verify_billwatch_signature(SIGNING_SECRET, header, request.raw_body, now + 301)
    assert request.json["kind"] == "firing"
    assert request.json["alert"]["name"] == "HighWebhookFailureRate"
    assert request.headers[NOTIFICATION_ID_HEADER] == request.json["id"]


def test_a_retried_webhook_carries_the_same_notification_id(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    receivers.respond("/hooks/billwatch", [Answer(503), Answer(200)])
    channel = webhook(receivers, sleep)
    channel.send(FIRING)
    channel.send(RESOLVED)
    first, retry, resolved = receivers.requests("/hooks/billwatch")
    assert first.headers[NOTIFICATION_ID_HEADER] == retry.headers[NOTIFICATION_ID_HEADER]
    assert first.raw_body == retry.raw_body
    assert resolved.headers[NOTIFICATION_ID_HEADER] != first.headers[NOTIFICATION_ID_HEADER]


# --- email through SES


@pytest.fixture
def ses(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("ses", region_name="us-east-1")
        client.verify_email_identity(EmailAddress=SENDER)
        yield ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


EMAIL = EmailChannelConfig(type="email", to=("admin@example.com", "billing-oncall@example.com"))


def test_email_goes_out_through_ses_with_the_plan_subjects(ses: Any, sleep: RecordingSleep) -> None:
    channel = Sending(build_channel(EMAIL, NO_SECRETS, email_sender=SENDER), RetryStage(sleep=sleep))
    channel.send(FIRING)
    channel.send(RESOLVED)
    channel.send(Notification(usage_alert(), NotificationKind.FIRING, "billing-team"))
    channel.send(Notification(usage_alert(severity=Severity.INFO), NotificationKind.TEST, "billing-team"))
    assert [message.subject for message in ses.sent_messages] == [
        "CRITICAL BILLING ALERT: HighWebhookFailureRate",
        "RESOLVED: CRITICAL BILLING ALERT: HighWebhookFailureRate",
        "BILLING WARNING: UsageThresholdCrossed",
        "TEST: Billing Info: UsageThresholdCrossed",
    ]
    first = ses.sent_messages[0]
    assert first.source == SENDER
    assert first.destinations["ToAddresses"] == ["admin@example.com", "billing-oncall@example.com"]
    assert "<td>7.5 &gt; 5 (threshold)</td>" in first.body


def test_email_needs_a_sender(sleep: RecordingSleep) -> None:
    channel = build_channel(EMAIL, NO_SECRETS, email_sender=None, ses_client_factory=pytest.fail)
    failure = failure_of(lambda: Sending(channel, RetryStage(sleep=sleep)).send(FIRING))
    assert (failure.channel, failure.permanent) == ("email", True)
    assert sleep.delays == []


def test_an_unverified_sender_is_rejected_permanently(ses: Any, sleep: RecordingSleep) -> None:
    channel = build_channel(EMAIL, NO_SECRETS, email_sender="nobody@elsewhere.example")
    failure = failure_of(lambda: Sending(channel, RetryStage(sleep=sleep)).send(FIRING))
    assert (failure.permanent, failure.status) == (True, 400)
    assert "SES MessageRejected" in str(failure)
    assert ses.sent_messages == []


class ThrottledOnce:
    """An SES client that is throttled on its first call, and the calls it took."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def send_email(self, **request: Any) -> dict:
        self.calls.append(request)
        if len(self.calls) == 1:
            error = {"Code": "Throttling", "Message": "Maximum sending rate exceeded."}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendEmail")
        return {"MessageId": "1"}


def test_ses_throttling_is_retried_with_the_same_policy(sleep: RecordingSleep) -> None:
    client = ThrottledOnce()
    channel = build_channel(EMAIL, NO_SECRETS, email_sender=SENDER, ses_client_factory=lambda: client)
    Sending(channel, RetryStage(sleep=sleep)).send(FIRING)
    assert len(client.calls) == 2
    assert len(sleep.delays) == 1
    body = client.calls[0]["Message"]["Body"]
    assert body["Text"]["Data"].startswith("CRITICAL BILLING ALERT: HighWebhookFailureRate\n")
    assert body["Html"]["Data"].startswith("<html>")


# --- secrets


def test_a_missing_secret_fails_permanently_naming_the_key(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    channel = build_channel(SLACK, NO_SECRETS, email_sender=None)
    failure = failure_of(lambda: Sending(channel, RetryStage(sleep=sleep)).send(FIRING))
    assert (failure.channel, failure.permanent) == ("slack", True)
    assert "'slack_webhook_url' is missing" in str(failure)
    assert receivers.requests() == []


def test_a_secrets_store_failure_is_transient_and_quotes_nothing(
    receivers: AlertReceivers, sleep: RecordingSleep
) -> None:
    def unreadable(key: str) -> str:
        raise RuntimeError(f"could not decrypt {ROUTING_KEY}")

    channel = build_channel(SLACK, unreadable, email_sender=None)
    failure = failure_of(lambda: Sending(channel, RetryStage(sleep=sleep)).send(FIRING))
    assert failure.permanent is False
    assert ROUTING_KEY not in str(failure)
    assert "'slack_webhook_url' could not be read (RuntimeError)" in str(failure)


def test_secrets_never_reach_logs_or_errors(
    receivers: AlertReceivers, metrics: MetricsCapture, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = RecordingSleep()
    receivers.respond(SLACK_PATH, [Answer(500), Answer(404, body="no_service")])
    receivers.respond("/v2/enqueue", [Answer(429), Answer(400, body={"routing_key": ROUTING_KEY})])
    failures = [
        failure_of(lambda: slack_send(receivers, sleep)),
        failure_of(lambda: pagerduty(receivers, sleep).send(FIRING)),
    ]
    logs = metrics.logs()
    assert [(line["message"], line["channel"]) for line in logs] == [
        ("Alert delivery attempt failed, retrying", "slack"),
        ("Alert delivery attempt failed, retrying", "pagerduty"),
    ]
    everything = " ".join([*(str(failure) for failure in failures), str(logs), caplog.text])
    for secret in ("slacktokensecret", "T0SECRET", ROUTING_KEY):
        assert secret not in everything


# --- the log channel and the names


def test_the_log_channel_logs_the_notification(metrics: MetricsCapture) -> None:
    channel = build_channel(LogChannelConfig(type="log"), NO_SECRETS, email_sender=None)
    Sending(channel, RetryStage()).send(FIRING)
    (line,) = metrics.logs()
    assert line["message"] == "Alert notification"
    assert (line["kind"], line["receiver"]) == ("firing", "oncall-critical")
    assert line["alert"]["name"] == "HighWebhookFailureRate"
    assert line["alert"]["evaluation"] == "7.5 > 5 (threshold)"


@pytest.mark.parametrize(
    "config",
    [
        SLACK,
        EMAIL,
        PagerDutyChannelConfig(type="pagerduty", routing_key_secret="k"),
        WebhookChannelConfig(type="webhook", url="https://example.com/hook", signing_secret="k"),
        LogChannelConfig(type="log"),
    ],
)
def test_a_channel_is_named_as_the_metric_dimension(config: Any) -> None:
    channel = build_channel(config, NO_SECRETS, email_sender=SENDER)
    assert channel.name == channel_name(config)
