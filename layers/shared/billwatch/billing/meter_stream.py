"""Sending overage meter events to Stripe, and what became of each one.

The drain (``billwatch.billing.overage_drain``) talks to a :class:`MeterSender` and reads a
:class:`SendResult`: one :data:`Outcome` per event, keyed by the event's identifier. A sender retries
within one ``send`` (a 429 after its ``Retry-After``, a 5xx, a timeout or a dropped connection, with
backoff) as far as its :class:`RetryPolicy` allows, then hands back what is left: an event that is not
:class:`Accepted` may or may not have reached Stripe, and a resend with the same identifier is safe
for 24 hours (Stripe deduplicates identifiers over that window).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from billwatch.licensing.overage import MeterEvent


@dataclass(frozen=True)
class Accepted:
    """Stripe has the event (or already had one with its identifier)."""


@dataclass(frozen=True)
class RetryAfter:
    """Stripe is rate limiting: send again no sooner than ``seconds`` from now."""

    seconds: float


@dataclass(frozen=True)
class Transient:
    """A 5xx, a timeout or a connection failure that outlasted the retries: Stripe may have the
    event; resend it (same identifier)."""

    reason: str  # "server_error", "timeout", "connection", "session"


@dataclass(frozen=True)
class Permanent:
    """Stripe refused the event (a 4xx other than 429): resending it unchanged fails the same way."""

    code: str  # Stripe's error code, else its error type, else "http_<status>"
    message: str


Outcome = Accepted | RetryAfter | Transient | Permanent


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one ``send`` tries before it hands an outcome back to the drain."""

    attempts: int = 3  # requests per event (v1) or per batch (v2), the first included
    # A Retry-After longer than this is not waited for: the drain gets RetryAfter and moves on.
    max_wait_seconds: float = 5.0
    # Backoff after a 5xx or a timeout, doubled each attempt, jittered down to half (urllib3's rule).
    backoff_seconds: float = 0.5
    timeout_seconds: float = 5.0  # one request's connect and read timeout


@dataclass(frozen=True)
class SendResult:
    outcomes: Mapping[str, Outcome]  # by event identifier, one for each event given to send

    def outcome(self, event: MeterEvent) -> Outcome:
        return self.outcomes[event.identifier]

    @property
    def accepted(self) -> list[str]:
        return [identifier for identifier, outcome in self.outcomes.items() if outcome == Accepted()]


class MeterSender(Protocol):
    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        """Send the events (distinct identifiers); never raises for a Stripe or network failure."""
        ...
