"""The billing report's data: what was measured in the window (``ReportData``) and what the report
says (``BillingReport``). See docs/billing-report.md.

A figure that was not measured is never shown as a zero: every figure is ``Known(value)`` or
``Missing(reason)``. A CloudWatch metric with no datapoints in the window is ``Missing("no data")``,
a rate whose denominator is 0 is ``Missing("no traffic")``, and the health score lists the parts
it could not judge instead of scoring them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from billwatch.core.severities import Severity

Value = TypeVar("Value")

NO_DATA = "no data"
NO_TRAFFIC = "no traffic"
NOT_LISTENING = "no data (billwatch received no webhooks)"


@dataclass(frozen=True)
class Known(Generic[Value]):
    value: Value


@dataclass(frozen=True)
class Missing:
    reason: str


Figure: TypeAlias = Known[Value] | Missing


class ReportPeriod(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"

    @property
    def length(self) -> dt.timedelta:
        return dt.timedelta(days=1) if self is ReportPeriod.DAILY else dt.timedelta(days=7)


def report_window(period: ReportPeriod, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return end - period.length, end


# --------------------------------------------------------------------------------------------------
# What was measured


@dataclass(frozen=True)
class Incident:
    """One stretch of an alarm in ALARM that overlaps the window."""

    alarm: str  # without the billwatch-<stage>- prefix
    severity: Severity | None  # None: the alarm no longer exists to say
    started_at: dt.datetime
    cleared_at: dt.datetime | None  # None: still firing at the window's end
    # The history read began with the alarm already firing: it started at started_at or earlier.
    started_before_history: bool = False
    runbook: str | None = None  # from the alarm's description, when it still exists to say

    @property
    def still_firing(self) -> bool:
        return self.cleared_at is None

    def duration(self, until: dt.datetime) -> dt.timedelta:
        return (self.cleared_at or until) - self.started_at


@dataclass(frozen=True)
class RequestCounts:
    """What availability is measured on: requests and the server errors among them."""

    basis: str  # e.g. "HTTP API 5xx / Count"
    requests: Figure[float]
    server_errors: Figure[float]


@dataclass(frozen=True)
class ApiTraffic:
    """The HTTP API's own metrics (``AWS/ApiGateway``, dimension ``ApiId``): its SLOs and its peaks."""

    requests: Figure[float]
    client_errors: Figure[float]  # 4xx
    server_errors: Figure[float]  # 5xx
    latency_p95_ms: Figure[float]  # over the whole window
    busiest_minute_requests: Figure[float]
    peak_latency_p95_ms: Figure[float]  # the highest p95 of any 5 minutes


@dataclass(frozen=True)
class Revenue:
    """MRR in major units of one currency, at the window's end and at its start."""

    now: Figure[float]
    at_start: Figure[float]


@dataclass(frozen=True)
class CurrencyMoney:
    """One currency's money in the window, in its major units (never added to another currency's)."""

    currency: str  # upper case, as the metrics label it
    paid: Figure[float]  # PaymentAmount
    refunded: Figure[float]  # RefundAmount
    failed: Figure[float]  # PaymentFailedAmount: failed invoices, each at its first failure
    paid_by_plan: Figure[Mapping[str, float]]  # PaymentAmount per Tier
    mrr_by_plan: Figure[Mapping[str, float]]  # PlanMRR per Tier, the window's last hour

    @property
    def recorded_net(self) -> Figure[float]:
        """What billwatch recorded as taken in: paid less refunded (what revenue reconciliation compares)."""
        if isinstance(self.paid, Missing):
            return self.paid
        if isinstance(self.refunded, Missing):
            return self.refunded
        return Known(self.paid.value - self.refunded.value)


@dataclass(frozen=True)
class Money:
    by_currency: tuple[CurrencyMoney, ...]  # by currency code
    # billwatch received webhooks in the window, so a currency it counted nothing in took in 0.
    listening: bool

    def recorded_net(self, currency: str) -> Figure[float]:
        for money in self.by_currency:
            if money.currency == currency:
                return money.recorded_net
        return Known(0.0) if self.listening else Missing(NOT_LISTENING)


@dataclass(frozen=True)
class DayPurchases:
    """One day of the weekly report: what the paid invoices came to, per currency."""

    start: dt.datetime  # the day's 24 hours start here (the window's start, plus whole days)
    paid: Figure[Mapping[str, float]]


@dataclass(frozen=True)
class RevenueCheck:
    """One currency of the revenue reconciliation: Stripe's gross volume against billwatch's record."""

    currency: str
    stripe_gross: float  # charges and payments less refunds, before fees, major units
    recorded: Figure[float]  # PaymentAmount less RefundAmount
    drift: Figure[float]  # recorded - stripe_gross
    over_threshold: bool


class MeterOutcome(StrEnum):
    CONFIRMED = "confirmed"  # Stripe counts exactly what was sent
    SETTLING = "settling"  # Stripe counts less, but only by units sent since the last reconciliation
    OVER = "over"  # Stripe counts more than billwatch sent: drift
    UNDER = "under"  # Stripe still misses units sent before the last reconciliation: drift
    IN_FLIGHT = "in flight"  # a range is being sent: compared once the drain settles it
    NO_METER = "no meter"  # Stripe has no active meter for the catalog's event name: drift
    NOT_COMPARED = "not compared"  # the reason says why

    @property
    def is_drift(self) -> bool:
        return self in (MeterOutcome.OVER, MeterOutcome.UNDER, MeterOutcome.NO_METER)


@dataclass(frozen=True)
class MeterCheck:
    """One account's units on one meter in one usage period, against its Stripe customer's."""

    stripe_customer_id: str
    event_name: str
    period_start: int
    period_end: int
    account_id: str
    sent: int  # the watermark: units Stripe accepted
    checked: int  # the watermark the last reconciliation compared: Stripe must count these by now
    in_stripe: int | None  # the summary's aggregated value; None when not compared
    outcome: MeterOutcome
    reason: str | None = None  # why it was not compared

    @property
    def drift(self) -> int | None:
        """Stripe's units less billwatch's, where compared."""
        return None if self.in_stripe is None else self.in_stripe - self.sent


@dataclass(frozen=True)
class MeterReconciliation:
    checks: tuple[MeterCheck, ...]  # every period compared or not, confirmed ones included

    def count(self, outcome: MeterOutcome) -> int:
        return sum(1 for check in self.checks if check.outcome is outcome)

    @property
    def drifts(self) -> tuple[MeterCheck, ...]:
        return tuple(check for check in self.checks if check.outcome.is_drift)


@dataclass(frozen=True)
class AccountNearLimit:
    account_id: str
    feature: str
    used: int
    limit: int

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else float("inf")


@dataclass(frozen=True)
class NearLimits:
    accounts: tuple[AccountNearLimit, ...]  # the highest shares first, at most ``shown``
    total: int  # how many account quotas were near or over their limits, shown or not
    shown: int


@dataclass(frozen=True)
class Cohort:
    month: str  # YYYY-MM, UTC, of the subscriptions' start_date
    started: int
    still_paying: int


@dataclass(frozen=True)
class MrrReading:
    day: dt.datetime  # the start of the day the reading averages
    mrr: float


@dataclass(frozen=True)
class ReportData:
    start: dt.datetime
    end: dt.datetime
    availability: RequestCounts
    api: ApiTraffic
    webhooks_received: Figure[float]
    webhooks_failed: Figure[float]
    webhook_p95_ms: Figure[float]
    checkouts_completed: Figure[float]
    checkouts_expired: Figure[float]
    subscriptions_new: Figure[float]
    subscriptions_reactivated: Figure[float]
    upgrades: Figure[float]
    subscriptions_churned: Figure[float]
    paying_at_start: Figure[float]
    payments_succeeded: Figure[float]
    payments_failed: Figure[float]
    usage_by_feature: Figure[Mapping[str, float]]
    paid_by_currency: Figure[Mapping[str, float]]  # major units per currency
    accounts_at_limit: Figure[float]
    drift_by_field: Figure[Mapping[str, float]]
    healed_by_field: Figure[Mapping[str, float]]
    reconcile_runs: Figure[float]
    quota_resets_failed: Figure[float]
    incidents: Figure[Sequence[Incident]]
    revenue: Figure[Mapping[str, Revenue]]
    # The health probe read the gauges in the window's first hour: billwatch ran the whole window.
    ran_whole_window: bool = False
    # None where a section is not part of this report (the weekly-only ones in a daily report).
    money: Figure[Money] = Missing(NO_DATA)
    purchases_by_day: Figure[tuple[DayPurchases, ...]] | None = None
    mrr_history: Figure[Mapping[str, Sequence[MrrReading]]] | None = None  # per currency, oldest first
    revenue_checks: Figure[tuple[RevenueCheck, ...]] | None = None
    meter_checks: Figure[MeterReconciliation] | None = None
    near_limits: Figure[NearLimits] | None = None
    cohorts: Figure[tuple[Cohort, ...]] | None = None


# --------------------------------------------------------------------------------------------------
# What the report says


class SloStatus(StrEnum):
    MET = "met"
    MISSED = "missed"
    NOT_JUDGED = "not judged"


class Comparison(StrEnum):
    AT_LEAST = "≥"
    AT_MOST = "≤"


@dataclass(frozen=True)
class Slo:
    name: str
    actual: Figure[float]
    target: float
    comparison: Comparison
    unit: str  # "%" (actual and target are fractions) or "ms"
    basis: str

    @property
    def status(self) -> SloStatus:
        if isinstance(self.actual, Missing):
            return SloStatus.NOT_JUDGED
        if self.comparison is Comparison.AT_LEAST:
            return SloStatus.MET if self.actual.value >= self.target else SloStatus.MISSED
        return SloStatus.MET if self.actual.value <= self.target else SloStatus.MISSED

    @property
    def miss(self) -> Figure[float]:
        """How far it missed, 0..1: 1 is a miss by the target's own margin or more.

        The margin is the error budget (1 - target) for availability and the target itself for the
        others, so 99.8 % against 99.9 % and 1,000 ms against 500 ms both count as a full miss.
        """
        if isinstance(self.actual, Missing):
            return self.actual
        if self.comparison is Comparison.AT_LEAST:
            shortfall, margin = self.target - self.actual.value, 1 - self.target
        else:
            shortfall, margin = self.actual.value - self.target, self.target
        return Known(min(1.0, max(0.0, shortfall / margin)))


@dataclass(frozen=True)
class FeatureUsage:
    feature: str
    units: float


@dataclass(frozen=True)
class MrrChange:
    currency: str
    now: Figure[float]
    change: Figure[float]
    change_share: Figure[float]  # change / MRR at the start


@dataclass(frozen=True)
class Business:
    checkouts_completed: Figure[float]
    checkout_conversion: Figure[float]
    subscriptions_new: Figure[float]
    subscriptions_reactivated: Figure[float]
    upgrades: Figure[float]
    subscriptions_churned: Figure[float]
    churn_rate: Figure[float]  # churned / paying at the window's start
    paying_at_start: Figure[float]
    mrr: Figure[tuple[MrrChange, ...]]
    payments_succeeded: Figure[float]
    paid_by_currency: Figure[Mapping[str, float]]
    payments_failed: Figure[float]
    payment_failure_rate: Figure[float]
    top_features: Figure[tuple[FeatureUsage, ...]]
    accounts_at_limit: Figure[float]


@dataclass(frozen=True)
class Reconciliation:
    drift_by_field: Figure[Mapping[str, float]]
    healed_by_field: Figure[Mapping[str, float]]


@dataclass(frozen=True)
class Performance:
    peak_requests_per_second: Figure[float]  # the busiest minute's requests / 60
    peak_latency_p95_ms: Figure[float]


@dataclass(frozen=True)
class ActionItem:
    what: str  # what went wrong, worded for the reader
    runbook: str  # where to start: a path under docs/runbooks, or the alarm's own runbook URL


@dataclass(frozen=True)
class HealthPart:
    name: str
    penalty: Figure[float]  # points taken off 100, or why this part was not judged
    detail: str


@dataclass(frozen=True)
class HealthScore:
    score: Figure[int]
    parts: tuple[HealthPart, ...]

    @property
    def not_judged(self) -> tuple[HealthPart, ...]:
        return tuple(part for part in self.parts if isinstance(part.penalty, Missing))


@dataclass(frozen=True)
class Forecast:
    """One currency's MRR forecast: a least-squares line through the daily readings."""

    currency: str
    readings: int  # the days the line was fitted on
    months_ahead: tuple[Figure[float], ...]  # MRR 30, 60 and 90 days after the report's end
    backtest_error: Figure[float]  # MAPE, as a fraction, of a line fitted on the first part
    last_reading: dt.datetime | None  # the start of the last reading's day


@dataclass(frozen=True)
class BillingReport:
    period: ReportPeriod
    start: dt.datetime
    end: dt.datetime
    slos: tuple[Slo, ...]
    business: Business
    incidents: Figure[tuple[Incident, ...]]
    performance: Performance
    reconciliation: Reconciliation
    health: HealthScore
    action_items: tuple[ActionItem, ...]
    zone: dt.tzinfo = dt.UTC  # the readers' time zone: dates and times are shown in it
    money: Figure[Money] = Missing(NO_DATA)
    purchases_by_day: Figure[tuple[DayPurchases, ...]] | None = None
    revenue_checks: Figure[tuple[RevenueCheck, ...]] | None = None
    meter_checks: Figure[MeterReconciliation] | None = None
    near_limits: Figure[NearLimits] | None = None
    cohorts: Figure[tuple[Cohort, ...]] | None = None
    forecasts: Figure[tuple[Forecast, ...]] | None = None

    @property
    def day(self) -> dt.date:
        # A window that ends at midnight is the report of the day before it.
        return (self.end.astimezone(self.zone) - dt.timedelta(microseconds=1)).date()

    @property
    def first_day(self) -> dt.date:
        return self.start.astimezone(self.zone).date()


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
