"""The usage report's pure parts: the range, the figures, the periods an account's item holds."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_policy import AccountUsage, QuotaPolicy, UsageRequestError
from billwatch.licensing.usage_history import ClosedBy, FeatureUsage, closed_period
from billwatch.licensing.usage_report import MAX_RANGE_DAYS, ReportRange, figures, periods_on_item

POLICY = QuotaPolicy(load_catalog_text(shipped_catalog_text(), "plans.json"))
DEC_7 = int(dt.datetime(2026, 12, 7, 9, tzinfo=dt.UTC).timestamp())


def at(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


def item(**numbers: int) -> AccountUsage:
    return AccountUsage.from_raw(
        "acct_1", {"pk": {"S": "acct_1"}, **{k: {"N": str(v)} for k, v in numbers.items()}}
    )


def test_the_default_range_is_last_years_same_month_to_today() -> None:
    span = ReportRange.parse({}, DEC_7)
    assert (span.first_day, span.last_day) == (dt.date(2025, 12, 1), dt.date(2026, 12, 7))
    assert (span.start, span.end) == (at(2025, 12, 1), at(2026, 12, 8))
    only_to = ReportRange.parse({"to": "2026-03-31"}, DEC_7)
    assert only_to.first_day == dt.date(2025, 3, 1)


def test_the_range_may_span_exactly_the_maximum() -> None:
    first = dt.date(2025, 1, 1)
    last = first + dt.timedelta(days=MAX_RANGE_DAYS - 1)
    assert ReportRange.parse({"from": str(first), "to": str(last)}, DEC_7).last_day == last
    with pytest.raises(UsageRequestError, match="from: the range"):
        ReportRange.parse({"from": str(first), "to": str(last + dt.timedelta(days=1))}, DEC_7)


@pytest.mark.parametrize(
    "text",
    ["2026-1-01", "20261201", "2026-12-01 ", "\uff12\uff10\uff12\uff16-12-01", "2026-W49", "+2026-12-01"],
)
def test_only_plain_iso_dates_are_read(text: str) -> None:
    with pytest.raises(UsageRequestError, match=r"^from: an ISO date"):
        ReportRange.parse({"from": text}, DEC_7)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (FeatureUsage(500, 0, 1000), {"percentage": 50.0, "overage": 0}),
        (FeatureUsage(2, 0, 3), {"percentage": 66.7, "overage": 0}),
        (FeatureUsage(13, 5, 15), {"percentage": 86.7, "overage": 0}),
        (FeatureUsage(50, 0, 10), {"percentage": 500.0, "overage": 40}),
        (FeatureUsage(3, 0, 0), {"percentage": None, "overage": 3}),
        (FeatureUsage(3, 0, None), {"percentage": None, "overage": None}),
    ],
)
def test_figures(usage: FeatureUsage, expected: dict) -> None:
    assert figures(usage) == {"used": usage.used, "limit": usage.limit, "granted": usage.granted, **expected}


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_overage_is_what_the_limit_does_not_cover(used: int, limit: int) -> None:
    shown = figures(FeatureUsage(used, 0, limit))
    assert shown["overage"] == max(0, used - limit)
    # Rounded to one decimal, a share just past the limit may read 100.0, never less.
    assert shown["percentage"] >= 100 if shown["overage"] else shown["percentage"] <= 100


def test_an_item_with_counters_of_a_past_month_shows_them_ended_and_an_empty_open_month() -> None:
    usage = item(usage_since=at(2026, 10, 20), used_exports=9, granted_exports=2, used_api_calls=-2)
    ended, current = periods_on_item(POLICY, usage, DEC_7)
    assert (ended.start, ended.end, ended.open, ended.closed_by) == (
        at(2026, 10, 20),
        at(2026, 11, 1),
        False,
        None,
    )
    assert ended.features["exports"] == FeatureUsage(11, 2, 12)
    assert (current.start, current.end, current.open) == (at(2026, 12, 1), at(2027, 1, 1), True)
    assert current.features == {"api_calls": FeatureUsage(0, 0, 1000), "exports": FeatureUsage(0, 0, 10)}


def test_an_item_never_counted_shows_no_period() -> None:
    assert periods_on_item(POLICY, item(), DEC_7) == []
    assert closed_period(POLICY, item(usage_since=at(2026, 10, 20)), DEC_7, ClosedBy.QUOTA_RESET) is None


def test_a_paid_period_ends_where_the_next_one_starts() -> None:
    usage = item(usage_since=at(2026, 10, 20), current_period_start=at(2026, 11, 20), used_exports=3)
    usage.raw["current_period_end"] = {"N": str(at(2026, 12, 20))}
    usage.raw["tier"] = {"S": "PRO"}
    usage = AccountUsage.from_raw("acct_1", usage.raw)
    period = closed_period(POLICY, usage, DEC_7, ClosedBy.USE)
    assert period is not None and (period.end, period.tier) == (at(2026, 11, 20), "PRO")
    assert period.features["exports"] == FeatureUsage(3, 0, 1000)
