"""Reads one window's ``ReportData`` from CloudWatch: metrics with GetMetricData, incidents from the
alarm history."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from billwatch.alerting.alarm_text import AlarmText, parse_alarm_description
from billwatch.alerting.inputs import short_alarm_name
from billwatch.core.metrics import SERVICE_DIMENSION, Metric
from billwatch.core.observability import logger
from billwatch.reporting.forecast import HISTORY_DAYS
from billwatch.reporting.model import (
    NO_DATA,
    NOT_LISTENING,
    ApiTraffic,
    CurrencyMoney,
    DayPurchases,
    Figure,
    Incident,
    Known,
    Missing,
    Money,
    MrrReading,
    ReportData,
    ReportPeriod,
    RequestCounts,
    Revenue,
    as_utc,
)


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
    MetricQuery("quota_resets_failed", Metric.QUOTA_RESET_FAILED, "Sum"),
)
LABELLED_QUERIES = (
    LabelledQuery("usage_by_feature", Metric.USAGE_COUNTED, "Feature"),
    LabelledQuery("paid_by_currency", Metric.PAYMENT_AMOUNT, "Currency"),
    LabelledQuery("drift_by_field", Metric.RECONCILE_DRIFT, "Field"),
    LabelledQuery("healed_by_field", Metric.RECONCILE_HEALED, "Field"),
)
API_GATEWAY_NAMESPACE = "AWS/ApiGateway"
# What HTTP APIs publish, per ApiId: (query id, metric name, stat) over the whole window.
API_QUERIES = (
    ("api_requests", "Count", "Sum"),
    ("api_4xx", "4xx", "Sum"),
    ("api_5xx", "5xx", "Sum"),
    ("api_latency_p95", "Latency", "p95"),
)
# The peaks: the busiest minute's requests, and the slowest 5 minutes' p95 (a minute's p95 over a
# handful of requests is one slow request).
_BUSIEST_PERIOD_SECONDS = 60
_PEAK_LATENCY_PERIOD_SECONDS = 300
NO_API_ID = "the HTTP API's id is not configured (HTTP_API_ID)"
_QUERIES_PER_CALL = 500  # GetMetricData's limit
_PERCENTILE_PREFIX = "p"  # p95, p99.9
# The probe reads the gauges every few minutes: hourly averages, the first and last of the window.
_GAUGE_PERIOD_SECONDS = 3600
_GAUGE_READING_WINDOW = dt.timedelta(hours=1)
_FIRING = "ALARM"
_DAY_SECONDS = 86400
MONEY = (
    ("paid", Metric.PAYMENT_AMOUNT),
    ("refunded", Metric.REFUND_AMOUNT),
    ("failed", Metric.PAYMENT_FAILED_AMOUNT),
)


@dataclass(frozen=True)
class Gauges:
    """What the health probe's gauges say about the window."""

    paying_at_start: Figure[float]
    revenue: Figure[Mapping[str, Revenue]]
    plan_mrr: Figure[Mapping[str, Mapping[str, float]]]  # currency -> tier -> MRR, the last hour
    read_at_start: bool  # the probe ran in the window's first hour: billwatch ran the whole window


def _combined(stat: str, values: Sequence[float]) -> Figure[float]:
    """One figure from the datapoints of a window read as one period (one datapoint, as a rule)."""
    if not values:
        return Missing(NO_DATA)
    # Percentiles of parts do not add up; the highest is the cautious reading.
    return Known(max(values) if stat.startswith(_PERCENTILE_PREFIX) else sum(values))


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

    def read(
        self, start: dt.datetime, end: dt.datetime, period: ReportPeriod = ReportPeriod.DAILY
    ) -> ReportData:
        labelled = {query.key: self._label_values(query) for query in LABELLED_QUERIES}
        stats = self._metric_stats(labelled)
        window = int((end - start).total_seconds())
        figures = {
            key: _combined(stats[key]["Stat"], [value for _, value in points])
            for key, points in _read_metric_data(self._cloudwatch, stats, start, end, window).items()
        }
        # Each ReportData field has its own figure type: the keyword splats are checked by the tests.
        measured: dict[str, Any] = {query.key: figures[query.key] for query in METRIC_QUERIES}
        per_label: dict[str, Any] = {
            query.key: self._per_label(figures, query.key, values)
            for query, values in zip(LABELLED_QUERIES, labelled.values(), strict=True)
        }
        gauges = self._gauges(start, end)
        weekly = period is ReportPeriod.WEEKLY
        return ReportData(
            start=start,
            end=end,
            availability=self._availability(figures),
            api=self._api_traffic(figures, start, end),
            **measured,
            **per_label,
            paying_at_start=gauges.paying_at_start,
            revenue=gauges.revenue,
            ran_whole_window=gauges.read_at_start,
            incidents=self._readable_incidents(start, end),
            money=self._money(start, end, figures["webhooks_received"], gauges),
            purchases_by_day=self._purchases_by_day(start, end) if weekly else None,
            mrr_history=self._mrr_history(end) if weekly else None,
        )

    def _money(
        self, start: dt.datetime, end: dt.datetime, webhooks_received: Figure[float], gauges: Gauges
    ) -> Figure[Money]:
        """Paid, refunded and failed amounts per currency, paid per plan, and MRR per plan.

        billwatch counts money only when an invoice is paid or fails or a charge is refunded, so
        beside webhooks received in the window an amount without datapoints is 0; without any
        webhook, billwatch was not listening and nothing is known.
        """
        listening = isinstance(webhooks_received, Known) and webhooks_received.value > 0
        currencies = {
            name: self._label_values(LabelledQuery(name, metric, "Currency")) for name, metric in MONEY
        }
        plans = self._label_combinations(Metric.PAYMENT_AMOUNT, ("Currency", "Tier"))
        stats = {
            f"{name}_{index}": self._metric_stat(
                self._namespace, metric.value, "Sum", (("Currency", currency),)
            )
            for name, metric in MONEY
            for index, currency in enumerate(currencies[name])
        }
        for index, (currency, tier) in enumerate(plans):
            stats[f"plan_{index}"] = self._metric_stat(
                self._namespace, Metric.PAYMENT_AMOUNT.value, "Sum", (("Currency", currency), ("Tier", tier))
            )
        window = int((end - start).total_seconds())
        points = _read_metric_data(self._cloudwatch, stats, start, end, window)
        amounts: dict[tuple[str, str], float] = {
            (name, currency): sum(value for _, value in points[f"{name}_{index}"])
            for name, _ in MONEY
            for index, currency in enumerate(currencies[name])
            if points[f"{name}_{index}"]
        }
        paid_by_plan: dict[str, dict[str, float]] = {}
        for index, (currency, tier) in enumerate(plans):
            if points[f"plan_{index}"]:
                paid_by_plan.setdefault(currency, {})[tier] = sum(
                    value for _, value in points[f"plan_{index}"]
                )
        plan_mrr = gauges.plan_mrr
        seen = {currency for _, currency in amounts} | set(paid_by_plan)
        if isinstance(plan_mrr, Known):
            seen |= set(plan_mrr.value)
        if not seen and not listening:
            return Missing(NOT_LISTENING)
        unknown = Missing(NOT_LISTENING)

        def amount(name: str, currency: str) -> Figure[float]:
            if (name, currency) in amounts:
                return Known(amounts[name, currency])
            return Known(0.0) if listening else unknown

        def by_plan(currency: str) -> Figure[Mapping[str, float]]:
            if currency in paid_by_plan:
                return Known(paid_by_plan[currency])
            return Known({}) if listening else unknown

        def mrr_by_plan(currency: str) -> Figure[Mapping[str, float]]:
            return Known(plan_mrr.value.get(currency, {})) if isinstance(plan_mrr, Known) else plan_mrr

        return Known(
            Money(
                tuple(
                    CurrencyMoney(
                        currency,
                        paid=amount("paid", currency),
                        refunded=amount("refunded", currency),
                        failed=amount("failed", currency),
                        paid_by_plan=by_plan(currency),
                        mrr_by_plan=mrr_by_plan(currency),
                    )
                    for currency in sorted(seen)
                ),
                listening=listening,
            )
        )

    def _purchases_by_day(self, start: dt.datetime, end: dt.datetime) -> Figure[tuple[DayPurchases, ...]]:
        """PaymentAmount per currency in each 24 hours of the window; a day without a webhook received
        was a day billwatch did not listen, and is not known."""
        currencies = self._label_values(LabelledQuery("paid", Metric.PAYMENT_AMOUNT, "Currency"))
        stats = {"received": self._metric_stat(self._namespace, Metric.WEBHOOK_RECEIVED.value, "Sum", ())}
        for index, currency in enumerate(currencies):
            stats[f"paid_{index}"] = self._metric_stat(
                self._namespace, Metric.PAYMENT_AMOUNT.value, "Sum", (("Currency", currency),)
            )
        daily = _read_metric_data(self._cloudwatch, stats, start, end, _DAY_SECONDS)
        received = dict(daily["received"])
        paid = {currency: dict(daily[f"paid_{index}"]) for index, currency in enumerate(currencies)}
        days = []
        day = start
        while day < end:
            found = {currency: series[day] for currency, series in paid.items() if day in series}
            if found or received.get(day, 0) > 0:
                days.append(
                    DayPurchases(day, Known({currency: found.get(currency, 0.0) for currency in paid}))
                )
            else:
                days.append(DayPurchases(day, Missing(NOT_LISTENING)))
            day += dt.timedelta(seconds=_DAY_SECONDS)
        return Known(tuple(days))

    def _mrr_history(self, end: dt.datetime) -> Figure[Mapping[str, Sequence[MrrReading]]]:
        """The daily average of MRR per currency over the forecast's history. The probe reads the
        gauges together (see _gauges), so a day with a PayingSubscriptions reading and none of a
        currency's MRR had 0 of it; a day without either is left out, never read as 0."""
        currencies = self._label_values(LabelledQuery("mrr", Metric.MRR, "Currency"))
        stats = {
            f"mrr_{index}": self._metric_stat(
                self._namespace, Metric.MRR.value, "Average", (("Currency", c),)
            )
            for index, c in enumerate(currencies)
        }
        stats["paying"] = self._metric_stat(self._namespace, Metric.PAYING_SUBSCRIPTIONS.value, "Average", ())
        start = end - dt.timedelta(days=HISTORY_DAYS)
        daily = _read_metric_data(self._cloudwatch, stats, start, end, _DAY_SECONDS)
        probed = {day for day, _ in daily["paying"]}
        history = {}
        for index, currency in enumerate(currencies):
            mrr = dict(daily[f"mrr_{index}"])
            history[currency] = [MrrReading(day, mrr.get(day, 0.0)) for day in sorted(probed | set(mrr))]
        return Known({currency: readings for currency, readings in history.items() if readings})

    def _gauges(self, start: dt.datetime, end: dt.datetime) -> Gauges:
        """Paying subscriptions at the start, MRR per currency at the start and the end, and MRR per
        currency and plan at the end.

        The probe reads the gauges together, so an hour with a PayingSubscriptions reading and no
        reading for a currency had none of its MRR; an hour without one is not known at all.
        """
        currencies = self._label_values(LabelledQuery("mrr", Metric.MRR, "Currency"))
        plans = self._label_combinations(Metric.PLAN_MRR, ("Currency", "Tier"))
        paying_stat = self._metric_stat(self._namespace, Metric.PAYING_SUBSCRIPTIONS.value, "Average", ())
        stats = {"paying": paying_stat}
        for index, currency in enumerate(currencies):
            stats[f"mrr_{index}"] = self._metric_stat(
                self._namespace, Metric.MRR.value, "Average", (("Currency", currency),)
            )
        for index, (currency, tier) in enumerate(plans):
            stats[f"plan_{index}"] = self._metric_stat(
                self._namespace, Metric.PLAN_MRR.value, "Average", (("Currency", currency), ("Tier", tier))
            )
        hourly = _read_metric_data(self._cloudwatch, stats, start, end, _GAUGE_PERIOD_SECONDS)
        paying = dict(hourly["paying"])
        if not paying:
            return Gauges(Missing(NO_DATA), Missing(NO_DATA), Missing(NO_DATA), read_at_start=False)
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
        plan_mrr: Figure[Mapping[str, Mapping[str, float]]] = Missing("no gauge reading in the last hour")
        if read_at_end:
            by_plan: dict[str, dict[str, float]] = {}
            for index, (currency, tier) in enumerate(plans):
                if last_value := dict(hourly[f"plan_{index}"]).get(last):
                    by_plan.setdefault(currency, {})[tier] = last_value
            plan_mrr = Known(by_plan)
        return Gauges(reading(paying, first, read_at_start, "first"), Known(revenue), plan_mrr, read_at_start)

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
        return [values[0] for values in self._label_combinations(query.metric, (query.label,))]

    def _label_combinations(self, metric: Metric, labels: tuple[str, ...]) -> list[tuple[str, ...]]:
        """The values of the labels that billwatch emitted together (ListMetrics: the last 2 weeks)."""
        wanted = {SERVICE_DIMENSION, *labels}
        values = set()
        pages = self._cloudwatch.get_paginator("list_metrics").paginate(
            Namespace=self._namespace, MetricName=metric.value, Dimensions=self._dimensions()
        )
        for page in pages:
            for found in page["Metrics"]:
                dimensions = {d["Name"]: d["Value"] for d in found.get("Dimensions", [])}
                if set(dimensions) == wanted and dimensions[SERVICE_DIMENSION] == self._service:
                    values.add(tuple(dimensions[label] for label in labels))
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
            for key, metric_name, stat in API_QUERIES:
                stats[key] = self._api_stat(self._http_api_id, metric_name, stat)
        return stats

    @staticmethod
    def _api_stat(api_id: str, metric_name: str, stat: str) -> dict[str, Any]:
        return {
            "Metric": {
                "Namespace": API_GATEWAY_NAMESPACE,
                "MetricName": metric_name,
                "Dimensions": [{"Name": "ApiId", "Value": api_id}],
            },
            "Stat": stat,
        }

    def _api_traffic(
        self, figures: Mapping[str, Figure[float]], start: dt.datetime, end: dt.datetime
    ) -> ApiTraffic:
        if not self._http_api_id:
            unknown = Missing(NO_API_ID)
            return ApiTraffic(unknown, unknown, unknown, unknown, unknown, unknown)
        peak_latency = {
            **self._api_stat(self._http_api_id, "Latency", "p95"),
            "Period": _PEAK_LATENCY_PERIOD_SECONDS,
        }
        peaks = _read_metric_data(
            self._cloudwatch,
            {"busiest": self._api_stat(self._http_api_id, "Count", "Sum"), "peak_latency": peak_latency},
            start,
            end,
            _BUSIEST_PERIOD_SECONDS,
        )

        def highest(key: str) -> Figure[float]:
            return Known(max(value for _, value in peaks[key])) if peaks[key] else Missing(NO_DATA)

        return ApiTraffic(
            requests=figures["api_requests"],
            client_errors=figures["api_4xx"],
            server_errors=figures["api_5xx"],
            latency_p95_ms=figures["api_latency_p95"],
            busiest_minute_requests=highest("busiest"),
            peak_latency_p95_ms=highest("peak_latency"),
        )

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
                        as_utc(item["Timestamp"]),
                        history["oldState"]["stateValue"],
                        history["newState"]["stateValue"],
                    )
                )
        return {name: sorted(items) for name, items in transitions.items()}

    def _incidents(self, start: dt.datetime, end: dt.datetime) -> tuple[Incident, ...]:
        since = start - self._history_lookback
        alarms = self._alarms()
        transitions = self._transitions(since, end)

        def described(name: str) -> AlarmText | None:
            description = alarms.get(name, {}).get("AlarmDescription")
            try:
                return parse_alarm_description(description) if description else None
            except ValueError:
                return None

        def incident(name: str, started: dt.datetime, cleared: dt.datetime | None, before: bool) -> Incident:
            text = described(name)
            return Incident(
                short_alarm_name(name),
                text.severity if text else None,
                started,
                cleared,
                before,
                text.runbook if text else None,
            )

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
                    incidents.append(incident(name, firing_since, moment, before_history))
                    firing_since = None
            if firing_since is not None:
                incidents.append(incident(name, firing_since, None, before_history))
        # An alarm that has fired since before the history read has no transition in it.
        for name, alarm in alarms.items():
            if name not in transitions and name not in silent and alarm.get("StateValue") == _FIRING:
                fired_at = as_utc(alarm["StateUpdatedTimestamp"])
                incidents.append(incident(name, fired_at, None, False))
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
        # A stat may carry its own Period: GetMetricData takes each query's own.
        {"Id": key, "MetricStat": {"Period": period, **stat}, "ReturnData": True}
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
                    (as_utc(moment), value)
                    for moment, value in zip(result["Timestamps"], result["Values"], strict=True)
                )
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
    return {key: sorted(found) for key, found in points.items()}
