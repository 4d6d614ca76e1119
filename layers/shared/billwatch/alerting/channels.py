"""Alert channels: how one notification reaches Slack, email (SES), PagerDuty, a webhook or the log.

The dispatcher decides who is told what and when; a channel only renders the notification and
delivers it once, retrying what may succeed later (429, 5xx, timeouts, lost connections) inside
the invocation's remaining time, and failing at once on what will not (other 4xx, a missing secret).

Secrets (the Slack URL, the PagerDuty routing key, a webhook signing secret) are read when a
notification is sent, so a rotation takes effect without a cold start. They never appear in a log
line or in a DeliveryFailed: both name the channel, the secret's key and the HTTP status only.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import html
import json
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from billwatch.alerting.alarm_text import Severity
from billwatch.alerting.config import (
    ChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)
from billwatch.alerting.inputs import Alert, Notification, NotificationKind
from billwatch.core.observability import logger

Result = TypeVar("Result")

WEBHOOK_SCHEMA_VERSION = "1"
SIGNATURE_HEADER = "Billwatch-Signature"
NOTIFICATION_ID_HEADER = "Billwatch-Notification-Id"
PAGERDUTY_SUMMARY_LIMIT = 1024
USER_AGENT = "billwatch-alerts/1"
_ELLIPSIS = "…"


class DeliveryFailed(Exception):
    """A channel could not take a notification; ``permanent`` says whether trying later can help."""

    def __init__(self, channel: str, detail: str, *, permanent: bool, status: int | None = None) -> None:
        kind = "permanently" if permanent else "for now"
        super().__init__(f"{channel} delivery failed {kind}: {detail}")
        self.channel = channel
        self.detail = detail
        self.permanent = permanent
        self.status = status


class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> None: ...


# --------------------------------------------------------------------------------------------------
# What every message says


_COMPARISON_SIGNS = {
    "GreaterThanThreshold": ">",
    "GreaterThanOrEqualToThreshold": ">=",
    "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=",
    "GreaterThanUpperThreshold": ">",
    "LessThanLowerThreshold": "<",
}
_STATE_WORDS = {
    NotificationKind.FIRING: "Firing",
    NotificationKind.REPEAT: "Still firing",
    NotificationKind.RESOLVED: "Resolved",
    NotificationKind.TEST: "Test notification",
}


def format_number(value: float) -> str:
    return f"{value:.12g}"


def evaluation_text(alert: Alert) -> str | None:
    """The metric's value against its threshold, e.g. ``7.5 > 5 (threshold)``, as far as it is known."""
    sign = _COMPARISON_SIGNS.get(alert.comparison or "", "vs")
    if alert.value is not None and alert.threshold is not None:
        return f"{format_number(alert.value)} {sign} {format_number(alert.threshold)} (threshold)"
    if alert.value is not None:
        return f"value {format_number(alert.value)}"
    if alert.threshold is not None:
        return f"threshold {sign} {format_number(alert.threshold)}"
    return None


def state_text(notification: Notification) -> str:
    """What happened and since when, e.g. ``Still firing since 2025-01-01T10:00:00.000Z``."""
    return f"{_STATE_WORDS[notification.kind]} since {notification.alert.since}"


def labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items()))


def message_links(alert: Alert) -> list[tuple[str, str]]:
    """(text, url) of the alarm's console page and its runbook, those that are web links."""
    candidates = [("CloudWatch alarm", alert.console_url), ("Runbook", alert.runbook)]
    return [(text, url) for text, url in candidates if url and urlsplit(url).scheme in ("https", "http")]


def message_facts(notification: Notification) -> list[tuple[str, str]]:
    """The (label, text) rows that email bodies list; a row is left out when it is not known."""
    alert = notification.alert
    rows = [
        ("State", state_text(notification)),
        ("Severity", alert.severity.value),
        ("Value", evaluation_text(alert)),
        ("Reason", alert.reason),
        ("Labels", labels_text(alert.labels)),
        ("Receiver", notification.receiver),
    ]
    return [(label, text) for label, text in rows if text]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


# --------------------------------------------------------------------------------------------------
# Slack (Block Kit through an incoming webhook)

# Slack's limits: header text 150, section text 3000, a field 2000, a context element 3000.
_SLACK_HEADER_LIMIT = 150
_SLACK_TEXT_LIMIT = 3000
_SLACK_FIELD_LIMIT = 2000
_SLACK_SEVERITY_EMOJI = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters; anything else (``*``, ``_``) may stay."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(raw: str, limit: int = _SLACK_TEXT_LIMIT) -> str:
    escaped = slack_escape(raw)
    if len(escaped) <= limit:
        return escaped
    # Cutting inside an entity would show "&am…" instead of the character.
    return _PARTIAL_ENTITY.sub("", escaped[: limit - len(_ELLIPSIS)]) + _ELLIPSIS


def _slack_link(url: str, text: str) -> str:
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{text}>"


def _slack_time(iso: str) -> str:
    """Shown in each reader's own time zone, with the UTC text where Slack cannot format it."""
    try:
        moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return slack_escape(iso)
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{slack_escape(iso)}>"


def slack_headline(notification: Notification) -> str:
    alert = notification.alert
    severity = alert.severity.value.upper()
    if notification.kind is NotificationKind.RESOLVED:
        return f":white_check_mark: RESOLVED: {alert.name} (was {alert.severity.value})"
    if notification.kind is NotificationKind.TEST:
        return f":test_tube: TEST {severity}: {alert.name}"
    emoji = _SLACK_SEVERITY_EMOJI[alert.severity]
    still = " (still firing)" if notification.kind is NotificationKind.REPEAT else ""
    return f"{emoji} {severity}{still}: {alert.name}"


def slack_message(notification: Notification) -> dict[str, Any]:
    """The incoming-webhook body: Block Kit blocks, and ``text`` for notifications and old clients."""
    alert = notification.alert
    headline = slack_headline(notification)
    since_word = "Resolved at" if notification.kind is NotificationKind.RESOLVED else "Since"
    fields = [
        f"*Severity*\n{_SLACK_SEVERITY_EMOJI[alert.severity]} {alert.severity.value}",
        f"*State*\n{_STATE_WORDS[notification.kind]}",
        f"*{since_word}*\n{_slack_time(alert.since)}",
    ]
    evaluation = evaluation_text(alert)
    if evaluation:
        fields.append(f"*Value*\n{slack_escape(evaluation)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, _SLACK_HEADER_LIMIT)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": slack_text(alert.summary)},
            "fields": [{"type": "mrkdwn", "text": truncate(field, _SLACK_FIELD_LIMIT)} for field in fields],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Reason*\n" + slack_text(alert.reason)}},
    ]
    # mrkdwn links rather than buttons: a webhook's buttons need an app with interactivity, or
    # Slack marks each click as failed.
    context = [" · ".join(_slack_link(url, text) for text, url in message_links(alert))]
    if alert.labels:
        context.append(slack_text(labels_text(alert.labels)))
    context.append(f"receiver {slack_escape(notification.receiver)}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": text} for text in context if text]}
    )
    fallback = f"{headline} — {alert.summary}"
    return {"text": slack_text(fallback), "blocks": blocks}


# --------------------------------------------------------------------------------------------------
# Email (SES)

_SUBJECT_PREFIXES = {
    Severity.CRITICAL: "CRITICAL BILLING ALERT",
    Severity.WARNING: "BILLING WARNING",
    Severity.INFO: "Billing Info",
}
_SUBJECT_LIMIT = 200
_KIND_SUBJECT_PREFIXES = {NotificationKind.RESOLVED: "RESOLVED: ", NotificationKind.TEST: "TEST: "}


@dataclass(frozen=True)
class EmailMessage:
    subject: str
    text: str
    html: str


def email_subject(notification: Notification) -> str:
    alert = notification.alert
    subject = f"{_SUBJECT_PREFIXES[alert.severity]}: {' '.join(alert.name.split())}"
    if notification.kind is NotificationKind.REPEAT:
        subject += " (still firing)"
    return truncate(_KIND_SUBJECT_PREFIXES.get(notification.kind, "") + subject, _SUBJECT_LIMIT)


def email_message(notification: Notification) -> EmailMessage:
    alert = notification.alert
    subject = email_subject(notification)
    facts = message_facts(notification)
    links = message_links(alert)
    width = max(len(label) for label, _ in [*facts, *links]) + 2
    text_lines = [subject, "", alert.summary, ""]
    text_lines += [f"{label + ':':<{width}}{value}" for label, value in [*facts, *links]]
    text_lines += ["", "-- billwatch alert dispatch"]
    rows = "".join(
        f'<tr><th align="left" valign="top">{html.escape(label)}</th><td>{html.escape(value)}</td></tr>'
        for label, value in facts
    )
    anchors = " | ".join(f'<a href="{html.escape(url)}">{html.escape(text)}</a>' for text, url in links)
    body = (
        f"<html><body><h2>{html.escape(subject)}</h2><p>{html.escape(alert.summary)}</p>"
        f'<table cellpadding="4">{rows}</table>'
        + (f"<p>{anchors}</p>" if anchors else "")
        + "<p><small>billwatch alert dispatch</small></p></body></html>"
    )
    return EmailMessage(subject=subject, text="\n".join(text_lines) + "\n", html=body)


# --------------------------------------------------------------------------------------------------
# PagerDuty (Events API v2)

_PAGERDUTY_SEVERITY = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


def pagerduty_dedup_key(notification: Notification) -> str:
    """One incident per alert: its repeats update it and its resolve closes it.

    A test notification gets a key of its own, so that it never merges into, or resolves, a real
    incident of the same alarm.
    """
    digest = hashlib.sha256(notification.alert.fingerprint.encode()).hexdigest()
    return f"billwatch-test-{digest}" if notification.kind is NotificationKind.TEST else f"billwatch-{digest}"


def pagerduty_event(notification: Notification, routing_key: str) -> dict[str, Any]:
    alert = notification.alert
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": pagerduty_dedup_key(notification)}
    if notification.kind is NotificationKind.RESOLVED:
        # PagerDuty reads only the key of a resolve; the incident keeps the trigger's details.
        return {**event, "event_action": "resolve"}
    test_prefix = "TEST: " if notification.kind is NotificationKind.TEST else ""
    details = {
        "state": state_text(notification),
        "reason": alert.reason,
        "evaluation": evaluation_text(alert),
        "value": alert.value,
        "threshold": alert.threshold,
        "comparison": alert.comparison,
        "labels": dict(alert.labels),
        "receiver": notification.receiver,
    }
    payload = {
        "summary": truncate(f"{test_prefix}{alert.name}: {alert.summary}", PAGERDUTY_SUMMARY_LIMIT),
        "source": "billwatch",
        "severity": _PAGERDUTY_SEVERITY[alert.severity],
        "timestamp": alert.since,
        "component": alert.labels.get("source"),
        "group": alert.labels.get("group"),
        "class": alert.name,
        "custom_details": {key: value for key, value in details.items() if value is not None},
    }
    return {
        **event,
        "event_action": "trigger",
        "payload": {key: value for key, value in payload.items() if value is not None},
        "client": "billwatch",
        **({"client_url": alert.console_url} if alert.console_url else {}),
        "links": [{"href": url, "text": text} for text, url in message_links(alert)],
    }


# --------------------------------------------------------------------------------------------------
# Generic webhook


def notification_id(notification: Notification) -> str:
    """The same for every delivery of one notification, so a receiver can drop our retries."""
    alert = notification.alert
    identity = "\n".join((alert.fingerprint, alert.version, notification.kind.value, notification.receiver))
    return "bwn_" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """Schema version 1, described in docs/alert-webhooks.md."""
    alert = notification.alert
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": notification_id(notification),
        "kind": notification.kind.value,
        "receiver": notification.receiver,
        "alert": {
            "fingerprint": alert.fingerprint,
            "name": alert.name,
            "severity": alert.severity.value,
            "status": alert.status.value,
            "summary": alert.summary,
            "reason": alert.reason,
            "since": alert.since,
            "version": alert.version,
            "labels": dict(alert.labels),
            "value": alert.value,
            "threshold": alert.threshold,
            "comparison": alert.comparison,
            "evaluation": evaluation_text(alert),
            "runbook": alert.runbook,
            "console_url": alert.console_url,
        },
    }


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, Stripe's scheme."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


# --------------------------------------------------------------------------------------------------
# Delivery with retries


class TransientError(Exception):
    """One attempt failed in a way that may pass; ``retry_after`` is what the receiver asked for."""

    def __init__(self, detail: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, moment.timestamp() - now)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without its body, and could carry a request
    # built from a secret URL to another host; a redirect is a receiver misconfiguration.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_SLACK_ERROR_CODE = re.compile(r"^[a-z][a-z_]{1,60}$")
_TOO_MANY_REQUESTS = 429
_RESPONSE_READ_LIMIT = 64 * 1024
# An attempt started with less time than this would time out before a real receiver answers.
_SHORTEST_ATTEMPT_SECONDS = 0.1


def _status_detail(status: int, body: bytes) -> str:
    # Slack answers with an error code as the whole body (invalid_token, no_service, ...): safe to
    # quote and what the operator needs. Other bodies may echo the request, so they stay out.
    code = body.decode("utf-8", "replace").strip()
    return f"HTTP {status} {code}" if _SLACK_ERROR_CODE.match(code) else f"HTTP {status}"


class HttpDelivery:
    """POSTs with retries: exponential backoff with jitter, Retry-After honoured, inside a deadline."""

    def __init__(
        self,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        max_retry_after: float = 30.0,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline: Callable[[], float] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.sleep = sleep
        self.deadline = deadline
        self._random = random.SystemRandom()

    def backoff(self, failed_attempts: int) -> float:
        """Equal jitter: half the exponential step plus a random part of the other half, so
        receivers recovering from an outage are not hit by every sender at the same instant."""
        step = min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))
        return step / 2 + self._random.uniform(0, step / 2)

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline()

    def with_retries(self, channel: str, attempt: Callable[[float], Result]) -> Result:
        """Runs ``attempt(timeout)`` until it returns; it raises TransientError for what may pass
        and DeliveryFailed for what will not."""
        failure: TransientError | None = None
        made = 0
        while True:
            time_left = self._time_left()
            if time_left is not None and time_left < _SHORTEST_ATTEMPT_SECONDS:
                stop = "no time left in this invocation"
                break
            made += 1
            try:
                return attempt(self.timeout if time_left is None else min(self.timeout, time_left))
            except TransientError as error:
                failure = error
            delay, stop = self._next_delay(made, failure)
            if stop:
                break
            logger.warning(
                "Alert delivery attempt failed, retrying",
                extra={"channel": channel, "attempt": made, "problem": failure.detail, "delay": delay},
            )
            self.sleep(delay)
        if failure is None:
            raise DeliveryFailed(channel, stop, permanent=False)
        raise DeliveryFailed(
            channel,
            f"{failure.detail} (attempt {made} of {self.attempts}; {stop})",
            permanent=False,
            status=failure.status,
        )

    def _next_delay(self, made: int, failure: TransientError) -> tuple[float, str]:
        """How long to wait before the next attempt, or why there is none."""
        if made >= self.attempts:
            return 0, "no attempts left"
        if failure.retry_after is not None and failure.retry_after > self.max_retry_after:
            # Retrying sooner than asked is refused again; a later invocation can try instead.
            return 0, f"Retry-After {failure.retry_after:g} s is over the {self.max_retry_after:g} s limit"
        delay = failure.retry_after if failure.retry_after is not None else self.backoff(made)
        time_left = self._time_left()
        if time_left is not None and delay + _SHORTEST_ATTEMPT_SECONDS > time_left:
            return 0, f"no time left in this invocation to wait {delay:.2f} s"
        return delay, ""

    def post(self, channel: str, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POSTs ``body``; returns the 2xx status, else raises DeliveryFailed. Never logs the URL."""
        if urlsplit(url).scheme not in ("https", "http"):
            raise DeliveryFailed(channel, "the URL is not http(s)", permanent=True)
        request_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}

        def attempt(timeout: float) -> int:
            # The scheme is checked above: urllib's file: and ftp: handlers cannot be reached.
            request = urllib.request.Request(url, data=body, headers=request_headers, method="POST")  # noqa: S310
            try:
                with _OPENER.open(request, timeout=timeout) as response:
                    response.read(_RESPONSE_READ_LIMIT)
                    return response.status
            except urllib.error.HTTPError as error:
                status, answer = error.code, error.read(_RESPONSE_READ_LIMIT)
                retry_after = parse_retry_after(error.headers.get("Retry-After"), time.time())
                error.close()
            except TimeoutError:
                raise TransientError(f"timed out after {timeout:g} s") from None
            except urllib.error.URLError as error:
                if isinstance(error.reason, TimeoutError):
                    raise TransientError(f"timed out after {timeout:g} s") from None
                raise TransientError(f"connection failed ({type(error.reason).__name__})") from None
            except (OSError, HTTPException) as error:
                raise TransientError(f"connection failed ({type(error).__name__})") from None
            detail = _status_detail(status, answer)
            if status == _TOO_MANY_REQUESTS or status >= 500:
                raise TransientError(detail, status=status, retry_after=retry_after)
            raise DeliveryFailed(channel, detail, permanent=True, status=status)

        return self.with_retries(channel, attempt)


# --------------------------------------------------------------------------------------------------
# The channels


def _read_secret(channel: str, secrets: Callable[[str], str], key: str) -> str:
    try:
        value = secrets(key)
    except LookupError:
        raise DeliveryFailed(channel, f"the alert secret {key!r} is missing", permanent=True) from None
    except Exception as error:
        # The secrets store's own message may quote what it read; its type is enough to act on.
        raise DeliveryFailed(
            channel, f"the alert secret {key!r} could not be read ({type(error).__name__})", permanent=False
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise DeliveryFailed(channel, f"the alert secret {key!r} is empty", permanent=True)
    return value.strip()


def _json_body(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


class SlackChannel:
    name = "slack"

    def __init__(self, config: SlackChannelConfig, secrets: Callable[[str], str], http: HttpDelivery) -> None:
        self._config = config
        self._secrets = secrets
        self._http = http

    def send(self, notification: Notification) -> None:
        self.post(slack_message(notification))

    def post(self, message: Mapping[str, Any]) -> None:
        """One incoming-webhook message (text and blocks)."""
        url = _read_secret(self.name, self._secrets, self._config.webhook_url_secret)
        self._http.post(self.name, url, _json_body(message), {})


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(
        self, config: PagerDutyChannelConfig, secrets: Callable[[str], str], http: HttpDelivery
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._http = http

    def send(self, notification: Notification) -> None:
        routing_key = _read_secret(self.name, self._secrets, self._config.routing_key_secret)
        event = pagerduty_event(notification, routing_key)
        self._http.post(self.name, self._config.events_url, _json_body(event), {})


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        config: WebhookChannelConfig,
        secrets: Callable[[str], str],
        http: HttpDelivery,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._http = http
        self._clock = clock

    def send(self, notification: Notification) -> None:
        self.post(webhook_payload(notification), notification_id(notification))

    def post(self, document: Mapping[str, Any], document_id: str) -> None:
        """A signed JSON document; ``document_id`` lets the receiver drop a redelivery."""
        secret = _read_secret(self.name, self._secrets, self._config.signing_secret)
        body = _json_body(document)
        headers = {
            SIGNATURE_HEADER: signature_header(secret, body, int(self._clock())),
            NOTIFICATION_ID_HEADER: document_id,
        }
        self._http.post(self.name, self._config.url, body, headers)


# SES error codes worth another attempt; every other client error (MessageRejected,
# MailFromDomainNotVerified, InvalidParameterValue, AccessDenied, ...) fails the same way again.
_SES_TRANSIENT_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ServiceUnavailable", "InternalFailure", "RequestTimeout"}
)


def default_ses_client(timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    # One attempt per call: HttpDelivery's loop does the retrying, inside the invocation's deadline.
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=timeout, read_timeout=timeout
    )
    return boto3.client("ses", config=config)


class EmailChannel:
    name = "email"

    def __init__(
        self,
        config: EmailChannelConfig,
        sender: str | None,
        http: HttpDelivery,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._config = config
        self._sender = sender
        self._http = http
        self._client_factory = client_factory or (lambda: default_ses_client(http.timeout))
        self._client: Any = None

    def send(self, notification: Notification) -> None:
        self.send_message(email_message(notification))

    def send_message(self, message: EmailMessage) -> None:
        if not self._sender:
            raise DeliveryFailed(self.name, "no sender address is configured for alert email", permanent=True)
        request = {
            "Source": self._sender,
            "Destination": {"ToAddresses": list(self._config.to)},
            "Message": {
                "Subject": {"Data": message.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": message.text, "Charset": "UTF-8"},
                    "Html": {"Data": message.html, "Charset": "UTF-8"},
                },
            },
        }
        self._http.with_retries(self.name, lambda _timeout: self._send_once(request))

    def _send_once(self, request: Mapping[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        if self._client is None:
            self._client = self._client_factory()
        try:
            self._client.send_email(**request)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _SES_TRANSIENT_CODES or (status or 0) >= 500:
                raise TransientError(f"SES {code}", status=status) from None
            raise DeliveryFailed(self.name, f"SES {code}", permanent=True, status=status) from None
        except (ConnectionError, HTTPClientError) as error:
            raise TransientError(f"SES unreachable ({type(error).__name__})") from None
        except BotoCoreError as error:
            raise DeliveryFailed(
                self.name, f"SES client error ({type(error).__name__})", permanent=True
            ) from None


class LogChannel:
    name = "log"

    def send(self, notification: Notification) -> None:
        logger.info(
            "Alert notification",
            extra={
                "notification_id": notification_id(notification),
                "kind": notification.kind.value,
                "receiver": notification.receiver,
                "alert": webhook_payload(notification)["alert"],
            },
        )


def build_channel(
    config: ChannelConfig,
    secrets: Callable[[str], str],
    *,
    email_sender: str | None,
    http: HttpDelivery | None = None,
    ses_client_factory: Callable[[], Any] | None = None,
) -> Channel:
    delivery = http or HttpDelivery()
    if isinstance(config, SlackChannelConfig):
        return SlackChannel(config, secrets, delivery)
    if isinstance(config, PagerDutyChannelConfig):
        return PagerDutyChannel(config, secrets, delivery)
    if isinstance(config, WebhookChannelConfig):
        return WebhookChannel(config, secrets, delivery)
    if isinstance(config, EmailChannelConfig):
        return EmailChannel(config, email_sender, delivery, ses_client_factory)
    if isinstance(config, LogChannelConfig):
        return LogChannel()
    raise TypeError(f"no channel for a {type(config).__name__}")
