"""Sending overage meter events to Stripe, and what became of each one.

The drain (``billwatch.billing.overage_drain``) talks to a :class:`MeterSender` and reads a
:class:`SendResult`: one :data:`Outcome` per event, keyed by the event's identifier. A sender retries
within one ``send`` (a 429 after its ``Retry-After``, a 5xx, a timeout or a dropped connection, with
backoff) as far as its :class:`RetryPolicy` allows, then hands back what is left: an event that is not
:class:`Accepted` may or may not have reached Stripe, and a resend with the same identifier is safe
for 24 hours (Stripe deduplicates identifiers over that window).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from billwatch.billing.stripe_api import StripeApi, StripeApiFailure, StripeErrorCode
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

    reason: str  # "server_error", "timeout", "connection", "session_expired" (the v2 stream's 401)


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


# The v2 stream takes at most this many events in one request.
STREAM_BATCH_SIZE = 100
# The codes of a Permanent outcome whose request's key Stripe refused (401, 403): every other request
# of the send would be refused too.
UNAUTHENTICATED = "authentication"
FORBIDDEN = "permission"
# A session is renewed this long before Stripe says it expires, so no request carries a token that
# expires on the way.
SESSION_RENEWAL_MARGIN_SECONDS = 60


def classify(failure: Exception, backoff_seconds: float) -> Outcome:
    """What a failed request means for its events; ``backoff_seconds`` is the wait a 429 gets when
    Stripe names none."""
    import stripe

    error = failure.__cause__ if isinstance(failure, StripeApiFailure) else failure
    if isinstance(error, stripe.RateLimitError):
        return RetryAfter(_retry_after(error.headers) or backoff_seconds)
    if isinstance(error, TimeoutError):  # stripe's urllib client lets a read timeout through as is
        return Transient("timeout")
    if isinstance(error, stripe.APIConnectionError | OSError):
        return Transient("connection")
    # A 401 is an AuthenticationError, or on the v2 stream a TemporarySessionExpiredError.
    if isinstance(error, stripe.StripeError) and error.http_status in (401, 403):
        return Permanent(
            code=UNAUTHENTICATED if error.http_status == 401 else FORBIDDEN, message=error.user_message or ""
        )
    if isinstance(error, stripe.StripeError) and (error.http_status or 500) < 500:
        error_type = error.error.type if error.error else None
        return Permanent(
            code=error.code or error_type or f"http_{error.http_status}", message=error.user_message or ""
        )
    return Transient("server_error")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date, as urllib3 reads it), None if absent or bad."""
    value = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return Retry().parse_retry_after(value)
    except InvalidHeader:
        return None


def _api(
    api_key: Callable[[], str],
    policy: RetryPolicy,
    on_error: Callable[[StripeErrorCode], None] | None,
    api_base: str | None = None,
    meter_events_base: str | None = None,
) -> StripeApi:
    """A client that tries each request once, with the policy's timeout: the policy retries."""
    return StripeApi(
        api_key,
        api_base=api_base,
        meter_events_base=meter_events_base,
        on_error=on_error,
        max_network_retries=0,
        timeout_seconds=policy.timeout_seconds,
    )


class _Attempts:
    """One request tried as the policy allows: after a 429 it waits Retry-After (when no longer than
    the policy's ``max_wait_seconds``), after a 5xx, timeout or dropped connection an exponential,
    jittered backoff; a refusal is not retried."""

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self._policy = policy
        self._sleep = sleep

    def backoff(self, attempt: int) -> float:
        jitter = random.uniform(0.5, 1.0)  # noqa: S311  spreads retries, no secret
        return self._policy.backoff_seconds * 2 ** (attempt - 1) * jitter

    def run(
        self, request: Callable[[], object], retry_at_once: Callable[[Outcome], Outcome | None] | None = None
    ) -> Outcome:
        """``retry_at_once``: a failure it answers an outcome for is retried without a wait (still an
        attempt), and is that outcome if it was the last attempt."""
        outcome: Outcome = Accepted()
        for attempt in range(1, self._policy.attempts + 1):
            try:
                request()
                return Accepted()
            except (StripeApiFailure, OSError) as failure:
                outcome = classify(failure, self.backoff(attempt))
            at_once = None if retry_at_once is None else retry_at_once(outcome)
            outcome = outcome if at_once is None else at_once
            if attempt == self._policy.attempts:
                break
            if at_once is not None:
                continue
            if isinstance(outcome, RetryAfter) and outcome.seconds <= self._policy.max_wait_seconds:
                self._sleep(outcome.seconds)
            elif isinstance(outcome, Transient):
                self._sleep(self.backoff(attempt))
            else:
                break
        return outcome


def _halts(outcome: Outcome) -> bool:
    """An outcome that the rest of a send would meet too: a rate limit, or a key Stripe refuses."""
    return isinstance(outcome, RetryAfter) or (
        isinstance(outcome, Permanent) and outcome.code in {UNAUTHENTICATED, FORBIDDEN}
    )


class V1MeterSender:
    """One POST /v1/billing/meter_events per event (Stripe allows 1,000 a second), the identifier
    also the Idempotency-Key. Past a rate limit or a refused key, the send's other events are not
    tried: they get the same outcome."""

    def __init__(
        self,
        api_key: Callable[[], str],
        api_base: str | None = None,
        policy: RetryPolicy | None = None,
        on_error: Callable[[StripeErrorCode], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        policy = policy or RetryPolicy()
        self._api = _api(api_key, policy, on_error, api_base=api_base)
        self._attempts = _Attempts(policy, sleep)

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        outcomes: dict[str, Outcome] = {}
        halted: Outcome | None = None
        for event in events:
            outcome = (
                halted
                if halted is not None
                else self._attempts.run(functools.partial(self._api.create_meter_event, event))
            )
            if _halts(outcome):
                halted = outcome
            outcomes[event.identifier] = outcome
        return SendResult(outcomes)


class V2MeterEventStream:
    """The v2 high-throughput stream: a session (POST /v2/billing/meter_event_session with the
    restricted key) gives a token valid 15 minutes; batches of up to 100 events go to
    POST /v2/billing/meter_event_stream on the meter events host with that token. The session is
    renewed a minute before it expires, and at once when the stream answers 401 (a token Stripe
    expired or revoked early). A 200 means Stripe took the batch for processing: it validates each
    event later, so an event it then refuses shows up in reconciliation, not here."""

    def __init__(
        self,
        api_key: Callable[[], str],
        api_base: str | None = None,
        meter_events_base: str | None = None,  # None: Stripe's, https://meter-events.stripe.com
        policy: RetryPolicy | None = None,
        on_error: Callable[[StripeErrorCode], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._policy = policy or RetryPolicy()
        self._on_error = on_error
        self._api = _api(api_key, self._policy, on_error, api_base=api_base)
        self._meter_events_base = meter_events_base
        self._attempts = _Attempts(self._policy, sleep)
        self._clock = clock
        self._session: tuple[StripeApi, float] | None = None  # the stream's client, the token's expiry

    def _stream(self) -> StripeApi:
        if self._session is None or self._clock() >= self._session[1] - SESSION_RENEWAL_MARGIN_SECONDS:
            self._session = None
            token, expires_at = self._api.create_meter_event_session()
            stream = _api(
                lambda: token, self._policy, self._on_error, meter_events_base=self._meter_events_base
            )
            self._session = (stream, datetime.fromisoformat(expires_at).timestamp())
        return self._session[0]

    def _renew_refused_session(self, outcome: Outcome) -> Transient | None:
        """A 401 from the stream (not from the session's creation) is its token expiring, not the key
        refused: the session is renewed at once, and on a send's last attempt the events are left to
        resend (reported as the key refused, the drain's run would fail, MeterKeyRefused)."""
        if isinstance(outcome, Permanent) and outcome.code == UNAUTHENTICATED and self._session is not None:
            self._session = None
            return Transient("session_expired")
        return None

    def _send_batch(self, batch: Sequence[MeterEvent]) -> None:
        self._stream().stream_meter_events(batch)

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        outcomes: dict[str, Outcome] = {}
        halted: Outcome | None = None
        for start in range(0, len(events), STREAM_BATCH_SIZE):
            batch = events[start : start + STREAM_BATCH_SIZE]
            outcome = (
                halted
                if halted is not None
                else self._attempts.run(
                    functools.partial(self._send_batch, batch), self._renew_refused_session
                )
            )
            if _halts(outcome):
                halted = outcome
            outcomes.update((event.identifier, outcome) for event in batch)
        return SendResult(outcomes)
