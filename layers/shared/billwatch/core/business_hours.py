"""Business hours in a time zone, and how much business time lies between two instants.

A silence in webhooks means something only while customers are at work: nights and weekends are
quiet by nature, so the stall window counts business time only. Wall-clock windows are taken
in the configured zone (zoneinfo), so a DST change moves them with local time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\s*$")


class BusinessHoursError(ValueError):
    """The spec cannot be read; the message says what is wrong (never which variable)."""


@dataclass(frozen=True)
class BusinessHours:
    days: frozenset[int]  # datetime.weekday(): Monday is 0
    start: dt.time
    end: dt.time
    zone: ZoneInfo

    def _windows(self, first: dt.date, last: dt.date) -> list[tuple[float, float]]:
        """Each business day's window between two local dates, as epoch seconds."""
        windows = []
        day = first
        while day <= last:
            if day.weekday() in self.days:
                opens = dt.datetime.combine(day, self.start, tzinfo=self.zone).timestamp()
                closes = dt.datetime.combine(day, self.end, tzinfo=self.zone).timestamp()
                windows.append((opens, closes))
            day += dt.timedelta(days=1)
        return windows

    def _local_date(self, epoch: float) -> dt.date:
        return dt.datetime.fromtimestamp(epoch, self.zone).date()

    def seconds_between(self, since: float, until: float) -> float:
        """Business seconds in [since, until] (epoch seconds); 0 when until is not after since."""
        if until <= since:
            return 0.0
        return sum(
            max(0.0, min(closes, until) - max(opens, since))
            for opens, closes in self._windows(self._local_date(since), self._local_date(until))
        )

    def contains(self, moment: float) -> bool:
        day = self._local_date(moment)
        return any(opens <= moment < closes for opens, closes in self._windows(day, day))


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in (piece.strip().lower() for piece in text.split(",")):
        first, _, last = (end.strip() for end in part.partition("-"))
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise BusinessHoursError(f"unknown day {part!r}; use Mon..Sun, ranges (Mon-Fri) and commas")
        start, stop = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if stop < start:
            raise BusinessHoursError(f"day range {part!r} runs backwards")
        days.update(range(start, stop + 1))
    return frozenset(days)


def _clock(text: str) -> dt.time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 23 or minutes > 59:
        raise BusinessHoursError(f"{text} is not a time of day")
    return dt.time(hours, minutes)


def parse_business_hours(spec: str, zone: ZoneInfo) -> BusinessHours:
    """``"Mon-Fri 09:00-18:00"``: days (names, ranges, commas), then one daily window."""
    match = _SPEC.match(spec)
    if not match:
        raise BusinessHoursError("expected days and a daily window, like 'Mon-Fri 09:00-18:00'")
    start, end = _clock(match["start"]), _clock(match["end"])
    if end <= start:
        raise BusinessHoursError("the window must end after it starts, on the same day")
    return BusinessHours(_days(match["days"]), start, end, zone)
