"""Runtime settings, read once from the environment and validated at load.

A bad value fails the cold start with an error that names the variable (never its value,
which may be a secret), instead of failing some request later.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billwatch.core.business_hours import BusinessHours, BusinessHoursError, parse_business_hours
from billwatch.core.severities import SeveritiesError, Severity, parse_severities

# Stripe retries a failed webhook delivery for up to three days in live mode; an idempotency
# record that expired earlier would let a late retry apply the event a second time.
STRIPE_RETRY_WINDOW_SECONDS = 3 * 24 * 3600
STRIPE_EVENT_RETENTION_SECONDS = 30 * 24 * 3600
# Audit records are kept at least 90 days (a quarter's review), at most ten years (AuditRetentionDays).
AUDIT_RETENTION_DAYS = (90, 3660)
# Checkout sessions one buyer may open in a minute before it is suspicious (CheckoutVelocityLimit):
# the counter item keeps one attribute per session up to the limit, so the limit bounds its size.
CHECKOUT_VELOCITY_LIMITS = (1, 1000)
# A closed usage period is kept at least a month, at most ten years (UsageHistoryRetentionDays).
USAGE_HISTORY_RETENTION_DAYS = (31, 3660)
# The overage drain's events in a run from which it sends on the v2 meter event stream instead of one v1
# request each (OverageStreamThreshold): 1 is always the stream; above the balances a run reads, never.
OVERAGE_STREAM_THRESHOLDS = (1, 1000)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    service_name: str
    metrics_namespace: str
    billing_table: str
    idempotency_table: str
    usage_history_table: str | None  # the functions that count usage (build_licensing) require it
    usage_history_retention_days: int
    webhook_secret_id: str | None
    webhook_secret_parameter: str | None
    local_webhook_secrets: tuple[str, ...]
    stripe_api_key_secret_id: str | None
    local_stripe_api_key: str | None
    stripe_api_base: str | None
    plan_catalog_path: str | None
    plan_catalog_parameter: str | None
    idempotency_ttl_seconds: int
    signature_tolerance_seconds: int
    max_body_bytes: int
    checkout_velocity_limit: int
    secrets_max_age_seconds: int
    admin_role_arns: tuple[str, ...]
    usage_events_topic_arn: str | None
    billing_events_topic_arn: str | None
    quota_reset_segments: int
    quota_reset_grace_seconds: int
    business_hours: BusinessHours
    webhook_stall_seconds: int
    webhook_quiet_seconds: int
    webhook_endpoint_url: str | None
    delivery_failure_lookback_seconds: int
    health_probe_interval_seconds: int
    webhook_dlq_url: str | None
    quota_reset_dlq_url: str | None
    overage_drain_dlq_url: str | None  # the overage drain requires it
    overage_stream_threshold: int
    severities: Mapping[str, Severity]
    audit_table: str | None  # the functions that do admin actions (licensing, alert dispatch) require it
    audit_retention_days: int

    @property
    def stripe_api_configured(self) -> bool:
        return bool(self.stripe_api_key_secret_id or self.local_stripe_api_key)


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _required(env: Mapping[str, str], name: str) -> str:
    value = _optional(env, name)
    if value is None:
        raise ConfigError(f"{name} is required")
    return value


def _integer(
    env: Mapping[str, str], name: str, default: int, minimum: int, why: str = "", maximum: int | None = None
) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    # int() also reads other scripts' digits and underscores: a setting is ASCII digits.
    if not re.fullmatch(r"-?[0-9]{1,18}", raw.strip()):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}{why}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}{why}, got {value}")
    return value


ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


def _role_arns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    arns = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    for arn in arns:
        if not ROLE_ARN.match(arn):
            raise ConfigError(
                f"{name} must list IAM role ARNs (arn:aws:iam::<account>:role/<name>), got {arn!r}"
            )
    return arns


def _severities(env: Mapping[str, str], name: str) -> Mapping[str, Severity]:
    try:
        return parse_severities(_optional(env, name), name)
    except SeveritiesError as error:
        raise ConfigError(str(error)) from None


def _webhook_endpoint_url(env: Mapping[str, str], name: str) -> str | None:
    """The URL Stripe should deliver to, as its webhook endpoint lists it."""
    url = _optional(env, name)
    if url is None:
        return None
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    if re.search(r"\s", url) or not parts.hostname or not (parts.scheme == "https" or local):
        raise ConfigError(f"{name} must be the https URL of the webhook route, got {url!r}")
    return url


def _zone(env: Mapping[str, str], name: str, default: str) -> ZoneInfo:
    zone_name = _optional(env, name) or default
    try:
        return ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name} must be an IANA time zone like America/New_York, got {zone_name!r}"
        ) from None


def _business_hours(env: Mapping[str, str]) -> BusinessHours:
    zone = _zone(env, "BUSINESS_TIMEZONE", "America/New_York")
    spec = _optional(env, "BUSINESS_HOURS") or "Mon-Fri 09:00-18:00"
    try:
        return parse_business_hours(spec, zone)
    except BusinessHoursError as error:
        raise ConfigError(f"BUSINESS_HOURS: {error}, got {spec!r}") from None


def parse_webhook_secrets(raw: str, source: str) -> tuple[str, ...]:
    """Several comma-separated secrets mean a secret roll is in progress."""
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not secrets:
        raise ConfigError(f"{source} holds no webhook signing secret")
    if not all(secret.startswith("whsec_") for secret in secrets):
        raise ConfigError(f"{source} must hold Stripe signing secrets that start with 'whsec_'")
    return secrets


def load_settings(env: Mapping[str, str] | None = None, *, webhook_secret: bool = True) -> Settings:
    """``webhook_secret``: whether this function verifies webhooks and so needs a secret source."""
    env = os.environ if env is None else env
    local_secret = _optional(env, "STRIPE_WEBHOOK_SECRET")
    settings = Settings(
        service_name=_optional(env, "POWERTOOLS_SERVICE_NAME") or "billwatch",
        metrics_namespace=_optional(env, "POWERTOOLS_METRICS_NAMESPACE") or "Billwatch",
        billing_table=_required(env, "BILLING_TABLE_NAME"),
        idempotency_table=_required(env, "IDEMPOTENCY_TABLE_NAME"),
        usage_history_table=_optional(env, "USAGE_HISTORY_TABLE_NAME"),
        usage_history_retention_days=_integer(
            env,
            "USAGE_HISTORY_RETENTION_DAYS",
            default=400,
            minimum=USAGE_HISTORY_RETENTION_DAYS[0],
            maximum=USAGE_HISTORY_RETENTION_DAYS[1],
            why=" days",
        ),
        webhook_secret_id=_optional(env, "WEBHOOK_SECRET_ID"),
        webhook_secret_parameter=_optional(env, "WEBHOOK_SECRET_PARAMETER"),
        local_webhook_secrets=parse_webhook_secrets(local_secret, "STRIPE_WEBHOOK_SECRET")
        if local_secret
        else (),
        stripe_api_key_secret_id=_optional(env, "STRIPE_API_KEY_SECRET_ID"),
        local_stripe_api_key=_optional(env, "STRIPE_API_KEY"),
        stripe_api_base=_optional(env, "STRIPE_API_BASE"),
        plan_catalog_path=_optional(env, "PLAN_CATALOG_PATH"),
        plan_catalog_parameter=_optional(env, "PLAN_CATALOG_PARAMETER"),
        idempotency_ttl_seconds=_integer(
            env,
            "IDEMPOTENCY_TTL_SECONDS",
            default=4 * 24 * 3600,
            minimum=STRIPE_RETRY_WINDOW_SECONDS,
            why=" to cover Stripe's 3-day retry window",
        ),
        signature_tolerance_seconds=_integer(env, "WEBHOOK_TOLERANCE_SECONDS", default=300, minimum=1),
        max_body_bytes=_integer(env, "WEBHOOK_MAX_BODY_BYTES", default=256 * 1024, minimum=1024),
        checkout_velocity_limit=_integer(
            env,
            "CHECKOUT_VELOCITY_LIMIT",
            default=10,
            minimum=CHECKOUT_VELOCITY_LIMITS[0],
            maximum=CHECKOUT_VELOCITY_LIMITS[1],
            why=" sessions a minute",
        ),
        secrets_max_age_seconds=_integer(env, "SECRETS_MAX_AGE_SECONDS", default=300, minimum=0),
        admin_role_arns=_role_arns(env, "ADMIN_ROLE_ARNS"),
        usage_events_topic_arn=_optional(env, "USAGE_EVENTS_TOPIC_ARN"),
        billing_events_topic_arn=_optional(env, "BILLING_EVENTS_TOPIC_ARN"),
        quota_reset_segments=_integer(env, "QUOTA_RESET_SEGMENTS", default=8, minimum=1),
        quota_reset_grace_seconds=_integer(env, "QUOTA_RESET_GRACE_SECONDS", default=1800, minimum=0),
        business_hours=_business_hours(env),
        webhook_stall_seconds=_integer(env, "WEBHOOK_STALL_SECONDS", default=6 * 3600, minimum=60),
        webhook_quiet_seconds=_integer(env, "WEBHOOK_QUIET_SECONDS", default=1800, minimum=60),
        webhook_endpoint_url=_webhook_endpoint_url(env, "WEBHOOK_ENDPOINT_URL"),
        delivery_failure_lookback_seconds=_integer(
            env,
            "DELIVERY_FAILURE_LOOKBACK_SECONDS",
            default=3600,
            minimum=300,
            maximum=STRIPE_EVENT_RETENTION_SECONDS,
            why=" (Stripe keeps events for 30 days)",
        ),
        health_probe_interval_seconds=60
        * _integer(env, "HEALTH_PROBE_INTERVAL_MINUTES", default=1, minimum=1),
        webhook_dlq_url=_optional(env, "WEBHOOK_DLQ_URL"),
        quota_reset_dlq_url=_optional(env, "QUOTA_RESET_DLQ_URL"),
        overage_drain_dlq_url=_optional(env, "OVERAGE_DRAIN_DLQ_URL"),
        overage_stream_threshold=_integer(
            env,
            "OVERAGE_STREAM_THRESHOLD",
            default=100,
            minimum=OVERAGE_STREAM_THRESHOLDS[0],
            maximum=OVERAGE_STREAM_THRESHOLDS[1],
            why=" events a run",
        ),
        severities=_severities(env, "ALERT_SEVERITIES"),
        audit_table=_optional(env, "AUDIT_TABLE_NAME"),
        audit_retention_days=_integer(
            env,
            "AUDIT_RETENTION_DAYS",
            default=400,
            minimum=AUDIT_RETENTION_DAYS[0],
            maximum=AUDIT_RETENTION_DAYS[1],
            why=" days",
        ),
    )
    sources = [
        name
        for name, value in (
            ("WEBHOOK_SECRET_ID", settings.webhook_secret_id),
            ("WEBHOOK_SECRET_PARAMETER", settings.webhook_secret_parameter),
            ("STRIPE_WEBHOOK_SECRET", settings.local_webhook_secrets),
        )
        if value
    ]
    if len(sources) > 1 or (webhook_secret and not sources):
        raise ConfigError(
            "set exactly one webhook secret source: WEBHOOK_SECRET_ID (Secrets Manager), "
            "WEBHOOK_SECRET_PARAMETER (SSM SecureString) or STRIPE_WEBHOOK_SECRET (local); "
            f"got {sources or 'none'}"
        )
    if settings.plan_catalog_path and settings.plan_catalog_parameter:
        raise ConfigError("set at most one of PLAN_CATALOG_PATH and PLAN_CATALOG_PARAMETER")
    if settings.webhook_quiet_seconds >= settings.webhook_stall_seconds:
        raise ConfigError(
            f"WEBHOOK_QUIET_SECONDS must be shorter than WEBHOOK_STALL_SECONDS "
            f"({settings.webhook_stall_seconds}): it is the early warning, the stall the late one; "
            f"got {settings.webhook_quiet_seconds}"
        )
    return settings


@dataclass(frozen=True)
class Dashboards:
    """The stack's CloudWatch dashboards, which every notice links to."""

    region: str
    billing: str
    licensing: str


@dataclass(frozen=True)
class AlertSettings:
    """What the alert dispatcher needs beyond the shared settings."""

    alert_table: str | None  # the report sender keeps no alert state
    routes_path: str | None
    routes_parameter: str | None
    secrets_id: str | None  # Secrets Manager: one JSON object of channel secrets
    local_secrets: Mapping[str, str]  # ALERT_SECRETS, for local runs only
    email_sender: str | None
    dlq_url: str | None
    secrets_max_age_seconds: int
    dashboards: Dashboards | None  # None: notices link no dashboard (a local run without them)
    runbook_base_url: str | None  # where business alerts' runbook pages are, as the alarms' are


_EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _local_alert_secrets(env: Mapping[str, str]) -> dict[str, str]:
    raw = _optional(env, "ALERT_SECRETS")
    if raw is None:
        return {}
    try:
        secrets = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError("ALERT_SECRETS must be a JSON object of secret names to values") from None
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ConfigError("ALERT_SECRETS must be a JSON object of secret names to string values")
    return secrets


# CloudWatch's own rules: dashboard names, and the region names of the console's URLs.
_DASHBOARD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def _dashboard_name(env: Mapping[str, str], name: str) -> str | None:
    value = _optional(env, name)
    if value is not None and not _DASHBOARD_NAME.match(value):
        raise ConfigError(
            f"{name} must be a CloudWatch dashboard name (letters, digits, - and _), got {value!r}"
        )
    return value


def _dashboards(env: Mapping[str, str]) -> Dashboards | None:
    billing = _dashboard_name(env, "BILLING_DASHBOARD_NAME")
    licensing = _dashboard_name(env, "LICENSING_DASHBOARD_NAME")
    if billing is None and licensing is None:
        return None
    if billing is None or licensing is None:
        missing = "BILLING_DASHBOARD_NAME" if billing is None else "LICENSING_DASHBOARD_NAME"
        raise ConfigError(f"{missing} is required with the other dashboard: each notice links one of the two")
    region = _optional(env, "AWS_REGION") or _optional(env, "AWS_DEFAULT_REGION")
    if region is None or not _REGION.match(region):
        raise ConfigError(f"AWS_REGION must name the dashboards' region, like us-east-1, got {region!r}")
    return Dashboards(region, billing, licensing)


def _runbook_base_url(env: Mapping[str, str], name: str) -> str | None:
    url = _optional(env, name)
    if url is not None and not re.fullmatch(r"https://[^\s/?#]+[^\s?#]*", url):
        raise ConfigError(f"{name} must be the https URL the runbooks are published under, got {url!r}")
    return url.rstrip("/") if url else None


def load_alert_settings(env: Mapping[str, str] | None = None, *, alert_table: bool = True) -> AlertSettings:
    env = os.environ if env is None else env
    sender = _optional(env, "ALERT_EMAIL_SENDER")
    if sender is not None and not _EMAIL_ADDRESS.match(sender):
        raise ConfigError(f"ALERT_EMAIL_SENDER must be an email address, got {sender!r}")
    settings = AlertSettings(
        alert_table=_required(env, "ALERT_STATE_TABLE_NAME") if alert_table else None,
        routes_path=_optional(env, "ALERT_ROUTES_PATH"),
        routes_parameter=_optional(env, "ALERT_ROUTES_PARAMETER"),
        secrets_id=_optional(env, "ALERT_SECRETS_ID"),
        local_secrets=_local_alert_secrets(env),
        email_sender=sender,
        dlq_url=_optional(env, "ALERT_DLQ_URL"),
        secrets_max_age_seconds=_integer(env, "SECRETS_MAX_AGE_SECONDS", default=300, minimum=0),
        dashboards=_dashboards(env),
        runbook_base_url=_runbook_base_url(env, "RUNBOOK_BASE_URL"),
    )
    if settings.routes_path and settings.routes_parameter:
        raise ConfigError("set at most one of ALERT_ROUTES_PATH and ALERT_ROUTES_PARAMETER")
    if settings.secrets_id and settings.local_secrets:
        raise ConfigError("set at most one of ALERT_SECRETS_ID (Secrets Manager) and ALERT_SECRETS (local)")
    return settings


@dataclass(frozen=True)
class ReportSettings:
    """What the billing report needs beyond the shared settings and the alert channels."""

    zone: ZoneInfo  # its readers' time zone: the schedule's, and the one dates are shown in
    stage: str  # its alarms are named billwatch-<stage>-*
    http_api_id: str | None  # availability from the HTTP API's own 5xx and Count when known
    # Revenue reconciliation: a drift counts when over both, the share of Stripe's gross volume and
    # the amount (major units of the currency), so a cent on a quiet day does not alarm.
    revenue_drift_percent: float = 1.0
    revenue_drift_minimum: int = 1


_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")  # the template's Stage pattern
_PERCENT = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,2})?$")


def _percent(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    if not _PERCENT.match(raw.strip()) or not 0 < float(raw) <= 100:
        raise ConfigError(f"{name} must be a percentage above 0 and at most 100 (e.g. 1 or 0.5), got {raw!r}")
    return float(raw)


def load_report_settings(env: Mapping[str, str] | None = None) -> ReportSettings:
    env = os.environ if env is None else env
    stage = _required(env, "STAGE")
    if not _STAGE.match(stage):
        raise ConfigError(f"STAGE must be lower-case letters, digits and dashes, got {stage!r}")
    return ReportSettings(
        zone=_zone(env, "REPORT_TIMEZONE", "UTC"),
        stage=stage,
        http_api_id=_optional(env, "HTTP_API_ID"),
        revenue_drift_percent=_percent(env, "REVENUE_DRIFT_PERCENT", 1.0),
        revenue_drift_minimum=_integer(env, "REVENUE_DRIFT_MINIMUM", default=1, minimum=0),
    )
