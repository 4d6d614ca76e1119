"""PagerDuty through the Events API v2: one incident per alert, its repeats and its resolve."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from billwatch.alerting.channels.base import Answer, Channel, Content, read_secret
from billwatch.alerting.channels.facts import evaluation_text, message_links, state_text
from billwatch.alerting.channels.http import json_body, post_json
from billwatch.alerting.config import PagerDutyChannelConfig
from billwatch.alerting.inputs import Notification, NotificationKind
from billwatch.alerting.text import truncate
from billwatch.core.severities import Severity

PAGERDUTY_SUMMARY_LIMIT = 1024
_SEVERITY = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


def pagerduty_dedup_key(notification: Notification) -> str:
    """One incident per alert: its repeats update it and its resolve closes it.

    A test notification gets a key of its own, so that it never merges into, or resolves, a real
    incident of the same alarm.
    """
    digest = hashlib.sha256(notification.alert.fingerprint.encode()).hexdigest()
    return f"billwatch-test-{digest}" if notification.kind is NotificationKind.TEST else f"billwatch-{digest}"


def pagerduty_event(notification: Notification) -> dict[str, Any]:
    """The event without its routing key, which is a secret read when it is sent."""
    alert = notification.alert
    key = {"dedup_key": pagerduty_dedup_key(notification)}
    if notification.kind is NotificationKind.RESOLVED:
        # PagerDuty reads only the key of a resolve; the incident keeps the trigger's details.
        return {**key, "event_action": "resolve"}
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
        "severity": _SEVERITY[alert.severity],
        "timestamp": alert.since,
        "component": alert.labels.get("source"),
        "group": alert.labels.get("group"),
        "class": alert.name,
        "custom_details": {key: value for key, value in details.items() if value is not None},
    }
    return {
        **key,
        "event_action": "trigger",
        "payload": {key: value for key, value in payload.items() if value is not None},
        "client": "billwatch",
        **({"client_url": alert.console_url} if alert.console_url else {}),
        "links": [{"href": url, "text": text} for text, url in message_links(alert)],
    }


class PagerDutyChannel(Channel[dict[str, Any]]):
    name = "pagerduty"

    def __init__(self, config: PagerDutyChannelConfig, secrets: Callable[[str], str]) -> None:
        self._config = config
        self._secrets = secrets

    def render(self, content: Content) -> dict[str, Any] | None:
        return content.pagerduty_event()

    def send(self, message: dict[str, Any], timeout: float) -> Answer:
        routing_key = read_secret(self._secrets, self._config.routing_key_secret)
        if not isinstance(routing_key, str):
            return routing_key
        event = {"routing_key": routing_key, **message}
        return post_json(self._config.events_url, json_body(event), {}, timeout)
