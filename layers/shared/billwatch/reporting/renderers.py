"""The billing report as the console, Slack, email and webhook receivers read it.

Every rendering lays out the same sections (``_sections``); ``ReportContent`` hands each alert
channel its form of the report.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billwatch.alerting.channels.base import EmailMessage, LogRecord, WebhookDocument
from billwatch.alerting.channels.email import SUBJECT_LIMIT
from billwatch.alerting.text import SLACK_HEADER_LIMIT, format_number, slack_escape, slack_text, truncate
from billwatch.core.severities import Severity
from billwatch.reporting.forecast import HISTORY_DAYS, HORIZON_DAYS
from billwatch.reporting.model import (
    ActionItem,
    BillingReport,
    Business,
    Cohort,
    DayPurchases,
    FeatureUsage,
    Figure,
    Forecast,
    HealthPart,
    HealthScore,
    Incident,
    Known,
    MeterCheck,
    MeterOutcome,
    MeterReconciliation,
    Missing,
    Money,
    MrrChange,
    NearLimits,
    Performance,
    ReportPeriod,
    RevenueCheck,
    Slo,
    SloStatus,
    as_utc,
)


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
    local = as_utc(moment).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def _slo_value(slo: Slo) -> str:
    if slo.unit == "%":
        return _percent(slo.actual, 3)
    return _milliseconds(slo.actual)


def _slo_target(slo: Slo) -> str:
    target = f"{slo.target * 100:g} %" if slo.unit == "%" else f"{format_number(slo.target)} ms"
    return f"{slo.comparison} {target}"


def format_money(amount: float) -> str:
    """Major units with thousands separators, e.g. ``1,234.50``: how the report writes MRR."""
    return f"{amount:,.2f}"


def mrr_line(change: MrrChange) -> str:
    now = change.now.reason if isinstance(change.now, Missing) else format_money(change.now.value)
    if isinstance(change.change, Missing):
        return f"{change.currency.upper()} {now} (change: {change.change.reason})"
    sign = "+" if change.change.value >= 0 else "-"
    share = _percent(change.change_share)
    return f"{change.currency.upper()} {now} ({sign}{format_money(abs(change.change.value))}, {share})"


def _mrr_lines(mrr: Figure[tuple[MrrChange, ...]]) -> list[str]:
    if isinstance(mrr, Missing):
        return [mrr.reason]
    return [mrr_line(change) for change in mrr.value] or ["none"]


def _paid_text(paid: Figure[Mapping[str, float]]) -> str:
    """What the paid invoices came to, per currency (ScholarLink's total purchases in money)."""
    if isinstance(paid, Missing):
        return f"amount: {paid.reason}"
    totals = [f"{currency.upper()} {format_money(amount)}" for currency, amount in sorted(paid.value.items())]
    return ", ".join(totals) or "nothing paid"


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


def _incident_counts(incidents: tuple[Incident, ...]) -> str:
    """e.g. "3 in the window: 1 critical, 2 warning, 0 info; 1 still firing"."""
    by_severity = Counter(incident.severity for incident in incidents)
    counts = [f"{by_severity[severity]} {severity.value}" for severity in Severity]
    if by_severity[None]:
        counts.append(f"{by_severity[None]} of unknown severity")
    still_firing = sum(incident.still_firing for incident in incidents)
    return f"{len(incidents)} in the window: {', '.join(counts)}; {still_firing} still firing"


def _incident_lines(report: BillingReport) -> list[str]:
    if isinstance(report.incidents, Missing):
        return [report.incidents.reason]
    if not report.incidents.value:
        return ["none"]
    return [
        _incident_counts(report.incidents.value),
        *(_incident_line(incident, report.end, report.zone) for incident in report.incidents.value),
    ]


def _milliseconds(figure: Figure[float]) -> str:
    return figure.reason if isinstance(figure, Missing) else f"{format_number(round(figure.value, 1))} ms"


def _performance_lines(performance: Performance) -> list[str]:
    peak_rps = performance.peak_requests_per_second
    rps = peak_rps.reason if isinstance(peak_rps, Missing) else format_number(round(peak_rps.value, 2))
    return [
        f"Peak requests per second: {rps} (the busiest minute's HTTP API requests / 60)",
        f"Peak latency: {_milliseconds(performance.peak_latency_p95_ms)} (the slowest 5 minutes' p95)",
    ]


def _action_lines(items: tuple[ActionItem, ...]) -> list[str]:
    return [f"{item.what}: see {item.runbook}" for item in items] or ["none"]


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
        f"Purchases: {_count(business.payments_succeeded)} payments succeeded, "
        f"{_paid_text(business.paid_by_currency)}",
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
        *_money_sections(report),
        ("Incidents", _incident_lines(report)),
        ("Performance", _performance_lines(report.performance)),
        ("Reconciliation", reconciliation),
        ("Health score", health),
        ("Action items", _action_lines(report.action_items)),
    ]


def _amount(figure: Figure[float]) -> str:
    return figure.reason if isinstance(figure, Missing) else format_money(figure.value)


def _by_plan(figure: Figure[Mapping[str, float]]) -> str:
    if isinstance(figure, Missing):
        return figure.reason
    return (
        ", ".join(f"{tier} {format_money(amount)}" for tier, amount in sorted(figure.value.items())) or "none"
    )


def _money_lines(money: Figure[Money]) -> list[str]:
    if isinstance(money, Missing):
        return [money.reason]
    lines = []
    for currency in money.value.by_currency:
        lines += [
            f"{currency.currency}: paid {_amount(currency.paid)}, refunded {_amount(currency.refunded)}, "
            f"failed invoices {_amount(currency.failed)}",
            f"{currency.currency} paid by plan: {_by_plan(currency.paid_by_plan)}",
            f"{currency.currency} MRR by plan: {_by_plan(currency.mrr_by_plan)}",
        ]
    return lines or ["no money moved"]


def _per_currency(figure: Figure[Mapping[str, float]]) -> str:
    if isinstance(figure, Missing):
        return figure.reason
    amounts = [f"{currency} {format_money(amount)}" for currency, amount in sorted(figure.value.items())]
    return ", ".join(amounts) or "nothing paid"


def _purchases_by_day_lines(days: Figure[tuple[DayPurchases, ...]], zone: dt.tzinfo) -> list[str]:
    if isinstance(days, Missing):
        return [days.reason]
    return [f"{as_utc(day.start).astimezone(zone):%Y-%m-%d}: {_per_currency(day.paid)}" for day in days.value]


def revenue_check_line(check: RevenueCheck) -> str:
    if isinstance(check.drift, Missing):
        return (
            f"{check.currency}: Stripe {format_money(check.stripe_gross)}, not compared: {check.drift.reason}"
        )
    share = f" ({check.drift.value / check.stripe_gross:+.2%})" if check.stripe_gross else ""
    verdict = "over the threshold" if check.over_threshold else "within the threshold"
    return (
        f"{check.currency}: Stripe {format_money(check.stripe_gross)}, recorded {_amount(check.recorded)}, "
        f"drift {check.drift.value:+,.2f}{share}: {verdict}"
    )


def _revenue_check_lines(checks: Figure[tuple[RevenueCheck, ...]]) -> list[str]:
    if isinstance(checks, Missing):
        return [f"not compared: {checks.reason}"]
    return [revenue_check_line(check) for check in checks.value] or ["no money moved in Stripe or billwatch"]


def _epoch(second: int) -> str:
    return f"{dt.datetime.fromtimestamp(second, dt.UTC):%Y-%m-%d %H:%M} UTC"


def meter_check_line(check: MeterCheck) -> str:
    where = (
        f"{check.stripe_customer_id} ({check.account_id}) {check.event_name}, "
        f"period from {_epoch(check.period_start)}"
    )
    if check.in_stripe is None:
        why = f" ({check.reason})" if check.reason else ""
        return f"{where}: {check.outcome.value}{why}, sent {check.sent:,}"
    return (
        f"{where}: sent {check.sent:,}, Stripe counts {check.in_stripe:,} "
        f"(drift {check.drift:+,}): {check.outcome.value}"
    )


def _meter_check_lines(checks: Figure[MeterReconciliation]) -> list[str]:
    if isinstance(checks, Missing):
        return [f"not compared: {checks.reason}"]
    reconciliation = checks.value
    counts = ", ".join(
        f"{outcome.value} {reconciliation.count(outcome)}"
        for outcome in MeterOutcome
        if reconciliation.count(outcome)
    )
    listed = [check for check in reconciliation.checks if check.outcome is not MeterOutcome.CONFIRMED]
    return [counts or "no overage units sent to Stripe awaiting confirmation"] + [
        meter_check_line(check) for check in listed
    ]


def _near_limit_lines(near: Figure[NearLimits]) -> list[str]:
    if isinstance(near, Missing):
        return [near.reason]
    lines = [
        f"{account.account_id} {account.feature}: {format_number(account.used)} of "
        f"{format_number(account.limit)} ({account.share:.0%})"
        for account in near.value.accounts
    ]
    if near.value.total > len(near.value.accounts):
        lines.append(
            f"{near.value.total - len(near.value.accounts)} more not shown (the top {near.value.shown})"
        )
    return lines or ["none"]


def _cohort_lines(cohorts: Figure[tuple[Cohort, ...]]) -> list[str]:
    if isinstance(cohorts, Missing):
        return [cohorts.reason]
    return [
        f"{cohort.month}: {cohort.started} started, {cohort.still_paying} still paying "
        f"({cohort.still_paying / cohort.started:.0%})"
        for cohort in cohorts.value
    ] or ["no subscription with a start date"]


FORECAST_METHOD = (
    f"Method: a least-squares line through the daily MRR of the last {HISTORY_DAYS} days, per currency, "
    "30, 60 and 90 days after the report's end; its error: a line fitted on the first two thirds of "
    "those days, MAPE on the last third"
)


def _forecast_lines(forecasts: Figure[tuple[Forecast, ...]]) -> list[str]:
    if isinstance(forecasts, Missing):
        return [forecasts.reason]
    lines = [FORECAST_METHOD]
    for forecast in forecasts.value:
        last = f"; last reading {forecast.last_reading:%Y-%m-%d}" if forecast.last_reading else ""
        if isinstance(unknown := forecast.months_ahead[0], Missing):
            lines.append(f"{forecast.currency}: no forecast ({unknown.reason}{last})")
            continue
        ahead = ", ".join(
            f"{days} days {_amount(value)}"
            for days, value in zip(HORIZON_DAYS, forecast.months_ahead, strict=True)
        )
        error = _percent(forecast.backtest_error)
        readings = f"{forecast.readings} days of readings{last}"
        lines.append(f"{forecast.currency}: {ahead} ({readings}; backtest MAPE {error})")
    return lines if forecasts.value else [*lines, "no MRR readings"]


def _money_sections(report: BillingReport) -> list[tuple[str, list[str]]]:
    """The money, and the weekly report's sections; each is left out of a report it is not part of."""
    sections = [("Money", _money_lines(report.money))]
    if report.purchases_by_day is not None:
        sections.append(("Purchases per day", _purchases_by_day_lines(report.purchases_by_day, report.zone)))
    if report.revenue_checks is not None:
        sections.append(("Revenue reconciliation", _revenue_check_lines(report.revenue_checks)))
    if report.meter_checks is not None:
        sections.append(("Overage billing reconciliation", _meter_check_lines(report.meter_checks)))
    if report.near_limits is not None:
        sections.append(("Accounts near or over their limits", _near_limit_lines(report.near_limits)))
    if report.cohorts is not None:
        sections.append(("Cohort retention", _cohort_lines(report.cohorts)))
    if report.forecasts is not None:
        sections.append(("MRR forecast", _forecast_lines(report.forecasts)))
    return sections


def _window_text(report: BillingReport) -> str:
    return f"{_time(report.start, report.zone)} to {_time(report.end, report.zone)}"


def render_console(report: BillingReport) -> str:
    lines = [f"{_title(report)}: health {_score_text(report.health)}", _window_text(report)]
    for heading, section in _sections(report):
        lines += ["", heading, *(f"  {line}" for line in section)]
    return "\n".join(lines) + "\n"


_SLACK_STATUS_EMOJI = {
    SloStatus.MET: ":white_check_mark:",
    SloStatus.MISSED: ":x:",
    SloStatus.NOT_JUDGED: ":grey_question:",
}


def render_slack(report: BillingReport) -> dict[str, Any]:
    """One incoming-webhook message: a header, a section per part of the report, the window."""
    headline = f"{_title(report)}: health {_score_text(report.health)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, SLACK_HEADER_LIMIT)}}
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
    subject = truncate(f"{_title(report)}: health {_score_text(report.health)}", SUBJECT_LIMIT)
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
        "start": as_utc(report.start).isoformat().replace("+00:00", "Z"),
        "end": as_utc(report.end).isoformat().replace("+00:00", "Z"),
        "health_score": report.health.score.value if isinstance(report.health.score, Known) else None,
        "sections": [{"heading": heading, "lines": lines} for heading, lines in _sections(report)],
    }


def report_id(report: BillingReport) -> str:
    """The same for every delivery of one report, so a receiver can drop a redelivery."""
    return f"billing-report-{report.period.value}-{as_utc(report.end):%Y%m%dT%H%MZ}"


@dataclass(frozen=True)
class ReportContent:
    """The report in each alert channel's form. PagerDuty pages people: a report is not an incident."""

    report: BillingReport

    def slack_message(self) -> dict[str, Any]:
        return render_slack(self.report)

    def email_message(self) -> EmailMessage:
        return render_email(self.report)

    def webhook_document(self) -> WebhookDocument:
        return WebhookDocument(render_document(self.report), report_id(self.report))

    def pagerduty_event(self) -> None:
        return None

    def log_record(self) -> LogRecord:
        return LogRecord(
            "Billing report", {"report_id": report_id(self.report), "report": render_console(self.report)}
        )
