from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import stripe

from billwatch.core.config import (
    STRIPE_RETRY_WINDOW_SECONDS,
    ConfigError,
    Dashboards,
    load_alert_settings,
    load_settings,
)
from billwatch.licensing.service import build_licensing

BASE = {"BILLING_TABLE_NAME": "billing", "IDEMPOTENCY_TABLE_NAME": "idem", "STRIPE_WEBHOOK_SECRET": "whsec_a"}


def test_without_overrides_the_settings_keep_stripes_promises() -> None:
    settings = load_settings(BASE)
    assert settings.local_webhook_secrets == ("whsec_a",)
    # A delivery Stripe retries at the end of its retry window is still recognised as a duplicate.
    assert settings.idempotency_ttl_seconds >= STRIPE_RETRY_WINDOW_SECONDS
    # The tolerance Stripe's own libraries verify with, so a replay older than theirs is refused too.
    assert settings.signature_tolerance_seconds == stripe.Webhook.DEFAULT_TOLERANCE
    assert not settings.stripe_api_configured


def test_comma_separated_secrets_mean_a_roll() -> None:
    assert load_settings(
        {**BASE, "STRIPE_WEBHOOK_SECRET": " whsec_old , whsec_new "}
    ).local_webhook_secrets == (
        "whsec_old",
        "whsec_new",
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"BILLING_TABLE_NAME": ""}, "BILLING_TABLE_NAME"),
        ({"IDEMPOTENCY_TABLE_NAME": " "}, "IDEMPOTENCY_TABLE_NAME"),
        ({"IDEMPOTENCY_TTL_SECONDS": "3600"}, "IDEMPOTENCY_TTL_SECONDS"),
        ({"IDEMPOTENCY_TTL_SECONDS": "four days"}, "IDEMPOTENCY_TTL_SECONDS"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "0"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_MAX_BODY_BYTES": "12"}, "WEBHOOK_MAX_BODY_BYTES"),
        ({"USAGE_HISTORY_RETENTION_DAYS": "30"}, "USAGE_HISTORY_RETENTION_DAYS"),
        ({"USAGE_HISTORY_RETENTION_DAYS": "3661"}, "USAGE_HISTORY_RETENTION_DAYS"),
        ({"USAGE_HISTORY_RETENTION_DAYS": "a year"}, "USAGE_HISTORY_RETENTION_DAYS"),
        ({"CHECKOUT_VELOCITY_LIMIT": "0"}, "CHECKOUT_VELOCITY_LIMIT"),
        ({"CHECKOUT_VELOCITY_LIMIT": "1001"}, "CHECKOUT_VELOCITY_LIMIT"),
        ({"OVERAGE_STREAM_THRESHOLD": "0"}, "OVERAGE_STREAM_THRESHOLD"),
        ({"OVERAGE_STREAM_THRESHOLD": "1001"}, "OVERAGE_STREAM_THRESHOLD"),
        ({"OVERAGE_STREAM_THRESHOLD": "many"}, "OVERAGE_STREAM_THRESHOLD"),
        ({"STRIPE_WEBHOOK_SECRET": "sk_test_oops"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": ","}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET_ID"),
        ({"WEBHOOK_SECRET_ID": "arn:aws:secretsmanager:x"}, "exactly one"),
        ({"PLAN_CATALOG_PATH": "a.json", "PLAN_CATALOG_PARAMETER": "/p"}, "PLAN_CATALOG_PATH"),
        ({"BUSINESS_HOURS": "weekdays"}, "BUSINESS_HOURS"),
        ({"BUSINESS_HOURS": "Mon-Fri 18:00-09:00"}, "BUSINESS_HOURS"),
        ({"BUSINESS_TIMEZONE": "Mars/Olympus_Mons"}, "BUSINESS_TIMEZONE"),
        ({"BUSINESS_TIMEZONE": "../etc/passwd"}, "BUSINESS_TIMEZONE"),
        ({"WEBHOOK_STALL_SECONDS": "10"}, "WEBHOOK_STALL_SECONDS"),
        ({"HEALTH_PROBE_INTERVAL_MINUTES": "0"}, "HEALTH_PROBE_INTERVAL_MINUTES"),
        ({"QUOTA_RESET_GRACE_SECONDS": "soon"}, "QUOTA_RESET_GRACE_SECONDS"),
        (
            {"QUOTA_RESET_GRACE_SECONDS": "\u0663\u0660\u0660"},
            "QUOTA_RESET_GRACE_SECONDS",
        ),  # Arabic-Indic 300
        ({"WEBHOOK_QUIET_SECONDS": "1_800"}, "WEBHOOK_QUIET_SECONDS"),
        ({"WEBHOOK_QUIET_SECONDS": "21600"}, "WEBHOOK_QUIET_SECONDS"),  # not shorter than the stall
        ({"DELIVERY_FAILURE_LOOKBACK_SECONDS": str(10**12)}, "DELIVERY_FAILURE_LOOKBACK_SECONDS"),
        ({"WEBHOOK_ENDPOINT_URL": "https://"}, "WEBHOOK_ENDPOINT_URL"),
        ({"WEBHOOK_ENDPOINT_URL": "https://exa mple.com/webhooks"}, "WEBHOOK_ENDPOINT_URL"),
        ({"WEBHOOK_ENDPOINT_URL": "http://localhost.evil.com/webhooks"}, "WEBHOOK_ENDPOINT_URL"),
        ({"WEBHOOK_ENDPOINT_URL": "http://billing.example.com/webhooks"}, "WEBHOOK_ENDPOINT_URL"),
        ({"ALERT_SEVERITIES": "usage_80=info,usage_80=critical"}, "named twice"),
    ],
)
def test_a_bad_value_names_itself(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings({**BASE, **overrides})


def test_errors_never_echo_a_secret() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**BASE, "STRIPE_WEBHOOK_SECRET": "not_a_whsec_supersecretvalue"})
    assert "supersecretvalue" not in str(error.value)


def test_by_default_business_hours_are_weekdays_nine_to_six_in_new_york() -> None:
    hours = load_settings(BASE).business_hours
    new_york = ZoneInfo("America/New_York")
    monday_ten = dt.datetime(2026, 12, 7, 10, 0, tzinfo=new_york).timestamp()
    monday_eight = dt.datetime(2026, 12, 7, 8, 0, tzinfo=new_york).timestamp()
    saturday_ten = dt.datetime(2026, 12, 12, 10, 0, tzinfo=new_york).timestamp()
    assert hours.contains(monday_ten)
    assert not hours.contains(monday_eight)
    assert not hours.contains(saturday_ten)
    # Friday 16:00 to Monday 10:00: two business hours on Friday and one on Monday.
    friday_four = dt.datetime(2026, 12, 11, 16, 0, tzinfo=new_york).timestamp()
    next_monday_ten = dt.datetime(2026, 12, 14, 10, 0, tzinfo=new_york).timestamp()
    assert hours.seconds_between(friday_four, next_monday_ten) == 3 * 3600


ALERTS = {
    "ALERT_STATE_TABLE_NAME": "alerts",
    "AWS_REGION": "eu-west-1",
    "BILLING_DASHBOARD_NAME": "billwatch-prod-billing",
    "LICENSING_DASHBOARD_NAME": "billwatch-prod-licensing",
    "RUNBOOK_BASE_URL": "https://example.com/runbooks/",
}


def test_the_alert_links_come_from_the_dashboard_names_the_region_and_the_runbook_base_url() -> None:
    settings = load_alert_settings(ALERTS)
    assert settings.dashboards == Dashboards(
        "eu-west-1", "billwatch-prod-billing", "billwatch-prod-licensing"
    )
    assert settings.runbook_base_url == "https://example.com/runbooks"


def test_without_dashboard_names_or_runbook_base_url_notices_link_neither() -> None:
    settings = load_alert_settings({"ALERT_STATE_TABLE_NAME": "alerts"})
    assert settings.dashboards is None and settings.runbook_base_url is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"BILLING_DASHBOARD_NAME": "billwatch prod/billing"}, "BILLING_DASHBOARD_NAME"),
        ({"LICENSING_DASHBOARD_NAME": "x" * 256}, "LICENSING_DASHBOARD_NAME"),
        ({"LICENSING_DASHBOARD_NAME": ""}, "LICENSING_DASHBOARD_NAME is required"),
        ({"BILLING_DASHBOARD_NAME": " "}, "BILLING_DASHBOARD_NAME is required"),
        ({"AWS_REGION": "Ireland"}, "AWS_REGION"),
        ({"AWS_REGION": ""}, "AWS_REGION"),
        ({"RUNBOOK_BASE_URL": "http://example.com/runbooks"}, "RUNBOOK_BASE_URL"),
        ({"RUNBOOK_BASE_URL": "https://example.com/run books"}, "RUNBOOK_BASE_URL"),
        ({"RUNBOOK_BASE_URL": "https://example.com/runbooks?ref=main"}, "RUNBOOK_BASE_URL"),
    ],
)
def test_a_bad_alert_link_setting_is_refused_at_load_naming_it(changes: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_alert_settings({**ALERTS, **changes})


def test_usage_history_is_kept_400_days_unless_told_and_counting_needs_its_table() -> None:
    settings = load_settings(BASE)
    assert (settings.usage_history_table, settings.usage_history_retention_days) == (None, 400)
    assert load_settings({**BASE, "USAGE_HISTORY_RETENTION_DAYS": "31"}).usage_history_retention_days == 31
    with pytest.raises(ConfigError, match="USAGE_HISTORY_TABLE_NAME"):
        build_licensing(settings)
