"""Business-time arithmetic of the webhook stall window, in the configured zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from billwatch.core.business_hours import BusinessHoursError, parse_business_hours
from billwatch.health.probe import WebhookFreshnessCheck

NEW_YORK = ZoneInfo("America/New_York")
HOURS = parse_business_hours("Mon-Fri 09:00-18:00", NEW_YORK)
SIX_HOURS = 6 * 3600


def at(text: str) -> float:
    """An instant given as New York wall-clock time."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp()


def stalled(since: str, now: str, stall_seconds: int = SIX_HOURS) -> bool:
    check = WebhookFreshnessCheck(arrivals=None, hours=HOURS, stall_seconds=stall_seconds, quiet_seconds=60)
    return check.stalled(at(since), at(now))


def test_only_business_time_counts() -> None:
    # Tuesday 17:00 to Wednesday 11:00: one hour on Tuesday, two on Wednesday.
    assert HOURS.seconds_between(at("2026-12-01T17:00"), at("2026-12-02T11:00")) == 3 * 3600
    assert HOURS.seconds_between(at("2026-12-02T11:00"), at("2026-12-01T17:00")) == 0


def test_a_weekend_does_not_count() -> None:
    # Friday 15:00 to Monday 12:00: three hours on Friday, three on Monday.
    assert HOURS.seconds_between(at("2026-12-04T15:00"), at("2026-12-07T12:00")) == 6 * 3600
    assert stalled("2026-12-04T15:00", "2026-12-07T12:00")
    assert not stalled("2026-12-04T15:00", "2026-12-07T11:59")


def test_exactly_at_the_threshold_is_stalled() -> None:
    assert stalled("2026-12-01T09:00", "2026-12-01T15:00")
    assert not stalled("2026-12-01T09:00", "2026-12-01T14:59:59")


def test_silence_is_not_a_stall_outside_business_hours() -> None:
    # Six business hours passed by 15:00, but at 19:00 nobody is at work to send webhooks.
    assert not stalled("2026-12-01T09:00", "2026-12-01T19:00")
    assert not stalled("2026-12-01T09:00", "2026-12-05T12:00")  # Saturday
    assert stalled("2026-12-01T09:00", "2026-12-02T09:00")


def test_a_dst_change_moves_the_window_with_local_time() -> None:
    # 2026-03-08: New York springs forward at 02:00. Business hours stay 09:00-18:00 local.
    before = HOURS.seconds_between(at("2026-03-06T09:00"), at("2026-03-06T18:00"))
    after = HOURS.seconds_between(at("2026-03-09T09:00"), at("2026-03-09T18:00"))
    assert before == after == 9 * 3600
    assert HOURS.contains(at("2026-03-09T09:00")) and not HOURS.contains(at("2026-03-09T08:59"))
    # Friday 16:00 EST to Monday 13:00 EDT: 2 + 4 hours, the lost night hour is not business time.
    assert HOURS.seconds_between(at("2026-03-06T16:00"), at("2026-03-09T13:00")) == 6 * 3600
    assert stalled("2026-03-06T16:00", "2026-03-09T13:00")
    # In UTC the window moved an hour earlier.
    assert dt.datetime.fromtimestamp(at("2026-03-09T09:00"), dt.UTC).hour == 13
    assert dt.datetime.fromtimestamp(at("2026-03-06T09:00"), dt.UTC).hour == 14


def test_day_lists_and_ranges() -> None:
    hours = parse_business_hours("mon, wed-thu 08:30-12:00", NEW_YORK)
    assert hours.days == frozenset({0, 2, 3})
    assert (hours.start, hours.end) == (dt.time(8, 30), dt.time(12, 0))


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "Mon-Fri",
        "Mon-Fri 9-18",
        "Fri-Mon 09:00-18:00",
        "Mon-Fri 18:00-09:00",
        "Xyz 09:00-18:00",
        "Mon 25:00-26:00",
    ],
)
def test_unreadable_specs_are_refused(spec: str) -> None:
    with pytest.raises(BusinessHoursError):
        parse_business_hours(spec, NEW_YORK)
