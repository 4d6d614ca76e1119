"""The overage drain's core: each overage unit goes to Stripe in exactly one event range, with an
identifier the same units always get, a timestamp Stripe accepts, and nothing for what cannot go."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from billwatch.licensing.overage import (
    STRIPE_FUTURE_WINDOW_SECONDS,
    STRIPE_PAST_WINDOW_SECONDS,
    MeterEvent,
    OverageBalance,
    Unsent,
    event_timestamp,
    identifier,
    meter_event,
    summary_window,
)

DAY = 86_400
NOV_1 = 1_793_491_200  # 2026-11-01T00:00:00Z
DEC_1 = NOV_1 + 30 * DAY
BALANCE = OverageBalance("acct_1", "cus_A", "exports", "exports_overage", NOV_1, DEC_1, overage=7, reported=0)


def test_the_unreported_units_go_as_one_event() -> None:
    event = meter_event(dataclasses.replace(BALANCE, reported=3), NOV_1 + 5 * DAY)
    assert isinstance(event, MeterEvent)
    assert event.params() == {
        "event_name": "exports_overage",
        "identifier": identifier("acct_1", "exports", NOV_1, 3, 7),
        "timestamp": NOV_1 + 5 * DAY - 1,  # the minute before now's: the period may yet end within it
        "payload": {"stripe_customer_id": "cus_A", "value": "4"},
    }
    assert event.reported_after == 7 and len(event.identifier) <= 100


def test_what_makes_no_event_says_why() -> None:
    assert meter_event(dataclasses.replace(BALANCE, reported=7), NOV_1) is Unsent.NOTHING_DUE
    assert meter_event(dataclasses.replace(BALANCE, reported=9), NOV_1) is Unsent.NOTHING_DUE  # a grant
    assert meter_event(dataclasses.replace(BALANCE, stripe_customer_id=None), NOV_1) is Unsent.NO_CUSTOMER
    assert meter_event(dataclasses.replace(BALANCE, stripe_customer_id="acct_1"), NOV_1) is Unsent.NO_CUSTOMER
    assert meter_event(BALANCE, DEC_1 + 35 * DAY) is Unsent.TOO_OLD


def test_a_closed_period_is_billed_at_its_last_second() -> None:
    event = meter_event(BALANCE, DEC_1 + 10 * DAY)
    assert isinstance(event, MeterEvent) and event.timestamp == DEC_1 - 1


def test_identifiers_differ_for_other_units_and_stay_short_for_the_longest_account() -> None:
    assert identifier("acct_1", "exports", NOV_1, 0, 7) == identifier("acct_1", "exports", NOV_1, 0, 7)
    others = {
        identifier("acct_1", "exports", NOV_1, 0, 8),
        identifier("acct_1", "exports", NOV_1, 1, 7),
        identifier("acct_1", "exports", DEC_1, 0, 7),
        identifier("acct_1", "api_calls", NOV_1, 0, 7),
        identifier("acct_2", "exports", NOV_1, 0, 7),
        identifier("acct_1:exports", "", NOV_1, 0, 7),  # a separator inside a name cannot collide
    }
    assert len(others) == 6 and identifier("acct_1", "exports", NOV_1, 0, 7) not in others
    assert len(identifier("a" * 128, "f" * 63, NOV_1, 10**9, 10**12)) <= 100


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 40 * DAY), st.booleans()), min_size=1, max_size=12),
    st.integers(-DAY, DAY),
)
def test_drains_at_any_moments_send_each_unit_once_within_stripes_window(steps, ahead) -> None:
    """Overage grows; drains run between (some of their events lost before the watermark moved, as
    a crash would): the events whose watermark was written carry ranges that meet end to end from 0,
    a resend carries the same units under the same identifier, and a last drain sends the rest."""
    balance = dataclasses.replace(BALANCE, overage=0, period_start=NOV_1 + ahead)
    by_identifier: dict[str, tuple[int, int]] = {}
    confirmed: list[tuple[int, int]] = []
    now = NOV_1
    for grown, waited, watermark_written in steps:
        now += waited
        balance = dataclasses.replace(balance, overage=balance.overage + grown)
        event = meter_event(balance, now)
        if not isinstance(event, MeterEvent):
            assert event in {Unsent.NOTHING_DUE, Unsent.TOO_OLD}
            continue
        assert now - STRIPE_PAST_WINDOW_SECONDS < event.timestamp <= now + STRIPE_FUTURE_WINDOW_SECONDS
        assert event.timestamp < balance.period_end
        units = (event.reported_after - event.value, event.reported_after)
        assert by_identifier.setdefault(event.identifier, units) == units  # Stripe dedups a resend
        if watermark_written:
            confirmed.append(units)
            balance = dataclasses.replace(balance, reported=event.reported_after)
    assert [start for start, _ in confirmed] == [0, *(end for _, end in confirmed)][: len(confirmed)]
    last = meter_event(balance, NOV_1 + DAY)
    sent = sum(end - start for start, end in confirmed)
    if isinstance(last, MeterEvent):
        sent += last.value
    assert sent == balance.overage


@given(
    st.integers(NOV_1, NOV_1 + DAY),
    st.one_of(st.integers(1, 119), st.integers(120, 40 * DAY)),
    st.integers(0, 80 * DAY),
    st.integers(0, 59),
)
def test_a_timestamp_falls_in_the_whole_minutes_stripes_summaries_count_for_the_period(
    start, length, waited, cut_after
) -> None:
    """Stripe's event summaries take minute-aligned windows: an event of the period lies in the one
    summary_window gives, so reconciliation counts each of the period's units in it, and no other;
    also when the period is cut short after the event (an admin's reset a few seconds later)."""
    balance = dataclasses.replace(BALANCE, period_start=start, period_end=start + length)
    now = start + waited
    timestamp = event_timestamp(balance, now)
    if timestamp is None:
        assert now - (start + length) > STRIPE_PAST_WINDOW_SECONDS - 2 * 3600
        return
    first, end = summary_window(start, start + length)
    assert first % 60 == 0 and end % 60 == 0 and start <= first and end <= start + length
    if first < end:
        assert first <= timestamp < end
    else:  # shorter than the whole minutes it spans: an admin's reset seconds in
        assert start <= timestamp < start + length
    assert timestamp <= now + STRIPE_FUTURE_WINDOW_SECONDS
    if now < start + length:  # sent while it ran, and then cut short
        cut_first, cut_end = summary_window(start, min(start + length, now + cut_after))
        if cut_first < cut_end:
            assert cut_first <= timestamp < cut_end
