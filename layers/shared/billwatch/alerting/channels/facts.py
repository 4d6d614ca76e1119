"""What every alert message says, whichever channel carries it."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from billwatch.alerting.inputs import Alert, Notification, NotificationKind
from billwatch.alerting.text import format_number

_COMPARISON_SIGNS = {
    "GreaterThanThreshold": ">",
    "GreaterThanOrEqualToThreshold": ">=",
    "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=",
    "GreaterThanUpperThreshold": ">",
    "LessThanLowerThreshold": "<",
}
STATE_WORDS = {
    NotificationKind.FIRING: "Firing",
    NotificationKind.REPEAT: "Still firing",
    NotificationKind.RESOLVED: "Resolved",
    NotificationKind.TEST: "Test notification",
}


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
    return f"{STATE_WORDS[notification.kind]} since {notification.alert.since}"


def labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items()))


def message_links(alert: Alert) -> list[tuple[str, str]]:
    """(text, url) of the alarm's console page, the dashboard and the runbook, those that are web links."""
    candidates = [
        ("CloudWatch alarm", alert.console_url),
        ("Dashboard", alert.dashboard_url),
        ("Runbook", alert.runbook),
    ]
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
