"""The overage drain: brings Stripe's meters up to the overage units billwatch has counted.

Each run (OverageDrainFunction, every minute, never two at once) reads the balances that owe units
(``billwatch.licensing.overage_ledger``: the OverageDue indexes) and, for each:

- a range already in flight (a pin) goes again exactly as pinned, under the same identifier, before
  anything newer: a run that stopped between Stripe's acceptance and the watermark's write, or whose
  send failed, is finished without a unit billed twice (Stripe deduplicates an identifier for 24 hours);
- otherwise the whole unreported overage goes as one event, whose range is pinned first (a conditional
  write on the balance as read: a balance that changed meanwhile waits for the next run);
- a balance that owes nothing and has nothing in flight is released from the index.

Events go request by request (one v1 event, or one v2 batch of 100), each range pinned right before its
request and settled as soon as Stripe accepts it, and no request starts without the time for it before
the Lambda timeout; a range in flight counts its failed run before it goes, so one whose runs are cut
off mid-request still reaches the dead letter. An accepted event settles: the watermark moves to the
range's end and the pin goes. A 429 is waited out
as far as the invocation allows, a 5xx or a timeout retried with backoff and jitter within the run; what
is still unsent stays pinned for the next run. An event Stripe refuses (a 4xx), or a range that failed
``MAX_FAILED_RUNS`` runs in a row, goes to the dead-letter queue for an operator and is parked: not sent
again until the operator re-drives it (docs/runbooks/overage-drain.md). Its pin stays, so nothing newer
of that balance goes either: the units after it wait, counted, and no range is ever sent out of order.
What cannot be sent as things stand (no Stripe customer, too old, parked) is held: off the list each run
reads, and read again by the run at the start of each hour, which sends what has become sendable.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from billwatch.billing.meter_stream import (
    FORBIDDEN,
    STREAM_BATCH_SIZE,
    UNAUTHENTICATED,
    Accepted,
    MeterSender,
    Permanent,
    RetryAfter,
    RetryPolicy,
    Transient,
    V1MeterSender,
    V2MeterEventStream,
)
from billwatch.billing.stripe_api import StripeErrorCode, configured_api_key
from billwatch.core.config import ConfigError, Settings
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import OverageSendFailure
from billwatch.core.observability import logger
from billwatch.licensing.overage import MeterEvent, Unsent, meter_event
from billwatch.licensing.overage_ledger import OverageLedger, OwedBalance, build_overage_ledger

NO_STRIPE_KEY = "the overage drain sends to Stripe: set STRIPE_API_KEY_SECRET_ID (or STRIPE_API_KEY locally)"

# A range that fails this many runs in a row (ten minutes at one run a minute) stops being sent every
# minute: Stripe's 24-hour dedup of its identifier is running out, and a person should look.
MAX_FAILED_RUNS = 10
# Sends of one event within a run, the first included; the sender retries within each of them too.
SENDS_PER_RUN = 3
BACKOFF_SECONDS = 1.0
# Kept for the settles, the failure records and the metrics after the last send.
RESERVE_SECONDS = 5.0
# The drain's senders: a request's worst case (every attempt timing out, and the wait between) stays
# short beside the 50 s run, so that requests can start for most of it; the drain's own sends retry too.
SENDER_POLICY = RetryPolicy(attempts=2, max_wait_seconds=1.0, backoff_seconds=0.5, timeout_seconds=4.0)
# The error a range's failure record carries while its send is under way: a run cut off by the Lambda
# timeout in the middle of it leaves it so, counted.
CUT_OFF = "cut off: the run ended before Stripe answered"
# A run at the start of each of these periods (minutes) reads the held balances too: what became
# sendable (a Stripe customer added, a parked range re-driven) is sent then.
HELD_PASS_MINUTES = 60


class FailedOutcome(StrEnum):
    """OverageSendFailed's Outcome: how a run ended for an event Stripe did not accept."""

    RATE_LIMITED = "rate_limited"  # left pinned for the next run by 429s
    TRANSIENT = "transient"  # left pinned for the next run by 5xx, timeouts or dropped connections
    PERMANENT = "permanent"  # refused by Stripe: dead-lettered and parked
    KEY_REFUSED = "key_refused"  # Stripe refused the key, not the event: left pinned, and the run fails
    GAVE_UP = "gave_up"  # failed (or cut off) MAX_FAILED_RUNS runs in a row: dead-lettered and parked


def longest_request(policy: RetryPolicy, session: bool = False) -> float:
    """The longest one sender request (a v1 event, a v2 batch) can take under ``policy``: every attempt
    timing out, and the longest wait between them. ``session``: each attempt of a v2 batch may first
    have to create its session, a request with a timeout of its own."""
    longest_wait = max(policy.max_wait_seconds, policy.backoff_seconds * 2 ** max(0, policy.attempts - 2))
    requests = 2 if session else 1
    return policy.attempts * requests * policy.timeout_seconds + (policy.attempts - 1) * longest_wait


@dataclass(frozen=True)
class DrainResult:
    balances: int  # read from the OverageDue indexes
    events_sent: int  # accepted by Stripe and settled
    units_sent: int
    released: int  # owed nothing: out of the index
    unsent: dict[str, int]  # by Unsent reason (no_customer, too_old): left for reconciliation
    changed: int  # changed between the read and the pin: the next run takes them
    parked: int  # dead-lettered earlier, waiting for an operator
    failed: dict[str, int]  # by FailedOutcome
    deferred: int = 0  # not sent for lack of time (or after a rate limit or a refused key): the next run
    held: int = 0  # items owing only what cannot be sent (unsent, parked): on the held list


@dataclass
class _Tally:
    """What one run did, as DrainResult reports it."""

    events: int = 0
    units: int = 0
    released: int = 0
    changed: int = 0
    parked: int = 0
    deferred: int = 0
    held: int = 0
    unsent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    # The items (an account's period, or a closed period's record) owing units, or released already:
    # a release reads its item again, so one per item and only where it can succeed.
    kept_or_released: set[tuple[str, bool, int]] = field(default_factory=set)
    # An item's balance that cannot be sent (unsent, parked): the item is held unless another is sent.
    unsendable: dict[tuple[str, bool, int], OwedBalance] = field(default_factory=dict)
    held_read: set[tuple[str, bool, int]] = field(default_factory=set)  # by the held pass


@dataclass
class _Sending:
    owed: OwedBalance
    event: MeterEvent
    last_error: str = ""
    tried: bool = False  # pinned (a new range) or counted (a range in flight), and sent in this run
    counted: bool = False  # its failed run counted before its send


class MeterKeyRefused(Exception):
    """Stripe refused the drain's key (401, 403): no event is at fault, so none is dead-lettered; the
    run fails (OverageDrainLambdaErrors) and the next ones retry the same pins until the key is fixed."""


class DeadLetters:
    """OverageDrainDLQ: the ranges the drain gave up on, one message each, for an operator."""

    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url
        self._sqs: Any = None

    def send(self, message: dict[str, Any]) -> None:
        if self._sqs is None:
            from billwatch.core import aws

            self._sqs = aws.client("sqs")
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(message, sort_keys=True))


class SendFailures:
    """The ranges in flight that failed in earlier runs (an OverageSendFailure item each, by identifier):
    how many runs in a row, and whether the range is parked. Only a pinned range can have one, so a run
    reads them for its pins only."""

    def of(self, identifiers: Iterable[str]) -> dict[str, OverageSendFailure]:
        keys = [OverageSendFailure.key(identifier) for identifier in identifiers]
        return {item.identifier: item for item in OverageSendFailure.batch_get(keys)} if keys else {}

    def failed(self, identifier: str, error: str, now: int, runs: int = 1) -> int:
        """Counts ``runs`` more failed runs of the range (0: only its error); returns how many in a row."""
        item = OverageSendFailure(OverageSendFailure.key(identifier))
        item.update(
            actions=[
                OverageSendFailure.runs.add(runs),
                OverageSendFailure.error.set(error),
                OverageSendFailure.failed_at.set(now),
            ]
        )
        return int(item.runs or 0)

    def park(self, identifier: str, error: str, now: int) -> None:
        OverageSendFailure(OverageSendFailure.key(identifier)).update(
            actions=[
                OverageSendFailure.parked_at.set(now),
                OverageSendFailure.error.set(error),
                OverageSendFailure.failed_at.set(now),
            ]
        )

    def clear(self, identifier: str) -> None:
        OverageSendFailure(OverageSendFailure.key(identifier)).delete()


class SenderChoice:
    """The v1 API (one request per event, its errors answered at once) for a run of fewer than
    ``threshold`` events; the v2 stream (100 events a request, ten times v1's rate limit) from there on."""

    def __init__(self, single: MeterSender, stream: MeterSender, threshold: int) -> None:
        self._single = single
        self._stream = stream
        self._threshold = threshold

    def choose(self, events: int) -> tuple[MeterSender, int]:
        """The sender for a run of ``events`` events, and how many of them one of its requests takes."""
        return (self._stream, STREAM_BATCH_SIZE) if events >= self._threshold else (self._single, 1)


class OverageDrain:
    def __init__(
        self,
        ledger: OverageLedger,
        sender: SenderChoice,
        metrics: MetricsRecorder,
        dead_letters: DeadLetters,
        failures: SendFailures,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        request_seconds: float = longest_request(SENDER_POLICY),
        stream_request_seconds: float = longest_request(SENDER_POLICY, session=True),
    ) -> None:
        """``request_seconds``, ``stream_request_seconds``: the longest one v1 request, and one v2
        batch, may take; none starts with less time left than that and the reserve, so that the run
        ends before the Lambda timeout cuts it off."""
        self._request_seconds = request_seconds
        self._stream_request_seconds = stream_request_seconds
        self._ledger = ledger
        self._sender = sender
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._failures = failures
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    def run(self, time_left: Callable[[], float] = lambda: float("inf")) -> DrainResult:
        now = int(self._clock())
        tally = _Tally()
        try:
            owed = self._ledger.due(now)
            if now // 60 % HELD_PASS_MINUTES == 0:
                held = self._ledger.held(now)
                tally.held_read = {_item_of(balance) for balance in held}
                owed += held
            tally.kept_or_released = {_item_of(balance) for balance in owed if balance.owing}
            earlier = self._failures.of(self._pinned_identifiers(owed, now))
            sending = []
            for balance in owed:
                prepared = self._prepare(balance, now, earlier, tally)
                if prepared is not None:
                    sending.append(prepared)
            sendable = {_item_of(item.owed) for item in sending}
            for key, balance in tally.unsendable.items():
                if key not in sendable:
                    tally.held += self._ledger.hold(balance)
            for item in self._send(sending, now, time_left, earlier, tally):
                self._after_failed_run(item, now, tally)
            if tally.failed[FailedOutcome.KEY_REFUSED]:
                raise MeterKeyRefused(
                    f"Stripe refused the key: {tally.failed[FailedOutcome.KEY_REFUSED]} left"
                )
        finally:
            # After the settles: a point is printed for units whose watermark moved (at least once).
            self._metrics.flush()
        result = DrainResult(
            balances=len(owed),
            events_sent=tally.events,
            units_sent=tally.units,
            released=tally.released,
            unsent=dict(tally.unsent),
            changed=tally.changed,
            parked=tally.parked,
            failed=dict(tally.failed),
            deferred=tally.deferred,
            held=tally.held,
        )
        logger.info("Overage drain finished", extra={"result": result.__dict__})
        return result

    def _pinned_identifiers(self, owed: Sequence[OwedBalance], now: int) -> list[str]:
        events = (self._pinned_event(balance, now) for balance in owed if balance.sending is not None)
        return [event.identifier for event in events if isinstance(event, MeterEvent)]

    @staticmethod
    def _pinned_event(owed: OwedBalance, now: int) -> MeterEvent | Unsent:
        """The event of the range in flight exactly as first sent: its units, identifier and timestamp
        (made at the moment it was pinned), since Stripe refuses an identifier it has seen (its
        Idempotency-Key) with other parameters."""
        assert owed.sending is not None
        pinned_at = now if owed.pinned_at is None else int(owed.pinned_at)
        return meter_event(replace(owed.balance, overage=owed.sending), pinned_at)

    def _prepare(
        self,
        owed: OwedBalance,
        now: int,
        earlier: dict[str, OverageSendFailure],
        tally: _Tally,
    ) -> _Sending | None:
        event = meter_event(owed.balance, now) if owed.sending is None else self._pinned_event(owed, now)
        if event is Unsent.NOTHING_DUE:
            if owed.sending is None and _item_of(owed) not in tally.kept_or_released:
                tally.kept_or_released.add(_item_of(owed))
                tally.released += self._ledger.release(owed)
            return None
        if isinstance(event, Unsent):
            tally.unsent[event.value] += 1
            self._metrics.add(Metric.OVERAGE_UNSENT, Reason=event.value)
            tally.unsendable.setdefault(_item_of(owed), owed)
            return None
        failure = earlier.get(event.identifier) if owed.sending is not None else None
        if failure is not None and failure.parked_at is None and (failure.runs or 0) >= MAX_FAILED_RUNS:
            # Its runs were cut off before they could count it as failed and dead-letter it.
            error = f"failed {failure.runs} runs in a row, last: {failure.error}"
            self._dead_letter(_Sending(owed, event), error, FailedOutcome.GAVE_UP, tally)
        elif failure is None or failure.parked_at is None:
            return _Sending(owed, event)
        else:
            tally.parked += 1
        tally.unsendable.setdefault(_item_of(owed), owed)
        return None

    def _start(self, item: _Sending, now: int, tally: _Tally) -> bool:
        """Readies a range for its first send in the run, right before it: a new range is pinned (False:
        changed since read), a range in flight counts its failed run first, so that one whose runs are
        cut off in its request every time still reaches the dead letter within Stripe's 24-hour dedup."""
        held = _item_of(item.owed) in tally.held_read  # its pin, again, puts it back on the minute list
        if (item.owed.sending is None or held) and not self._ledger.pin(
            item.owed, item.event.reported_after, now
        ):
            tally.changed += 1
            return False
        if item.owed.sending is not None:
            self._failures.failed(item.event.identifier, CUT_OFF, now)
            item.counted = True
        item.tried = True
        return True

    def _send(
        self,
        sending: list[_Sending],
        now: int,
        time_left: Callable[[], float],
        earlier: dict[str, OverageSendFailure],
        tally: _Tally,
    ) -> list[_Sending]:
        """Sends request by request (one v1 event, or one v2 batch of 100) and settles what Stripe
        accepted in each before the next starts, so a run cut short keeps what it sent; retries what
        failed, until every event is accepted or refused, or out of sends or time. No request starts
        without the time for it. Returns the ranges sent and left in flight; one not sent in the run
        (no time, a rate limit, a refused key) waits for the next as it is."""
        sender, size = self._sender.choose(len(sending))
        budget = self._request_seconds if size == 1 else self._stream_request_seconds
        key_refused = False
        for attempt in range(1, SENDS_PER_RUN + 1):
            retry: list[_Sending] = []
            wait = 0.0
            rate_limited = False  # the attempt's other requests would be limited too
            for first in range(0, len(sending), size):
                chunk = sending[first : first + size]
                if key_refused or rate_limited or time_left() < RESERVE_SECONDS + budget:
                    retry += chunk
                    continue
                chunk = [item for item in chunk if item.tried or self._start(item, now, tally)]
                if not chunk:
                    continue
                result = sender.send([item.event for item in chunk])
                for item in chunk:
                    outcome = result.outcome(item.event)
                    if isinstance(outcome, Accepted):
                        self._settle(item, earlier, tally)
                    elif isinstance(outcome, Permanent) and outcome.code in (UNAUTHENTICATED, FORBIDDEN):
                        key_refused = True
                        self._uncount(item, now)
                        self._count_failed(FailedOutcome.KEY_REFUSED, tally)
                    elif isinstance(outcome, Permanent):
                        error = f"{outcome.code}: {outcome.message}"
                        self._dead_letter(item, error, FailedOutcome.PERMANENT, tally)
                    elif isinstance(outcome, RetryAfter):
                        item.last_error = f"rate_limited: retry after {outcome.seconds:g} s"
                        retry.append(item)
                        wait = max(wait, outcome.seconds)
                        rate_limited = True
                    elif isinstance(outcome, Transient):
                        item.last_error = f"transient: {outcome.reason}"
                        retry.append(item)
                        wait = max(wait, self._backoff(attempt))
            sending = retry
            if (
                not sending
                or key_refused
                or attempt == SENDS_PER_RUN
                or wait > time_left() - RESERVE_SECONDS - budget
            ):
                break
            self._sleep(wait)
        for item in sending:
            if not item.tried:
                tally.deferred += 1
            elif key_refused:  # not the range's failure: the run fails, and the next sends it again
                self._uncount(item, now)
        return [item for item in sending if item.tried and not key_refused]

    def _uncount(self, item: _Sending, now: int) -> None:
        """Takes back the failed run a range in flight counted before its send."""
        if item.counted:
            self._failures.failed(item.event.identifier, item.last_error or CUT_OFF, now, runs=-1)
            item.counted = False

    def _backoff(self, attempt: int) -> float:
        """Equal jitter: half the doubled step plus a random part of the other half."""
        step = BACKOFF_SECONDS * 2 ** (attempt - 1)
        return step / 2 + self._jitter() * step / 2

    def _settle(self, item: _Sending, earlier: dict[str, OverageSendFailure], tally: _Tally) -> None:
        event = item.event
        if not self._ledger.settle(item.owed, event.reported_after):
            # Another writer moved the balance since it was read; the pin, if still there, sends again
            # under the same identifier, which Stripe answers as already accepted.
            logger.warning("Overage settle found the balance changed", extra=_described(item))
            return
        tally.events += 1
        tally.units += event.value
        self._metrics.add(Metric.OVERAGE_EVENTS_SENT)
        self._metrics.add(Metric.OVERAGE_UNITS_SENT, event.value, Feature=item.owed.balance.feature)
        if event.identifier in earlier or item.counted:
            self._failures.clear(event.identifier)

    def _after_failed_run(self, item: _Sending, now: int, tally: _Tally) -> None:
        counting = 0 if item.counted else 1  # a range in flight counted this run before its send
        runs = self._failures.failed(item.event.identifier, item.last_error, now, runs=counting)
        if runs >= MAX_FAILED_RUNS:
            error = f"failed {runs} runs in a row, last: {item.last_error}"
            self._dead_letter(item, error, FailedOutcome.GAVE_UP, tally)
            return
        logger.warning("Overage left for the next run", extra={**_described(item), "runs": runs})
        limited = item.last_error.startswith(FailedOutcome.RATE_LIMITED)
        self._count_failed(FailedOutcome.RATE_LIMITED if limited else FailedOutcome.TRANSIENT, tally)

    def _dead_letter(self, item: _Sending, error: str, outcome: FailedOutcome, tally: _Tally) -> None:
        """Hands the range to an operator and parks it: the message first, so a park never hides one."""
        message = {**_described(item), "error": error, "outcome": outcome.value}
        self._dead_letters.send(message)
        self._failures.park(item.event.identifier, error, int(self._clock()))
        logger.error("Overage dead-lettered", extra=message)
        self._count_failed(outcome, tally)

    def _count_failed(self, outcome: FailedOutcome, tally: _Tally) -> None:
        tally.failed[outcome.value] += 1
        self._metrics.add(Metric.OVERAGE_SEND_FAILED, Outcome=outcome.value)


def _item_of(owed: OwedBalance) -> tuple[str, bool, int]:
    return owed.balance.account_id, owed.closed, owed.balance.period_start


def _described(item: _Sending) -> dict[str, Any]:
    """What an operator needs to find the range: never the Stripe customer's payload beyond its id."""
    balance = item.owed.balance
    return {
        "account_id": balance.account_id,
        "feature": balance.feature,
        "event_name": balance.event_name,
        "period_start": balance.period_start,
        "period_end": balance.period_end,
        "closed": item.owed.closed,
        "units_after": balance.reported,
        "units_through": item.event.reported_after,
        "identifier": item.event.identifier,
        "stripe_customer_id": item.event.stripe_customer_id,
    }


def build_overage_drain(settings: Settings) -> OverageDrain:
    if not settings.stripe_api_configured:
        raise ConfigError(NO_STRIPE_KEY)
    if settings.overage_drain_dlq_url is None:
        raise ConfigError(
            "OVERAGE_DRAIN_DLQ_URL is required: the overage drain dead-letters what it gives up on"
        )
    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)

    def count_stripe_error(code: StripeErrorCode) -> None:
        metrics.add(Metric.STRIPE_API_ERROR, Code=code.value)

    api_key = configured_api_key(settings)
    base = settings.stripe_api_base
    sender = SenderChoice(
        V1MeterSender(api_key, base, SENDER_POLICY, on_error=count_stripe_error),
        # A local Stripe stand-in (STRIPE_API_BASE) serves the meter events host too; else Stripe's own.
        V2MeterEventStream(
            api_key, base, meter_events_base=base, policy=SENDER_POLICY, on_error=count_stripe_error
        ),
        settings.overage_stream_threshold,
    )
    ledger = build_overage_ledger(settings)
    return OverageDrain(ledger, sender, metrics, DeadLetters(settings.overage_drain_dlq_url), SendFailures())
