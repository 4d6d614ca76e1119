"""EventBridge schedule expressions: when ``rate(...)`` and ``cron(...)`` fire next.

Semantics from the EventBridge Scheduler user guide ("Schedule types"): a cron expression has six
fields, minutes, hours, day-of-month, month, day-of-week and year, evaluated in the schedule's
time zone (UTC unless given); one of day-of-month and day-of-week must be ``?``. Fields take
``*``, numbers, ranges ``a-b``, lists ``a,b``, increments ``a/n`` or ``*/n``, month names
``JAN``-``DEC`` and day names ``SUN``-``SAT`` (day-of-week ``1`` is Sunday), and ``L`` for the
last day of the month (or ``L`` alone in day-of-week: Saturday). ``W`` and ``#`` are not
supported and are refused rather than guessed. A rate expression fires every ``n`` minutes, hours
or days, counted from when the schedule starts.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_MONTHS = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name: number for number, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# A cron that matches nothing within this many years is refused: it would never fire.
_SEARCH_YEARS = 5


class ScheduleExpressionError(ValueError):
    """The expression is not one EventBridge accepts, or uses a feature this module leaves out."""


@dataclass(frozen=True)
class _Field:
    values: frozenset[int]
    any: bool  # "*" or "?": no restriction
    last: bool = False  # "L"


def _parse_field(text: str, low: int, high: int, names: dict[str, int], where: str) -> _Field:
    if text in ("*", "?"):
        return _Field(frozenset(range(low, high + 1)), any=True)
    if text == "L":
        return _Field(frozenset(), any=False, last=True)
    if "W" in text or "#" in text:
        raise ScheduleExpressionError(f"{where}: 'W' and '#' are not supported, got {text!r}")
    values: set[int] = set()

    def number(token: str) -> int:
        value = names.get(token.upper()) if not token.isdigit() else int(token)
        if value is None or not low <= value <= high:
            raise ScheduleExpressionError(f"{where}: {token!r} is not in {low}-{high}")
        return value

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ScheduleExpressionError(f"{where}: the increment of {part!r} must be a positive number")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step else start
        values.update(range(start, end + 1, step or 1))
    return _Field(frozenset(values), any=False)


@dataclass(frozen=True)
class Cron:
    minutes: _Field
    hours: _Field
    days_of_month: _Field
    months: _Field
    days_of_week: _Field
    years: _Field

    def matches_day(self, day: dt.date) -> bool:
        if day.year not in self.years.values or day.month not in self.months.values:
            return False
        last_day = calendar.monthrange(day.year, day.month)[1]
        if not self.days_of_month.any:
            return day.day == last_day if self.days_of_month.last else day.day in self.days_of_month.values
        weekday = (day.isoweekday() % 7) + 1  # EventBridge: 1 = Sunday
        if self.days_of_week.last:
            return weekday == _DAYS["SAT"]
        return weekday in self.days_of_week.values


def parse_cron(expression: str) -> Cron:
    found = _CRON.match(expression.strip())
    if not found:
        raise ScheduleExpressionError(f"not a cron expression: {expression!r}")
    fields = found[1].split()
    if len(fields) != 6:
        raise ScheduleExpressionError(f"a cron expression has 6 fields, got {len(fields)} in {expression!r}")
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ScheduleExpressionError(
            f"exactly one of day-of-month and day-of-week must be '?': {expression!r}"
        )
    return Cron(
        _parse_field(minutes, 0, 59, {}, "minutes"),
        _parse_field(hours, 0, 23, {}, "hours"),
        _parse_field(dom, 1, 31, {}, "day-of-month"),
        _parse_field(month, 1, 12, _MONTHS, "month"),
        _parse_field(dow, 1, 7, _DAYS, "day-of-week"),
        _parse_field(year, 1970, 2199, {}, "year"),
    )


def rate_seconds(expression: str) -> int:
    found = _RATE.match(expression.strip())
    if not found or int(found[1]) <= 0:
        raise ScheduleExpressionError(f"not a rate expression with a positive value: {expression!r}")
    value, unit = int(found[1]), found[2].rstrip("s")
    if (value == 1) != (found[2] == unit):
        raise ScheduleExpressionError(f"rate takes '1 {unit}' or 'n {unit}s': {expression!r}")
    return value * _UNIT_SECONDS[unit]


def next_fire(
    expression: str, after: dt.datetime, zone: str = "UTC", started: dt.datetime | None = None
) -> dt.datetime:
    """The first moment strictly after ``after`` (aware) at which the schedule fires, in UTC.

    A rate schedule counts from ``started`` (default: ``after``), so its first run is one rate
    after it starts, as EventBridge's are.
    """
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    if expression.strip().startswith("rate("):
        every = dt.timedelta(seconds=rate_seconds(expression))
        origin = started or after
        elapsed = max(dt.timedelta(0), after - origin)
        return origin + (elapsed // every + 1) * every
    cron = parse_cron(expression)
    local = after.astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    day = local.date()
    for _ in range(366 * _SEARCH_YEARS):
        if cron.matches_day(day):
            for hour in sorted(cron.hours.values):
                for minute in sorted(cron.minutes.values):
                    moment = dt.datetime.combine(day, dt.time(hour, minute), ZoneInfo(zone))
                    # A wall-clock time that a DST change skips does not exist: it is not fired.
                    if moment.astimezone(dt.UTC).astimezone(ZoneInfo(zone)).hour != hour:
                        continue
                    if moment >= local:
                        return moment.astimezone(dt.UTC)
        day += dt.timedelta(days=1)
    raise ScheduleExpressionError(f"{expression!r} does not fire within {_SEARCH_YEARS} years")
