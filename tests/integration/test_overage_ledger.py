"""The overage ledger on moto's DynamoDB: the drain's work list (the OverageDue indexes), its pins,
watermarks and markers under races, periods closing with units owed or in flight, the marker the
usage check and the quota reset set, and the billing state the customer sees."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pynamodb.connection.table import TableConnection

from billwatch.core.dynamo import StoreUnavailable
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import (
    OVERAGE_SHARDS,
    BillingAccount,
    UsagePeriodRecord,
    overage_shard,
)
from billwatch.licensing import service
from billwatch.licensing.overage import MeterEvent, OverageBalance, Unsent, meter_event, summary_window
from billwatch.licensing.overage_ledger import OverageLedger, OwedBalance
from billwatch.licensing.plans import parse_catalog, shipped_catalog_text
from billwatch.licensing.quota_reset import QuotaReset
from billwatch.licensing.service import Licensing
from billwatch.licensing.usage_history import ClosedBy, FeatureUsage
from billwatch.licensing.usage_report import UsageReport
from tests.integration.overage_stack import *  # noqa: F403 (fixtures)


def at(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


NOV_15, DEC_1, DEC_2 = at(2026, 11, 15, 12), at(2026, 12, 1), at(2026, 12, 2)
EXAMPLES = itertools.count()  # a fresh account for each example hypothesis draws


@pytest.fixture
def ledger(licensing) -> OverageLedger:
    return OverageLedger(licensing.policy.catalog)


def customer(account_id: str) -> str:
    BillingAccount(account_id, stripe_customer_id=f"cus_{account_id}").save()
    return account_id


def owing(ledger: OverageLedger, now: int) -> dict[tuple[str, str, bool], tuple[int, int, int | None]]:
    """What the drain's list holds that it has to send: (overage, reported, sending) per balance."""
    return {
        (owed.balance.account_id, owed.balance.feature, owed.closed): (
            owed.balance.overage,
            owed.balance.reported,
            owed.sending,
        )
        for owed in ledger.due(now)
        if owed.owing
    }


def the(ledger: OverageLedger, account_id: str, feature: str, now: int, closed: bool = False) -> OwedBalance:
    (owed,) = [
        owed
        for owed in ledger.due(now)
        if (owed.balance.account_id, owed.balance.feature, owed.closed) == (account_id, feature, closed)
    ]
    return owed


def marker(account_id: str) -> str | None:
    return BillingAccount.get(account_id, consistent_read=True).overage_due


def test_due_lists_exactly_the_accounts_and_closed_periods_that_owe(licensing, ledger, clock) -> None:
    licensing.use(customer("acct_a"), "exports", 12)  # 2 past the quota of 10
    licensing.use(customer("acct_b"), "exports", 5)  # within it: never listed
    licensing.use(customer("acct_c"), "api_calls", 1500)  # 500 past 1000, in November
    clock.now = DEC_2
    licensing.use("acct_c", "api_calls", 1)  # closes November: its record owes the 500
    assert owing(ledger, DEC_2) == {
        ("acct_a", "exports", False): (2, 0, None),
        ("acct_c", "api_calls", True): (500, 0, None),
    }
    closed = the(ledger, "acct_c", "api_calls", DEC_2, closed=True)
    assert (closed.balance.period_start, closed.balance.period_end) == (NOV_15, DEC_1)
    assert closed.balance.stripe_customer_id == "cus_acct_c"
    assert closed.balance.event_name == "api_calls_overage"
    # acct_a's period ended unclosed: its balance is still the item's, ending with November.
    assert the(ledger, "acct_a", "exports", DEC_2).balance.period_end == DEC_1
    assert "acct_b" not in {owed.balance.account_id for owed in ledger.due(DEC_2)}


def test_a_drain_reads_at_most_its_limit_and_an_account_no_longer_billed_leaves_the_list(
    licensing, ledger
) -> None:
    for account_id in ("acct_l1", "acct_l2", "acct_l3"):
        licensing.use(customer(account_id), "exports", 11)
    assert len({owed.balance.account_id for owed in ledger.due(NOV_15, limit=2)}) == 2
    assert len({owed.balance.account_id for owed in ledger.due(NOV_15)}) == 3
    licensing.set_tier_override("acct_l1", "PRO")  # a tier that denies past the quota: nothing billed
    assert "acct_l1" not in {owed.balance.account_id for owed in ledger.due(NOV_15)}
    assert marker("acct_l1") is None


def test_every_account_of_a_shard_longer_than_the_limit_is_read_and_billed_in_turn(
    licensing, ledger, clock
) -> None:
    """Accounts that keep using past their quota keep their marker: each run reads on from where the
    last one stopped, not from the shard's first keys, so each is billed within ceil(listed / limit)."""
    crowd = [a for a in (f"acct_crowd{i}" for i in range(100)) if overage_shard(a) == "3"][:7]
    assert len(crowd) == 7
    for account_id in crowd:
        licensing.use(customer(account_id), "exports", 10)  # the quota
    billed: set[str] = set()
    for _ in range(math.ceil(len(crowd) / 2)):
        for account_id in crowd:
            licensing.use(account_id, "exports", 1)  # one more unit owed every minute
        for owed in ledger.due(clock.now, limit=2):
            if owed.owing:
                through = owed.balance.overage
                assert ledger.pin(owed, through, clock.now) and ledger.settle(owed, through)
                billed.add(owed.balance.account_id)
        clock.now += 60
    assert billed == set(crowd)
    assert all(marker(account_id) == "3" for account_id in crowd)  # still using: still listed


def test_a_drain_pins_settles_and_releases_then_reconciliation_confirms(licensing, ledger) -> None:
    licensing.use(customer("acct_d"), "exports", 12)
    owed = the(ledger, "acct_d", "exports", NOV_15)
    assert ledger.pin(owed, 2, NOV_15)
    assert the(ledger, "acct_d", "exports", NOV_15).sending == 2
    assert ledger.settle(owed, 2)  # the balance read before the pin settles its pin
    assert not ledger.settle(owed, 2)  # once
    assert owing(ledger, NOV_15) == {}
    assert ledger.release(owed)
    assert marker("acct_d") == "sent#" + overage_shard("acct_d")  # off the drain's list
    assert ledger.due(NOV_15) == []
    (sent,) = ledger.sent_totals(NOV_15, DEC_1, NOV_15)
    assert (sent.balance.reported, sent.confirmed, sent.balance.stripe_customer_id) == (2, 0, "cus_acct_d")
    assert ledger.sent_totals(DEC_1, DEC_2, NOV_15) == []  # another period's window
    assert ledger.confirm("acct_d", "exports", NOV_15, 2)
    assert marker("acct_d") is None
    assert ledger.sent_totals(NOV_15, DEC_1, NOV_15) == []


def test_an_item_a_lagging_index_lists_twice_is_read_once(licensing, ledger, monkeypatch) -> None:
    licensing.use(customer("acct_lag"), "exports", 12)
    owed = the(ledger, "acct_lag", "exports", NOV_15)
    assert ledger.pin(owed, 2, NOV_15) and ledger.settle(owed, 2) and ledger.release(owed)
    listed = TableConnection.query

    def lagging(self: TableConnection, hash_key: str, **kwargs: Any) -> dict[str, Any]:
        page = listed(self, hash_key, **kwargs)
        if self.table_name == BillingAccount.Meta.table_name and hash_key == overage_shard("acct_lag"):
            stale = {"pk": {"S": "acct_lag"}, "overage_due": {"S": hash_key}}  # its old entry, not yet gone
            page = {**page, "Items": [*page.get("Items", []), stale]}
        return page

    monkeypatch.setattr(TableConnection, "query", lagging)
    sent = [owed for owed in ledger.sent_totals(NOV_15, DEC_1, NOV_15) if owed.balance.feature == "exports"]
    assert [(owed.balance.account_id, owed.balance.reported) for owed in sent] == [("acct_lag", 2)]


def test_a_use_between_the_read_and_the_pin_stays_pending(licensing, ledger) -> None:
    licensing.use(customer("acct_u"), "exports", 12)
    owed = the(ledger, "acct_u", "exports", NOV_15)
    licensing.use("acct_u", "exports", 3)
    assert ledger.pin(owed, 2, NOV_15) and ledger.settle(owed, 2)
    assert not ledger.release(owed)  # 3 more are owed: the marker stays
    assert owing(ledger, NOV_15) == {("acct_u", "exports", False): (5, 2, None)}
    features = licensing.entitlements("acct_u")["features"]
    assert features["exports"]["billing"] == {"pending": 3, "sent": 2, "confirmed": 0}
    assert features["api_calls"]["billing"] == {"pending": 0, "sent": 0, "confirmed": 0}


def test_a_grant_that_lowers_the_overage_below_the_range_refuses_its_pin(licensing, ledger) -> None:
    licensing.use(customer("acct_g"), "exports", 12)
    owed = the(ledger, "acct_g", "exports", NOV_15)
    licensing.grant("acct_g", "exports", 5)
    assert not ledger.pin(owed, 2, NOV_15)
    assert owing(ledger, NOV_15) == {}
    assert ledger.release(owed) and marker("acct_g") is None


def test_two_drains_send_a_range_once(licensing, ledger) -> None:
    licensing.use(customer("acct_t"), "exports", 12)
    first, second = the(ledger, "acct_t", "exports", NOV_15), the(ledger, "acct_t", "exports", NOV_15)
    assert ledger.pin(first, 2, NOV_15)
    assert not ledger.pin(second, 2, NOV_15)  # read before the pin: refused
    again = the(ledger, "acct_t", "exports", NOV_15)  # read after it: resends that same range
    assert again.sending == 2 and ledger.pin(again, 2, NOV_15 + 60)
    assert ledger.settle(again, 2)
    assert not ledger.settle(first, 2) and not ledger.settle(second, 2)
    assert the(ledger, "acct_t", "exports", NOV_15).balance.reported == 2


def test_a_period_closing_between_the_read_and_the_pin_refuses_it(licensing, ledger, clock) -> None:
    licensing.use(customer("acct_p"), "exports", 12)
    owed = the(ledger, "acct_p", "exports", NOV_15)
    clock.now = DEC_2
    licensing.use("acct_p", "exports", 1)
    assert not ledger.pin(owed, 2, DEC_2)
    closed = the(ledger, "acct_p", "exports", DEC_2, closed=True)
    assert ledger.pin(closed, 2, DEC_2) and ledger.settle(closed, 2)
    assert ledger.release(closed) and ledger.release(the(ledger, "acct_p", "exports", DEC_2))
    assert ledger.due(DEC_2) == []
    record = UsagePeriodRecord.get("acct_p", NOV_15)
    assert json.loads(record.features)["exports"] == {
        "used": 12,
        "granted": 0,
        "limit": 10,
        "reported": 2,
        "confirmed": 0,
        "customer": "cus_acct_p",  # its first pin's: the period's every unit goes to it
    }
    assert record.overage_due == "sent#" + overage_shard("acct_p")
    assert ledger.confirm("acct_p", "exports", NOV_15, 2)
    assert UsagePeriodRecord.get("acct_p", NOV_15).overage_due is None


def test_a_pin_in_flight_moves_into_the_closed_period_and_is_settled_there(licensing, ledger, clock) -> None:
    licensing.use(customer("acct_f"), "exports", 12)
    owed = the(ledger, "acct_f", "exports", NOV_15)
    assert ledger.pin(owed, 2, NOV_15)
    clock.now = DEC_2
    assert QuotaReset(licensing, MetricsRecorder("B", "b"), clock).run_segment("r", 0, 1).reset == 1
    assert not ledger.settle(owed, 2)  # the item's period is gone
    closed = the(ledger, "acct_f", "exports", DEC_2, closed=True)
    assert (closed.sending, closed.pinned_at, closed.balance.reported) == (2, NOV_15, 0)
    assert ledger.pin(closed, 2, DEC_2)  # a resend of the same range
    assert ledger.settle(closed, 2)
    assert json.loads(UsagePeriodRecord.get("acct_f", NOV_15).features)["exports"]["reported"] == 2


def test_the_write_that_closes_a_period_holds_the_ledger_as_read(licensing, ledger, clock) -> None:
    licensing.use(customer("acct_w"), "exports", 12)
    owed = the(ledger, "acct_w", "exports", NOV_15)
    assert ledger.pin(owed, 2, NOV_15)
    clock.now = DEC_2
    usage = licensing.load("acct_w")
    assert ledger.settle(owed, 2)  # between the closer's read and its write
    actions = licensing.policy.restart_actions(usage, DEC_2)
    assert not licensing.history.close(licensing.policy, usage, actions, ClosedBy.QUOTA_RESET, DEC_2)


def test_the_check_marks_an_account_once_in_one_more_request(licensing, aws_calls) -> None:
    licensing.use("acct_m", "exports", 10)
    aws_calls.clear()
    licensing.use("acct_m", "exports", 1)
    assert aws_calls == ["UpdateItem", "UpdateItem"]
    assert marker("acct_m") == overage_shard("acct_m") and marker("acct_m") in OVERAGE_SHARDS
    aws_calls.clear()
    licensing.use("acct_m", "exports", 1)
    licensing.use("acct_m", "exports", 1)
    assert aws_calls == ["UpdateItem", "UpdateItem"]
    # Once the drain sent what was owed and took the account off its list, the next check past the
    # quota puts it back on: billed within the minute, not at the next hourly quota reset.
    ledger = OverageLedger(licensing.policy.catalog)
    owed = the(ledger, "acct_m", "exports", NOV_15)
    assert ledger.pin(owed, 3, NOV_15) and ledger.settle(owed, 3) and ledger.release(owed)
    aws_calls.clear()
    licensing.use("acct_m", "exports", 1)
    assert aws_calls == ["UpdateItem", "UpdateItem"] and marker("acct_m") == overage_shard("acct_m")
    licensing.use("acct_k", "exports", 10)
    aws_calls.clear()
    licensing.use_idempotently("acct_k", "exports", 1, "k-1")
    assert aws_calls == ["BatchGetItem", "TransactWriteItems"] and marker("acct_k") == overage_shard("acct_k")
    aws_calls.clear()
    licensing.use_idempotently("acct_k", "exports", 1, "k-2")
    assert aws_calls == ["BatchGetItem", "TransactWriteItems"]


def test_a_failed_marker_never_fails_the_answer_and_the_quota_reset_sets_it(
    licensing, ledger, clock, metrics, monkeypatch
) -> None:
    licensing.use(customer("acct_s"), "exports", 10)
    counted = service.conditional_update

    def marker_fails(model, key, actions, condition, return_values):  # the count, then the marker
        if return_values == "NONE":
            raise StoreUnavailable("throttled")
        return counted(model, key, actions, condition, return_values)

    monkeypatch.setattr(service, "conditional_update", marker_fails)
    answer = licensing.use("acct_s", "exports", 2)
    assert (answer.allowed, answer.overage) == (True, 2)
    licensing.flush_metrics()
    assert metrics.total("OverageMarkerFailed") == 1
    assert marker("acct_s") is None and ledger.due(NOV_15) == []
    reset = QuotaReset(licensing, MetricsRecorder("B", "b"), clock)
    assert reset.run_segment("r1", 0, 1).reset == 0
    assert marker("acct_s") == overage_shard("acct_s")
    assert owing(ledger, NOV_15) == {("acct_s", "exports", False): (2, 0, None)}


def test_the_usage_report_shows_each_periods_billing_state(licensing, ledger, clock) -> None:
    licensing.use(customer("acct_r"), "exports", 14)
    owed = the(ledger, "acct_r", "exports", NOV_15)
    assert ledger.pin(owed, 4, NOV_15) and ledger.settle(owed, 4)
    assert ledger.confirm("acct_r", "exports", NOV_15, 3, checked=4)  # Stripe counts late
    clock.now = DEC_2
    licensing.use("acct_r", "exports", 11)
    (kept,) = [owed for owed in ledger.sent_totals(NOV_15, DEC_1, DEC_2) if owed.closed]
    assert (kept.balance.reported, kept.confirmed, kept.checked) == (4, 3, 4)  # moved with the period
    report = UsageReport(licensing, clock).of("acct_r", {"from": "2026-11-01", "to": "2026-12-31"})
    assert report is not None
    november, december = report["periods"]
    assert november["features"]["exports"]["billing"] == {"pending": 0, "sent": 1, "confirmed": 3}
    assert december["features"]["exports"]["billing"] == {"pending": 1, "sent": 0, "confirmed": 0}
    # A tier that denies past the quota shows no billing state for its open period.
    deny = Licensing(parse_catalog(json.loads(shipped_catalog_text())), MetricsRecorder("B", "b"), clock)
    open_period = UsageReport(deny, clock).of("acct_r", {})["periods"][-1]
    assert "billing" not in open_period["features"]["exports"]


class Meter:
    """Stripe's meter as far as billing goes: an event counts once per identifier, in its period."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[int, int, int]] = {}  # identifier -> (period start, after, through)

    def send(self, owed: OwedBalance, event: MeterEvent) -> None:
        start, end = summary_window(owed.balance.period_start, owed.balance.period_end)
        assert start <= event.timestamp < end  # where reconciliation's summaries count it
        units = (owed.balance.period_start, event.reported_after - event.value, event.reported_after)
        assert self.ranges.setdefault(event.identifier, units) == units

    def units(self, period_start: int) -> list[tuple[int, int]]:
        return sorted(
            (after, through) for start, after, through in self.ranges.values() if start == period_start
        )


def drain(ledger: OverageLedger, meter: Meter, account_id: str, now: int, crash: str | None = None) -> None:
    """One drain run over the account's balances, as billing.overage_drain runs it; ``crash``: where
    it dies for each balance (after the pin, or after Stripe accepted and before the settle)."""
    for owed in ledger.due(now):
        if owed.balance.account_id != account_id:
            continue
        if owed.sending is None:
            event = meter_event(owed.balance, now)
        else:  # the range in flight, exactly as first sent
            event = meter_event(replace(owed.balance, overage=owed.sending), int(owed.pinned_at or now))
        if event is Unsent.NOTHING_DUE:
            ledger.release(owed)
            continue
        if not isinstance(event, MeterEvent):  # too old for Stripe: held off the list, for reconciliation
            ledger.hold(owed)
            continue
        if owed.sending is None and not ledger.pin(owed, event.reported_after, now):
            continue
        if crash == "pinned":
            continue
        meter.send(owed, event)
        if crash != "sent":
            ledger.settle(owed, event.reported_after)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("use"), st.integers(1, 7)),
            st.tuples(st.just("grant"), st.integers(1, 3)),
            st.tuples(st.just("drain"), st.sampled_from([None, "pinned", "sent"])),
            st.tuples(st.just("close"), st.sampled_from(["by_use", "by_sweep"])),
        ),
        max_size=12,
    )
)
# A period owing units, then three months on: too old for Stripe, so held off the drain's list.
@example(steps=[("use", 15), ("close", "by_use"), ("close", "by_use"), ("close", "by_use")])
def test_whatever_interleaves_every_overage_unit_reaches_stripe_once(licensing, ledger, clock, steps) -> None:
    """Uses, grants, period closes and drains that die after a pin or before a settle, in any order:
    once drained, each period's accepted ranges meet end to end from 0 up to its final overage."""
    account_id = customer(f"acct_any_{next(EXAMPLES)}")
    meter = Meter()
    for step, value in steps:
        clock.now += 90
        if step == "use":
            licensing.use(account_id, "exports", value)
        elif step == "grant":
            licensing.grant(account_id, "exports", value)
        elif step == "drain":
            drain(ledger, meter, account_id, clock.now, value)
        else:
            moment = dt.datetime.fromtimestamp(clock.now, dt.UTC)
            clock.now = at(moment.year + moment.month // 12, moment.month % 12 + 1, 1, 0, 5)
            if value == "by_use":
                licensing.use(account_id, "api_calls", 1)
            else:
                QuotaReset(licensing, MetricsRecorder("B", "b"), clock).run_segment(str(clock.now), 0, 1)
    # The hourly quota reset marks what accrued after a drain took the account off; the runs after it
    # resend what is pinned and send the rest.
    QuotaReset(licensing, MetricsRecorder("B", "b"), clock).run_segment(f"last{clock.now}", 0, 1)
    for _ in range(3):
        clock.now += 90
        drain(ledger, meter, account_id, clock.now)
    assert [owed for owed in ledger.due(clock.now) if owed.balance.account_id == account_id] == []
    periods = [
        (period.start, period.end, period.features.get("exports"))
        for period in licensing.history.periods(account_id, 0, 2**40, clock.now)
    ]
    current = licensing.load(account_id)
    if current.account.usage_since is not None:
        counter = current.counter("exports")
        period_end = licensing.policy.period_of(current.account, clock.now).end
        periods.append((int(current.account.usage_since), period_end, FeatureUsage(counter, 0, 10, 0)))
    granted = any(step == "grant" for step, _ in steps)
    for start, end, figures in periods:
        overage = 0 if figures is None or figures.limit is None else max(0, figures.used - figures.limit)
        ranges = meter.units(start)
        ends = [0, *(through for _, through in ranges)]
        assert [after for after, _ in ranges] == ends[:-1]  # end to end: nothing twice, nothing skipped
        if meter_event(OverageBalance("a", "cus_a", "f", "e", start, end, 1, 0), clock.now) is Unsent.TOO_OLD:
            assert ends[-1] <= overage  # what Stripe's window no longer takes is reconciliation's
        elif granted:
            assert ends[-1] >= overage  # a grant after units were sent refunds none of them
        else:
            assert ends[-1] == overage
