"""Closed usage periods on moto's DynamoDB: every path that closes a period keeps it, once."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import threading

import pytest
from pynamodb.attributes import NumberAttribute

from billwatch.core.dynamo import StoreUnavailable
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, bind_billing_table, bind_idempotency_table
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_reset import QuotaReset
from billwatch.licensing.service import Licensing
from billwatch.licensing.usage_history import ClosedBy, ClosedPeriod, FeatureUsage, UsageHistory
from tests.support import Clock

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")


def at(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


OCT_20, NOV_1, NOV_2, DEC_1 = at(2026, 10, 20), at(2026, 11, 1), at(2026, 11, 2), at(2026, 12, 1)
EVER = (0, 2**40)


@pytest.fixture
def clock() -> Clock:
    return Clock(OCT_20)


@pytest.fixture
def licensing(aws, clock, metrics) -> Licensing:
    bind_billing_table(aws["BillingStateTable"])
    bind_idempotency_table(aws["IdempotencyTable"])
    return Licensing(CATALOG, MetricsRecorder("Billwatch", "billwatch"), clock, history=UsageHistory(400))


def periods(account_id: str, now: int = DEC_1) -> list[ClosedPeriod]:
    return UsageHistory.periods(account_id, *EVER, now=now)


def test_the_first_use_in_a_new_month_keeps_the_last_one(licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 5)
    licensing.use("acct_1", "exports", 9)
    clock.now = NOV_2
    assert licensing.use("acct_1", "api_calls", 1).used == 1
    assert periods("acct_1") == [
        ClosedPeriod(
            start=OCT_20,
            end=NOV_1,
            closed_at=NOV_2,
            closed_by=ClosedBy.USE,
            tier="FREE",
            tier_override=None,
            features={"api_calls": FeatureUsage(5, 0, 1000), "exports": FeatureUsage(9, 0, 10)},
        )
    ]
    # More uses in November close nothing.
    licensing.use("acct_1", "exports", 1)
    assert len(periods("acct_1")) == 1


def test_a_keyed_first_use_in_a_new_month_keeps_the_last_one_once(licensing, clock) -> None:
    licensing.use("acct_1", "exports", 4)
    clock.now = NOV_2
    first = licensing.use_idempotently("acct_1", "exports", 1, "key-1")
    again = licensing.use_idempotently("acct_1", "exports", 1, "key-1")
    assert (first.used, again.used) == (1, 1)
    [october] = periods("acct_1")
    assert (october.start, october.end) == (OCT_20, NOV_1)
    assert october.features["exports"] == FeatureUsage(4, 0, 10)


def test_a_month_idle_in_between_ends_the_period_with_its_month(licensing, clock) -> None:
    licensing.use("acct_1", "exports", 3)
    clock.now = DEC_1 + 3600
    licensing.use("acct_1", "exports", 1)
    [october] = periods("acct_1", now=DEC_1 + 3600)
    assert (october.start, october.end) == (OCT_20, NOV_1)


def test_the_quota_reset_keeps_each_period_once(licensing, clock, metrics) -> None:
    for n in range(5):
        licensing.use(f"acct_{n}", "api_calls", n + 1)
    licensing.use("acct_idle", "api_calls", 1)
    licensing.reset_usage("acct_idle")  # leaves counters for nobody: an idle period keeps nothing
    clock.now = NOV_2
    job = QuotaReset(licensing, MetricsRecorder("Billwatch", "billwatch"), clock)
    assert sum(job.run_segment("2026-11-02T00", s, 2).reset for s in range(2)) == 6
    assert sum(job.run_segment("2026-11-02T01", s, 2).reset for s in range(2)) == 0
    for n in range(5):
        [october] = periods(f"acct_{n}")
        assert october.closed_by is ClosedBy.QUOTA_RESET and october.end == NOV_1
        assert october.features["api_calls"] == FeatureUsage(n + 1, 0, 1000)
    assert [p.closed_by for p in periods("acct_idle")] == [ClosedBy.ADMIN_RESET]
    # The first use after the sweep closes nothing more: the sweep already started November.
    licensing.use("acct_0", "api_calls", 1)
    assert len(periods("acct_0")) == 1


def test_an_admin_reset_keeps_the_period_it_ends_with_its_grant_and_tier(licensing, clock) -> None:
    BillingAccount("acct_1", tier="PRO", tier_override="FREE").save()
    licensing.use("acct_1", "exports", 10)
    licensing.grant("acct_1", "exports", 5)
    licensing.use("acct_1", "exports", 3)
    clock.now = OCT_20 + 3600
    after = licensing.reset_usage("acct_1")
    assert after["features"]["exports"]["used"] == 0
    [closed] = periods("acct_1")
    assert (closed.start, closed.end, closed.closed_by) == (OCT_20, OCT_20 + 3600, ClosedBy.ADMIN_RESET)
    assert (closed.tier, closed.tier_override) == ("FREE", "FREE")
    assert closed.features["exports"] == FeatureUsage(used=13, granted=5, limit=15)
    assert closed.features["api_calls"] == FeatureUsage(0, 0, 1000)
    # The counters count from the reset: the period starts again from now, and ends as it would have.
    assert licensing.load("acct_1").account.usage_since == OCT_20 + 3600
    assert after["features"]["exports"]["resets_at"] == "2026-11-01T00:00:00Z"


def test_an_admin_reset_after_the_period_ended_keeps_it_to_its_own_end(licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 500)
    nov_5 = at(2026, 11, 5)
    clock.now = nov_5  # October's counters are still on the item: nothing has closed them yet
    after = licensing.reset_usage("acct_1")
    [october] = periods("acct_1")
    assert (october.start, october.end, october.closed_at) == (OCT_20, NOV_1, nov_5)
    assert october.closed_by is ClosedBy.ADMIN_RESET
    assert october.features["api_calls"] == FeatureUsage(500, 0, 1000)
    # As a reset within a running period: the counters count from the reset.
    assert licensing.load("acct_1").account.usage_since == nov_5
    assert after["features"]["api_calls"]["used"] == 0
    clock.now = nov_5 + 3600
    assert licensing.use("acct_1", "api_calls", 1).used == 1
    assert len(periods("acct_1")) == 1  # November's first use closes nothing more


def test_two_resets_in_one_second_keep_two_periods(licensing) -> None:
    licensing.use("acct_1", "api_calls", 2)
    licensing.reset_usage("acct_1")
    licensing.use("acct_1", "api_calls", 3)
    licensing.reset_usage("acct_1")
    assert [p.features["api_calls"].used for p in periods("acct_1")] == [2, 3]
    assert licensing.entitlements("acct_1")["features"]["api_calls"]["used"] == 0


def test_a_grant_that_starts_a_new_period_keeps_the_last_one(licensing, clock) -> None:
    licensing.use("acct_1", "exports", 7)
    clock.now = NOV_2
    view = licensing.grant("acct_1", "exports", 5)
    assert view["features"]["exports"]["limit"] == 15 and view["features"]["exports"]["used"] == 0
    [october] = periods("acct_1")
    assert (october.closed_by, october.features["exports"]) == (ClosedBy.GRANT, FeatureUsage(7, 0, 10))


def test_a_merged_account_is_not_reset(licensing) -> None:
    BillingAccount("cus_old", merged_into="acct_1", usage_since=OCT_20).save()
    licensing.reset_usage("cus_old")
    assert periods("cus_old") == []
    assert licensing.load("cus_old").account.usage_since == OCT_20


def test_racing_first_uses_of_a_month_keep_it_once(licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 40)
    clock.now = NOV_2
    start_line = threading.Barrier(8)
    failures: list[BaseException] = []

    def first_use(n: int) -> None:
        start_line.wait()
        try:
            if n % 2:
                licensing.use_idempotently("acct_1", "api_calls", 1, f"key-{n}")
            else:
                licensing.use("acct_1", "api_calls", 1)
        except BaseException as failure:  # a thread's exception would otherwise vanish with it
            failures.append(failure)

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    [october] = periods("acct_1")
    assert october.features["api_calls"].used == 40
    assert licensing.entitlements("acct_1")["features"]["api_calls"]["used"] == 8


def test_resets_racing_uses_lose_and_double_nothing(licensing) -> None:
    counted: list[int] = []
    refused: list[BaseException] = []
    lock = threading.Lock()

    def uses() -> None:
        for _ in range(40):
            decision = licensing.use("acct_1", "api_calls", 1)
            with lock:
                counted.append(decision.allowed)

    def resets() -> None:
        for _ in range(8):
            try:
                licensing.reset_usage("acct_1")
            except StoreUnavailable as exc:  # "kept changing; try again" is an honest answer
                refused.append(exc)

    threads = [threading.Thread(target=uses) for _ in range(3)] + [threading.Thread(target=resets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = sum(p.features["api_calls"].used for p in periods("acct_1"))
    current = licensing.entitlements("acct_1")["features"]["api_calls"]["used"]
    assert all(counted) and kept + current == len(counted) == 120
    assert len(periods("acct_1")) <= 8 - len(refused)


def test_only_the_check_that_closes_a_period_writes_history(licensing, clock, aws_calls) -> None:
    licensing.use("acct_1", "api_calls", 1)
    aws_calls.clear()
    licensing.use("acct_1", "api_calls", 1)
    assert aws_calls == ["UpdateItem"]  # the hot path: one request, as before
    clock.now = NOV_2
    aws_calls.clear()
    licensing.use("acct_1", "api_calls", 1)
    assert aws_calls == ["UpdateItem", "TransactWriteItems"]  # refused as a past period's, then closed


@pytest.mark.parametrize(
    "change",
    [
        BillingAccount.usage_since.set(OCT_20 + 1),
        NumberAttribute(attr_name="used_api_calls").add(1),
        NumberAttribute(attr_name="used_exports").set(1),
        NumberAttribute(attr_name="granted_api_calls").set(5),
        BillingAccount.tier.set("PRO"),
        BillingAccount.tier_override.set("PRO"),
        BillingAccount.current_period_start.set(OCT_20),
        BillingAccount.merged_into.set("acct_2"),
    ],
    ids=str,
)
def test_a_close_from_a_stale_read_is_refused_and_keeps_nothing(licensing, clock, change) -> None:
    licensing.use("acct_1", "api_calls", 4)
    stale = licensing.load("acct_1")
    BillingAccount("acct_1").update(actions=[change])
    clock.now = NOV_2
    actions = licensing.policy.restart_actions(stale, NOV_2)
    assert not licensing.history.close(licensing.policy, stale, actions, ClosedBy.QUOTA_RESET, NOV_2)
    assert periods("acct_1") == []
    # Read again, the same close goes through, once.
    fresh = licensing.load("acct_1")
    if fresh.account.merged_into is None:
        actions = licensing.policy.restart_actions(fresh, NOV_2)
        assert licensing.history.close(licensing.policy, fresh, actions, ClosedBy.QUOTA_RESET, NOV_2)
        assert not licensing.history.close(licensing.policy, fresh, actions, ClosedBy.QUOTA_RESET, NOV_2)
        assert len(periods("acct_1")) == 1


def test_months_of_uses_sweeps_and_resets_at_once_keep_every_use_once(licensing, clock) -> None:
    job = QuotaReset(licensing, MetricsRecorder("Billwatch", "billwatch"), clock)
    counted: list[bool] = []
    lock = threading.Lock()

    def uses(thread: int, keyed: bool) -> None:
        for n in range(25):
            try:
                if keyed:
                    key = f"{clock.now}-{thread}-{n}"
                    decision = licensing.use_idempotently("acct_1", "api_calls", 1, key)
                else:
                    decision = licensing.use("acct_1", "api_calls", 1)
            except StoreUnavailable:  # "kept changing; retry": nothing was counted
                continue
            with lock:
                counted.append(decision.allowed)

    def sweeps(month: int) -> None:
        for run in range(3):
            job.run_segment(f"{month}-{run}", 0, 1)

    def resets() -> None:
        for _ in range(2):
            with contextlib.suppress(StoreUnavailable):  # "kept changing; try again" changed nothing
                licensing.reset_usage("acct_1")

    for month, now in enumerate((OCT_20, NOV_2, DEC_1 + 3600)):
        clock.now = now
        threads = [threading.Thread(target=uses, args=(n, n % 2 == 1)) for n in range(4)]
        threads += [threading.Thread(target=sweeps, args=(month,)), threading.Thread(target=resets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    kept = periods("acct_1", now=DEC_1 + 3600)
    current = licensing.entitlements("acct_1")["features"]["api_calls"]["used"]
    assert all(counted) and sum(p.features["api_calls"].used for p in kept) + current == len(counted) > 0
    assert len({p.start for p in kept}) == len(kept)
    assert all(a.end <= b.start for a, b in itertools.pairwise(kept))  # no period overlaps
