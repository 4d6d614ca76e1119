"""An alert notification as a ``Content``: its form for each channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billwatch.alerting.channels.base import EmailMessage, LogRecord, WebhookDocument
from billwatch.alerting.channels.email import email_message
from billwatch.alerting.channels.pagerduty import pagerduty_event
from billwatch.alerting.channels.slack import slack_message
from billwatch.alerting.channels.webhook import notification_id, webhook_payload
from billwatch.alerting.inputs import Notification


@dataclass(frozen=True)
class NotificationContent:
    notification: Notification

    def slack_message(self) -> dict[str, Any]:
        return slack_message(self.notification)

    def email_message(self) -> EmailMessage:
        return email_message(self.notification)

    def webhook_document(self) -> WebhookDocument:
        return WebhookDocument(webhook_payload(self.notification), notification_id(self.notification))

    def pagerduty_event(self) -> dict[str, Any]:
        return pagerduty_event(self.notification)

    def log_record(self) -> LogRecord:
        notification = self.notification
        return LogRecord(
            "Alert notification",
            {
                "notification_id": notification_id(notification),
                "kind": notification.kind.value,
                "receiver": notification.receiver,
                "alert": webhook_payload(notification)["alert"],
            },
        )
