"""Slack: Block Kit messages through an incoming webhook, whose URL is the secret."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from billwatch.alerting.channels.base import Answer, Channel, Content, read_secret
from billwatch.alerting.channels.facts import STATE_WORDS, evaluation_text, labels_text, message_links
from billwatch.alerting.channels.http import json_body, post_json
from billwatch.alerting.config import SlackChannelConfig
from billwatch.alerting.inputs import Notification, NotificationKind
from billwatch.alerting.text import (
    SLACK_FIELD_LIMIT,
    SLACK_HEADER_LIMIT,
    slack_escape,
    slack_text,
    truncate,
)
from billwatch.core.severities import Severity

_SEVERITY_EMOJI = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}


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
    emoji = _SEVERITY_EMOJI[alert.severity]
    still = " (still firing)" if notification.kind is NotificationKind.REPEAT else ""
    return f"{emoji} {severity}{still}: {alert.name}"


def slack_message(notification: Notification) -> dict[str, Any]:
    """The incoming-webhook body: Block Kit blocks, and ``text`` for notifications and old clients."""
    alert = notification.alert
    headline = slack_headline(notification)
    since_word = "Resolved at" if notification.kind is NotificationKind.RESOLVED else "Since"
    fields = [
        f"*Severity*\n{_SEVERITY_EMOJI[alert.severity]} {alert.severity.value}",
        f"*State*\n{STATE_WORDS[notification.kind]}",
        f"*{since_word}*\n{_slack_time(alert.since)}",
    ]
    evaluation = evaluation_text(alert)
    if evaluation:
        fields.append(f"*Value*\n{slack_escape(evaluation)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, SLACK_HEADER_LIMIT)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": slack_text(alert.summary)},
            "fields": [{"type": "mrkdwn", "text": truncate(field, SLACK_FIELD_LIMIT)} for field in fields],
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


class SlackChannel(Channel[dict[str, Any]]):
    name = "slack"

    def __init__(self, config: SlackChannelConfig, secrets: Callable[[str], str]) -> None:
        self._config = config
        self._secrets = secrets

    def render(self, content: Content) -> dict[str, Any]:
        return content.slack_message()

    def send(self, message: dict[str, Any], timeout: float) -> Answer:
        url = read_secret(self._secrets, self._config.webhook_url_secret)
        if not isinstance(url, str):
            return url
        return post_json(url, json_body(message), {}, timeout)
