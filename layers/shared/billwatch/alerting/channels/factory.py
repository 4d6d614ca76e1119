"""A channel from its entry in the routing config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billwatch.alerting.channels.base import Channel
from billwatch.alerting.channels.email import EmailChannel, default_ses_client
from billwatch.alerting.channels.log import LogChannel
from billwatch.alerting.channels.pagerduty import PagerDutyChannel
from billwatch.alerting.channels.slack import SlackChannel
from billwatch.alerting.channels.webhook import WebhookChannel
from billwatch.alerting.config import (
    ChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)


def build_channel(
    config: ChannelConfig,
    secrets: Callable[[str], str],
    *,
    email_sender: str | None,
    ses_client_factory: Callable[[], Any] = default_ses_client,
) -> Channel[Any]:
    """``secrets`` reads a secret by its key; it is asked at each send, never here."""
    if isinstance(config, SlackChannelConfig):
        return SlackChannel(config, secrets)
    if isinstance(config, PagerDutyChannelConfig):
        return PagerDutyChannel(config, secrets)
    if isinstance(config, WebhookChannelConfig):
        return WebhookChannel(config, secrets)
    if isinstance(config, EmailChannelConfig):
        return EmailChannel(config, email_sender, ses_client_factory)
    if isinstance(config, LogChannelConfig):
        return LogChannel()
    raise TypeError(f"no channel for a {type(config).__name__}")
