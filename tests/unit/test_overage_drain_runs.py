"""The overage drain's runs, with the ledger, the dead letters and Stripe in memory: each sender is
scripted per event (accepted, 429, 5xx, refused, accepted then lost), and whatever the script, every
unit reaches Stripe under one identifier, a range in flight goes again exactly as pinned, a refused
range is dead-lettered once and parked, and nothing newer of its balance overtakes it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from billwatch.billing.meter_stream import (
    Accepted,
    Outcome,
    Permanent,
    RetryAfter,
    SendResult,
    Transient,
)
from billwatch.billing.overage_drain import (
    HELD_PASS_MINUTES,
    MAX_FAILED_RUNS,
    RESERVE_SECONDS,
    SENDER_POLICY,
    SENDS_PER_RUN,
    MeterKeyRefused,
    OverageDrain,
    SenderChoice,
    longest_request,
)
from billwatch.core.metrics import Metric, MetricPoint, MetricsRecorder
from billwatch.core.models import OverageSendFailure
from billwatch.licensing.overage import MeterEvent, OverageBalance, identifier
from billwatch.licensing.overage_ledger import OwedBalance

DAY = 86_400
NOV_1 = 1_793_491_200  # 2026-11-01T00:00:00Z
DEC_1 = NOV_1 + 30 * DAY
NOW = NOV_1 + 5 * DAY + 17


@dataclasses.dataclass
class Figures:
    """One balance as the ledger keeps it."""

    overage: int
    customer: str | None = "cus_A"
    reported: int = 0
    sending: int | None = None
    pinned_at: int | None = None
    due: bool = True
    period_end: int = DEC_1
    held: bool = False  # on the held list: read by the hourly held pass only


class MemoryLedger:
    """OverageLedger's contract: due lists the balances, and each write holds on the balance as read."""

    def __init__(self, **balances: Figures) -> None:
        self.figures = balances
        self.fail_settle = False

    def due(self, now: int, limit: int = 500) -> list[OwedBalance]:
        return self._listed(held=False)[:limit]

    def held(self, now: int) -> list[OwedBalance]:
        return self._listed(held=True)

    def _listed(self, held: bool) -> list[OwedBalance]:
        return [
            OwedBalance(
                OverageBalance(
                    account, f.customer, "exports", "exports", NOV_1, f.period_end, f.overage, f.reported
                ),
                f.sending,
                f.pinned_at,
                closed=False,
            )
            for account, f in self.figures.items()
            if f.due and f.held == held
        ]

    def _as_read(self, owed: OwedBalance) -> Figures | None:
        figures = self.figures[owed.balance.account_id]
        return (
            figures if (figures.reported, figures.sending) == (owed.balance.reported, owed.sending) else None
        )

    def pin(self, owed: OwedBalance, through: int, now: int) -> bool:
        figures = self._as_read(owed)
        if figures is None or figures.sending not in (None, through) or figures.overage < through:
            return False
        if figures.sending is None:
            figures.sending, figures.pinned_at = through, now
        figures.held = False
        return True

    def hold(self, owed: OwedBalance) -> bool:
        figures = self._as_read(owed)
        if figures is None:
            return False
        figures.held = True
        return True

    def settle(self, owed: OwedBalance, through: int) -> bool:
        if self.fail_settle:
            raise ConnectionError("the watermark's write was lost")
        figures = self.figures[owed.balance.account_id]
        if figures.reported != owed.balance.reported or figures.sending != through:
            return False
        figures.reported, figures.sending, figures.pinned_at = through, None, None
        return True

    def release(self, owed: OwedBalance) -> bool:
        figures = self._as_read(owed)
        if figures is None or figures.overage > figures.reported or figures.sending is not None:
            return False
        figures.due = False
        return True


class MemoryFailures:
    def __init__(self) -> None:
        self.items: dict[str, OverageSendFailure] = {}

    def of(self, identifiers: Sequence[str]) -> dict[str, OverageSendFailure]:
        return {i: self.items[i] for i in identifiers if i in self.items}

    def _item(self, identifier: str) -> OverageSendFailure:
        return self.items.setdefault(identifier, OverageSendFailure(OverageSendFailure.key(identifier)))

    def failed(self, identifier: str, error: str, now: int, runs: int = 1) -> int:
        item = self._item(identifier)
        item.runs, item.error, item.failed_at = (item.runs or 0) + runs, error, now
        return int(item.runs)

    def park(self, identifier: str, error: str, now: int) -> None:
        item = self._item(identifier)
        item.parked_at, item.error = now, error

    def clear(self, identifier: str) -> None:
        self.items.pop(identifier, None)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


Script = Callable[[MeterEvent, int], Outcome]  # (event, its nth send overall, from 1) -> outcome


class StripeMeters:
    """Stripe's meter events as a sender sees them: an identifier it took counts once (its dedup),
    and a resend must carry the parameters of the first (its idempotency key)."""

    def __init__(self, script: Script = lambda event, nth: Accepted()) -> None:
        self.script = script
        self.taken: dict[str, MeterEvent] = {}
        self.sends: list[list[str]] = []
        self._count: dict[str, int] = {}

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        self.sends.append([event.identifier for event in events])
        outcomes: dict[str, Outcome] = {}
        for event in events:
            self._count[event.identifier] = self._count.get(event.identifier, 0) + 1
            outcome = self.script(event, self._count[event.identifier])
            if isinstance(outcome, Accepted):
                first = self.taken.setdefault(event.identifier, event)
                if first.params() != event.params():
                    outcome = Permanent("idempotency_error", "Keys for idempotent requests can only be used")
            outcomes[event.identifier] = outcome
        return SendResult(outcomes)

    def units(self) -> int:
        return sum(event.value for event in self.taken.values())


class Recorded(MetricsRecorder):
    def __init__(self) -> None:
        super().__init__("Billwatch", "billwatch")
        self.flushed: list[MetricPoint] = []

    def flush(self, metadata: Any = None) -> None:
        self.flushed += self._points
        self._points = []

    def total(self, metric: Metric, **labels: str) -> float:
        return sum(p.value for p in self.flushed if p.metric is metric and dict(p.labels) == labels)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclasses.dataclass
class World:
    ledger: MemoryLedger
    stripe: StripeMeters
    metrics: Recorded
    dead_letters: MemoryDeadLetters
    failures: MemoryFailures
    clock: Clock
    drain: OverageDrain

    def minute(self) -> None:
        self.clock.now += 60

    def next_hour(self) -> None:
        """To the run that reads the held balances too."""
        self.clock.now += HELD_PASS_MINUTES * 60 - self.clock.now % (HELD_PASS_MINUTES * 60)


def world(stripe: StripeMeters | None = None, **balances: Figures) -> World:
    ledger, stripe = MemoryLedger(**balances), stripe or StripeMeters()
    metrics, dead_letters, failures, clock = Recorded(), MemoryDeadLetters(), MemoryFailures(), Clock()
    drain = OverageDrain(
        ledger,  # type: ignore[arg-type]
        SenderChoice(stripe, stripe, threshold=100),
        metrics,
        dead_letters,  # type: ignore[arg-type]
        failures,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: 0.5,
    )
    return World(ledger, stripe, metrics, dead_letters, failures, clock, drain)


def scripted(*outcomes: Outcome) -> Script:
    """Every event meets these outcomes on its 1st, 2nd, ... send, then is accepted."""
    return lambda event, nth: outcomes[nth - 1] if nth <= len(outcomes) else Accepted()


def range_id(after: int, through: int, account: str = "acct_1") -> str:
    return identifier(account, "exports", NOV_1, after, through)


# ------------------------------------------------------------------------------------ accepted


def test_the_whole_owed_range_goes_as_one_event_and_settles() -> None:
    w = world(acct_1=Figures(overage=30, reported=12), acct_2=Figures(overage=5))
    result = w.drain.run()
    assert sorted(w.stripe.taken) == sorted([range_id(12, 30), range_id(0, 5, "acct_2")])
    assert len(w.stripe.sends) == 2  # one v1 request per event
    assert (result.events_sent, result.units_sent, result.failed) == (2, 23, {})
    assert w.ledger.figures["acct_1"] == Figures(overage=30, reported=30)
    assert w.metrics.total(Metric.OVERAGE_UNITS_SENT, Feature="exports") == 23
    assert w.metrics.total(Metric.OVERAGE_EVENTS_SENT) == 2


def test_what_owes_nothing_is_released_and_what_cannot_go_is_counted_by_reason() -> None:
    w = world(
        acct_paid=Figures(overage=9, reported=9),
        acct_nocus=Figures(overage=4, customer=None),
        acct_old=Figures(overage=4, period_end=NOW - 40 * DAY),
    )
    result = w.drain.run()
    assert w.stripe.sends == []
    assert result.released == 1 and not w.ledger.figures["acct_paid"].due
    assert result.unsent == {"no_customer": 1, "too_old": 1}
    assert w.metrics.total(Metric.OVERAGE_UNSENT, Reason="no_customer") == 1
    assert w.metrics.total(Metric.OVERAGE_UNSENT, Reason="too_old") == 1
    assert w.ledger.figures["acct_nocus"].sending is None  # nothing pinned for what cannot go


def test_what_cannot_be_sent_is_held_off_the_minute_list_until_the_held_pass_finds_it_sendable() -> None:
    w = world(
        acct_nocus=Figures(overage=4, customer=None),
        acct_old=Figures(overage=4, period_end=NOW - 40 * DAY),
        acct_paid=Figures(overage=2),
    )
    w.minute()
    result = w.drain.run()
    assert (result.held, result.events_sent) == (2, 1)
    assert [f.held for f in w.ledger.figures.values()] == [True, True, False]
    w.minute()
    assert w.drain.run().balances == 1  # acct_paid, released: the held ones are not read
    assert w.metrics.total(Metric.OVERAGE_UNSENT, Reason="no_customer") == 1
    w.ledger.figures["acct_nocus"].customer = "cus_N"  # a Stripe customer, added later
    w.next_hour()
    result = w.drain.run()
    assert (result.events_sent, result.unsent, result.held) == (1, {"too_old": 1}, 1)
    assert w.ledger.figures["acct_nocus"] == Figures(overage=4, customer="cus_N", reported=4)
    assert w.metrics.total(Metric.OVERAGE_UNSENT, Reason="too_old") == 2  # once an hour while held


def test_a_balance_that_changed_after_the_read_waits_for_the_next_run() -> None:
    w = world(acct_1=Figures(overage=10))
    owed = w.ledger.due(NOW)
    w.ledger.figures["acct_1"].reported = 4  # another writer, between the read and the pin
    w.ledger.due = lambda now, limit=500: owed  # type: ignore[method-assign]
    assert w.drain.run().changed == 1 and w.stripe.taken == {}


# ------------------------------------------------------------------------------ 429 and 5xx


def test_a_429_is_waited_out_within_the_run() -> None:
    w = world(StripeMeters(scripted(RetryAfter(2.0))), acct_1=Figures(overage=8))
    result = w.drain.run(time_left=lambda: 40.0)
    assert w.clock.slept == [2.0]
    assert result.events_sent == 1 and w.ledger.figures["acct_1"].reported == 8


def test_a_429_longer_than_the_time_left_is_not_waited_and_the_next_run_sends_the_same_range() -> None:
    w = world(StripeMeters(scripted(RetryAfter(30.0))), acct_1=Figures(overage=8))
    result = w.drain.run(time_left=lambda: 30.0 + RESERVE_SECONDS - 1)
    assert w.clock.slept == [] and result.failed == {"rate_limited": 1}
    assert w.ledger.figures["acct_1"].sending == 8  # the pin stays
    assert w.metrics.total(Metric.OVERAGE_SEND_FAILED, Outcome="rate_limited") == 1
    w.minute()
    w.ledger.figures["acct_1"].overage = 11  # more units meanwhile: they wait for the pin to go
    assert w.drain.run().events_sent == 1
    assert list(w.stripe.taken) == [range_id(0, 8)]
    w.drain.run()
    assert list(w.stripe.taken) == [range_id(0, 8), range_id(8, 11)] and w.stripe.units() == 11


def test_5xx_are_retried_with_growing_jittered_backoff_then_left_pinned() -> None:
    w = world(StripeMeters(lambda event, nth: Transient("server_error")), acct_1=Figures(overage=8))
    result = w.drain.run()
    assert len(w.stripe.sends) == SENDS_PER_RUN
    # Equal jitter (the test's jitter is 0.5): 3/4 of 1 s, then of 2 s.
    assert w.clock.slept == [0.75, 1.5]
    assert result.failed == {"transient": 1} and w.ledger.figures["acct_1"].sending == 8
    assert w.failures.items[range_id(0, 8)].runs == 1


def test_a_range_left_pinned_goes_again_with_its_first_timestamp_after_more_units_came() -> None:
    failing = True
    w = world(
        StripeMeters(lambda event, nth: Transient("timeout") if failing else Accepted()),
        acct_1=Figures(overage=8),
    )
    w.drain.run()
    first = w.stripe.sends[0][0]
    w.ledger.figures["acct_1"].overage = 20
    w.minute()
    failing = False
    result = w.drain.run()
    # Stripe refuses an idempotency key it saw with other parameters: the resend is the first send.
    assert result.events_sent == 1 and list(w.stripe.taken) == [first]
    assert w.failures.items == {}  # its failure record goes once Stripe has it
    w.drain.run()
    assert w.stripe.units() == 20 and w.ledger.figures["acct_1"] == Figures(overage=20, reported=20)


# ---------------------------------------------------------------------- refused and given up


def test_a_refused_range_is_dead_lettered_once_and_parked_with_its_balance() -> None:
    refused = Permanent("resource_missing", "No such customer: 'cus_A'")
    w = world(
        StripeMeters(lambda event, nth: refused if event.value == 8 else Accepted()),
        acct_1=Figures(overage=8),
        acct_2=Figures(overage=3),
    )
    result = w.drain.run()
    assert result.failed == {"permanent": 1} and result.events_sent == 1
    (message,) = w.dead_letters.messages
    assert message == {
        "account_id": "acct_1",
        "feature": "exports",
        "event_name": "exports",
        "period_start": NOV_1,
        "period_end": DEC_1,
        "closed": False,
        "units_after": 0,
        "units_through": 8,
        "identifier": range_id(0, 8),
        "stripe_customer_id": "cus_A",
        "error": "resource_missing: No such customer: 'cus_A'",
        "outcome": "permanent",
    }
    assert w.metrics.total(Metric.OVERAGE_SEND_FAILED, Outcome="permanent") == 1
    sends = len(w.stripe.sends)
    w.minute()
    result = w.drain.run()
    assert (result.parked, result.held) == (1, 1)  # off the minute list: held
    for _ in range(3):  # parked: not sent, nor anything newer of its balance
        w.minute()
        w.ledger.figures["acct_1"].overage += 1
        assert w.drain.run().balances == 0
    w.next_hour()
    assert w.drain.run().parked == 1  # the held pass reads it again
    assert len(w.stripe.sends) == sends and len(w.dead_letters.messages) == 1
    # The operator's re-drive: the next held pass sends the range again, as pinned, which puts its
    # balance back on the minute list, and the units after it follow.
    w.failures.clear(range_id(0, 8))
    w.stripe.script = lambda event, nth: Accepted()
    w.next_hour()
    w.drain.run()
    assert not w.ledger.figures["acct_1"].held
    w.minute()
    w.drain.run()
    assert list(w.stripe.taken)[1:] == [range_id(0, 8), range_id(8, 11)] and w.stripe.units() == 14


def test_a_range_failing_run_after_run_is_dead_lettered_after_the_last_allowed_run() -> None:
    w = world(StripeMeters(lambda event, nth: Transient("connection")), acct_1=Figures(overage=8))
    for run in range(1, MAX_FAILED_RUNS):
        assert w.drain.run().failed == {"transient": 1}, run
        w.minute()
    assert w.dead_letters.messages == []
    assert w.drain.run().failed == {"gave_up": 1}
    (message,) = w.dead_letters.messages
    assert message["outcome"] == "gave_up" and message["identifier"] == range_id(0, 8)
    assert message["error"] == f"failed {MAX_FAILED_RUNS} runs in a row, last: transient: connection"
    w.minute()
    assert w.drain.run().parked == 1


def test_a_refused_key_dead_letters_nothing_and_fails_the_run() -> None:
    w = world(StripeMeters(lambda event, nth: Permanent("authentication", "Invalid API Key")), a=Figures(8))
    with pytest.raises(MeterKeyRefused):
        w.drain.run()
    assert w.dead_letters.messages == [] and w.failures.items == {}
    assert w.ledger.figures["a"].sending == 8
    assert w.metrics.total(Metric.OVERAGE_SEND_FAILED, Outcome="key_refused") == 1  # flushed anyway


# ------------------------------------------------------------------------ the Lambda timeout


class CutOff(BaseException):
    """Lambda ends the invocation at its timeout: no except or finally of the handler runs after."""


def cut_off_at(*identifiers: str) -> Script:
    def script(event: MeterEvent, nth: int) -> Outcome:
        if event.identifier in identifiers:
            raise CutOff()
        return Accepted()

    return script


def test_a_run_cut_off_in_a_request_keeps_what_stripe_accepted_before_it() -> None:
    w = world(
        StripeMeters(cut_off_at(range_id(0, 3, "acct_3"))),
        **{f"acct_{n}": Figures(overage=3) for n in (1, 2, 3, 4)},
    )
    with pytest.raises(CutOff):
        w.drain.run()
    figures = w.ledger.figures
    assert (figures["acct_1"].reported, figures["acct_2"].reported) == (3, 3)  # settled as Stripe took them
    assert (figures["acct_3"].sending, figures["acct_4"].sending) == (3, None)  # nothing pinned unsent


def test_a_range_whose_runs_are_cut_off_every_time_is_dead_lettered() -> None:
    stuck = range_id(0, 8)
    w = world(StripeMeters(cut_off_at(stuck)), acct_1=Figures(overage=8), acct_2=Figures(overage=2))
    for _ in range(MAX_FAILED_RUNS + 1):  # the first pins it, each later one counts a run before it sends
        with pytest.raises(CutOff):
            w.drain.run()
        w.minute()
    assert w.failures.items[stuck].runs == MAX_FAILED_RUNS and w.dead_letters.messages == []
    result = w.drain.run()
    assert (result.failed, result.events_sent) == ({"gave_up": 1}, 1)  # and the runs go on past it
    (message,) = w.dead_letters.messages
    assert message["identifier"] == stuck
    assert message["error"].startswith(f"failed {MAX_FAILED_RUNS} runs in a row, last: cut off")
    assert len([send for send in w.stripe.sends if send == [stuck]]) == MAX_FAILED_RUNS + 1


def test_no_request_starts_without_the_time_for_it_and_the_rest_waits_unpinned() -> None:
    assert longest_request(SENDER_POLICY) == 9.0  # 2 attempts timing out at 4 s, a Retry-After wait of 1 s

    w = world(**{f"acct_{n}": Figures(overage=2) for n in range(6)})

    def slow(event: MeterEvent, nth: int) -> Outcome:
        w.clock.now += 10
        return Accepted()

    w.stripe.script = slow
    start = w.clock.now
    result = w.drain.run(time_left=lambda: 40 - (w.clock.now - start))
    # Requests start with 40, 30 and 20 s left (9 s for the request, 5 s kept): not with 10.
    assert (result.events_sent, result.deferred, result.failed) == (3, 3, {})
    assert [f.sending for f in w.ledger.figures.values()] == [None] * 6
    w.minute()
    assert w.drain.run().events_sent == 3


def test_a_v2_batch_starts_only_with_the_time_to_create_its_session_too() -> None:
    """Each attempt of a stream batch may first create a session (its own request and timeout): the
    batch needs 17 s, not a v1 event's 9."""
    assert longest_request(SENDER_POLICY, session=True) == 17.0
    w = world(**{f"acct_{n:03}": Figures(overage=2) for n in range(100)})  # 100 events: the stream
    start = w.clock.now
    result = w.drain.run(time_left=lambda: 20 - (w.clock.now - start))  # 9 + 5 fit, 17 + 5 do not
    assert (result.events_sent, result.deferred) == (0, 100)
    assert w.stripe.sends == []
    assert w.drain.run(time_left=lambda: 22.5 - (w.clock.now - start)).events_sent == 100


def test_a_refused_key_takes_back_the_failed_run_a_range_in_flight_counted() -> None:
    w = world(
        StripeMeters(lambda event, nth: Permanent("authentication", "Invalid API Key")),
        a=Figures(8, sending=8, pinned_at=NOW - 60),
    )
    with pytest.raises(MeterKeyRefused):
        w.drain.run()
    assert w.failures.items[identifier("a", "exports", NOV_1, 0, 8)].runs == 0


# ---------------------------------------------------------------------- accepted, then lost


def test_a_watermark_write_lost_after_stripes_accept_sends_the_same_identifier_again() -> None:
    w = world(acct_1=Figures(overage=8))
    w.ledger.fail_settle = True
    with pytest.raises(ConnectionError):
        w.drain.run()
    assert w.metrics.total(Metric.OVERAGE_UNITS_SENT, Feature="exports") == 0  # not settled: not counted
    w.ledger.fail_settle = False
    w.ledger.figures["acct_1"].overage = 12
    w.minute()
    w.drain.run()
    w.drain.run()
    assert w.stripe.sends == [[range_id(0, 8)], [range_id(0, 8)], [range_id(8, 12)]]
    assert w.stripe.units() == 12 and w.ledger.figures["acct_1"].reported == 12
    assert w.metrics.total(Metric.OVERAGE_UNITS_SENT, Feature="exports") == 12


# ------------------------------------------------------------------------------------ senders


class Counting:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        self.sizes.append(len(events))
        return SendResult({event.identifier: Accepted() for event in events})


@pytest.mark.parametrize(
    ("events", "sizes"),
    [(1, ([], [1])), (99, ([], [1] * 99)), (100, ([100], [])), (250, ([100, 100, 50], []))],
)
def test_the_v2_stream_takes_a_run_from_the_threshold_on_100_events_a_request(
    events: int, sizes: tuple[list[int], list[int]]
) -> None:
    single, streamed = Counting(), Counting()
    w = world(**{f"acct_{n:03d}": Figures(overage=1) for n in range(events)})
    w.drain._sender = SenderChoice(single, streamed, threshold=100)
    assert w.drain.run().events_sent == events
    assert (streamed.sizes, single.sizes) == sizes
