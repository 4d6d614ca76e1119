"""Text that alerts and the billing report both write: numbers, cut lengths, Slack's mrkdwn."""

from __future__ import annotations

import re

ELLIPSIS = "…"
# Slack's limits: header text 150, section text 3000, a field 2000, a context element 3000.
SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def format_number(value: float) -> str:
    return f"{value:.12g}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters; anything else (``*``, ``_``) may stay."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(raw: str, limit: int = SLACK_TEXT_LIMIT) -> str:
    escaped = slack_escape(raw)
    if len(escaped) <= limit:
        return escaped
    # Cutting inside an entity would show "&am…" instead of the character.
    return _PARTIAL_ENTITY.sub("", escaped[: limit - len(ELLIPSIS)]) + ELLIPSIS
