"""The usage report: an account's usage per period and feature, the periods kept and the open one.

GET /v1/accounts/{account_id}/usage-report?from=&to= (functions/licensing_api) answers from here.

Range
    ``from`` and ``to`` are ISO dates (2026-12-07): whole UTC days, both included. Without ``to``,
    today; without ``from``, the first day of ``to``'s month a year earlier, so that last year's
    same month is there to compare with. At most MAX_RANGE_DAYS days. Any other parameter is
    refused, as GET /admin/audit refuses them. A period is in the report when it overlaps the range.

Periods, oldest first
    The closed periods kept (billwatch.licensing.usage_history); then, from the account's item, the
    counters of a period that has ended but that no write has closed yet (the next use or the
    hourly sweep keeps it: ``closed_by`` null), and the current period, ``open``. Each period once:
    one closed between the report's two reads is listed as kept. An account that never counted
    anything has no periods; one the stack has never seen is unknown (None).

Figures, per feature and period
    ``used`` (extra quota granted included, as the usage check counts it), ``limit`` (quota +
    grant; null where the tier had no quota), ``granted``, ``percentage`` of the limit (one decimal;
    null without a positive limit), ``overage`` (used beyond the limit: a tier lowered mid-period
    leaves some; null without a limit). Where the tier bills the overage (docs/overage-billing.md),
    ``billing``: ``pending`` (overage not yet accepted by Stripe), ``sent`` (accepted, not yet found
    in Stripe's event summaries by reconciliation) and ``confirmed`` (found there).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from billwatch.core.request_fields import unknown_parameter
from billwatch.licensing.quota_policy import AccountUsage, QuotaPolicy, UsageRequestError, moment_text
from billwatch.licensing.service import Licensing
from billwatch.licensing.usage_history import (
    ClosedBy,
    ClosedPeriod,
    FeatureUsage,
    closed_period,
    feature_usage,
)

QUERY_PARAMETERS = ("from", "to")
MAX_RANGE_DAYS = 731  # two years: this year against the last, whatever the retention
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_FIRST_DAY, _LAST_DAY = dt.date(1970, 1, 1), dt.date(9998, 12, 31)  # a day after the last still has an end


@dataclass(frozen=True)
class ReportRange:
    first_day: dt.date
    last_day: dt.date

    @property
    def start(self) -> int:
        return _epoch(self.first_day)

    @property
    def end(self) -> int:
        """The moment after the last day."""
        return _epoch(self.last_day + dt.timedelta(days=1))

    @classmethod
    def parse(cls, parameters: Mapping[str, str], now: float) -> ReportRange:
        """The query string's parameters, each checked; the first problem raises, naming it."""
        if problem := unknown_parameter(parameters, QUERY_PARAMETERS):
            raise UsageRequestError(problem)
        last = _day(parameters, "to") or dt.datetime.fromtimestamp(now, dt.UTC).date()
        first = _day(parameters, "from") or max(_FIRST_DAY, dt.date(last.year - 1, last.month, 1))
        if first > last:
            raise UsageRequestError("from: must not be after to")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise UsageRequestError(f"from: the range from..to may span at most {MAX_RANGE_DAYS} days")
        return cls(first, last)


def _day(parameters: Mapping[str, str], name: str) -> dt.date | None:
    text = parameters.get(name)
    if text is None:
        return None
    try:
        day = dt.date.fromisoformat(text) if _DATE.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None or not _FIRST_DAY <= day <= _LAST_DAY:
        raise UsageRequestError(
            f"{name}: an ISO date (UTC) from {_FIRST_DAY} to {_LAST_DAY}, like 2026-12-07, got {text[:40]!r}"
        )
    return day


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def figures(usage: FeatureUsage) -> dict[str, Any]:
    limit = usage.limit
    shown: dict[str, Any] = {
        "used": usage.used,
        "limit": limit,
        "granted": usage.granted,
        "percentage": round(100 * usage.used / limit, 1) if limit else None,
        "overage": None if limit is None else max(0, usage.used - limit),
    }
    if (billing := usage.billing()) is not None:
        shown["billing"] = billing.as_dict()
    return shown


@dataclass(frozen=True)
class ReportPeriod:
    start: int
    end: int
    open: bool
    closed_by: ClosedBy | None  # None: open, or ended with no write closing it yet
    tier: str
    tier_override: str | None
    features: Mapping[str, FeatureUsage]

    @classmethod
    def closed(cls, period: ClosedPeriod, closed_by: ClosedBy | None) -> ReportPeriod:
        return cls(
            period.start, period.end, False, closed_by, period.tier, period.tier_override, period.features
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": moment_text(self.start),
            "end": moment_text(self.end),
            "open": self.open,
            "closed_by": self.closed_by.value if self.closed_by else None,
            "tier": self.tier,
            "tier_override": self.tier_override,
            "features": {name: figures(usage) for name, usage in self.features.items()},
        }


def periods_on_item(policy: QuotaPolicy, usage: AccountUsage, now: int) -> list[ReportPeriod]:
    """What the account's item holds: a period that ended with no write closing it, and the open one."""
    account = usage.account
    if account.usage_since is None:
        return []
    tier = policy.effective_tier(account)
    period = policy.period(tier, account, now)
    found = []
    if policy.is_current(account.usage_since, period):
        start, current = int(account.usage_since), usage
    else:
        if ended := closed_period(policy, usage, now, ClosedBy.USE):
            found.append(ReportPeriod.closed(ended, closed_by=None))
        start, current = period.start, usage.restarted(period.start, {})
    figures_now = feature_usage(policy, current)
    found.append(ReportPeriod(start, period.end, True, None, tier.name, account.tier_override, figures_now))
    return found


class UsageReport:
    def __init__(self, licensing: Licensing, clock: Callable[[], float] = time.time):
        self._licensing = licensing
        self._clock = clock

    def of(self, account_id: str, parameters: Mapping[str, str]) -> dict[str, Any] | None:
        """The report for the query string's range; None for an account the stack does not know.
        A bad parameter raises UsageRequestError before anything is read."""
        now = int(self._clock())
        span = ReportRange.parse(parameters, now)
        usage = self._licensing.load(account_id)
        if not usage.raw or usage.account.merged_into is not None:
            return None
        # Read after the account: a write that closes a period between the two reads has put that
        # period's record, so the record stands for it, and the item's copy as read goes. (Read
        # before it, such a period would be in neither.)
        kept = self._licensing.history.periods(account_id, span.start, span.end, now)
        periods = [ReportPeriod.closed(period, period.closed_by) for period in kept]
        starts = {period.start for period in kept}
        on_item = periods_on_item(self._licensing.policy, usage, now)
        periods += [p for p in on_item if p.start not in starts and p.start < span.end and p.end > span.start]
        return {
            "account_id": account_id,
            "from": span.first_day.isoformat(),
            "to": span.last_day.isoformat(),
            "periods": [period.as_dict() for period in periods],
        }
