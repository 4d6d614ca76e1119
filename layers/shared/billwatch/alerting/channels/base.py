"""The seam every channel fits: render what is to be said, then make one attempt to send it.

A channel answers each attempt with ``Delivered``, ``RetryLater`` (it may pass, perhaps after the
wait the receiver asked for) or ``FailedForGood``; it never retries by itself. What to do with the
answer is the retry stage's (retry.py) alone, so that every channel keeps to the same policy and to
the invocation's deadline.

What is said (an alert notification, the billing report) is a ``Content``: it knows its form for
each channel, so nothing that sends has to tell channels apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

USER_AGENT = "billwatch-alerts/1"


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class RetryLater:
    """An attempt failed in a way that may pass; ``after`` is the wait the receiver asked for."""

    detail: str
    status: int | None = None
    after: float | None = None


@dataclass(frozen=True)
class FailedForGood:
    """Trying again would fail the same way (a refused request, a missing secret)."""

    detail: str
    status: int | None = None


Answer: TypeAlias = Delivered | RetryLater | FailedForGood
DELIVERED = Delivered()


class DeliveryFailed(Exception):
    """A channel could not take a notification; ``permanent`` says whether trying later can help."""

    def __init__(self, channel: str, detail: str, *, permanent: bool, status: int | None = None) -> None:
        kind = "permanently" if permanent else "for now"
        super().__init__(f"{channel} delivery failed {kind}: {detail}")
        self.channel = channel
        self.detail = detail
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True)
class EmailMessage:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class WebhookDocument:
    """A JSON document and its id, the same for every delivery so a receiver can drop a redelivery."""

    body: Mapping[str, Any]
    id: str


@dataclass(frozen=True)
class LogRecord:
    message: str
    extra: Mapping[str, Any]


class Content(Protocol):
    """What channels carry, in the form each of them sends."""

    def slack_message(self) -> dict[str, Any]: ...

    def email_message(self) -> EmailMessage: ...

    def webhook_document(self) -> WebhookDocument: ...

    def pagerduty_event(self) -> dict[str, Any] | None:
        """The Events API v2 event without its routing key; None for what should page nobody."""
        ...

    def log_record(self) -> LogRecord: ...


Message = TypeVar("Message")


class Channel(ABC, Generic[Message]):
    name: ClassVar[str]  # the channel's type in the routing config, and the metrics' Channel dimension

    @abstractmethod
    def render(self, content: Content) -> Message | None:
        """``content`` as this channel sends it; None when this channel does not carry it."""

    @abstractmethod
    def send(self, message: Message, timeout: float) -> Answer:
        """One attempt, given at most ``timeout`` seconds."""


def read_secret(secrets: Callable[[str], str], key: str) -> str | RetryLater | FailedForGood:
    """The secret's value, read at each send so a rotation needs no cold start; never quoted."""
    try:
        value = secrets(key)
    except LookupError:
        return FailedForGood(f"the alert secret {key!r} is missing")
    except Exception as error:
        # The secrets store's own message may quote what it read; its type is enough to act on.
        return RetryLater(f"the alert secret {key!r} could not be read ({type(error).__name__})")
    if not isinstance(value, str) or not value.strip():
        return FailedForGood(f"the alert secret {key!r} is empty")
    return value.strip()
