from __future__ import annotations

import pytest

from billwatch.core.config import ConfigError, load_settings

BASE = {"BILLING_TABLE_NAME": "billing", "IDEMPOTENCY_TABLE_NAME": "idem", "STRIPE_WEBHOOK_SECRET": "whsec_a"}


def test_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.local_webhook_secrets == ("whsec_a",)
    assert settings.idempotency_ttl_seconds == 4 * 24 * 3600
    assert settings.signature_tolerance_seconds == 300
    assert settings.metrics_namespace == "Billwatch"
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
    ],
)
def test_a_bad_value_names_itself(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings({**BASE, **overrides})


def test_errors_never_echo_a_secret() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**BASE, "STRIPE_WEBHOOK_SECRET": "not_a_whsec_supersecretvalue"})
    assert "supersecretvalue" not in str(error.value)


def test_health_probe_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.webhook_stall_seconds == 6 * 3600
    assert settings.quota_reset_grace_seconds == 1800
    assert settings.health_probe_interval_seconds == 60
    assert settings.business_hours.zone.key == "America/New_York"
    assert settings.business_hours.days == frozenset(range(5))
    assert settings.webhook_dlq_url is None and settings.quota_reset_dlq_url is None
