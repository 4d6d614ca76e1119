"""ScholarLink's first 24 hours: the seed's hourly checklist, run against a deployed or the local stack.

    python -m devtools.first_day --stack NAME [--minutes 60]
    python -m devtools.first_day --local http://127.0.0.1:3000 --moto http://127.0.0.1:PORT [--minutes 60]

Each item of the "Hourly Checks (First 24h)" checklist (docs/first-day.md) becomes what billwatch can
answer: GET /health and /health?deep=1, its metrics and the HTTP API's over the last ``--minutes``
(read as the billing report reads them), the alarms in ALARM, and the tables' backups. Each check
prints ok, warn, fail or skipped (with why: an item billwatch has nothing to answer with).

``--stack`` reads the stack's outputs and parameters with your AWS credentials (region from
AWS_REGION / AWS_DEFAULT_REGION or your profile). ``--local`` is the stack of ``make run``: its HTTP
front, and its moto (``--moto``: the "AWS (moto)" endpoint its banner prints; ``MOTO_PORT`` fixes it).
Exits 0 when no check failed (warnings and skips included), 1 when one did, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billwatch.reporting.model import BillingReport, Figure, ReportData, Slo

DEFAULT_MINUTES = 60
HTTP_TIMEOUT_SECONDS = 15.0
DEFAULT_SERVICE = "billwatch"
LOCAL_STATUS_PATH = "/_local/api/status"
# The seed's own thresholds, beyond the SLO targets (which are the billing report's).
WEBHOOK_FAILURE_RATE_LIMIT = 0.05  # "Webhook failure rate > 5% for 5 minutes"
WEBHOOK_LATENCY_LIMIT_MS = 3000.0  # "Webhook latency > 3 seconds consistently"
API_ERROR_RATE_LIMIT = 0.01  # BillingHighErrorRate: > 1 %
API_LATENCY_LIMIT_MS = 1000.0  # BillingHighLatency: p95 > 1.0 s
PAYMENT_FAILURE_LIMIT = 0.10  # twice the billing report's norm: where its penalty is full


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str


@dataclass(frozen=True)
class CheckResult:
    hours: str  # the seed's block, e.g. "Hour 1-6: Critical Monitoring"
    item: str  # the seed's checklist line
    check: str  # what billwatch looks at for it
    outcome: Outcome


@dataclass(frozen=True)
class Target:
    """Where the checks look: the API, the stage's metrics and alarms, and the tables to back up."""

    name: str
    base_url: str
    stage: str
    namespace: str
    http_api_id: str
    cloudwatch: Any
    dynamodb: Any
    tables: tuple[str, ...]  # their point-in-time recovery is checked; () for the local stack
    loopback: bool  # the API is on this machine: no proxy
    now: dt.datetime


@dataclass(frozen=True)
class Observed:
    health: Figure[Mapping[str, Any]]  # GET /health's body
    deep: Figure[Mapping[str, Any]]  # GET /health?deep=1's body
    data: ReportData
    report: BillingReport
    backups: Figure[Mapping[str, bool]]  # table -> point-in-time recovery enabled


class UsageError(Exception):
    """Bad input: exits 2 with the message."""


# ------------------------------------------------------------------------------------ reading


def _get_json(url: str, loopback: bool) -> Figure[Mapping[str, Any]]:
    from billwatch.reporting.model import Known, Missing

    # The local stack is on loopback: an HTTP(S)_PROXY from the environment must not get this request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback else None
    try:
        with (opener.open if opener else urllib.request.urlopen)(url, timeout=HTTP_TIMEOUT_SECONDS) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:  # /health answers 503 with its body when down
        body = error.read()
    except (urllib.error.URLError, OSError) as error:
        return Missing(f"no answer from {url}: {getattr(error, 'reason', error)}")
    try:
        parsed = json.loads(body)
    except ValueError:
        return Missing(f"{url} answered something other than JSON")
    return Known(parsed) if isinstance(parsed, dict) else Missing(f"{url} answered {type(parsed).__name__}")


def _backups(target: Target) -> Figure[Mapping[str, bool]]:
    from botocore.exceptions import BotoCoreError, ClientError

    from billwatch.reporting.model import Known, Missing

    if not target.tables:
        return Missing("no tables to check: the local stack keeps no backups")
    enabled = {}
    try:
        for table in target.tables:
            backups = target.dynamodb.describe_continuous_backups(TableName=table)
            recovery = backups["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
            enabled[table] = recovery.get("PointInTimeRecoveryStatus") == "ENABLED"
    except (BotoCoreError, ClientError) as error:
        return Missing(f"DescribeContinuousBackups failed: {error}")
    return Known(enabled)


def observe(target: Target, minutes: int) -> Observed:
    from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
    from billwatch.reporting.scoring import build_report

    # CloudWatch takes whole seconds, end excluded: the next second takes in what was just emitted.
    end = target.now.replace(microsecond=0) + dt.timedelta(seconds=1)
    source = CloudWatchReportSource(
        target.cloudwatch,
        target.namespace,
        DEFAULT_SERVICE,
        stage=target.stage,
        http_api_id=target.http_api_id,
    )
    data = source.read(end - dt.timedelta(minutes=minutes), end)
    health_url = f"{target.base_url}/health"
    return Observed(
        health=_get_json(health_url, target.loopback),
        deep=_get_json(f"{health_url}?deep=1", target.loopback),
        data=data,
        report=build_report(data),
        backups=_backups(target),
    )


# ------------------------------------------------------------------------------------ the checks


def _detail(entry: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {json.dumps(value)}" for key, value in entry.items() if key != "status")


def _health(answer: Figure[Mapping[str, Any]]) -> Outcome:
    from billwatch.reporting.model import Missing

    if isinstance(answer, Missing):
        return Outcome(Status.FAIL, answer.reason)
    checks = answer.value.get("checks") or {}
    summary = ", ".join(f"{name} {entry.get('status')}" for name, entry in checks.items())
    overall = str(answer.value.get("status"))
    return Outcome(
        {"ok": Status.OK, "degraded": Status.WARN}.get(overall, Status.FAIL), f"{overall}: {summary}"
    )


def _probe_check(answer: Figure[Mapping[str, Any]], name: str) -> Outcome:
    """One check of the health probe's answer: its status, and what it said."""
    from billwatch.reporting.model import Missing

    if isinstance(answer, Missing):
        return Outcome(Status.FAIL, answer.reason)
    entry = (answer.value.get("checks") or {}).get(name)
    if entry is None:
        return Outcome(Status.FAIL, f"the health answer has no {name} check")
    status = {"ok": Status.OK, "skipped": Status.SKIPPED}.get(str(entry.get("status")), Status.FAIL)
    return Outcome(status, _detail(entry) or entry.get("status", ""))


def _alarms(observed: Observed) -> Outcome:
    from billwatch.core.severities import Severity
    from billwatch.reporting.model import Missing

    incidents = observed.data.incidents
    if isinstance(incidents, Missing):
        return Outcome(Status.FAIL, incidents.reason)
    firing = [incident for incident in incidents.value if incident.still_firing]
    if not firing:
        return Outcome(Status.OK, "none in ALARM")
    named = ", ".join(
        f"{incident.alarm} ({incident.severity or 'unknown severity'})"
        for incident in sorted(firing, key=lambda incident: incident.alarm)
    )
    critical = any(incident.severity is Severity.CRITICAL for incident in firing)
    return Outcome(Status.FAIL if critical else Status.WARN, f"{len(firing)} in ALARM: {named}")


def _count(figure: Figure[float]) -> float:
    from billwatch.reporting.model import Known

    return figure.value if isinstance(figure, Known) else 0.0


def _webhook_deliveries(observed: Observed) -> Outcome:
    received, failed = _count(observed.data.webhooks_received), _count(observed.data.webhooks_failed)
    if not received:
        return Outcome(Status.WARN, "no webhook received in the window")
    rate = failed / received
    detail = f"{received:g} received, {failed:g} failed ({rate * 100:.2f} %)"
    if rate > WEBHOOK_FAILURE_RATE_LIMIT:
        return Outcome(Status.FAIL, f"{detail}, over {WEBHOOK_FAILURE_RATE_LIMIT * 100:g} %")
    return Outcome(Status.WARN if failed else Status.OK, detail)


def _webhook_latency(observed: Observed) -> Outcome:
    from billwatch.reporting.model import Missing
    from billwatch.reporting.scoring import P95_TARGET_MS

    p95 = observed.data.webhook_p95_ms
    if isinstance(p95, Missing):
        return Outcome(Status.WARN, p95.reason)
    detail = f"p95 {p95.value:.0f} ms"
    if p95.value > WEBHOOK_LATENCY_LIMIT_MS:
        return Outcome(Status.FAIL, f"{detail}, over {WEBHOOK_LATENCY_LIMIT_MS:g} ms")
    return Outcome(Status.OK if p95.value <= P95_TARGET_MS else Status.WARN, detail)


def _slo(observed: Observed, name: str, fail_beyond: float | None) -> Outcome:
    """An SLO of the window: met is ok; missed fails, or warns up to ``fail_beyond``."""
    from billwatch.reporting.model import Missing, SloStatus

    slo: Slo = next(slo for slo in observed.report.slos if slo.name == name)
    if isinstance(slo.actual, Missing):
        return Outcome(Status.WARN, slo.actual.reason)
    value = slo.actual.value
    shown = f"{value * 100:.3f} %" if slo.unit == "%" else f"{value:.0f} ms"
    target = f"{slo.target * 100:g} %" if slo.unit == "%" else f"{slo.target:g} ms"
    detail = f"{shown} (target {slo.comparison} {target}; {slo.basis})"
    if slo.status is SloStatus.MET:
        return Outcome(Status.OK, detail)
    return Outcome(Status.WARN if fail_beyond is not None and value <= fail_beyond else Status.FAIL, detail)


def _payments(observed: Observed) -> Outcome:
    from billwatch.reporting.scoring import PAYMENT_FAILURE_NORM

    succeeded, failed = _count(observed.data.payments_succeeded), _count(observed.data.payments_failed)
    checkouts = _count(observed.data.checkouts_completed)
    if not succeeded + failed:
        return Outcome(Status.WARN, f"no payment in the window ({checkouts:g} checkouts completed)")
    rate = failed / (succeeded + failed)
    detail = (
        f"{succeeded:g} succeeded, {failed:g} failed ({rate * 100:.1f} %), {checkouts:g} checkouts completed"
    )
    if rate > PAYMENT_FAILURE_LIMIT:
        return Outcome(Status.FAIL, detail)
    return Outcome(Status.WARN if rate > PAYMENT_FAILURE_NORM else Status.OK, detail)


def _usage(observed: Observed) -> Outcome:
    from billwatch.reporting.model import Missing

    top = observed.report.business.top_features
    if isinstance(top, Missing):
        return Outcome(Status.WARN, f"no usage counted ({top.reason})")
    return Outcome(Status.OK, ", ".join(f"{usage.feature} {usage.units:g}" for usage in top.value))


def _accounts_at_limit(observed: Observed) -> Outcome:
    at_limit = _count(observed.data.accounts_at_limit)
    if at_limit:
        return Outcome(Status.WARN, f"{at_limit:g} account quotas reached 100 % (LimitHit)")
    return Outcome(Status.OK, "no account quota reached 100 %")


def _without_stripe_key(observed: Observed) -> bool:
    """What /health says: the probe's Stripe check was skipped for want of a key."""
    from billwatch.reporting.model import Known

    checks = observed.deep.value.get("checks") if isinstance(observed.deep, Known) else None
    stripe_api = checks.get("stripe_api") if isinstance(checks, Mapping) else None
    return isinstance(stripe_api, Mapping) and stripe_api.get("reason") == "no_stripe_key"


def _drift(observed: Observed) -> Outcome:
    from billwatch.reporting.model import Missing

    if _without_stripe_key(observed):
        return Outcome(Status.SKIPPED, "no Stripe key: the reconciliation is not deployed")
    if not _count(observed.data.reconcile_runs):
        return Outcome(Status.WARN, "no reconciliation run finished in the window")
    drift = observed.report.reconciliation.drift_by_field
    healed = observed.report.reconciliation.healed_by_field
    if isinstance(drift, Missing) or not drift.value:
        return Outcome(Status.OK, "a run finished and found no drift")
    found = sum(drift.value.values())
    fixed = min(found, sum(healed.value.values())) if not isinstance(healed, Missing) else 0.0
    detail = f"{found:g} drifts found, {fixed:g} healed"
    return Outcome(Status.WARN if fixed == found else Status.FAIL, detail)


def _backup_check(observed: Observed) -> Outcome:
    from billwatch.reporting.model import Missing

    if isinstance(observed.backups, Missing):
        return Outcome(Status.SKIPPED, observed.backups.reason)
    off = sorted(table for table, enabled in observed.backups.value.items() if not enabled)
    if off:
        return Outcome(Status.FAIL, f"point-in-time recovery off: {', '.join(off)}")
    return Outcome(Status.OK, f"point-in-time recovery on: {', '.join(sorted(observed.backups.value))}")


def _skipped(why: str) -> Callable[[Observed], Outcome]:
    return lambda _: Outcome(Status.SKIPPED, why)


CRITICAL_HOURS = "Hour 1-6: Critical Monitoring"
PATTERN_HOURS = "Hour 6-12: Pattern Analysis"
OPTIMIZATION_HOURS = "Hour 12-24: Optimization"
# (the seed's block, its checklist line, what billwatch looks at, how it judges), in the seed's order.
CHECKLIST: tuple[tuple[str, str, str, Callable[[Observed], Outcome]], ...] = (
    (CRITICAL_HOURS, "Check all pods are running and healthy", "GET /health", lambda o: _health(o.health)),
    (
        CRITICAL_HOURS,
        "Check all pods are running and healthy",
        "GET /health?deep=1",
        lambda o: _health(o.deep),
    ),
    (CRITICAL_HOURS, "Check all pods are running and healthy", "alarms in ALARM", _alarms),
    (
        CRITICAL_HOURS,
        "Check all pods are running and healthy",
        "dead-letter queues empty",
        lambda o: _probe_check(o.deep, "dead_letter_queues"),
    ),
    (
        CRITICAL_HOURS,
        "Verify Stripe webhook deliveries",
        "WebhookReceived vs WebhookFailed",
        _webhook_deliveries,
    ),
    (CRITICAL_HOURS, "Verify Stripe webhook deliveries", "WebhookProcessingTime p95", _webhook_latency),
    (
        CRITICAL_HOURS,
        "Verify Stripe webhook deliveries",
        "Stripe's webhook endpoint (probe)",
        lambda o: _probe_check(o.deep, "stripe_webhook_endpoint"),
    ),
    (
        CRITICAL_HOURS,
        "Monitor error rates < 0.1%",
        "API error rate",
        lambda o: _slo(o, "API error rate", API_ERROR_RATE_LIMIT),
    ),
    (
        CRITICAL_HOURS,
        "Monitor error rates < 0.1%",
        "API availability",
        lambda o: _slo(o, "Availability", None),
    ),
    (
        CRITICAL_HOURS,
        "Monitor error rates < 0.1%",
        "API latency p95",
        lambda o: _slo(o, "API p95 latency", API_LATENCY_LIMIT_MS),
    ),
    (CRITICAL_HOURS, "Validate first real transactions", "PaymentSucceeded vs PaymentFailed", _payments),
    (PATTERN_HOURS, "Review usage patterns by model", "UsageCounted by feature", _usage),
    (PATTERN_HOURS, "Check for any abuse or unusual spending", "quotas at their limit", _accounts_at_limit),
    (PATTERN_HOURS, "Validate credit calculations match rate card", "reconciliation drift", _drift),
    (
        PATTERN_HOURS,
        "Validate credit calculations match rate card",
        "ledger SQL",
        _skipped("billwatch keeps no credit ledger: usage counts against quotas, money is Stripe's"),
    ),
    (
        PATTERN_HOURS,
        "Monitor database performance",
        "DynamoDB (probe)",
        lambda o: _probe_check(o.deep, "dynamodb"),
    ),
    (
        OPTIMIZATION_HOURS,
        "Review autoscaling behavior",
        "autoscaling",
        _skipped("Lambda scales by itself: throttling shows as a *LambdaThrottles alarm above"),
    ),
    (
        OPTIMIZATION_HOURS,
        "Check for any memory leaks",
        "memory",
        _skipped("no long-running process: Lambda recycles its instances"),
    ),
    (
        OPTIMIZATION_HOURS,
        "Validate backup and monitoring systems",
        "health probe running",
        lambda o: _probe_check(o.health, "probe"),
    ),
    (
        OPTIMIZATION_HOURS,
        "Validate backup and monitoring systems",
        "quota resets running (probe)",
        lambda o: _probe_check(o.deep, "quota_reset"),
    ),
    (OPTIMIZATION_HOURS, "Validate backup and monitoring systems", "table backups", _backup_check),
    (
        OPTIMIZATION_HOURS,
        "Plan any immediate optimizations",
        "optimizations",
        _skipped("a decision for people: the daily billing report lists the action items"),
    ),
)


def run_checks(observed: Observed) -> list[CheckResult]:
    return [CheckResult(hours, item, check, judge(observed)) for hours, item, check, judge in CHECKLIST]


def render(target: Target, minutes: int, results: Sequence[CheckResult]) -> str:
    lines = [
        f"First-day checks of {target.name}: the last {minutes} minutes to {target.now:%Y-%m-%d %H:%M} UTC"
    ]
    block = ""
    for result in results:
        if result.hours != block:
            block = result.hours
            lines += ["", block]
        status = result.outcome.status
        lines.append(f"  {status.value:<8} {result.item} / {result.check}: {result.outcome.detail}")
    counts = {status: sum(result.outcome.status is status for result in results) for status in Status}
    lines += ["", ", ".join(f"{count} {status.value}" for status, count in counts.items())]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ targets


def deployed_target(stack: str, session: Any) -> Target:
    """The stack's API, stage, metrics namespace and tables, from its outputs and parameters."""
    from botocore.exceptions import ClientError

    try:
        (description,) = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        raise UsageError(f"cannot read the stack {stack!r}: {error}") from None
    outputs = {output["OutputKey"]: output["OutputValue"] for output in description.get("Outputs", [])}
    parameters = {
        parameter["ParameterKey"]: parameter.get("ParameterValue", "")
        for parameter in description.get("Parameters", [])
    }
    if "HttpApiUrl" not in outputs:
        raise UsageError(f"the stack {stack!r} has no HttpApiUrl output: is it a billwatch stack?")
    base_url = outputs["HttpApiUrl"].rstrip("/")
    return Target(
        name=stack,
        base_url=base_url,
        stage=parameters.get("Stage") or _template_parameter("Stage"),
        namespace=parameters.get("MetricsNamespace") or _template_parameter("MetricsNamespace"),
        # https://<api id>.execute-api.<region>.amazonaws.com
        http_api_id=urllib.parse.urlsplit(base_url).hostname.split(".")[0],  # type: ignore[union-attr]
        cloudwatch=session.client("cloudwatch"),
        dynamodb=session.client("dynamodb"),
        tables=tuple(
            outputs[key] for key in ("BillingStateTableName", "IdempotencyTableName") if key in outputs
        ),
        loopback=False,
        now=dt.datetime.now(dt.UTC),
    )


def _template_parameter(name: str) -> str:
    from devtools.template import load_template, parameter_values

    return parameter_values(load_template())[name]


def local_target(url: str, moto_endpoint: str) -> Target:
    """The stack of ``make run``: its HTTP front, its moto, the template's stage and its local clock."""
    import boto3

    from devtools.emulator.settings import DEFAULT_STAGE, FAKE_CREDENTIAL, METRICS_NAMESPACE, REGION
    from devtools.template import HTTP_API_TYPE, load_template, parameter_values, resources_of_type

    base_url = url.rstrip("/")
    status = _get_json(f"{base_url}{LOCAL_STATUS_PATH}", loopback=True)
    from billwatch.reporting.model import Missing

    if isinstance(status, Missing):
        raise UsageError(f"no local stack answers: {status.reason}; start it with `make run`")
    template = load_template()
    client = boto3.session.Session(
        aws_access_key_id=FAKE_CREDENTIAL,
        aws_secret_access_key=FAKE_CREDENTIAL,
        aws_session_token=FAKE_CREDENTIAL,
        region_name=REGION,
    ).client
    return Target(
        name=f"the local stack at {base_url}",
        base_url=base_url,
        stage=parameter_values(template).get("Stage", DEFAULT_STAGE),
        namespace=METRICS_NAMESPACE,
        # The local stack counts its requests under the HttpApi's logical id.
        http_api_id=next(iter(resources_of_type(template, HTTP_API_TYPE)), "HttpApi"),
        cloudwatch=client("cloudwatch", endpoint_url=moto_endpoint),
        dynamodb=client("dynamodb", endpoint_url=moto_endpoint),
        tables=(),
        loopback=True,
        # Its metrics carry the local clock's time, which may run faster than this one.
        now=dt.datetime.fromisoformat(status.value["clock"]["now"].replace("Z", "+00:00")),
    )


# ------------------------------------------------------------------------------------ main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.first_day", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="a deployed billwatch stack's name (your AWS credentials)")
    where.add_argument(
        "--local", metavar="URL", help="the local stack of make run, e.g. http://127.0.0.1:3000"
    )
    parser.add_argument(
        "--moto", metavar="URL", help="with --local: its moto endpoint, from make run's banner"
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=DEFAULT_MINUTES,
        help=f"the window to judge (default {DEFAULT_MINUTES})",
    )
    return parser


def main(argv: list[str] | None = None, session: Any = None) -> int:
    """``session``: the boto3 session for ``--stack`` (default: one from the environment)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be a positive number of minutes, got {args.minutes}")
    if args.local and not args.moto:
        parser.error(
            "--local needs --moto, the 'AWS (moto):' endpoint that make run prints "
            "(MOTO_PORT=... make run fixes it)"
        )
    if args.moto and not args.local:
        parser.error("--moto goes with --local only")
    try:
        if args.stack:
            import boto3

            target = deployed_target(args.stack, session or boto3.session.Session())
        else:
            target = local_target(args.local, args.moto)
    except UsageError as error:
        print(f"first_day: error: {error}", file=sys.stderr)
        return 2
    results = run_checks(observe(target, args.minutes))
    sys.stdout.write(render(target, args.minutes, results))
    return 1 if any(result.outcome.status is Status.FAIL for result in results) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "shared"))
    sys.exit(main())
