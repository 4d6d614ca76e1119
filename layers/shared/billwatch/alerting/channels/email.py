"""Email through SES: a plain text and an HTML part, to the channel's addresses."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

from billwatch.alerting.channels.base import (
    DELIVERED,
    Answer,
    Channel,
    Content,
    EmailMessage,
    FailedForGood,
    RetryLater,
)
from billwatch.alerting.channels.facts import message_facts, message_links
from billwatch.alerting.channels.retry import ATTEMPT_TIMEOUT_SECONDS
from billwatch.alerting.config import EmailChannelConfig
from billwatch.alerting.inputs import Notification, NotificationKind
from billwatch.alerting.text import truncate
from billwatch.core.severities import Severity

_SUBJECT_PREFIXES = {
    Severity.CRITICAL: "CRITICAL BILLING ALERT",
    Severity.WARNING: "BILLING WARNING",
    Severity.INFO: "Billing Info",
}
SUBJECT_LIMIT = 200
_KIND_SUBJECT_PREFIXES = {NotificationKind.RESOLVED: "RESOLVED: ", NotificationKind.TEST: "TEST: "}
# SES error codes worth another attempt; every other client error (MessageRejected,
# MailFromDomainNotVerified, InvalidParameterValue, AccessDenied, ...) fails the same way again.
_SES_TRANSIENT_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ServiceUnavailable", "InternalFailure", "RequestTimeout"}
)


def email_subject(notification: Notification) -> str:
    alert = notification.alert
    subject = f"{_SUBJECT_PREFIXES[alert.severity]}: {' '.join(alert.name.split())}"
    if notification.kind is NotificationKind.REPEAT:
        subject += " (still firing)"
    return truncate(_KIND_SUBJECT_PREFIXES.get(notification.kind, "") + subject, SUBJECT_LIMIT)


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


def default_ses_client() -> Any:
    from botocore.config import Config

    from billwatch.core import aws

    # One attempt per call: the retry stage does the retrying, inside the invocation's deadline.
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=ATTEMPT_TIMEOUT_SECONDS,
        read_timeout=ATTEMPT_TIMEOUT_SECONDS,
    )
    return aws.client("ses", config=config)


class EmailChannel(Channel[EmailMessage]):
    name = "email"

    def __init__(
        self,
        config: EmailChannelConfig,
        sender: str | None,
        client_factory: Callable[[], Any] = default_ses_client,
    ) -> None:
        self._config = config
        self._sender = sender
        self._client_factory = client_factory
        self._client: Any = None

    def render(self, content: Content) -> EmailMessage:
        return content.email_message()

    def send(self, message: EmailMessage, timeout: float) -> Answer:
        """``timeout`` is the SES client's own, set when it is made."""
        if not self._sender:
            return FailedForGood("no sender address is configured for alert email")
        return self._send_email(
            {
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
        )

    def _send_email(self, request: Mapping[str, Any]) -> Answer:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        if self._client is None:
            self._client = self._client_factory()
        try:
            self._client.send_email(**request)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _SES_TRANSIENT_CODES or (status or 0) >= 500:
                return RetryLater(f"SES {code}", status=status)
            return FailedForGood(f"SES {code}", status=status)
        except (ConnectionError, HTTPClientError) as error:
            return RetryLater(f"SES unreachable ({type(error).__name__})")
        except BotoCoreError as error:
            return FailedForGood(f"SES client error ({type(error).__name__})")
        return DELIVERED
