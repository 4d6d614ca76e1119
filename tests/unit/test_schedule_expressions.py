from __future__ import annotations

import datetime as dt

import pytest

from devtools.schedule_expressions import ScheduleExpressionError, next_fire

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(0/5 * * * ? *)", "2026-12-01T13:02:10", "2026-12-01T13:05:00"),
        ("cron(0/5 * * * ? *)", "2026-12-01T13:05:00", "2026-12-01T13:10:00"),  # strictly after
        ("cron(15 4 * * ? *)", "2026-12-01T05:00:00", "2026-12-02T04:15:00"),
        ("cron(0 8 ? * MON *)", "2026-12-01T09:00:00", "2026-12-07T08:00:00"),  # 2026-12-01 is a Tuesday
        ("cron(0 8 ? * 2 *)", "2026-12-01T09:00:00", "2026-12-07T08:00:00"),  # 2 is Monday
        ("cron(0 9 ? * MON-FRI *)", "2026-12-04T10:00:00", "2026-12-07T09:00:00"),  # Friday to Monday
        ("cron(30 23 L * ? *)", "2026-02-03T00:00:00", "2026-02-28T23:30:00"),
        ("cron(0 0 1 JAN,JUL ? *)", "2026-03-01T00:00:00", "2026-07-01T00:00:00"),
        ("cron(0 12 * * ? 2027)", "2026-12-01T00:00:00", "2027-01-01T12:00:00"),
    ],
)
def test_cron_fires_at_the_next_matching_minute(expression: str, after: str, expected: str) -> None:
    assert next_fire(expression, at(after)) == at(expected)


def test_cron_is_read_in_the_schedules_time_zone() -> None:
    # 08:00 in New York is 13:00 UTC in winter and 12:00 UTC in summer.
    assert next_fire("cron(0 8 * * ? *)", at("2026-12-01T12:00:00"), "America/New_York") == at(
        "2026-12-01T13:00:00"
    )
    assert next_fire("cron(0 8 * * ? *)", at("2026-07-01T11:00:00"), "America/New_York") == at(
        "2026-07-01T12:00:00"
    )


def test_a_wall_clock_time_that_daylight_saving_skips_is_not_fired() -> None:
    # 2027-03-14 02:30 does not exist in New York: the next one is the day after.
    fired = next_fire("cron(30 2 * * ? *)", at("2027-03-14T05:00:00"), "America/New_York")
    assert fired == at("2027-03-15T06:30:00")


def test_rate_counts_from_when_the_schedule_started() -> None:
    started = at("2026-12-01T13:00:00")
    assert next_fire("rate(5 minutes)", started, started=started) == at("2026-12-01T13:05:00")
    assert next_fire("rate(5 minutes)", at("2026-12-01T13:07:00"), started=started) == at(
        "2026-12-01T13:10:00"
    )
    assert next_fire("rate(1 hour)", at("2026-12-01T13:00:00"), started=started) == at("2026-12-01T14:00:00")
    assert next_fire("rate(2 days)", at("2026-12-01T13:00:00")) == at("2026-12-03T13:00:00")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("cron(0 8 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 8 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 8 * *)", "6 fields"),
        ("cron(61 8 * * ? *)", "'61' is not in 0-59"),
        ("cron(0 8 ? * 2#1 *)", "'W' and '#' are not supported"),
        ("cron(0 8 15W * ? *)", "'W' and '#' are not supported"),
        ("cron(0/0 8 * * ? *)", "increment"),
        ("cron(0 0 31 2 ? *)", "does not fire within"),
        ("rate(0 minutes)", "positive value"),
        ("rate(5 minute)", "'n minutes'"),
        ("rate(1 hours)", "'1 hour'"),
        ("every 5 minutes", "not a cron expression"),
    ],
)
def test_bad_expressions_are_refused_by_name(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleExpressionError, match=problem):
        next_fire(expression, at("2026-12-01T00:00:00"))
