"""Generic webhooks: a JSON document signed as Stripe signs its own (docs/alert-webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from billwatch.alerting.channels.base import Answer, Channel, Content, WebhookDocument, read_secret
from billwatch.alerting.channels.facts import evaluation_text
from billwatch.alerting.channels.http import json_body, post_json
from billwatch.alerting.config import WebhookChannelConfig
from billwatch.alerting.inputs import Alert, Notification

WEBHOOK_SCHEMA_VERSION = "1"
SIGNATURE_HEADER = "Billwatch-Signature"
NOTIFICATION_ID_HEADER = "Billwatch-Notification-Id"


def notification_id(notification: Notification) -> str:
    """The same for every delivery of one notification, so a receiver can drop our retries."""
    alert = notification.alert
    identity = "\n".join((alert.fingerprint, alert.version, notification.kind.value, notification.receiver))
    return "bwn_" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """Schema version 1, described in docs/alert-webhooks.md."""
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": notification_id(notification),
        "kind": notification.kind.value,
        "receiver": notification.receiver,
        "alert": alert_document(notification.alert),
    }


def alert_document(alert: Alert) -> dict[str, Any]:
    """An alert as every notice shows it, and as GET /admin/alerts lists it."""
    return {
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
        "dashboard_url": alert.dashboard_url,
    }


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, Stripe's scheme."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


class WebhookChannel(Channel[WebhookDocument]):
    name = "webhook"

    def __init__(
        self,
        config: WebhookChannelConfig,
        secrets: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._clock = clock

    def render(self, content: Content) -> WebhookDocument:
        return content.webhook_document()

    def send(self, message: WebhookDocument, timeout: float) -> Answer:
        secret = read_secret(self._secrets, self._config.signing_secret)
        if not isinstance(secret, str):
            return secret
        body = json_body(message.body)
        headers = {
            SIGNATURE_HEADER: signature_header(secret, body, int(self._clock())),
            NOTIFICATION_ID_HEADER: message.id,
        }
        return post_json(self._config.url, body, headers, timeout)
