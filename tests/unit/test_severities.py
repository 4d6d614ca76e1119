"""The business alerts' severities: the seeds' defaults, overrides read at load, errors that name them."""

from __future__ import annotations

import pytest

from billwatch.alerting.inputs import from_payment_event, from_usage_event, read_records
from billwatch.core.config import ConfigError, load_settings
from billwatch.core.severities import (
    DEFAULT_SEVERITIES,
    BusinessAlert,
    Severity,
    parse_severities,
    usage_alert,
)
from tests.alert_events import alarm_message, sns_event, usage_event

T0 = 1_796_137_200
ENV = {"BILLING_TABLE_NAME": "billing", "IDEMPOTENCY_TABLE_NAME": "idempotency"}


def test_the_defaults_are_the_seeds() -> None:
    # Thorbis: 80 % warning, 95 % critical, overage high (pages: critical), payment_failed critical.
    assert {alert.value: severity.value for alert, severity in DEFAULT_SEVERITIES.items()} == {
        "usage_80": "warning",
        "usage_95": "critical",
        "usage_100": "critical",
        "payment_failed": "critical",
    }


def test_overrides_change_only_what_they_name() -> None:
    severities = parse_severities(" usage_80=info , payment_failed=warning", "ALERT_SEVERITIES")
    assert severities[BusinessAlert.USAGE_80] is Severity.INFO
    assert severities[BusinessAlert.PAYMENT_FAILED] is Severity.WARNING
    assert severities[BusinessAlert.USAGE_95] is Severity.CRITICAL
    assert parse_severities("", "ALERT_SEVERITIES") == DEFAULT_SEVERITIES


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("usage_90=info", "'usage_90' is neither one of"),
        ("largeQuotaGrant=info", "'largeQuotaGrant' is neither one of"),
        ("usage_80=high", "the severity of usage_80 must be one of"),
        ("usage_80", "'usage_80' is not name=severity"),
    ],
)
def test_a_bad_override_is_refused_at_load_naming_the_setting(raw: str, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({**ENV, "ALERT_SEVERITIES": raw}, webhook_secret=False)
    assert str(refused.value).startswith("ALERT_SEVERITIES: ") and named in str(refused.value)


def test_an_alarm_named_in_the_setting_is_told_with_that_severity() -> None:
    configured = parse_severities("LargeQuotaGrant=warning", "ALERT_SEVERITIES")
    grant = alarm_message("LargeQuotaGrant", "ALARM", T0, severity="info", runbook="licensing")
    other = alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing")
    (named,), (unnamed,) = (
        read_records(sns_event(grant), configured),
        read_records(sns_event(other), configured),
    )
    assert named.alert is not None and named.alert.severity is Severity.WARNING
    assert unnamed.alert is not None and unnamed.alert.severity is Severity.WARNING  # its template default
    (default,) = read_records(sns_event(grant))
    assert default.alert is not None and default.alert.severity is Severity.INFO


def test_an_alert_takes_the_severity_its_producer_stamped() -> None:
    stamped = {**usage_event("acct_1", 80, T0), "severity": "info"}
    (record,) = read_records(sns_event(stamped))
    assert record.alert is not None and record.alert.severity is Severity.INFO


def test_an_event_without_one_takes_the_configured_severity() -> None:
    unstamped = {key: value for key, value in usage_event("acct_1", 95, T0).items() if key != "severity"}
    configured = parse_severities("usage_95=warning", "ALERT_SEVERITIES")
    assert from_usage_event(unstamped).severity is DEFAULT_SEVERITIES[usage_alert(95)]
    assert from_usage_event(unstamped, configured).severity is Severity.WARNING
    payment = {
        "type": "billing.payment_failed",
        "account_id": "acct_1",
        "invoice_id": "in_1",
        "occurred_at": "2026-12-01T00:00:00Z",
    }
    assert from_payment_event(payment).severity is Severity.CRITICAL
