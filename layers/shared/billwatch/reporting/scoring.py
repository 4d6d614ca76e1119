"""From ``ReportData`` to ``BillingReport``: the SLOs, the business figures and the health score."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from billwatch.alerting.text import format_number
from billwatch.core.metrics import Metric
from billwatch.core.severities import Severity
from billwatch.reporting.forecast import forecast
from billwatch.reporting.model import (
    NO_DATA,
    NO_TRAFFIC,
    ActionItem,
    ApiTraffic,
    BillingReport,
    Business,
    Comparison,
    FeatureUsage,
    Figure,
    Forecast,
    HealthPart,
    HealthScore,
    Incident,
    Known,
    Missing,
    MrrChange,
    MrrReading,
    Performance,
    Reconciliation,
    ReportData,
    ReportPeriod,
    RequestCounts,
    Revenue,
    Slo,
    SloStatus,
)

AVAILABILITY_TARGET = 0.999
P95_TARGET_MS = 500.0
ERROR_RATE_TARGET = 0.001
TOP_FEATURES = 5

# The health score's weights: points taken off 100 at a full miss (see docs/billing-report.md).
SLO_WEIGHTS = {
    "Availability": 20.0,
    "API p95 latency": 10.0,
    "API error rate": 10.0,
    "Webhook p95 latency": 10.0,
    "Webhook error rate": 15.0,
}
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
SECONDS_PER_MINUTE = 60.0
# Where an action item sends the reader first (docs/runbooks/).
RUNBOOK_INDEX = "runbooks/README.md"
SLO_RUNBOOKS = {
    "Availability": "runbooks/platform.md",
    "API p95 latency": "runbooks/platform.md",
    "API error rate": "runbooks/platform.md",
    "Webhook p95 latency": "runbooks/webhook-failures.md",
    "Webhook error rate": "runbooks/webhook-failures.md",
}


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
            "API p95 latency",
            data.api.latency_p95_ms,
            P95_TARGET_MS,
            Comparison.AT_MOST,
            "ms",
            "HTTP API Latency p95",
        ),
        Slo(
            "API error rate",
            # As ScholarLink's SLO counts it: every 4xx and 5xx is an error.
            _rate(_total(data.api.client_errors, data.api.server_errors), data.api.requests),
            ERROR_RATE_TARGET,
            Comparison.AT_MOST,
            "%",
            "HTTP API (4xx + 5xx) / Count",
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
        payments_succeeded=data.payments_succeeded,
        paid_by_currency=data.paid_by_currency,
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
    still_firing = sum(incident.still_firing for incident in incidents.value)
    penalty = min(INCIDENT_PENALTY_CAP, sum(penalties))
    detail = f"{len(penalties)} in the window, {still_firing} still firing; cap {INCIDENT_PENALTY_CAP:g}"
    return HealthPart(name, Known(penalty), detail)


def _found_and_healed(reconciliation: Reconciliation) -> Figure[tuple[float, float]]:
    drift, healed = reconciliation.drift_by_field, reconciliation.healed_by_field
    if isinstance(drift, Missing):
        return drift
    found = sum(drift.value.values())
    return Known((found, min(found, sum(healed.value.values())) if isinstance(healed, Known) else 0.0))


def _drift_part(reconciliation: Reconciliation) -> HealthPart:
    name = "Reconciliation drift"
    counts = _found_and_healed(reconciliation)
    if isinstance(counts, Missing):
        return HealthPart(name, counts, "")
    found, fixed = counts.value
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


def _performance(api: ApiTraffic) -> Performance:
    busiest = api.busiest_minute_requests
    per_second = Known(busiest.value / SECONDS_PER_MINUTE) if isinstance(busiest, Known) else busiest
    return Performance(per_second, api.peak_latency_p95_ms)


def _counted(figure: Figure[float]) -> float:
    return figure.value if isinstance(figure, Known) else 0.0


def action_items(
    slos: Sequence[Slo],
    incidents: Figure[tuple[Incident, ...]],
    data: ReportData,
    business: Business,
    reconciliation: Reconciliation,
) -> tuple[ActionItem, ...]:
    """What to look into, from what went wrong in the window: alarms that still fire or were critical,
    missed SLOs, failed webhooks, payments and quota resets, drift left unhealed."""
    items = []
    if isinstance(incidents, Missing):
        items.append(ActionItem(f"Incidents unknown: {incidents.reason}", "runbooks/platform.md"))
    else:
        # The ones still firing first: they are the ones to act on now.
        for incident in sorted(incidents.value, key=lambda incident: not incident.still_firing):
            severity = incident.severity.value if incident.severity else "unknown severity"
            if incident.still_firing:
                what = f"{incident.alarm} ({severity}) is still firing"
            elif incident.severity is Severity.CRITICAL:
                what = f"{incident.alarm} (critical) fired: review what happened"
            else:
                continue
            items.append(ActionItem(what, incident.runbook or RUNBOOK_INDEX))
    items += [
        ActionItem(f"{slo.name} missed its SLO", SLO_RUNBOOKS[slo.name])
        for slo in slos
        if slo.status is SloStatus.MISSED
    ]
    if failed := _counted(data.webhooks_failed):
        items.append(ActionItem(f"Webhooks failed: {format_number(failed)}", "runbooks/webhook-failures.md"))
    rate = business.payment_failure_rate
    if isinstance(rate, Known) and rate.value > PAYMENT_FAILURE_NORM:
        what = (
            f"Payments failed: {rate.value * 100:.1f} %, above the norm of {PAYMENT_FAILURE_NORM * 100:g} %"
        )
        items.append(ActionItem(what, "runbooks/payment-failures.md"))
    drift = _found_and_healed(reconciliation)
    if isinstance(drift, Known) and (unhealed := drift.value[0] - drift.value[1]):
        what = f"Reconciliation drift not healed: {format_number(unhealed)}"
        items.append(ActionItem(what, "runbooks/reconciliation.md"))
    if isinstance(data.revenue_checks, Known):
        items += [
            ActionItem(
                f"Revenue drift {check.currency}: billwatch recorded {check.drift.value:+,.2f} "
                f"against Stripe's gross volume of {check.stripe_gross:,.2f}",
                "runbooks/reconciliation.md",
            )
            for check in data.revenue_checks.value
            if check.over_threshold and isinstance(check.drift, Known)
        ]
    if isinstance(data.meter_checks, Known):
        items += [
            ActionItem(
                f"Overage billing drift ({check.outcome.value}): {check.stripe_customer_id} on "
                f"{check.event_name}, billwatch sent {check.sent:,}, Stripe counts "
                f"{'no meter' if check.in_stripe is None else f'{check.in_stripe:,}'}",
                "runbooks/overage-drain.md",
            )
            for check in data.meter_checks.value.drifts
        ]
    if resets_failed := _counted(data.quota_resets_failed):
        what = f"Quota reset runs failed: {format_number(resets_failed)}"
        items.append(ActionItem(what, "runbooks/quota-reset-failure.md"))
    return tuple(items)


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
        performance=_performance(data.api),
        reconciliation=reconciliation,
        health=health_score(slos, incidents, reconciliation, business),
        action_items=action_items(slos, incidents, data, business, reconciliation),
        zone=zone,
        money=data.money,
        purchases_by_day=data.purchases_by_day,
        revenue_checks=data.revenue_checks,
        meter_checks=data.meter_checks,
        near_limits=data.near_limits,
        cohorts=data.cohorts,
        forecasts=_forecasts(data.mrr_history, data.end),
    )


def _forecasts(
    history: Figure[Mapping[str, Sequence[MrrReading]]] | None, end: dt.datetime
) -> Figure[tuple[Forecast, ...]] | None:
    if history is None or isinstance(history, Missing):
        return history
    return Known(
        tuple(forecast(currency, readings, end) for currency, readings in sorted(history.value.items()))
    )
