"""The daily (or weekly) billing report: SLOs, business figures, incidents, reconciliation, health.

``ReportData`` holds what was measured in the window, as read from CloudWatch by
``CloudWatchReportSource`` or seeded by a test; ``build_report`` turns it into a ``BillingReport``
and the ``render_*`` functions print that for Slack, email and the console.

A figure that was not measured is never shown as a zero: every figure is ``Known(value)`` or
``Missing(reason)``. A CloudWatch metric with no datapoints in the window is ``Missing("no data")``,
a rate whose denominator is 0 is ``Missing("no traffic")``, and the health score lists the parts
it could not judge instead of scoring them. See docs/billing-report.md.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeAlias, TypeVar

from billwatch.alerting.alarm_text import Severity, parse_alarm_description
from billwatch.alerting.channels import EmailMessage, format_number, slack_escape, slack_text, truncate
from billwatch.alerting.inputs import short_alarm_name
from billwatch.core.metrics import SERVICE_DIMENSION, Metric
from billwatch.core.observability import logger

Value = TypeVar("Value")

NO_DATA = "no data"
NO_TRAFFIC = "no traffic"


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

    def duration(self, until: dt.datetime) -> dt.timedelta:
        return (self.cleared_at or until) - self.started_at


@dataclass(frozen=True)
class RequestCounts:
    """What availability is measured on: requests and the server errors among them."""

    basis: str  # e.g. "HTTP API 5xx / Count"
    requests: Figure[float]
    server_errors: Figure[float]


@dataclass(frozen=True)
class Revenue:
    """MRR in major units of one currency, at the window's end and at its start."""

    now: Figure[float]
    at_start: Figure[float]


@dataclass(frozen=True)
class ReportData:
    start: dt.datetime
    end: dt.datetime
    availability: RequestCounts
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
    accounts_at_limit: Figure[float]
    drift_by_field: Figure[Mapping[str, float]]
    healed_by_field: Figure[Mapping[str, float]]
    reconcile_runs: Figure[float]
    incidents: Figure[Sequence[Incident]]
    revenue: Figure[Mapping[str, Revenue]]


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
    payments_failed: Figure[float]
    payment_failure_rate: Figure[float]
    top_features: Figure[tuple[FeatureUsage, ...]]
    accounts_at_limit: Figure[float]


@dataclass(frozen=True)
class Reconciliation:
    drift_by_field: Figure[Mapping[str, float]]
    healed_by_field: Figure[Mapping[str, float]]


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
class BillingReport:
    period: ReportPeriod
    start: dt.datetime
    end: dt.datetime
    slos: tuple[Slo, ...]
    business: Business
    incidents: Figure[tuple[Incident, ...]]
    reconciliation: Reconciliation
    health: HealthScore
    zone: dt.tzinfo = dt.UTC  # the readers' time zone: dates and times are shown in it

    @property
    def day(self) -> dt.date:
        # A window that ends at midnight is the report of the day before it.
        return (self.end.astimezone(self.zone) - dt.timedelta(microseconds=1)).date()

    @property
    def first_day(self) -> dt.date:
        return self.start.astimezone(self.zone).date()


# --------------------------------------------------------------------------------------------------
# From ReportData to BillingReport

AVAILABILITY_TARGET = 0.999
P95_TARGET_MS = 500.0
ERROR_RATE_TARGET = 0.001
TOP_FEATURES = 5

# The health score's weights: points taken off 100 at a full miss (see docs/billing-report.md).
SLO_WEIGHTS = {"Availability": 20.0, "Webhook p95 latency": 10.0, "Webhook error rate": 15.0}
INCIDENT_PENALTIES = {  # (still firing at the window's end, cleared in the window)
    Severity.CRITICAL: (15.0, 8.0),
    Severity.WARNING: (5.0, 2.0),
    Severity.INFO: (1.0, 0.0),
}
INCIDENT_PENALTY_CAP = 40.0
UNHEALED_DRIFT_PENALTY = 3.0
HEALED_DRIFT_PENALTY = 1.0
DRIFT_PENALTY_CAP = 15.0
PAYMENT_FAILURE_NORM = 0.05
PAYMENT_FAILURE_WEIGHT = 15.0


def _rate(numerator: Figure[float], denominator: Figure[float]) -> Figure[float]:
    """numerator / denominator; a numerator without datapoints beside counted traffic is 0.

    billwatch counts a failure (or an expired checkout) only when one happens, so no datapoints
    of it in a window with traffic means none happened: what the alarms' FILL(failed, 0) says too.
    """
    if isinstance(denominator, Missing):
        return denominator
    if denominator.value <= 0:
        return Missing(NO_TRAFFIC)
    counted = numerator.value if isinstance(numerator, Known) else 0.0
    return Known(counted / denominator.value)


def _total(*parts: Figure[float]) -> Figure[float]:
    """The sum of counts of which at least one has datapoints; the others are 0 (see ``_rate``)."""
    known = [part.value for part in parts if isinstance(part, Known)]
    return Known(sum(known)) if known else Missing(NO_DATA)


def _availability(counts: RequestCounts) -> Figure[float]:
    error_share = _rate(counts.server_errors, counts.requests)
    return Known(1 - error_share.value) if isinstance(error_share, Known) else error_share


def _slos(data: ReportData) -> tuple[Slo, ...]:
    return (
        Slo(
            "Availability",
            _availability(data.availability),
            AVAILABILITY_TARGET,
            Comparison.AT_LEAST,
            "%",
            data.availability.basis,
        ),
        Slo(
            "Webhook p95 latency",
            data.webhook_p95_ms,
            P95_TARGET_MS,
            Comparison.AT_MOST,
            "ms",
            f"{Metric.WEBHOOK_PROCESSING_TIME} p95",
        ),
        Slo(
            "Webhook error rate",
            _rate(data.webhooks_failed, data.webhooks_received),
            ERROR_RATE_TARGET,
            Comparison.AT_MOST,
            "%",
            f"{Metric.WEBHOOK_FAILED} / {Metric.WEBHOOK_RECEIVED}",
        ),
    )


def _mrr_change(currency: str, revenue: Revenue) -> MrrChange:
    now, at_start = revenue.now, revenue.at_start
    if isinstance(now, Missing) or isinstance(at_start, Missing):
        unknown = now if isinstance(now, Missing) else at_start
        return MrrChange(currency, now, unknown, unknown)
    change = now.value - at_start.value
    share = Known(change / at_start.value) if at_start.value else Missing("no MRR at the start")
    return MrrChange(currency, now, Known(change), share)


def _mrr(revenue: Figure[Mapping[str, Revenue]]) -> Figure[tuple[MrrChange, ...]]:
    if isinstance(revenue, Missing):
        return revenue
    return Known(tuple(_mrr_change(currency, figures) for currency, figures in sorted(revenue.value.items())))


def _churn_rate(churned: Figure[float], paying_at_start: Figure[float]) -> Figure[float]:
    if isinstance(paying_at_start, Known) and paying_at_start.value <= 0:
        return Missing("no paying subscriptions at the start")
    return _rate(churned, paying_at_start)


def _top_features(usage: Figure[Mapping[str, float]]) -> Figure[tuple[FeatureUsage, ...]]:
    if isinstance(usage, Missing):
        return usage
    ranked = sorted(usage.value.items(), key=lambda item: (-item[1], item[0]))
    return Known(tuple(FeatureUsage(feature, units) for feature, units in ranked[:TOP_FEATURES]))


def _business(data: ReportData) -> Business:
    return Business(
        checkouts_completed=data.checkouts_completed,
        checkout_conversion=_rate(
            data.checkouts_completed, _total(data.checkouts_completed, data.checkouts_expired)
        ),
        subscriptions_new=data.subscriptions_new,
        subscriptions_reactivated=data.subscriptions_reactivated,
        upgrades=data.upgrades,
        subscriptions_churned=data.subscriptions_churned,
        churn_rate=_churn_rate(data.subscriptions_churned, data.paying_at_start),
        paying_at_start=data.paying_at_start,
        mrr=_mrr(data.revenue),
        payments_failed=data.payments_failed,
        payment_failure_rate=_rate(
            data.payments_failed, _total(data.payments_failed, data.payments_succeeded)
        ),
        top_features=_top_features(data.usage_by_feature),
        accounts_at_limit=data.accounts_at_limit,
    )


def _slo_part(slo: Slo) -> HealthPart:
    miss = slo.miss
    weight = SLO_WEIGHTS[slo.name]
    if isinstance(miss, Missing):
        return HealthPart(slo.name, miss, f"weight {format_number(weight)}")
    if slo.status is SloStatus.MET:
        return HealthPart(slo.name, Known(0.0), "met")
    detail = f"missed by {miss.value:.0%} of its margin x {format_number(weight)}"
    return HealthPart(slo.name, Known(weight * miss.value), detail)


def _incident_part(incidents: Figure[tuple[Incident, ...]]) -> HealthPart:
    name = "Incidents"
    if isinstance(incidents, Missing):
        return HealthPart(name, incidents, "")
    # An alarm that no longer exists cannot tell its severity: it weighs as a warning.
    penalties = [
        INCIDENT_PENALTIES[incident.severity or Severity.WARNING][0 if incident.cleared_at is None else 1]
        for incident in incidents.value
    ]
    still_firing = sum(incident.cleared_at is None for incident in incidents.value)
    penalty = min(INCIDENT_PENALTY_CAP, sum(penalties))
    detail = f"{len(penalties)} in the window, {still_firing} still firing; cap {INCIDENT_PENALTY_CAP:g}"
    return HealthPart(name, Known(penalty), detail)


def _drift_part(reconciliation: Reconciliation) -> HealthPart:
    name = "Reconciliation drift"
    drift, healed = reconciliation.drift_by_field, reconciliation.healed_by_field
    if isinstance(drift, Missing):
        return HealthPart(name, drift, "")
    found = sum(drift.value.values())
    fixed = min(found, sum(healed.value.values())) if isinstance(healed, Known) else 0.0
    penalty = min(DRIFT_PENALTY_CAP, UNHEALED_DRIFT_PENALTY * (found - fixed) + HEALED_DRIFT_PENALTY * fixed)
    detail = f"{format_number(found)} found, {format_number(fixed)} healed; cap {DRIFT_PENALTY_CAP:g}"
    return HealthPart(name, Known(penalty), detail)


def _payment_part(business: Business) -> HealthPart:
    name = "Payment failures"
    rate = business.payment_failure_rate
    if isinstance(rate, Missing):
        return HealthPart(name, rate, "")
    excess = min(1.0, max(0.0, (rate.value - PAYMENT_FAILURE_NORM) / PAYMENT_FAILURE_NORM))
    detail = f"{rate.value:.1%} failed against a norm of {PAYMENT_FAILURE_NORM:.0%}"
    return HealthPart(name, Known(PAYMENT_FAILURE_WEIGHT * excess), detail)


def health_score(
    slos: Sequence[Slo],
    incidents: Figure[tuple[Incident, ...]],
    reconciliation: Reconciliation,
    business: Business,
) -> HealthScore:
    parts = (
        *(_slo_part(slo) for slo in slos),
        _incident_part(incidents),
        _drift_part(reconciliation),
        _payment_part(business),
    )
    if all(slo.status is SloStatus.NOT_JUDGED for slo in slos):
        # Without a single SLO the score would only count what did not happen.
        return HealthScore(Missing("no SLO could be judged"), parts)
    penalties = sum(part.penalty.value for part in parts if isinstance(part.penalty, Known))
    return HealthScore(Known(round(min(100.0, max(0.0, 100.0 - penalties)))), parts)


def _overlapping(incidents: Figure[Sequence[Incident]], start: dt.datetime) -> Figure[tuple[Incident, ...]]:
    if isinstance(incidents, Missing):
        return incidents
    kept = (
        incident for incident in incidents.value if incident.cleared_at is None or incident.cleared_at > start
    )
    return Known(tuple(sorted(kept, key=lambda incident: (incident.started_at, incident.alarm))))


def _reconciliation(data: ReportData) -> Reconciliation:
    ran = isinstance(data.reconcile_runs, Known) and data.reconcile_runs.value > 0
    if not ran:
        return Reconciliation(data.drift_by_field, data.healed_by_field)
    # Drift is counted only when found, so a finished run without any found none.
    nothing: Known[Mapping[str, float]] = Known({})
    return Reconciliation(
        data.drift_by_field if isinstance(data.drift_by_field, Known) else nothing,
        data.healed_by_field if isinstance(data.healed_by_field, Known) else nothing,
    )


def build_report(
    data: ReportData, period: ReportPeriod = ReportPeriod.DAILY, zone: dt.tzinfo = dt.UTC
) -> BillingReport:
    slos = _slos(data)
    business = _business(data)
    incidents = _overlapping(data.incidents, data.start)
    reconciliation = _reconciliation(data)
    return BillingReport(
        period=period,
        start=data.start,
        end=data.end,
        slos=slos,
        business=business,
        incidents=incidents,
        reconciliation=reconciliation,
        health=health_score(slos, incidents, reconciliation, business),
        zone=zone,
    )


# --------------------------------------------------------------------------------------------------
# Reading ReportData from CloudWatch


@dataclass(frozen=True)
class MetricQuery:
    """One figure of the report: a billwatch metric, a statistic and the labels beyond ``service``."""

    key: str  # the ReportData field, and the GetMetricData query id
    metric: Metric
    stat: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LabelledQuery:
    """A figure per value of one label (the values billwatch emitted, found with ListMetrics)."""

    key: str
    metric: Metric
    label: str


# The exact dimension sets metrics.py publishes: [service] for the aggregates, [service, label]
# for the per-label sums. tests/unit/test_billing_report.py checks each against METRICS.
METRIC_QUERIES = (
    MetricQuery("webhooks_received", Metric.WEBHOOK_RECEIVED, "Sum"),
    MetricQuery("webhooks_failed", Metric.WEBHOOK_FAILED, "Sum"),
    MetricQuery("webhook_p95_ms", Metric.WEBHOOK_PROCESSING_TIME, "p95"),
    MetricQuery("checkouts_completed", Metric.CHECKOUT_COMPLETED, "Sum"),
    MetricQuery("checkouts_expired", Metric.CHECKOUT_EXPIRED, "Sum"),
    MetricQuery("subscriptions_new", Metric.SUBSCRIPTIONS_NEW, "Sum"),
    MetricQuery("subscriptions_reactivated", Metric.SUBSCRIPTIONS_REACTIVATED, "Sum"),
    MetricQuery("upgrades", Metric.SUBSCRIPTIONS_UPGRADED, "Sum"),
    MetricQuery("subscriptions_churned", Metric.SUBSCRIPTIONS_CHURNED, "Sum"),
    MetricQuery("payments_succeeded", Metric.PAYMENT_SUCCEEDED, "Sum"),
    MetricQuery("payments_failed", Metric.PAYMENT_FAILED, "Sum"),
    MetricQuery("accounts_at_limit", Metric.LIMIT_HIT, "Sum", (("Threshold", "100"),)),
    MetricQuery("reconcile_runs", Metric.RECONCILE_RUN, "Sum"),
)
LABELLED_QUERIES = (
    LabelledQuery("usage_by_feature", Metric.USAGE_COUNTED, "Feature"),
    LabelledQuery("drift_by_field", Metric.RECONCILE_DRIFT, "Field"),
    LabelledQuery("healed_by_field", Metric.RECONCILE_HEALED, "Field"),
)
API_GATEWAY_NAMESPACE = "AWS/ApiGateway"
_QUERIES_PER_CALL = 500  # GetMetricData's limit
_PERCENTILE_PREFIX = "p"  # p95, p99.9
# The probe reads the gauges every few minutes: hourly averages, the first and last of the window.
_GAUGE_PERIOD_SECONDS = 3600
_GAUGE_READING_WINDOW = dt.timedelta(hours=1)
_FIRING = "ALARM"


def _combined(stat: str, values: Sequence[float]) -> Figure[float]:
    """One figure from the datapoints of a window read as one period (one datapoint, as a rule)."""
    if not values:
        return Missing(NO_DATA)
    # Percentiles of parts do not add up; the highest is the cautious reading.
    return Known(max(values) if stat.startswith(_PERCENTILE_PREFIX) else sum(values))


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


class CloudWatchReportSource:
    """Reads one window's ReportData: metrics with GetMetricData, incidents from the alarm history."""

    def __init__(
        self,
        cloudwatch_client: Any,
        namespace: str,
        service: str = "billwatch",
        *,
        stage: str,
        http_api_id: str | None = None,
        history_lookback: dt.timedelta = dt.timedelta(days=7),
    ) -> None:
        self._cloudwatch = cloudwatch_client
        self._namespace = namespace
        self._service = service
        self._alarm_prefix = f"billwatch-{stage}-"
        self._http_api_id = http_api_id
        self._history_lookback = history_lookback

    def read(self, start: dt.datetime, end: dt.datetime) -> ReportData:
        labelled = {query.key: self._label_values(query) for query in LABELLED_QUERIES}
        stats = self._metric_stats(labelled)
        window = int((end - start).total_seconds())
        figures = {
            key: _combined(stats[key]["Stat"], [value for _, value in points])
            for key, points in _read_metric_data(self._cloudwatch, stats, start, end, window).items()
        }
        per_label = {
            query.key: self._per_label(figures, query.key, values)
            for query, values in zip(LABELLED_QUERIES, labelled.values(), strict=True)
        }
        paying_at_start, revenue = self._gauges(start, end)
        return ReportData(
            start=start,
            end=end,
            availability=self._availability(figures),
            **{query.key: figures[query.key] for query in METRIC_QUERIES},
            **per_label,
            paying_at_start=paying_at_start,
            revenue=revenue,
            incidents=self._readable_incidents(start, end),
        )

    def _gauges(
        self, start: dt.datetime, end: dt.datetime
    ) -> tuple[Figure[float], Figure[Mapping[str, Revenue]]]:
        """Paying subscriptions at the start, and MRR per currency at the start and the end.

        The probe reads both gauges together, so an hour with a PayingSubscriptions reading and no
        reading for a currency had none of its MRR; an hour without one is not known at all.
        """
        currencies = self._label_values(LabelledQuery("mrr", Metric.MRR, "Currency"))
        paying_stat = self._metric_stat(self._namespace, Metric.PAYING_SUBSCRIPTIONS.value, "Average", ())
        stats = {"paying": paying_stat}
        for index, currency in enumerate(currencies):
            stats[f"mrr_{index}"] = self._metric_stat(
                self._namespace, Metric.MRR.value, "Average", (("Currency", currency),)
            )
        hourly = _read_metric_data(self._cloudwatch, stats, start, end, _GAUGE_PERIOD_SECONDS)
        paying = dict(hourly["paying"])
        if not paying:
            return Missing(NO_DATA), Missing(NO_DATA)
        first, last = min(paying), max(paying)
        read_at_start = first < start + _GAUGE_READING_WINDOW
        read_at_end = last >= end - _GAUGE_READING_WINDOW

        def reading(
            series: Mapping[dt.datetime, float], moment: dt.datetime, read: bool, where: str
        ) -> Figure[float]:
            if not read:
                return Missing(f"no gauge reading in the {where} hour")
            return Known(series.get(moment, 0.0))

        revenue = {}
        for index, currency in enumerate(currencies):
            series = dict(hourly[f"mrr_{index}"])
            if series:
                revenue[currency.lower()] = Revenue(
                    now=reading(series, last, read_at_end, "last"),
                    at_start=reading(series, first, read_at_start, "first"),
                )
        return reading(paying, first, read_at_start, "first"), Known(revenue)

    def _readable_incidents(self, start: dt.datetime, end: dt.datetime) -> Figure[Sequence[Incident]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return Known(self._incidents(start, end))
        except (BotoCoreError, ClientError) as error:
            logger.warning("Could not read the alarm history for the billing report", exc_info=True)
            return Missing(f"the alarm history could not be read ({type(error).__name__})")

    def _dimensions(self, labels: Iterable[tuple[str, str]] = ()) -> list[dict[str, str]]:
        return [
            {"Name": name, "Value": value} for name, value in ((SERVICE_DIMENSION, self._service), *labels)
        ]

    def _label_values(self, query: LabelledQuery) -> list[str]:
        wanted = {SERVICE_DIMENSION, query.label}
        values = set()
        pages = self._cloudwatch.get_paginator("list_metrics").paginate(
            Namespace=self._namespace, MetricName=query.metric.value, Dimensions=self._dimensions()
        )
        for page in pages:
            for metric in page["Metrics"]:
                dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                if set(dimensions) == wanted and dimensions[SERVICE_DIMENSION] == self._service:
                    values.add(dimensions[query.label])
        return sorted(values)

    def _metric_stats(self, labelled: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
        stats = {
            query.key: self._metric_stat(self._namespace, query.metric.value, query.stat, query.labels)
            for query in METRIC_QUERIES
        }
        for query in LABELLED_QUERIES:
            for index, value in enumerate(labelled[query.key]):
                stats[f"{query.key}_{index}"] = self._metric_stat(
                    self._namespace, query.metric.value, "Sum", ((query.label, value),)
                )
        if self._http_api_id:
            for key, metric_name in (("api_requests", "Count"), ("api_5xx", "5xx")):
                stats[key] = {
                    "Metric": {
                        "Namespace": API_GATEWAY_NAMESPACE,
                        "MetricName": metric_name,
                        "Dimensions": [{"Name": "ApiId", "Value": self._http_api_id}],
                    },
                    "Stat": "Sum",
                }
        return stats

    def _metric_stat(
        self, namespace: str, metric_name: str, stat: str, labels: Iterable[tuple[str, str]]
    ) -> dict[str, Any]:
        return {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric_name,
                "Dimensions": self._dimensions(labels),
            },
            "Stat": stat,
        }

    @staticmethod
    def _per_label(
        figures: Mapping[str, Figure[float]], key: str, values: Sequence[str]
    ) -> Figure[Mapping[str, float]]:
        counted = {
            value: figure.value
            for index, value in enumerate(values)
            if isinstance(figure := figures[f"{key}_{index}"], Known)
        }
        return Known(counted) if counted else Missing(NO_DATA)

    def _availability(self, figures: Mapping[str, Figure[float]]) -> RequestCounts:
        if self._http_api_id:
            return RequestCounts("HTTP API 5xx / Count", figures["api_requests"], figures["api_5xx"])
        # Without the API's id, every failed delivery counts as a 5xx: the cautious reading.
        return RequestCounts(
            f"{Metric.WEBHOOK_FAILED} / {Metric.WEBHOOK_RECEIVED}",
            figures["webhooks_received"],
            figures["webhooks_failed"],
        )

    def _alarms(self) -> dict[str, dict[str, Any]]:
        alarms: dict[str, dict[str, Any]] = {}
        pages = self._cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=self._alarm_prefix, AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        for page in pages:
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                alarms[alarm["AlarmName"]] = alarm
        return alarms

    def _transitions(
        self, since: dt.datetime, end: dt.datetime
    ) -> dict[str, list[tuple[dt.datetime, str, str]]]:
        """(time, old state, new state) of each of this stage's alarms, oldest first."""
        transitions: dict[str, list[tuple[dt.datetime, str, str]]] = {}
        pages = self._cloudwatch.get_paginator("describe_alarm_history").paginate(
            AlarmTypes=["MetricAlarm", "CompositeAlarm"],
            HistoryItemType="StateUpdate",
            StartDate=since,
            EndDate=end,
        )
        for page in pages:
            for item in page["AlarmHistoryItems"]:
                if not item["AlarmName"].startswith(self._alarm_prefix):
                    continue
                history = json.loads(item["HistoryData"])
                transitions.setdefault(item["AlarmName"], []).append(
                    (
                        _utc(item["Timestamp"]),
                        history["oldState"]["stateValue"],
                        history["newState"]["stateValue"],
                    )
                )
        return {name: sorted(items) for name, items in transitions.items()}

    def _incidents(self, start: dt.datetime, end: dt.datetime) -> tuple[Incident, ...]:
        since = start - self._history_lookback
        alarms = self._alarms()
        transitions = self._transitions(since, end)

        def severity(name: str) -> Severity | None:
            description = alarms.get(name, {}).get("AlarmDescription")
            try:
                return parse_alarm_description(description).severity if description else None
            except ValueError:
                return None

        # A composite's building blocks notify nobody: the composite is the incident, not each of them.
        silent = {name for name, alarm in alarms.items() if not alarm.get("AlarmActions")}
        incidents = []
        for name, changes in transitions.items():
            if name in silent:
                continue
            firing_since: dt.datetime | None = None
            before_history = False
            if changes[0][1] == _FIRING:
                firing_since, before_history = since, True
            for moment, _, new_state in changes:
                if new_state == _FIRING and firing_since is None:
                    firing_since, before_history = moment, False
                elif new_state != _FIRING and firing_since is not None:
                    incidents.append(
                        Incident(short_alarm_name(name), severity(name), firing_since, moment, before_history)
                    )
                    firing_since = None
            if firing_since is not None:
                incidents.append(
                    Incident(short_alarm_name(name), severity(name), firing_since, None, before_history)
                )
        # An alarm that has fired since before the history read has no transition in it.
        for name, alarm in alarms.items():
            if name not in transitions and name not in silent and alarm.get("StateValue") == _FIRING:
                fired_at = _utc(alarm["StateUpdatedTimestamp"])
                incidents.append(Incident(short_alarm_name(name), severity(name), fired_at, None))
        return tuple(incidents)


def _read_metric_data(
    cloudwatch: Any,
    stats: Mapping[str, dict[str, Any]],
    start: dt.datetime,
    end: dt.datetime,
    period: int,
) -> dict[str, list[tuple[dt.datetime, float]]]:
    """(period start, value) of every stat, oldest first, in as few GetMetricData calls as allowed."""
    queries = [
        {"Id": key, "MetricStat": {**stat, "Period": period}, "ReturnData": True}
        for key, stat in stats.items()
    ]
    points: dict[str, list[tuple[dt.datetime, float]]] = {key: [] for key in stats}
    for first in range(0, len(queries), _QUERIES_PER_CALL):
        request = {
            "MetricDataQueries": queries[first : first + _QUERIES_PER_CALL],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        while True:
            answer = cloudwatch.get_metric_data(**request)
            for result in answer["MetricDataResults"]:
                points[result["Id"]].extend(
                    (_utc(moment), value)
                    for moment, value in zip(result["Timestamps"], result["Values"], strict=True)
                )
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
    return {key: sorted(found) for key, found in points.items()}


# --------------------------------------------------------------------------------------------------
# Rendering


def _count(figure: Figure[float]) -> str:
    return figure.reason if isinstance(figure, Missing) else format_number(figure.value)


def _percent(figure: Figure[float], decimals: int = 1) -> str:
    return figure.reason if isinstance(figure, Missing) else f"{figure.value * 100:.{decimals}f} %"


def _duration(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    return " ".join([*parts, f"{minutes}m"])


def _time(moment: dt.datetime, zone: dt.tzinfo) -> str:
    local = _utc(moment).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def _slo_value(slo: Slo) -> str:
    if isinstance(slo.actual, Missing):
        return slo.actual.reason
    if slo.unit == "%":
        return _percent(slo.actual, 3)
    return f"{format_number(round(slo.actual.value, 1))} ms"


def _slo_target(slo: Slo) -> str:
    target = f"{slo.target * 100:g} %" if slo.unit == "%" else f"{format_number(slo.target)} ms"
    return f"{slo.comparison} {target}"


def _money(amount: float) -> str:
    return f"{amount:,.2f}"


def _mrr_line(change: MrrChange) -> str:
    now = change.now.reason if isinstance(change.now, Missing) else _money(change.now.value)
    if isinstance(change.change, Missing):
        return f"{change.currency.upper()} {now} (change: {change.change.reason})"
    sign = "+" if change.change.value >= 0 else "-"
    share = _percent(change.change_share)
    return f"{change.currency.upper()} {now} ({sign}{_money(abs(change.change.value))}, {share})"


def _mrr_lines(mrr: Figure[tuple[MrrChange, ...]]) -> list[str]:
    if isinstance(mrr, Missing):
        return [mrr.reason]
    return [_mrr_line(change) for change in mrr.value] or ["none"]


def _features_text(top: Figure[tuple[FeatureUsage, ...]]) -> str:
    if isinstance(top, Missing):
        return top.reason
    return ", ".join(f"{usage.feature} {format_number(usage.units)}" for usage in top.value)


def _churn_text(business: Business) -> str:
    if isinstance(business.paying_at_start, Missing):
        return business.paying_at_start.reason
    return f"{_percent(business.churn_rate, 2)} of {_count(business.paying_at_start)} paying at the start"


def _by_field_text(figure: Figure[Mapping[str, float]]) -> str:
    if isinstance(figure, Missing):
        return figure.reason
    total = format_number(sum(figure.value.values()))
    return f"{total} ({', '.join(f'{name} {format_number(n)}' for name, n in sorted(figure.value.items()))})"


def _incident_line(incident: Incident, until: dt.datetime, zone: dt.tzinfo) -> str:
    severity = incident.severity.value if incident.severity else "unknown severity"
    at_least = "≥ " if incident.started_before_history else ""
    duration = f"{at_least}{_duration(incident.duration(until))}"
    started = _time(incident.started_at, zone)
    if incident.cleared_at is None:
        return f"{incident.alarm} ({severity}): still firing, {duration} so far since {started}"
    return f"{incident.alarm} ({severity}): {duration}, {started} to {_time(incident.cleared_at, zone)}"


def _incident_lines(report: BillingReport) -> list[str]:
    if isinstance(report.incidents, Missing):
        return [report.incidents.reason]
    lines = [_incident_line(incident, report.end, report.zone) for incident in report.incidents.value]
    return lines or ["none"]


def _score_text(health: HealthScore) -> str:
    return f"{health.score.value}/100" if isinstance(health.score, Known) else health.score.reason


def _part_line(part: HealthPart) -> str:
    if isinstance(part.penalty, Missing):
        return f"{part.name}: not judged ({part.penalty.reason})"
    detail = f" ({part.detail})" if part.detail else ""
    return f"{part.name}: -{part.penalty.value:.1f}{detail}"


def _title(report: BillingReport) -> str:
    if report.period is ReportPeriod.WEEKLY:
        return f"Weekly billing report {report.first_day} to {report.day}"
    return f"Billing report {report.day}"


def _sections(report: BillingReport) -> list[tuple[str, list[str]]]:
    """The report as (heading, lines), the one text that every rendering lays out."""
    business = report.business
    slos = [f"{slo.name}: {_slo_value(slo)} (target {_slo_target(slo)}): {slo.status}" for slo in report.slos]
    business_lines = [
        f"Checkouts completed: {_count(business.checkouts_completed)}, "
        f"conversion {_percent(business.checkout_conversion)}",
        f"Subscriptions: {_count(business.subscriptions_new)} new, "
        f"{_count(business.subscriptions_reactivated)} reactivated, {_count(business.upgrades)} upgraded, "
        f"{_count(business.subscriptions_churned)} churned",
        f"Churn rate: {_churn_text(business)}",
        *(f"MRR: {line}" for line in _mrr_lines(business.mrr)),
        f"Payments failed: {_count(business.payments_failed)} ({_percent(business.payment_failure_rate)})",
        f"Top features: {_features_text(business.top_features)}",
        f"Accounts at or over their limit: {_count(business.accounts_at_limit)}",
    ]
    reconciliation = [
        f"Drift found: {_by_field_text(report.reconciliation.drift_by_field)}",
        f"Healed: {_by_field_text(report.reconciliation.healed_by_field)}",
    ]
    health = [
        f"Score: {_score_text(report.health)} (100 minus the parts below, within 0..100)",
        *(_part_line(part) for part in report.health.parts),
    ]
    return [
        ("SLOs", slos),
        ("Business", business_lines),
        ("Incidents", _incident_lines(report)),
        ("Reconciliation", reconciliation),
        ("Health score", health),
    ]


def _window_text(report: BillingReport) -> str:
    return f"{_time(report.start, report.zone)} to {_time(report.end, report.zone)}"


def render_console(report: BillingReport) -> str:
    lines = [f"{_title(report)}: health {_score_text(report.health)}", _window_text(report)]
    for heading, section in _sections(report):
        lines += ["", heading, *(f"  {line}" for line in section)]
    return "\n".join(lines) + "\n"


_SLACK_HEADER_LIMIT = 150
_SLACK_STATUS_EMOJI = {
    SloStatus.MET: ":white_check_mark:",
    SloStatus.MISSED: ":x:",
    SloStatus.NOT_JUDGED: ":grey_question:",
}


def render_slack(report: BillingReport) -> dict[str, Any]:
    """One incoming-webhook message: a header, a section per part of the report, the window."""
    headline = f"{_title(report)}: health {_score_text(report.health)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, _SLACK_HEADER_LIMIT)}}
    ]
    for heading, section in _sections(report):
        if heading == "SLOs":
            section = [
                f"{_SLACK_STATUS_EMOJI[slo.status]} {line}"
                for slo, line in zip(report.slos, section, strict=True)
            ]
        text = f"*{heading}*\n" + "\n".join(f"• {line}" for line in section)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": slack_text(text)}})
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(_window_text(report))}]}
    )
    return {"text": slack_text(headline), "blocks": blocks}


def render_email(report: BillingReport) -> EmailMessage:
    """The report email: the console text as the plain part, and escaped HTML."""
    subject = truncate(f"{_title(report)}: health {_score_text(report.health)}", 200)
    text = render_console(report)
    sections = "".join(
        f"<h3>{html.escape(heading)}</h3><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        + "</ul>"
        for heading, lines in _sections(report)
    )
    body = (
        f"<html><body><h2>{html.escape(subject)}</h2><p>{html.escape(_window_text(report))}</p>"
        f"{sections}<p><small>billwatch billing report</small></p></body></html>"
    )
    return EmailMessage(subject, text, body)


REPORT_SCHEMA_VERSION = "1"


def render_document(report: BillingReport) -> dict[str, Any]:
    """The report as JSON for webhook receivers: the same sections, with the score as a number."""
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "type": "billing_report",
        "period": report.period.value,
        "title": _title(report),
        "start": _utc(report.start).isoformat().replace("+00:00", "Z"),
        "end": _utc(report.end).isoformat().replace("+00:00", "Z"),
        "health_score": report.health.score.value if isinstance(report.health.score, Known) else None,
        "sections": [{"heading": heading, "lines": lines} for heading, lines in _sections(report)],
    }


def report_id(report: BillingReport) -> str:
    """The same for every delivery of one report, so a receiver can drop a redelivery."""
    return f"billing-report-{report.period.value}-{_utc(report.end):%Y%m%dT%H%MZ}"
