"""The scheduled billing report: read the window from CloudWatch, build it, send it to its receiver.

The receiver is the alert routes' ``reports.receiver`` (else the root route's). Its Slack channels
get one compact message, its email channels the text and HTML report, its webhook channels a
signed JSON document, and log channels the console text. PagerDuty pages people: a report is not
an incident, so PagerDuty channels are left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from billwatch.alerting.channels.base import Channel, DeliveryFailed
from billwatch.alerting.channels.factory import build_channel
from billwatch.alerting.channels.retry import RetryStage
from billwatch.alerting.dispatcher import AlertSecrets, load_routing
from billwatch.billing.stripe_api import (
    STRIPE_TIMEOUT_SECONDS,
    StripeApi,
    StripeErrorCode,
    configured_api_key,
)
from billwatch.core.config import AlertSettings, ReportSettings, Settings
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import bind_billing_table
from billwatch.core.observability import logger
from billwatch.licensing.overage_ledger import build_overage_ledger
from billwatch.licensing.plans import load_plan_catalog
from billwatch.licensing.quota_policy import QuotaPolicy
from billwatch.reporting.accounts import AccountsReport
from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
from billwatch.reporting.meter_reconciliation import MeterReconciler
from billwatch.reporting.model import BillingReport, Known, ReportData, ReportPeriod, report_window
from billwatch.reporting.renderers import ReportContent, report_id
from billwatch.reporting.revenue_reconciliation import DriftThreshold, RevenueReconciler
from billwatch.reporting.scoring import build_report


class ReportUndelivered(Exception):
    """No channel took the report: raised so that Lambda retries the invocation."""


@dataclass(frozen=True)
class ReportOutcome:
    report_id: str
    delivered: tuple[str, ...]  # channel types, in the receiver's order
    failed: tuple[str, ...]
    health_score: int | None


class ReportSender:
    def __init__(self, channels: Sequence[Channel[Any]], retry: RetryStage, metrics: MetricsRecorder) -> None:
        self._channels = channels
        self._retry = retry
        self._metrics = metrics

    def send(self, report: BillingReport) -> tuple[list[str], list[str]]:
        """(channels that took it, channels that did not), each failure logged and counted; the
        channels that do not carry reports are in neither."""
        delivered: list[str] = []
        failed: list[str] = []
        content = ReportContent(report)
        for channel in self._channels:
            try:
                if not self._retry.deliver(channel, content):
                    continue
            except DeliveryFailed as failure:
                logger.error(
                    "Could not deliver the billing report",
                    extra={"channel": channel.name, "detail": failure.detail, "report_id": report_id(report)},
                )
                self._metrics.add(Metric.ALERT_DELIVERY_FAILED, Channel=channel.name)
                failed.append(channel.name)
                continue
            self._metrics.add(Metric.ALERT_DELIVERED, Channel=channel.name)
            delivered.append(channel.name)
        return delivered, failed


class BillingReportJob:
    def __init__(
        self,
        source: CloudWatchReportSource,
        sender: ReportSender,
        metrics: MetricsRecorder,
        zone: dt.tzinfo,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        *,
        revenue: RevenueReconciler | None = None,
        meters: MeterReconciler | None = None,
        accounts: AccountsReport | None = None,
    ) -> None:
        self._source = source
        self._sender = sender
        self._metrics = metrics
        self._zone = zone
        self._clock = clock
        self._revenue = revenue
        self._meters = meters
        self._accounts = accounts

    def _read(
        self, period: ReportPeriod, start: dt.datetime, end: dt.datetime, now: dt.datetime
    ) -> ReportData:
        data = self._source.read(start, end, period)
        # Revenue is reconciled once a day: a weekly run would count each day's drift again.
        if period is ReportPeriod.DAILY and self._revenue is not None:
            data = dataclasses.replace(
                data, revenue_checks=self._revenue.check(start, end, data.money, data.ran_whole_window)
            )
        if period is ReportPeriod.DAILY and self._meters is not None:
            # Overage is compared as it stands when the report runs, not as of the window's end.
            data = dataclasses.replace(data, meter_checks=self._meters.check(int(now.timestamp())))
        if period is ReportPeriod.WEEKLY and self._accounts is not None:
            near_limits, cohorts = self._accounts.read()
            data = dataclasses.replace(data, near_limits=near_limits, cohorts=cohorts)
        return data

    def run(self, period: ReportPeriod, end: dt.datetime | None = None) -> ReportOutcome:
        """The report of the window that ends at ``end`` (default: now), to a minute."""
        now = (end or self._clock()).astimezone(dt.UTC).replace(second=0, microsecond=0)
        start, until = report_window(period, now)
        try:
            report = build_report(self._read(period, start, until, now), period, self._zone)
            delivered, failed = self._sender.send(report)
        finally:
            self._metrics.flush()
        outcome = ReportOutcome(
            report_id(report),
            tuple(delivered),
            tuple(failed),
            report.health.score.value if isinstance(report.health.score, Known) else None,
        )
        if not delivered:
            raise ReportUndelivered(f"no channel took the billing report {outcome.report_id}")
        logger.info("Billing report sent", extra={"outcome": dataclasses.asdict(outcome)})
        return outcome


def build_billing_report_job(
    settings: Settings,
    alert_settings: AlertSettings,
    report_settings: ReportSettings,
    cloudwatch_client: Any = None,
    deadline: Callable[[], float] | None = None,
) -> BillingReportJob:
    routing = load_routing(alert_settings)
    secrets = AlertSecrets(alert_settings)
    channels = [
        build_channel(channel, secrets, email_sender=alert_settings.email_sender)
        for channel in routing.receivers[routing.report_receiver].channels
    ]
    if cloudwatch_client is None:
        from billwatch.core import aws

        cloudwatch_client = aws.client("cloudwatch")
    source = CloudWatchReportSource(
        cloudwatch_client,
        settings.metrics_namespace,
        settings.service_name,
        stage=report_settings.stage,
        http_api_id=report_settings.http_api_id,
    )
    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)

    def count_stripe_error(code: StripeErrorCode) -> None:
        metrics.add(Metric.STRIPE_API_ERROR, Code=code.value)

    stripe = (
        StripeApi(
            configured_api_key(settings),
            settings.stripe_api_base,
            count_stripe_error,
            max_network_retries=0,
            timeout_seconds=STRIPE_TIMEOUT_SECONDS,
        )
        if settings.stripe_api_configured
        else None
    )
    threshold = DriftThreshold(report_settings.revenue_drift_percent, report_settings.revenue_drift_minimum)
    bind_billing_table(settings.billing_table)
    return BillingReportJob(
        source,
        ReportSender(channels, RetryStage(deadline=deadline), metrics),
        metrics,
        report_settings.zone,
        revenue=RevenueReconciler(stripe, threshold, metrics),
        meters=MeterReconciler(build_overage_ledger(settings), stripe, metrics),
        accounts=AccountsReport(QuotaPolicy(load_plan_catalog(settings))),
    )
