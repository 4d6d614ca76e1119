"""Every notice links the dashboard of the alert's part of billwatch and the runbook to follow."""

from __future__ import annotations

import pytest

from billwatch.alerting.inputs import from_payment_event, from_sns_alarm, from_usage_event
from billwatch.alerting.links import AlertLinks
from billwatch.core.config import Dashboards
from tests.alert_events import alarm_message, usage_event
from tests.alert_receivers import usage_alert

T0 = 1_796_137_200
RUNBOOKS = "https://example.com/runbooks"
LINKS = AlertLinks(Dashboards("eu-west-1", "billwatch-prod-billing", "billwatch-prod-licensing"), RUNBOOKS)
CONSOLE = "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
BILLING = f"{CONSOLE}#dashboards/dashboard/billwatch-prod-billing"
LICENSING = f"{CONSOLE}#dashboards/dashboard/billwatch-prod-licensing"


@pytest.mark.parametrize(
    ("runbook", "dashboard"),
    [
        ("licensing", LICENSING),
        ("quota-reset-failure", LICENSING),
        ("webhook-failures", BILLING),
        ("payment-failures", BILLING),
        ("platform", BILLING),
        ("alert-delivery-failures", BILLING),
    ],
)
def test_an_alarm_links_the_dashboard_that_shows_its_runbooks_alarms_and_keeps_its_own_runbook(
    runbook: str, dashboard: str
) -> None:
    alarm = from_sns_alarm(alarm_message("SomeAlarm", "ALARM", T0, runbook=runbook))
    assert alarm is not None
    linked = LINKS.added_to(alarm)
    assert linked.dashboard_url == dashboard
    assert linked.runbook == alarm.runbook and linked.runbook.endswith(f"/{runbook}.md")


def test_a_usage_threshold_links_the_licensing_dashboard_and_runbook() -> None:
    linked = LINKS.added_to(from_usage_event(usage_event("acct_1", 95, T0)))
    assert (linked.dashboard_url, linked.runbook) == (LICENSING, f"{RUNBOOKS}/licensing.md")


def test_a_failed_payment_links_the_billing_dashboard_and_the_payment_failures_runbook() -> None:
    event = {"account_id": "acct_1", "invoice_id": "in_1", "occurred_at": "2026-12-01T15:00:00Z"}
    linked = LINKS.added_to(from_payment_event(event))
    assert (linked.dashboard_url, linked.runbook) == (BILLING, f"{RUNBOOKS}/payment-failures.md")


def test_without_configured_links_an_alert_keeps_only_what_it_brought() -> None:
    alarm = from_sns_alarm(alarm_message("SomeAlarm", "ALARM", T0))
    assert alarm is not None
    assert AlertLinks().added_to(alarm) == alarm
    linked = AlertLinks(runbook_base_url=None, dashboards=LINKS.dashboards).added_to(usage_alert())
    assert (linked.dashboard_url, linked.runbook) == (LICENSING, None)
