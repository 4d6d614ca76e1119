"""Chaos for the overage path (issue 19): seeded runs of uses, grants and a period closing, between
drain runs that Stripe and DynamoDB fail in every way the drain must survive (429s with and without
Retry-After, 500s, answers slower than the client's timeout, answers lost after Stripe accepted,
the v2 session revoked or failing, a crash between Stripe's acceptance and the watermark's write, a
crash after the pin before the send, DynamoDB throttling and timeouts under the ledger), through both
senders (v1, and the v2 stream from SenderChoice's threshold). Once the faults stop and the drain has
caught up, Stripe counts exactly the overage units the counters and period records hold, per Stripe
customer, meter and month, no unit twice, and the daily reconciliation confirms every period.

The reference is the test's own model of the uses and grants it made (the rule of
docs/overage-billing.md: a period's overage is max(0, counter - quota), the counter net of grants),
checked against the items and records as stored, then against the Stripe stand-in.

Like the webhooks' chaos replay (test_chaos_replay.py), everything random draws from a seed:
OVERAGE_CHAOS_SEEDS (default "2,3,4"). Each seed's schedule holds every kind of fault at least once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from billwatch.billing.meter_stream import (
    Accepted,
    MeterSender,
    RetryPolicy,
    SendResult,
    Transient,
    V1MeterSender,
    V2MeterEventStream,
)
from billwatch.billing.overage_drain import OverageDrain
from billwatch.billing.stripe_api import StripeApi
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, UsagePeriodRecord
from billwatch.licensing.overage import MeterEvent
from billwatch.licensing.overage_ledger import OverageLedger
from billwatch.licensing.service import Licensing
from billwatch.reporting.meter_reconciliation import MeterReconciler
from billwatch.reporting.model import Known, MeterCheck, MeterOutcome
from devtools.fake_meters import Fault, lost_answer, rate_limited, server_error, slow
from tests.chaos import DynamoDBFaults
from tests.integration.overage_stack import *  # noqa: F403 (fixtures)
from tests.integration.overage_stack import V1_PATH, drain_of
from tests.integration.test_overage_drain_stripe import dead_letters
from tests.integration.test_overage_ledger import DEC_1
from tests.support import MetricsCapture

SEEDS = [int(seed) for seed in os.environ.get("OVERAGE_CHAOS_SEEDS", "2,3,4").split(",")]
STEPS = 16  # drain runs, one a minute, with uses and grants between them
STREAM_PATH = "/v2/billing/meter_event_stream"
SESSION_PATH = "/v2/billing/meter_event_session"
# A timeout short enough for the slow answers to outlast it without slowing the test much.
POLICY = RetryPolicy(attempts=2, max_wait_seconds=0.0, backoff_seconds=0.0, timeout_seconds=0.2)
SLOW_SECONDS = 0.4
DYNAMODB_FAULT_RATE = 0.15
QUOTA = {"exports": 10, "api_calls": 1000}  # FREE in overage_catalog()
HARD_CAP = {"exports": 15}
EVENT_NAME = {"exports": "exports_overage", "api_calls": "api_calls_overage"}
# Customers and their accounts: two share a Stripe customer.
CUSTOMERS = {"cus_team": ("t1", "t2"), "cus_solo1": ("s1",), "cus_solo2": ("s2",)}
ACCOUNTS = [account for accounts in CUSTOMERS.values() for account in accounts]
SHARED_CUSTOMERS = {customer for customer, accounts in CUSTOMERS.items() if len(accounts) > 1}

STRIPE_FAULTS: dict[str, tuple[Fault, ...]] = {
    "rate_limited_retry_after": (rate_limited("1"),) * 2,
    "rate_limited_no_retry_after": (rate_limited(None),) * 3,
    "server_error": (server_error(),) * 7,  # past one run's sends of an event: left pinned
    "slow": (slow(SLOW_SECONDS),) * 2,
    "lost_answer": (lost_answer(),) * 2,
}
SENDERS = {V1MeterSender: V1_PATH, V2MeterEventStream: STREAM_PATH}
OTHER_FAULTS = ("session_failing", "session_revoked", "crash_before_settle", "crash_after_pin", "dynamodb")
FAULT_KINDS = (*STRIPE_FAULTS, *OTHER_FAULTS)
RUN = "run"  # where a fault that is no Stripe request's is met
EVERY_FAULT = {(kind, path) for kind in STRIPE_FAULTS for path in SENDERS.values()} | {
    (kind, SESSION_PATH if kind == "session_failing" else RUN) for kind in OTHER_FAULTS
}
# What a drain run that an injected fault stops raises, as the Lambda would fail.
RUN_FAILURES = (OSError, StoreUnavailable, StoreRejected, PynamoDBException, BotoCoreError, ClientError)


def month(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m")


@dataclass
class ModelPeriod:
    month: str
    counters: Counter[str] = field(default_factory=Counter)  # net of grants, as the item counts

    def overage(self, feature: str) -> int:
        return max(0, self.counters[feature] - QUOTA[feature])


@dataclass
class Model:
    """The uses and grants the test made, and what they must come to."""

    periods: dict[str, list[ModelPeriod]] = field(default_factory=lambda: defaultdict(list))

    def current(self, account: str, now: int) -> ModelPeriod:
        periods = self.periods[account]
        if not periods or periods[-1].month != month(now):  # the first use or grant of a month starts it
            periods.append(ModelPeriod(month(now)))
        return periods[-1]

    def use(self, account: str, feature: str, units: int, now: int) -> tuple[bool, int]:
        """Whether the use is allowed, and how many of its units are overage."""
        period = self.current(account, now)
        before = period.counters[feature]
        if before + units > HARD_CAP.get(feature, before + units):
            return False, 0
        period.counters[feature] += units
        return True, period.overage(feature) - max(0, before - QUOTA[feature])

    def grant(self, account: str, feature: str, units: int, now: int) -> None:
        self.current(account, now).counters[feature] -= units

    def owes(self, account: str, feature: str, now: int) -> bool:
        periods = self.periods[account]
        return bool(periods) and periods[-1].month == month(now) and periods[-1].overage(feature) > 0

    def overage(self) -> dict[tuple[str, str, str], int]:
        """Per Stripe customer, meter and month: the units Stripe must count."""
        expected: Counter[tuple[str, str, str]] = Counter()
        for customer, accounts in CUSTOMERS.items():
            for account in accounts:
                for period in self.periods[account]:
                    for feature, event_name in EVENT_NAME.items():
                        expected[(customer, event_name, period.month)] += period.overage(feature)
        return {key: units for key, units in expected.items() if units}


def stored_overage(licensing: Licensing) -> dict[tuple[str, str, str], int]:
    """The same, as the account items' counters and the closed periods' records say."""
    stored: Counter[tuple[str, str, str]] = Counter()
    for customer, accounts in CUSTOMERS.items():
        for account in accounts:
            usage = licensing.load(account)
            if usage.account.usage_since is not None:
                for feature, event_name in EVENT_NAME.items():
                    overage = max(0, usage.counter(feature) - QUOTA[feature])
                    stored[(customer, event_name, month(usage.account.usage_since))] += overage
            for record in UsagePeriodRecord.query(account):
                features = json.loads(record.features)
                for feature, event_name in EVENT_NAME.items():
                    figures = features.get(feature, {"used": 0, "limit": 0})
                    overage = max(0, figures["used"] - figures["limit"])
                    stored[(customer, event_name, month(record.period_start))] += overage
    return {key: units for key, units in stored.items() if units}


def reconciled_without_drift(check: MeterCheck) -> bool:
    """Confirmed; or, for a Stripe customer billed from several accounts, possibly not compared:
    Stripe's summary cannot tell the accounts apart."""
    allowed = {MeterOutcome.CONFIRMED}
    if check.stripe_customer_id in SHARED_CUSTOMERS:
        allowed.add(MeterOutcome.NOT_COMPARED)
    return check.outcome in allowed


def counted_by_stripe(meters) -> dict[tuple[str, str, str], int]:
    counted: Counter[tuple[str, str, str]] = Counter()
    for event in meters.accepted:
        if not event.cancelled:
            counted[(event.customer, event.event_name, month(event.timestamp))] += event.value
    return dict(counted)


def schedule(rng: random.Random) -> dict[int, list[str]]:
    """The faults of each drain run: every kind at least once, and more at random."""
    runs: dict[int, list[str]] = defaultdict(list)
    for kind in FAULT_KINDS:  # early enough for a run to meet it
        runs[rng.randrange(STEPS - 6)].append(kind)
    for step in range(STEPS):
        if rng.random() < 0.3:
            runs[step].append(rng.choice(FAULT_KINDS))
    return runs


class Chaos:
    """Injects each drain run's faults and records the ones a request or a run met. Stripe's faults
    wait for each sender's requests (v1 and the stream each meet every kind), one kind queued per
    request; the session's 500 for the next session, which a revoked one makes. A fault a run did not
    meet (nothing to send, settle or stream) waits for the next run."""

    def __init__(self, meters, dynamodb: DynamoDBFaults, monkeypatch: pytest.MonkeyPatch) -> None:
        self.met: Counter[tuple[str, str]] = Counter()  # (kind, path or "run")
        self.failed_runs: Counter[str] = Counter()
        self._meters = meters
        self._dynamodb = dynamodb
        self._monkeypatch = monkeypatch
        # The kinds waiting for a request of each path, or for a run, oldest first.
        self._waiting: dict[str, dict[str, None]] = {path: {} for path in (*SENDERS.values(), RUN)}
        self._queued: dict[int, tuple[str, Fault]] = {}  # id(fault): its kind, and the fault kept alive
        take = meters._next_fault

        def next_fault(route: str) -> Fault | None:
            fault = take(route)
            if fault is not None:
                self._met(self._queued.pop(id(fault))[0], route)
            return fault

        monkeypatch.setattr(meters, "_next_fault", next_fault)
        for sender, path in SENDERS.items():
            monkeypatch.setattr(sender, "send", self._faulty(sender.send, path))

    def _faulty(self, send, path: str):
        def sending(sender: MeterSender, events: Sequence[MeterEvent]) -> SendResult:
            if waiting := self._waiting[path]:
                kind = next(iter(waiting))
                del waiting[kind]
                self._queue(kind, path, STRIPE_FAULTS[kind])
            return send(sender, events)

        return sending

    def run(self, drain: OverageDrain, kinds: list[str]) -> None:
        for kind in kinds:
            if kind in STRIPE_FAULTS:
                for path in SENDERS.values():
                    self._waiting[path][kind] = None
            elif kind == "session_failing":
                self._queue(kind, SESSION_PATH, (server_error(),))
                self._waiting[RUN]["session_revoked"] = None
            else:
                self._waiting[RUN][kind] = None
        met_before = Counter(self.met)
        waiting = self._waiting[RUN]
        sessions, dynamodb_faults = self._meters.sessions_created, self._dynamodb.total()
        revoked = "session_revoked" in waiting and sessions > 0
        with self._monkeypatch.context() as patched:
            if revoked:
                self._meters.revoke_sessions()
            if "crash_before_settle" in waiting:
                patched.setattr(OverageLedger, "settle", self._crash("crash_before_settle"))
            if "crash_after_pin" in waiting:
                for sender in SENDERS:
                    patched.setattr(sender, "send", self._crash("crash_after_pin"))
            try:
                if "dynamodb" in waiting:
                    with self._dynamodb.during():
                        drain.run()
                else:
                    drain.run()
            except RUN_FAILURES as failure:
                self.failed_runs[type(failure).__name__] += 1
        if revoked and self._meters.sessions_created > sessions:  # the stream met the 401 and renewed
            self._met("session_revoked", RUN)
        if self._dynamodb.total() > dynamodb_faults:
            self._met("dynamodb", RUN)
        for path in SENDERS.values():  # a kind the run did not meet at all waits for the next request
            for fault in self._meters.faults.pop(path, []):
                kind = self._queued.pop(id(fault))[0]
                if self.met[(kind, path)] == met_before[(kind, path)]:
                    self._waiting[path][kind] = None

    def _queue(self, kind: str, path: str, faults: tuple[Fault, ...]) -> None:
        copies = [dataclasses.replace(fault) for fault in faults]  # told apart by identity
        self._queued.update((id(fault), (kind, fault)) for fault in copies)
        self._meters.fail(path, *copies)

    def stop(self) -> None:
        """No more faults: what is still queued is dropped, and a slow answer still on its way lands."""
        self._meters.faults.clear()
        for waiting in self._waiting.values():
            waiting.clear()
        time.sleep(SLOW_SECONDS)

    def _met(self, kind: str, path: str) -> None:
        self.met[(kind, path)] += 1
        self._waiting[RUN].pop(kind, None)

    def _crash(self, kind: str):
        def crashing(*args, **kwargs):
            self._met(kind, RUN)
            raise OSError(f"injected {kind}")

        return crashing


@pytest.mark.parametrize("seed", SEEDS)
def test_every_overage_unit_reaches_stripe_once_through_chaos_and_reconciles(
    stripe, meters, licensing, clock, dlq, capsys, monkeypatch, seed: int
) -> None:
    started, wall = time.process_time(), time.perf_counter()
    rng = random.Random(seed)
    meters.add_meter("api_calls_overage")
    clock.now = DEC_1 - rng.randrange(5, 8) * 60 - rng.randrange(60)  # November ends mid-run
    # a run of 4 events or more goes by the v2 stream
    drain = drain_of(stripe, licensing, clock, dlq, threshold=4, policy=POLICY)
    model = Model()
    for customer, accounts in CUSTOMERS.items():
        for account in accounts:
            BillingAccount(account, stripe_customer_id=customer).save()
    faults = schedule(rng)
    chaos = Chaos(meters, DynamoDBFaults(monkeypatch, DYNAMODB_FAULT_RATE, seed), monkeypatch)
    for step in range(STEPS):
        now = int(clock.now)
        busy = rng.choice((0.15, 0.9))  # quiet minutes make runs of one event (v1), busy ones the stream
        for account in ACCOUNTS:  # each on its own: one customer's periods start apart too
            if rng.random() < 0.3 and not model.owes(account, "exports", now):
                units = rng.randint(1, 3)  # a grant that lowers no overage: billed units are not refunded
                licensing.grant(account, "exports", units)
                model.grant(account, "exports", units, now)
            if rng.random() < busy:
                for feature, units in (("exports", rng.randint(2, 6)), ("api_calls", rng.randint(0, 700))):
                    if units:
                        answer = licensing.use(account, feature, units)
                        allowed, overage = model.use(account, feature, units, now)
                        assert (answer.allowed, answer.overage if allowed else 0) == (allowed, overage)
        chaos.run(drain, faults[step])
        clock.now += 60

    # The faults stop: what Stripe has not answered yet lands, and the drain catches up.
    chaos.stop()
    ledger = OverageLedger(licensing.policy.catalog)
    for _ in range(5):
        drain.run()
        clock.now += 60
        if not any(owed.owing for owed in ledger.due(int(clock.now))):
            break
    assert [owed for owed in ledger.due(int(clock.now)) if owed.owing] == []

    expected = model.overage()
    assert stored_overage(licensing) == expected
    # (a) Stripe counts exactly the overage, per customer, meter and month; (b) no identifier twice.
    assert counted_by_stripe(meters) == expected
    counted = [event.identifier for event in meters.accepted]
    assert len(counted) == len(set(counted))
    assert {event.identifier for event in meters.duplicates} <= set(counted)

    # (c) The daily reconciliation confirms every period (a customer billed from several accounts may
    # be left uncompared instead), never drift, and the next one has nothing left to confirm.
    api = StripeApi(lambda: "rk_test_report", stripe.url, max_network_retries=0)
    recorder = MetricsRecorder("Billwatch", "billwatch")
    reconciled = MeterReconciler(ledger, api, recorder).check(int(clock.now))
    recorder.flush()
    assert isinstance(reconciled, Known), reconciled
    checks = reconciled.value.checks
    assert [check for check in checks if not reconciled_without_drift(check)] == []
    assert reconciled.value.drifts == ()
    sent: Counter[tuple[str, str, str]] = Counter()
    for check in checks:
        sent[(check.stripe_customer_id, check.event_name, month(check.period_start))] += check.sent
    assert sent == expected
    again = MeterReconciler(ledger, api, recorder).check(int(clock.now))
    assert isinstance(again, Known)
    assert [check for check in again.value.checks if not reconciled_without_drift(check)] == []
    assert {check.stripe_customer_id for check in again.value.checks} <= SHARED_CUSTOMERS
    assert MetricsCapture(capsys).total("MeterDrift") == 0
    # (d) Nothing dead-lettered: no fault here is a refusal.
    assert dead_letters(dlq) == []

    # The run was chaotic in every way it is meant to be.
    assert set(chaos.met) == EVERY_FAULT, EVERY_FAULT - set(chaos.met)
    assert {event.via for event in meters.accepted} == {"v1", "v2"}
    assert meters.duplicates
    assert {month(event.timestamp) for event in meters.accepted} == {month(DEC_1 - 1), month(DEC_1)}
    print(
        f"\noverage chaos seed {seed}: faults met {sorted(chaos.met.items())}, "
        f"failed runs {dict(chaos.failed_runs)}, accepted {len(meters.accepted)}, "
        f"duplicates {len(meters.duplicates)}, sessions {meters.sessions_created}, "
        f"cpu {time.process_time() - started:.2f} s, wall {time.perf_counter() - wall:.2f} s"
    )


def test_a_stream_session_expiring_on_the_last_attempt_is_transient_and_renewed(
    stripe, meters, clock
) -> None:
    """Found by the chaos above: a 401 from the stream is its session's expiry, not a refused key,
    on the send's last attempt too; reported as the key refused, it failed the drain's run
    (MeterKeyRefused) and left the dead token for the next send."""
    key = lambda: "rk_test_drain"  # noqa: E731
    stream = V2MeterEventStream(key, stripe.url, stripe.url, POLICY, clock=clock, sleep=lambda seconds: None)
    first, second = (
        MeterEvent("exports_overage", f"bw_{n}", "cus_a1", 1, int(clock.now), n + 1) for n in range(2)
    )
    assert stream.send([first]).outcome(first) == Accepted()
    meters.fail(STREAM_PATH, server_error())
    meters.revoke_sessions()  # the retry after the 500, the send's last attempt, meets the 401
    assert stream.send([second]).outcome(second) == Transient("session_expired")
    assert stream.send([second]).outcome(second) == Accepted()
    assert meters.sessions_created == 2 and meters.units(customer="cus_a1") == 2


def test_accounts_of_one_customer_whose_periods_start_apart_reconcile_without_drift(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    """Found by the chaos above: a period starts at its account's first use, so two accounts of one
    Stripe customer have periods that start apart and end together. Reconciliation at a15dd9f grouped
    them by period start, so each was compared alone with the customer's summary over its own window,
    which holds the other account's events too: an over-count, MeterDrift. Since de5caef such a
    customer is not compared, which is no drift."""
    for account in ("a1", "a2"):
        BillingAccount(account, stripe_customer_id="cus_team").save()
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000, policy=POLICY)
    licensing.use("a1", "exports", 13)
    clock.now += 120
    licensing.use("a2", "exports", 14)
    drain.run()
    assert meters.units(customer="cus_team") == 7  # every unit once: the drain is right
    recorder = MetricsRecorder("Billwatch", "billwatch")
    api = StripeApi(lambda: "rk_test_report", stripe.url, max_network_retries=0)
    reconciled = MeterReconciler(OverageLedger(licensing.policy.catalog), api, recorder).check(int(clock.now))
    recorder.flush()
    assert isinstance(reconciled, Known)
    checks = reconciled.value.checks
    assert [check for check in checks if not reconciled_without_drift(check)] == []
    assert sum(check.sent for check in checks) == 7
    assert MetricsCapture(capsys).total("MeterDrift") == 0


def test_an_account_of_a_shared_customer_left_alone_on_the_list_is_not_drift(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    """Found by the chaos above: whether a Stripe customer is billed from several accounts was read
    from the periods still listed, so once one account's period left the list the other's was
    compared alone with the customer's summary, which holds the first account's events: a false
    over-count. The ByStripeCustomer index names every account of the customer, listed or not."""
    for account in ("t1", "t2"):
        BillingAccount(account, stripe_customer_id="cus_team").save()
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000, policy=POLICY)
    licensing.use("t2", "exports", 5)  # t2's period starts first, within its quota
    clock.now += 60
    licensing.use("t1", "exports", 13)
    drain.run()
    api = StripeApi(lambda: "rk_test_report", stripe.url, max_network_retries=0)
    recorder = MetricsRecorder("Billwatch", "billwatch")
    reconciler = MeterReconciler(OverageLedger(licensing.policy.catalog), api, recorder)
    first = reconciler.check(int(clock.now))
    assert isinstance(first, Known)
    # t1 alone on the list, but t2 bills the same customer: not compared.
    assert [(check.account_id, check.outcome) for check in first.value.checks] == [
        ("t1", MeterOutcome.NOT_COMPARED)
    ]
    clock.now += 60
    licensing.use("t2", "exports", 9)
    drain.run()
    assert meters.units(customer="cus_team") == 7  # every unit once: the drain is right
    reconciled = reconciler.check(int(clock.now))
    recorder.flush()
    assert isinstance(reconciled, Known)
    assert [check for check in reconciled.value.checks if not reconciled_without_drift(check)] == []
    assert MetricsCapture(capsys).total("MeterDrift") == 0
