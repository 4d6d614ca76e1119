"""The health probe: checks of everything billwatch depends on, run on a schedule and on request.

Knows nothing of API Gateway or EventBridge. A scheduled run emits the metrics the alarms read
and stores its report as a snapshot; the shallow health answer reads that snapshot, the deep one
runs the checks now (cached briefly, and without metrics, so a public route cannot hammer Stripe
or skew the alarms).

Reports hold a fixed vocabulary only: check names, statuses, numbers and error codes, never a
table name, queue URL, key, exception message or trace. The logs carry the details.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from itertools import islice
from typing import Any, Protocol
from urllib.parse import urlsplit

from billwatch.billing.revenue import major_units
from billwatch.billing.stripe_api import (
    STRIPE_TIMEOUT_SECONDS,
    StripeApi,
    StripeApiFailure,
    configured_api_key,
)
from billwatch.billing.webhook_marker import WebhookArrivals
from billwatch.core.business_hours import BusinessHours
from billwatch.core.config import Settings
from billwatch.core.metrics import Metric, MetricPoint, MetricsRecorder
from billwatch.core.models import (
    BillingAccount,
    HealthSnapshot,
    JobCheckpoint,
    UsageReceipt,
    bind_billing_table,
    bind_idempotency_table,
)
from billwatch.core.observability import logger
from billwatch.licensing.plans import PlanCatalog, load_plan_catalog
from billwatch.licensing.quota_reset import (
    SCHEDULE_CHECKPOINT,
    SCHEDULE_SECONDS,
    run_id_of,
    segment_checkpoint,
)

SNAPSHOT_KEY = "health#last-probe"
# The JobCheckpoint whose updated_at is the probe's first run: when the stack began to be watched.
WATCHING_SINCE = "health#watching-since"
# A key no item ever has: reading it proves the table answers, with GetItem rights only.
REACHABILITY_KEY = "health#reachability"
STALE_AFTER_INTERVALS = 3
DEEP_CACHE_SECONDS = 30.0
UNREACHABLE = "unreachable"


class CheckStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class HealthStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class CheckName(StrEnum):
    STRIPE_API = "stripe_api"
    STRIPE_WEBHOOK_ENDPOINT = "stripe_webhook_endpoint"
    DYNAMODB = "dynamodb"
    WEBHOOK_FRESHNESS = "webhook_freshness"
    QUOTA_RESET = "quota_reset"
    DEAD_LETTER_QUEUES = "dead_letter_queues"


PROBE = "probe"  # the shallow answer's own entry: how old the snapshot it reports is


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    details: Mapping[str, Any] = field(default_factory=dict)
    # Metrics beyond HealthCheck and its latency; only scheduled runs emit them.
    points: tuple[MetricPoint, ...] = ()


SKIPPED = CheckResult(CheckStatus.SKIPPED)
# Said in /health and on the dashboard: without a key, these go unseen and their alarms cannot fire.
WITHOUT_STRIPE_KEY = CheckResult(
    CheckStatus.SKIPPED,
    {
        "reason": "no_stripe_key",
        "cannot_see": [
            "whether the Stripe API answers",
            "whether Stripe's webhook endpoint is enabled and points here",
            "events Stripe failed to deliver (StripeWebhookDown cannot fire)",
        ],
    },
)


def passed_if(healthy: bool, details: Mapping[str, Any], points: Sequence[MetricPoint] = ()) -> CheckResult:
    return CheckResult(CheckStatus.OK if healthy else CheckStatus.FAILED, details, tuple(points))


class Check(Protocol):
    name: CheckName

    def run(self, now: float) -> CheckResult: ...


def overall_status(check_statuses: Mapping[str, str]) -> HealthStatus:
    """Down without DynamoDB (nothing works); degraded when anything else failed."""
    if check_statuses.get(CheckName.DYNAMODB) == CheckStatus.FAILED:
        return HealthStatus.DOWN
    if CheckStatus.FAILED in check_statuses.values():
        return HealthStatus.DEGRADED
    return HealthStatus.OK


def http_status(status: HealthStatus) -> int:
    return 503 if status is HealthStatus.DOWN else 200


def _unreachable(name: CheckName) -> CheckResult:
    logger.warning("Health check could not reach its dependency", extra={"check": name.value}, exc_info=True)
    return CheckResult(CheckStatus.FAILED, {"error": UNREACHABLE})


# --------------------------------------------------------------------------- the checks


class StripeApiCheck:
    name = CheckName.STRIPE_API

    def __init__(self, api: StripeApi | None) -> None:
        self._api = api

    def run(self, now: float) -> CheckResult:
        if self._api is None:
            return WITHOUT_STRIPE_KEY
        try:
            self._api.check_access()
        except StripeApiFailure as failure:
            return _stripe_failed(self.name, failure, {})
        except Exception:  # the key itself could not be read (Secrets Manager)
            return _unreachable(self.name)
        return CheckResult(CheckStatus.OK)


class DynamoDbCheck:
    name = CheckName.DYNAMODB

    def run(self, now: float) -> CheckResult:
        for model in (BillingAccount, UsageReceipt):  # the billing-state and idempotency tables
            try:
                model.get(REACHABILITY_KEY)
            except model.DoesNotExist:
                continue
            except Exception:
                return _unreachable(self.name)
        return CheckResult(CheckStatus.OK)


class WebhookFreshnessCheck:
    """Quiet, then stalled: no webhook for the quiet (early) or the stall (late) window of business
    time, while customers are at work now. Failed only once stalled: quiet is a warning."""

    name = CheckName.WEBHOOK_FRESHNESS

    def __init__(
        self, arrivals: WebhookArrivals, hours: BusinessHours, stall_seconds: int, quiet_seconds: int
    ) -> None:
        self._arrivals = arrivals
        self._hours = hours
        self._stall_seconds = stall_seconds
        self._quiet_seconds = quiet_seconds

    def _business_silence(self, last_received: float, now: float) -> float:
        """Business seconds since the last webhook, counted only while customers are at work now."""
        return self._hours.seconds_between(last_received, now) if self._hours.contains(now) else 0.0

    def stalled(self, last_received: float, now: float) -> bool:
        return self._business_silence(last_received, now) >= self._stall_seconds

    def run(self, now: float) -> CheckResult:
        try:
            last = self._arrivals.last_received()
        except Exception:
            return _unreachable(self.name)
        if last is None:  # nothing received since the marker was introduced: unknown, not silent
            silent = (MetricPoint(Metric.WEBHOOKS_STALLED, 0), MetricPoint(Metric.WEBHOOKS_QUIET, 0))
            return CheckResult(
                CheckStatus.OK, {"age_seconds": None, "quiet": False, "stalled": False}, silent
            )
        age = max(0, int(now) - last)
        silence = self._business_silence(last, now)
        stalled, quiet = silence >= self._stall_seconds, silence >= self._quiet_seconds
        points = [
            MetricPoint(Metric.TIME_SINCE_LAST_WEBHOOK, age),
            MetricPoint(Metric.WEBHOOKS_QUIET, int(quiet)),
            MetricPoint(Metric.WEBHOOKS_STALLED, int(stalled)),
        ]
        return passed_if(not stalled, {"age_seconds": age, "quiet": quiet, "stalled": stalled}, points)


class EndpointState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # Stripe disables an endpoint that keeps failing, or someone did
    ELSEWHERE = "elsewhere"  # endpoints exist, none with this stack's URL: Stripe delivers elsewhere
    MISSING = "missing"


# One page of Stripe's list: enough to tell "some" from "many", and one request per run.
DELIVERY_FAILURES_COUNTED = 100
# Stripe allows 16 webhook endpoints per account; a list that claims more is not followed.
ENDPOINTS_READ = 16


class StripeWebhookEndpointCheck:
    """What Stripe says of its deliveries: whether the endpoint with this stack's URL is enabled, and
    how many recent events it failed to deliver (``delivery_success=false``).

    Without a configured URL (a local run), any endpoint of the account is taken as this stack's.
    """

    name = CheckName.STRIPE_WEBHOOK_ENDPOINT

    def __init__(self, api: StripeApi | None, endpoint_url: str | None, lookback_seconds: int) -> None:
        self._api = api
        self._endpoint_url = endpoint_url
        self._lookback_seconds = lookback_seconds

    def _state(self, endpoints: Sequence[Mapping[str, Any]]) -> EndpointState:
        ours = [
            e for e in endpoints if self._endpoint_url is None or _same_url(e.get("url"), self._endpoint_url)
        ]
        if any(endpoint.get("status") == "enabled" for endpoint in ours):
            return EndpointState.ENABLED
        if ours:
            return EndpointState.DISABLED
        return EndpointState.ELSEWHERE if endpoints else EndpointState.MISSING

    def run(self, now: float) -> CheckResult:
        if self._api is None:
            return WITHOUT_STRIPE_KEY
        try:
            state = self._state(list(islice(self._api.webhook_endpoints(), ENDPOINTS_READ)))
        except StripeApiFailure as failure:
            return _stripe_failed(self.name, failure, {})
        except Exception:
            return _unreachable(self.name)
        if state is not EndpointState.ENABLED:
            logger.error("Stripe is not delivering webhooks to this stack", extra={"endpoint": state.value})
        # Said before the events are read: a disabled endpoint must page even if that read fails.
        points = [
            MetricPoint(Metric.WEBHOOK_ENDPOINT_DISABLED, int(state is EndpointState.DISABLED)),
            # Until someone registers the stack's URL (a new stack): a warning, never a page.
            MetricPoint(
                Metric.WEBHOOK_ENDPOINT_MISSING,
                int(state in (EndpointState.ELSEWHERE, EndpointState.MISSING)),
            ),
        ]
        details: dict[str, Any] = {
            "endpoint": state.value,
            "url_checked": self._endpoint_url is not None,
            "lookback_seconds": self._lookback_seconds,
        }
        try:
            undelivered = self._api.events(int(now) - self._lookback_seconds, undelivered_only=True)
            failures = sum(1 for _ in islice(undelivered, DELIVERY_FAILURES_COUNTED))
        except StripeApiFailure as failure:
            return _stripe_failed(self.name, failure, details, points)
        except Exception:
            unreachable = _unreachable(self.name)
            return CheckResult(CheckStatus.FAILED, {**details, **unreachable.details}, tuple(points))
        points.append(MetricPoint(Metric.WEBHOOK_DELIVERY_FAILURES, failures))
        details["undelivered_events"] = failures
        return passed_if(state is EndpointState.ENABLED and failures == 0, details, points)


def _same_url(listed: Any, configured: str) -> bool:
    """The same endpoint URL whatever the case of its scheme and host and a trailing slash."""
    if not isinstance(listed, str):
        return False
    return _url_key(listed) == _url_key(configured)


def _url_key(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url.strip())
    return (
        parts.scheme.lower(),
        parts.netloc.lower(),
        parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else ""),
    )


def _stripe_failed(
    name: CheckName, failure: StripeApiFailure, details: Mapping[str, Any], points: Sequence[MetricPoint] = ()
) -> CheckResult:
    """A Stripe read that failed: counted as a Stripe API error (a key without a permission this check
    needs keeps StripeAPIErrorRate firing), with what the check did learn."""
    logger.warning("Stripe API health check failed", extra={"check": name.value, "code": failure.code.value})
    error = MetricPoint(Metric.STRIPE_API_ERROR, labels={"Code": failure.code.value})
    return CheckResult(CheckStatus.FAILED, {**details, "error": failure.code.value}, (*points, error))


class QuotaResetState(StrEnum):
    WAITING = "waiting"  # the schedule has not started a run yet, and was not due to
    RUNNING = "running"
    FINISHED = "finished"
    UNFINISHED = "unfinished"  # started, but not every segment finished within the grace period
    NEVER_STARTED = "never_started"  # the first run was due and did not start
    STOPPED = "stopped"  # runs started before, and the next one did not start on time


class QuotaResetCheck:
    """The quota reset keeps to its schedule, judged by when the schedule really starts runs.

    An EventBridge rate counts from when its rule was created, so the hourly run may start at any
    minute of the hour, and the first one an hour after the rule was created. Each run must finish
    within the grace period of its start, and the next must start within the grace period of being
    due, one interval later. Before the first start, the first run is due one interval after the
    probe first ran: a fresh stack is waiting, not failing.
    """

    name = CheckName.QUOTA_RESET

    def __init__(self, segments: int, grace_seconds: int) -> None:
        self._segments = segments
        self._grace_seconds = grace_seconds

    def run(self, now: float) -> CheckResult:
        try:
            started, watched_from, finished = self._read(now)
        except Exception:
            return _unreachable(self.name)
        if started is None:
            return self._before_the_first_start(now, watched_from)
        run_id = run_id_of(started.isoformat())
        started_at = started.timestamp()
        if now >= started_at + SCHEDULE_SECONDS + self._grace_seconds:
            state = QuotaResetState.STOPPED
        elif finished == self._segments:
            state = QuotaResetState.FINISHED
        elif now < started_at + self._grace_seconds:
            state = QuotaResetState.RUNNING
        else:
            state = QuotaResetState.UNFINISHED
        details = {
            "state": state.value,
            "run": run_id,
            "segments": self._segments,
            "segments_finished": finished,
            "started_seconds_ago": max(0, int(now - started_at)),
        }
        healthy = state in (QuotaResetState.RUNNING, QuotaResetState.FINISHED)
        return passed_if(healthy, details)

    def _before_the_first_start(self, now: float, watched_from: float) -> CheckResult:
        first_due = watched_from + SCHEDULE_SECONDS
        state = QuotaResetState.WAITING
        if now >= first_due + self._grace_seconds:
            state = QuotaResetState.NEVER_STARTED
        details = {"state": state.value, "run": None, "segments": self._segments, "segments_finished": 0}
        return passed_if(state is QuotaResetState.WAITING, details)

    def _read(self, now: float) -> tuple[dt.datetime | None, float, int]:
        """The last start, when the probe began watching, and the start's finished segments.

        One BatchGetItem, run every minute: the start is not known before it is read, so the
        segments of every run that could still be judged (started within an interval and the
        grace period of now) are read with it.
        """
        hours_back = math.ceil((SCHEDULE_SECONDS + self._grace_seconds) / 3600) + 1
        runs = [
            run_id_of(dt.datetime.fromtimestamp(now - hours * 3600, dt.UTC).isoformat())
            for hours in range(hours_back + 1)
        ]
        schedule, watching = JobCheckpoint.key(SCHEDULE_CHECKPOINT), JobCheckpoint.key(WATCHING_SINCE)
        segments = {
            run: [JobCheckpoint.key(segment_checkpoint(run, n)) for n in range(self._segments)]
            for run in runs
        }
        keys = [schedule, watching, *(key for run_keys in segments.values() for key in run_keys)]
        found = {item.pk: item for item in JobCheckpoint.batch_get(keys, consistent_read=True)}
        started = found[schedule].updated_at if schedule in found else None
        if watching in found:
            watched_from = found[watching].updated_at.timestamp()
        else:
            JobCheckpoint(watching, updated_at=dt.datetime.fromtimestamp(now, dt.UTC)).save()
            watched_from = now
        run_keys = segments.get(run_id_of(started.isoformat()), []) if started else []
        finished = sum(1 for key in run_keys if key in found and found[key].finished)
        return started, watched_from, finished


class DeadLetterQueueCheck:
    name = CheckName.DEAD_LETTER_QUEUES

    def __init__(self, queue_urls: Mapping[str, str]) -> None:
        self._queue_urls = queue_urls  # Queue dimension value -> URL

    @cached_property
    def _sqs(self) -> Any:
        from botocore.config import Config

        from billwatch.core import aws

        # A probe that waits out the SDK's default retries and timeouts would miss its own schedule.
        return aws.client(
            "sqs", config=Config(connect_timeout=3, read_timeout=3, retries={"max_attempts": 2})
        )

    def run(self, now: float) -> CheckResult:
        if not self._queue_urls:
            return SKIPPED
        depths: dict[str, int] = {}
        try:
            for queue, url in self._queue_urls.items():
                attributes = self._sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                depths[queue] = int(attributes["ApproximateNumberOfMessages"])
        except Exception:
            return _unreachable(self.name)
        points = [
            MetricPoint(Metric.DEAD_LETTER_QUEUE_DEPTH, depth, {"Queue": queue})
            for queue, depth in depths.items()
        ]
        return passed_if(not any(depths.values()), {"messages": depths}, points)


class ActiveSubscriptionsGauge:
    """Live subscriptions per tier (zeros included), the paying ones, and MRR per currency, read off
    the sparse index.

    The index holds only live subscriptions, with what each adds to MRR: reading it costs the live
    subscriptions' keys, never a scan of the table.
    """

    def __init__(self, catalog: PlanCatalog) -> None:
        self._catalog = catalog

    def points(self) -> list[MetricPoint]:
        counts: dict[str, int] = {}
        plan_mrr: dict[tuple[str, str], int] = {}
        paying = 0
        try:
            for tier in self._catalog.tiers:
                counts[tier.name] = 0
                for account in BillingAccount.active_subscriptions_by_tier.query(tier.name):
                    counts[tier.name] += 1
                    if account.mrr is not None and account.mrr_currency:
                        paying += 1
                        key = (account.mrr_currency, tier.name)
                        plan_mrr[key] = plan_mrr.get(key, 0) + int(account.mrr)
        except Exception:
            logger.warning("Could not count the active subscriptions", exc_info=True)
            return []
        mrr: dict[str, int] = {}
        for (currency, _tier), amount in plan_mrr.items():
            mrr[currency] = mrr.get(currency, 0) + amount
        points = [MetricPoint(Metric.ACTIVE_SUBSCRIPTIONS, n, {"Tier": tier}) for tier, n in counts.items()]
        points.append(MetricPoint(Metric.PAYING_SUBSCRIPTIONS, paying))
        points += [
            MetricPoint(Metric.MRR, float(major_units(amount, currency)), {"Currency": currency.upper()})
            for currency, amount in sorted(mrr.items())
        ]
        points += [
            MetricPoint(
                Metric.PLAN_MRR,
                float(major_units(amount, currency)),
                {"Currency": currency.upper(), "Tier": tier},
            )
            for (currency, tier), amount in sorted(plan_mrr.items())
        ]
        return points


# ------------------------------------------------------------------------------ the probe


@dataclass(frozen=True)
class HealthReport:
    status: HealthStatus
    checks: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, checks: Mapping[str, Mapping[str, Any]]) -> HealthReport:
        return cls(overall_status({name: entry["status"] for name, entry in checks.items()}), checks)

    @property
    def http_status(self) -> int:
        return http_status(self.status)

    def as_body(self) -> dict[str, Any]:
        return {"status": self.status.value, "checks": dict(self.checks)}


class HealthProbe:
    def __init__(
        self,
        checks: Sequence[Check],
        gauge: ActiveSubscriptionsGauge,
        metrics: MetricsRecorder,
        interval_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._checks = checks
        self._gauge = gauge
        self._metrics = metrics
        self._interval_seconds = interval_seconds
        self.clock = clock
        self._deep_cache: tuple[float, HealthReport] | None = None

    def _run_checks(self) -> dict[str, tuple[CheckResult, float]]:
        """Each check's result and how long it took (ms)."""
        now = self.clock()
        results = {}
        for check in self._checks:
            started = time.perf_counter()
            result = check.run(now)
            results[check.name.value] = (result, (time.perf_counter() - started) * 1000)
        return results

    @staticmethod
    def _report(results: Mapping[str, tuple[CheckResult, float]]) -> HealthReport:
        checks = {}
        for name, (result, latency_ms) in results.items():
            entry: dict[str, Any] = {"status": result.status.value, **result.details}
            if result.status is not CheckStatus.SKIPPED:
                entry["latency_ms"] = round(latency_ms, 1)
            checks[name] = entry
        return HealthReport.of(checks)

    def run_scheduled(self) -> HealthReport:
        """Every check, their metrics, the subscriptions gauge and the snapshot for GET /health."""
        results = self._run_checks()
        for name, (result, latency_ms) in results.items():
            if result.status is CheckStatus.SKIPPED:
                continue
            self._metrics.add(Metric.HEALTH_CHECK, int(result.status is CheckStatus.OK), Check=name)
            self._metrics.add(Metric.HEALTH_CHECK_LATENCY, latency_ms, Check=name)
            self._metrics.extend(result.points)
        self._metrics.extend(self._gauge.points())
        self._metrics.add(Metric.HEALTH_PROBE_RUN)
        report = self._report(results)
        self._store_snapshot(report)
        self._metrics.flush(metadata={"health_status": report.status.value})
        logger.info("Health probe ran", extra={"health_status": report.status.value})
        return report

    def _store_snapshot(self, report: HealthReport) -> None:
        try:
            HealthSnapshot(SNAPSHOT_KEY, probed_at=int(self.clock()), report=json.dumps(report.checks)).save()
        except Exception:
            # The metrics above still go out: they are what the alarms read.
            logger.warning("Could not store the health snapshot", exc_info=True)

    def deep(self) -> HealthReport:
        """Every check now, without metrics; cached per container for DEEP_CACHE_SECONDS."""
        now = self.clock()
        if self._deep_cache is not None and now - self._deep_cache[0] < DEEP_CACHE_SECONDS:
            return self._deep_cache[1]
        report = self._report(self._run_checks())
        self._deep_cache = (now, report)
        return report

    def shallow(self) -> HealthReport:
        """The last scheduled run's report, with how old it is."""
        try:
            snapshot = HealthSnapshot.get(SNAPSHOT_KEY)
        except HealthSnapshot.DoesNotExist:
            return HealthReport.of({PROBE: {"status": CheckStatus.FAILED.value, "reason": "never_ran"}})
        except Exception:
            _unreachable(CheckName.DYNAMODB)
            return HealthReport.of(
                {CheckName.DYNAMODB.value: {"status": CheckStatus.FAILED.value, "error": UNREACHABLE}}
            )
        checks = _stored_checks(snapshot)
        if checks is None:
            # Whatever the item holds (an older shape, or fields written onto it before ids from
            # outside were kept off internal keys), /health answers; the next probe rewrites it.
            logger.warning("The stored health snapshot cannot be read; waiting for the next probe")
            return HealthReport.of({PROBE: {"status": CheckStatus.FAILED.value, "reason": "unreadable"}})
        age = max(0, int(self.clock()) - int(snapshot.probed_at))
        fresh = age <= STALE_AFTER_INTERVALS * self._interval_seconds
        probe = {"status": CheckStatus.OK.value, "age_seconds": age}
        if not fresh:
            probe = {"status": CheckStatus.FAILED.value, "reason": "stale", "age_seconds": age}
        return HealthReport.of({**checks, PROBE: probe})


def build_health_probe(settings: Settings) -> HealthProbe:
    bind_billing_table(settings.billing_table)
    bind_idempotency_table(settings.idempotency_table)
    stripe_api = (
        StripeApi(
            configured_api_key(settings),
            settings.stripe_api_base,
            max_network_retries=0,  # a retried probe answers late, and a late probe is worthless
            timeout_seconds=STRIPE_TIMEOUT_SECONDS,
        )
        if settings.stripe_api_configured
        else None
    )
    dead_letter_queues = {
        queue: url
        for queue, url in (
            ("webhook", settings.webhook_dlq_url),
            ("quota_reset", settings.quota_reset_dlq_url),
        )
        if url
    }
    checks: list[Check] = [
        StripeApiCheck(stripe_api),
        StripeWebhookEndpointCheck(
            stripe_api, settings.webhook_endpoint_url, settings.delivery_failure_lookback_seconds
        ),
        DynamoDbCheck(),
        WebhookFreshnessCheck(
            WebhookArrivals(),
            settings.business_hours,
            settings.webhook_stall_seconds,
            settings.webhook_quiet_seconds,
        ),
        QuotaResetCheck(settings.quota_reset_segments, settings.quota_reset_grace_seconds),
        DeadLetterQueueCheck(dead_letter_queues),
    ]
    return HealthProbe(
        checks,
        ActiveSubscriptionsGauge(load_plan_catalog(settings)),
        MetricsRecorder(settings.metrics_namespace, settings.service_name),
        settings.health_probe_interval_seconds,
    )


def _stored_checks(snapshot: HealthSnapshot) -> dict[str, Any] | None:
    """The checks a stored snapshot holds, or None when it holds no readable report."""
    if snapshot.probed_at is None or not isinstance(snapshot.report, str):
        return None
    try:
        checks = json.loads(snapshot.report)
    except ValueError:
        return None
    if not isinstance(checks, dict) or not all(isinstance(check, dict) for check in checks.values()):
        return None
    return checks
