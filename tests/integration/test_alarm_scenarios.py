"""Each alarm in template.yaml fires in the scenario it exists for, and stays quiet in its near miss.

The scenarios drive the real functions (moto behind them, a Stripe stand-in on 127.0.0.1) at
simulated moments; what they emit goes through devtools.alarm_evaluator, which steps the
template's alarm definitions through time the way CloudWatch evaluates them. AWS's own metrics
(Lambda, API Gateway, DynamoDB, SQS, SNS) are put in as CloudWatch would publish them.
"""

from __future__ import annotations

import calendar
import importlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from billwatch.core.models import BillingAccount, overage_shard
from billwatch.licensing.plans import shipped_catalog_text
from devtools import stripe_events as se
from devtools.alarm_evaluator import AlarmTimeline, MetricKey
from devtools.fake_meters import ReceivedEvent
from devtools.moto_patches import install_alarm_history
from devtools.template import ALARM_TYPE, COMPOSITE_ALARM_TYPE, QUERY_DEFINITION_TYPE, resolved_properties
from tests.alert_events import alarm_message, dispatcher_environment, sns_event
from tests.alert_receivers import Answer, alert_receivers
from tests.scenarios import ADMIN_CALLER, OUTSIDER, DynamoDBOutage, Scenario, SlowClock
from tests.support import STRIPE_ENDPOINT_URL, WEBHOOK_SECRET, webhook_endpoint

# Tuesday 2026-12-01 15:00 UTC: 10:00 in New York, inside the default business hours.
T0 = calendar.timegm((2026, 12, 1, 15, 0, 0))
MINUTE = 60
COVERED: set[str] = set()


def covers(*alarms: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Marks the scenario test of these alarms (each has one that fires and one that stays quiet)."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        COVERED.update(alarms)
        return test

    return mark


@pytest.fixture(scope="module")
def definitions(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    alarms = resolved_properties(template, ALARM_TYPE)
    composites = {
        name: p["AlarmRule"] for name, p in resolved_properties(template, COMPOSITE_ALARM_TYPE).items()
    }
    return alarms, composites


@pytest.fixture
def scenario(aws: dict, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return Scenario(monkeypatch, start=T0)


@pytest.fixture
def outage(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> DynamoDBOutage:
    return DynamoDBOutage(monkeypatch, {"UpdateItem", "Scan"})


def fired(
    definitions: tuple[dict[str, Any], dict[str, str]], scenario: Scenario, start: float, end: float
) -> set[str]:
    """The alarms that reached ALARM while evaluated every minute from start to end."""
    alarms, composites = definitions
    timeline = AlarmTimeline(alarms, composites, scenario.store)
    timeline.run(start, end)
    return {name for name in (*alarms, *composites) if timeline.fired(name)}


def every_minute(minutes: int, per_minute: int, start: float = T0) -> list[float]:
    """Moments spread over each minute, so none falls on a period boundary."""
    return [
        start + m * MINUTE + 1 + n * (58 // per_minute) for m in range(minutes) for n in range(per_minute)
    ]


def invoice_paid(n: int) -> dict[str, Any]:
    return se.event("invoice.paid", se.invoice(customer=f"cus_{n % 20}"))


def webhooks(scenario: Scenario, outage: DynamoDBOutage, moments: list[float], failing: set[int]) -> None:
    """One signed invoice.paid per moment; those whose index is in ``failing`` meet a DynamoDB outage."""
    for n, moment in enumerate(moments):
        scenario.at(moment)
        if n in failing:
            with outage.during():
                assert scenario.webhook(invoice_paid(n)) == 503
        else:
            assert scenario.webhook(invoice_paid(n)) == 200


def spread(count: int, total: int) -> set[int]:
    """``count`` indexes evenly spread over ``range(total)``."""
    return {n * total // count for n in range(count)}


# ------------------------------------------------------------------ webhook failures


@covers("HighWebhookFailureRate")
def healthy_history(scenario: Scenario, outage: DynamoDBOutage, minutes: int, per_minute: int) -> None:
    """Traffic before T0, so that the windows a timeline starts with are not nearly empty."""
    webhooks(scenario, outage, every_minute(minutes, per_minute, start=T0 - minutes * MINUTE), set())


@pytest.mark.parametrize(("failing", "fires"), [(3, True), (2, False)])  # of 50 in 10 minutes: 6 % or 4 %
def test_high_webhook_failure_rate_is_more_than_5_percent_over_10_minutes(
    definitions, scenario, outage, failing: int, fires: bool
) -> None:
    healthy_history(scenario, outage, 10, 5)
    webhooks(scenario, outage, every_minute(10, 5), spread(failing, 50))
    alarms = fired(definitions, scenario, T0, T0 + 10 * MINUTE)
    assert ("HighWebhookFailureRate" in alarms) is fires
    assert "StripeWebhookFailureRateHigh" not in alarms  # 6 % is below its 10 %


@covers("StripeWebhookFailures")
@pytest.mark.parametrize(("failing", "fires"), [(2, True), (1, False)])  # of 25 in 5 minutes: 8 % or 4 %
def test_stripe_webhook_failures_is_more_than_5_percent_over_5_minutes(
    definitions, scenario, outage, failing: int, fires: bool
) -> None:
    """ScholarLink: StripeWebhookFailures, > 5 % for 5 minutes, high."""
    healthy_history(scenario, outage, 10, 5)
    moments = every_minute(5, 5)
    webhooks(scenario, outage, moments, spread(failing, 25))
    webhooks(scenario, outage, every_minute(10, 5, start=T0 + 5 * MINUTE), set())
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert ("StripeWebhookFailures" in alarms) is fires


@pytest.mark.parametrize(
    ("total", "failing", "fires"),
    [
        pytest.param(4, {0, 1}, False, id="2-of-4-is-noise"),
        pytest.param(1, {0}, False, id="a-one-off"),
        pytest.param(2, {0, 1}, False, id="2-of-2-below-all-failed-minimum"),
        pytest.param(9, set(range(9)), True, id="9-of-9-a-quiet-stack-down"),
        pytest.param(3, {0, 1, 2}, True, id="3-of-3-all-there-is"),
        pytest.param(8, {0, 2, 4, 6, 7}, True, id="5-failures-many-in-absolute-terms"),
    ],
)
def test_low_traffic_hides_no_failure_and_a_one_off_pages_nobody(
    definitions, scenario, outage, total: int, failing: set[int], fires: bool
) -> None:
    """Below the minimum volume, failures still count when they are many or all there is (17.5)."""
    webhooks(scenario, outage, every_minute(1, total), failing)
    alarms = fired(definitions, scenario, T0, T0 + 10 * MINUTE)
    assert ("HighWebhookFailureRate" in alarms) is fires


@pytest.mark.parametrize(
    ("total", "failed", "fires"),
    [(1, {0}, False), (3, {0, 1, 2}, True), (4, {0, 1, 2}, False)],
    ids=["a-one-off", "3-of-3-all-there-is", "3-of-4-below-the-volume"],
)
def test_a_quiet_hour_of_payments_that_all_fail_pages(
    definitions, scenario, total: int, failed: set[int], fires: bool
) -> None:
    payments(scenario, every_minute(1, total), failed, history_minutes=0)
    alarms = fired(definitions, scenario, T0, T0 + 10 * MINUTE)
    assert ("PaymentFailureRateCritical" in alarms) is fires


@covers("StripeWebhookFailureRateHigh")
@pytest.mark.parametrize(
    ("failing_per_period", "fires"),
    [((3, 3, 3), True), ((3, 3, 1), False)],  # of 25 webhooks a 5-minute period: 12 % or 4 %
)
def test_webhook_failure_rate_high_is_more_than_10_percent_for_15_minutes(
    definitions, scenario, outage, failing_per_period: tuple[int, ...], fires: bool
) -> None:
    healthy_history(scenario, outage, 10, 5)
    failing = {p * 25 + n for p, count in enumerate(failing_per_period) for n in spread(count, 25)}
    webhooks(scenario, outage, every_minute(15, 5), failing)
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert ("StripeWebhookFailureRateHigh" in alarms) is fires
    assert "HighWebhookFailureRate" in alarms  # > 5 % in every 10 minutes of both


@covers("StripeWebhookProcessingDurationHigh")
# p95 of a period's few webhooks is its slowest, so the near miss is slow for 10 minutes, not 15.
@pytest.mark.parametrize(("slow_periods", "fires"), [(4, True), (2, False)])
def test_processing_p95_over_1_second_for_20_minutes(
    definitions, scenario, outage, monkeypatch, slow_periods: int, fires: bool
) -> None:
    clock = SlowClock(monkeypatch, delay_seconds=0.0)
    for n, moment in enumerate(every_minute(20, 2)):
        # A DynamoDB answering in 0.4 s: three requests a webhook make 1.2 s.
        clock.delay_seconds = 0.4 if moment < T0 + slow_periods * 5 * MINUTE else 0.0
        assert scenario.at(moment).webhook(invoice_paid(n)) == 200
    alarms = fired(definitions, scenario, T0, T0 + 20 * MINUTE)
    assert ("StripeWebhookProcessingDurationHigh" in alarms) is fires


@covers("WebhookSignatureFailuresSpike")
@pytest.mark.parametrize(("bad", "fires"), [(11, True), (10, False)])
def test_signature_failures_spike_is_more_than_10_in_5_minutes(
    definitions, scenario, bad: int, fires: bool
) -> None:
    for moment in every_minute(5, 3)[:bad]:
        assert scenario.at(moment).webhook_with_bad_signature() == 400
    assert ("WebhookSignatureFailuresSpike" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


# ------------------------------------------------------------------ payments


def payments(scenario: Scenario, moments: list[float], failed: set[int], history_minutes: int = 15) -> None:
    """Payments at the moments (after a history of successful ones); those in ``failed`` fail."""
    history = every_minute(history_minutes, 1, start=T0 - history_minutes * MINUTE)
    for n, moment in enumerate([*history, *moments], start=-len(history)):
        invoice = se.invoice(customer=f"cus_{n % 20}", status="open" if n in failed else "paid")
        event_type = "invoice.payment_failed" if n in failed else "invoice.paid"
        assert scenario.at(moment).webhook(se.event(event_type, invoice)) == 200


@covers("PaymentFailureRateHigh")
@pytest.mark.parametrize(("failed", "fires"), [(4, True), (2, False)])  # of 30 in 15 minutes: 13 % or 7 %
def test_payment_failure_rate_high_is_more_than_10_percent_over_15_minutes(
    definitions, scenario, failed: int, fires: bool
) -> None:
    payments(scenario, every_minute(15, 2), spread(failed, 30))
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert ("PaymentFailureRateHigh" in alarms) is fires
    assert "PaymentFailureRateCritical" not in alarms


@covers("PaymentFailureRateCritical")
@pytest.mark.parametrize(("failed", "fires"), [(6, True), (4, False)])  # of 20 in 10 minutes: 30 % or 20 %
def test_payment_failure_rate_critical_is_more_than_25_percent_over_10_minutes(
    definitions, scenario, failed: int, fires: bool
) -> None:
    payments(scenario, every_minute(10, 2), spread(failed, 20))
    alarms = fired(definitions, scenario, T0, T0 + 10 * MINUTE)
    assert ("PaymentFailureRateCritical" in alarms) is fires
    assert "PaymentFailureRateHigh" in alarms


@covers("SubscriptionCancellationRateHigh")
@pytest.mark.parametrize(("canceled", "fires"), [(3, True), (2, False)])  # of 20 created: 15 % or 10 %
def test_cancellations_over_10_percent_of_creations_in_an_hour(
    definitions, scenario, canceled: int, fires: bool
) -> None:
    for n, moment in enumerate(every_minute(20, 1, start=T0)):
        subscription = se.subscription(
            id=f"sub_{n}", customer=f"cus_{n}", metadata={"account_id": f"acct_{n}"}
        )
        assert scenario.at(moment).webhook(se.event("customer.subscription.created", subscription)) == 200
    for n, moment in enumerate(every_minute(canceled, 1, start=T0 + 30 * MINUTE)):
        ended = se.subscription(
            id=f"sub_{n}", customer=f"cus_{n}", status="canceled", metadata={"account_id": f"acct_{n}"}
        )
        assert (
            scenario.at(moment).webhook(se.event("customer.subscription.deleted", ended, created=T0 + n))
            == 200
        )
    alarms = fired(definitions, scenario, T0 + 40 * MINUTE, T0 + 60 * MINUTE)
    assert ("SubscriptionCancellationRateHigh" in alarms) is fires


# ------------------------------------------------------------------ licensing


def quota_checks(scenario: Scenario, moments: list[float], denied: set[int]) -> None:
    """Checks at the moments, after 10 minutes of allowed ones; those in ``denied`` are over quota."""
    assert scenario.usage("acct_full", "exports", 10) == 200  # FREE allows 10 exports a month
    history = every_minute(10, 4, start=T0 - 10 * MINUTE)
    for n, moment in enumerate([*history, *moments], start=-len(history)):
        scenario.at(moment)
        if n in denied:
            assert scenario.usage("acct_full", "exports") == 429
        else:
            assert scenario.usage(f"acct_{n % 7}", "api_calls") == 200


@covers("HighQuotaDenialRate")
@pytest.mark.parametrize(
    ("denied_per_period", "fires"),
    [((9, 9, 9), True), ((9, 9, 3), False)],  # of 30 checks a 5-minute period: 30 % or 10 %
)
def test_quota_denials_over_20_percent_for_15_minutes(
    definitions, scenario, denied_per_period: tuple[int, ...], fires: bool
) -> None:
    denied = {p * 30 + n for p, count in enumerate(denied_per_period) for n in spread(count, 30)}
    quota_checks(scenario, every_minute(15, 6), denied)
    assert ("HighQuotaDenialRate" in fired(definitions, scenario, T0, T0 + 15 * MINUTE)) is fires


@covers("UnauthorizedAdminAccess")
@pytest.mark.parametrize(("caller", "status", "fires"), [(OUTSIDER, 403, True), (ADMIN_CALLER, 200, False)])
def test_any_unauthorized_admin_call(definitions, scenario, caller: str, status: int, fires: bool) -> None:
    assert (
        scenario.at(T0 + 90).licensing("POST", "/admin/accounts/acct_1/usage-reset", caller=caller) == status
    )
    assert ("UnauthorizedAdminAccess" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


# ------------------------------------------------------------------ suspicious activity


def ordinary_traffic(scenario: Scenario) -> None:
    """A quiet night's events: a renewal paid, a card declined, a refund, one checkout. No alarm."""
    events = [
        ("invoice.paid", se.invoice(customer="cus_1", subscription_metadata={"account_id": "acct_1"})),
        ("payment_intent.payment_failed", se.payment_intent(customer="cus_1")),
        ("charge.refunded", se.charge(customer="cus_1", amount_refunded=500)),
        ("checkout.session.completed", se.checkout_session(customer="cus_1", subscription=None, created=T0)),
    ]
    for minute, (event_type, obj) in enumerate(events, start=1):
        moment = T0 + minute * MINUTE
        assert scenario.at(moment).webhook(se.event(event_type, obj, created=moment)) == 200


SUSPICIOUS = ("EarlyFraudWarningReceived", "DisputeOpened", "CheckoutVelocityHigh")


@covers("EarlyFraudWarningReceived", "DisputeOpened")
@pytest.mark.parametrize(
    ("event_type", "obj", "alarm"),
    [
        ("radar.early_fraud_warning.created", se.early_fraud_warning(), "EarlyFraudWarningReceived"),
        ("charge.dispute.created", se.dispute(reason="product_not_received"), "DisputeOpened"),
        (None, None, None),  # a quiet night
    ],
)
def test_any_fraud_warning_or_dispute_warns_and_a_quiet_night_pages_nobody(
    definitions, scenario, event_type: str | None, obj: dict | None, alarm: str | None
) -> None:
    ordinary_traffic(scenario)
    if event_type is not None:
        assert scenario.at(T0 + 300).webhook(se.event(event_type, obj, created=T0 + 300)) == 200
    alarms = fired(definitions, scenario, T0, T0 + 30 * MINUTE)
    assert alarms & set(SUSPICIOUS) == ({alarm} if alarm else set())


@covers("CheckoutVelocityHigh")
@pytest.mark.parametrize(
    ("sessions", "buyers", "fires"),
    [
        (11, 1, True),  # one customer's eleventh session in the minute
        (10, 1, False),  # at the limit, not over it
        (30, 30, False),  # a busy minute of thirty buyers
    ],
)
def test_one_buyer_over_ten_checkout_sessions_in_a_minute_warns(
    definitions, scenario, sessions: int, buyers: int, fires: bool
) -> None:
    for number in range(sessions):
        buyer = f"cus_burst_{number % buyers}"
        session = se.checkout_session(id=f"cs_{number}", customer=buyer, subscription=None, created=T0 + 5)
        moment = T0 + MINUTE + number
        ended = se.event("checkout.session.completed", session, created=moment)
        assert scenario.at(moment).webhook(ended) == 200
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert alarms & set(SUSPICIOUS) == ({"CheckoutVelocityHigh"} if fires else set())


# ------------------------------------------------------------------ meter errors


@covers("MeterErrorsReported")
@pytest.mark.parametrize(
    "event_type",
    ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found", None],  # None: quiet
)
def test_a_meter_error_report_warns_and_ordinary_traffic_does_not(
    definitions, scenario, event_type: str | None
) -> None:
    ordinary_traffic(scenario)
    if event_type is not None:
        notification = se.thin_event(event_type, "mtr_123", "billing.meter", created=T0 + 300)
        assert scenario.at(T0 + 300).webhook(notification) == 200
    fires = "MeterErrorsReported" in fired(definitions, scenario, T0, T0 + 30 * MINUTE)
    assert fires is (event_type is not None)


# ------------------------------------------------------------------ quota resets


def hourly_resets(
    scenario: Scenario, outage: DynamoDBOutage, hours: list[int], failing: set[int], past_minute: int = 0
) -> None:
    """A run each of these hours, ``past_minute`` into it: a rate schedule's phase is its creation's."""
    for hour in hours:
        BillingAccount(f"acct_due_{hour}", usage_since=1_700_000_000).save()
        scenario.at(T0 + hour * 3600 + past_minute * MINUTE + 30)
        run_id = f"run-{hour}"
        if hour in failing:
            with outage.during(), pytest.raises(Exception, match="Rate exceeded"):
                scenario.quota_reset_segment(run_id)
        else:
            assert scenario.quota_reset_segment(run_id)["finished"]


@covers("QuotaResetFailure")
@pytest.mark.parametrize(
    ("failing", "runs", "past_minute", "fires"),
    [
        pytest.param(set(), [-2, -1, 0, 1, 2, 3, 4], 0, False, id="every-run-finishes"),
        pytest.param({1}, [-2, -1, 0, 1, 2, 3, 4], 0, True, id="a-run-fails"),
        pytest.param(set(), [-2, -1], 0, True, id="the-runs-stop"),
        # Stacks created at 15:47: their rate(1 hour) first runs at 16:47, nothing was missed before.
        pytest.param(set(), [1, 2, 3, 4], 47, False, id="fresh-stack-runs-at-47"),
        pytest.param(set(), [1, 2], 47, True, id="fresh-stack-then-the-runs-stop"),
    ],
)
def test_quota_reset_failure_is_a_failed_or_a_missing_run(
    definitions, scenario, outage, failing: set[int], runs: list[int], past_minute: int, fires: bool
) -> None:
    scenario.handler("quota_reset")  # binds the tables before the accounts are written
    hourly_resets(scenario, outage, runs, failing, past_minute)
    # Judged from 15:48, a minute after the fresh stacks were created.
    alarms = fired(definitions, scenario, T0 + 48 * MINUTE, T0 + 5 * 3600)
    assert ("QuotaResetFailure" in alarms) is fires


# ------------------------------------------------------------------ health probe


@pytest.fixture
def probed(scenario: Scenario, stripe_api: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The scenario with the health probe able to reach the Stripe stand-in."""
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_probe")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    return stripe_api


STRIPE_DOWN = (500, {"type": "api_error", "message": "An unknown error occurred"})
RATE_LIMITED = (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"})


def probe_runs(scenario: Scenario, moments: list[float]) -> None:
    for moment in moments:
        scenario.at(moment).scheduled("health_probe")


def utc(*moment: int) -> float:
    return calendar.timegm((*moment, 0)[:6])


@covers("StripeWebhooksStalled", "StripeWebhooksQuiet")
@pytest.mark.parametrize(
    ("alarm", "last_webhook", "probed_from", "fires"),
    [
        # RSOLV: 6 h of business time, info. Then 18 h of silence, of which 3 h are business hours.
        ("StripeWebhooksStalled", utc(2026, 12, 1, 14, 0), utc(2026, 12, 1, 19, 50), True),
        ("StripeWebhooksStalled", utc(2026, 11, 30, 22, 0), utc(2026, 12, 1, 15, 50), False),
        ("StripeWebhooksStalled", utc(2026, 12, 4, 23, 0), utc(2026, 12, 5, 20, 50), False),
        # The quiet spell: 30 min of business time, warning. Tuesday 10:00 to 10:50, to 10:20;
        # Friday 17:50 to Saturday, outside business hours.
        ("StripeWebhooksQuiet", utc(2026, 12, 1, 15, 0), utc(2026, 12, 1, 15, 30), True),
        ("StripeWebhooksQuiet", utc(2026, 12, 1, 15, 0), utc(2026, 12, 1, 15, 0), False),
        ("StripeWebhooksQuiet", utc(2026, 12, 4, 22, 50), utc(2026, 12, 5, 15, 0), False),
    ],
    ids=[
        "tue-09-to-15",
        "mon-17-to-tue-11",
        "fri-18-to-sat-16",
        "tue-50-minutes",
        "tue-20-minutes",
        "saturday",
    ],
)
def test_silent_business_hours_warn_early_and_stall_late(
    definitions, scenario, alarm: str, last_webhook: float, probed_from: float, fires: bool
) -> None:
    assert scenario.at(last_webhook).webhook(invoice_paid(1)) == 200
    probe_runs(scenario, every_minute(20, 1, start=probed_from))
    alarms = fired(definitions, scenario, probed_from + 5 * MINUTE, probed_from + 20 * MINUTE)
    assert (alarm in alarms) is fires
    if alarm == "StripeWebhooksQuiet":
        assert "StripeWebhooksStalled" not in alarms


@covers("StripeWebhookDown")
@pytest.mark.parametrize(
    ("webhooks_stop", "stripe_failed_deliveries", "fires"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_webhook_down_is_silence_while_stripe_reports_failed_deliveries(
    definitions, scenario, outage, probed, webhooks_stop: bool, stripe_failed_deliveries: bool, fires: bool
) -> None:
    """Seed 000: rate(received[5m]) == 0 AND Stripe's dashboard shows failures."""
    until = T0 if webhooks_stop else T0 + 15 * MINUTE
    webhooks(
        scenario, outage, every_minute(int((until - T0) // MINUTE) + 10, 1, start=T0 - 10 * MINUTE), set()
    )
    for n, moment in enumerate(every_minute(25, 1, start=T0 - 10 * MINUTE)):
        if stripe_failed_deliveries and moment >= T0 and n % 3 == 0:
            probed.add_event(invoice_paid(1000 + n) | {"created": int(moment)}, delivered=False)
        scenario.at(moment).scheduled("health_probe")
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert ("StripeWebhookDown" in alarms) is fires
    assert ("WebhooksAbsent" in alarms) is webhooks_stop
    assert ("StripeWebhookDeliveryFailing" in alarms) is stripe_failed_deliveries


@covers("StripeApiHealthCheckFailing")
@pytest.mark.parametrize(("failing_minutes", "fires"), [(12, True), (4, False)])
def test_losing_the_stripe_api_for_a_whole_probe_period_is_critical(
    definitions, scenario, probed, failing_minutes: int, fires: bool
) -> None:
    """Thorbis: losing Stripe connectivity is critical; one failed run in a period is not a loss."""
    for n, moment in enumerate(every_minute(20, 1)):
        probed.failure = STRIPE_DOWN if 5 <= n < 5 + failing_minutes else None
        scenario.at(moment).scheduled("health_probe")
    assert ("StripeApiHealthCheckFailing" in fired(definitions, scenario, T0, T0 + 20 * MINUTE)) is fires


OLD_URL = "https://old.example.com/webhooks/stripe"


@covers("StripeWebhookEndpointDisabled", "StripeWebhookEndpointMissing")
@pytest.mark.parametrize(
    ("endpoints", "alarm"),
    [
        pytest.param([(STRIPE_ENDPOINT_URL, "enabled")], None, id="enabled"),
        pytest.param([(STRIPE_ENDPOINT_URL, "disabled")], "StripeWebhookEndpointDisabled", id="disabled"),
        pytest.param([(OLD_URL, "enabled")], "StripeWebhookEndpointMissing", id="moved"),
        pytest.param([], "StripeWebhookEndpointMissing", id="never-registered"),
    ],
)
def test_stripes_webhook_endpoint_must_be_enabled_at_this_stacks_url(
    definitions, scenario, probed, monkeypatch, endpoints: list[tuple[str, str]], alarm: str | None
) -> None:
    monkeypatch.setenv("WEBHOOK_ENDPOINT_URL", STRIPE_ENDPOINT_URL)
    probed.webhook_endpoints = [webhook_endpoint(url, status) for url, status in endpoints]
    probe_runs(scenario, every_minute(15, 1))
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    endpoint_alarms = {"StripeWebhookEndpointDisabled", "StripeWebhookEndpointMissing"}
    assert alarms & endpoint_alarms == ({alarm} if alarm else set())


@covers("BillingDatabaseDown")
@pytest.mark.parametrize(
    ("refused", "fires"),
    [
        pytest.param({"GetItem"}, True, id="the-probe-cannot-read-the-tables"),
        # Writes refused alone (a throttled burst) are the failure-rate alarms', not a database down.
        pytest.param({"UpdateItem"}, False, id="writes-refused"),
        pytest.param(set(), False, id="healthy"),
    ],
)
def test_the_database_down_for_a_minute_pages(
    definitions, scenario, monkeypatch, refused: set[str], fires: bool
) -> None:
    """ScholarLink: BillingDatabaseDown, 1 minute, high."""
    outage = DynamoDBOutage(monkeypatch, refused)
    for n, moment in enumerate(every_minute(15, 1)):
        if n == 7:
            with outage.during():
                scenario.at(moment).scheduled("health_probe")
        else:
            scenario.at(moment).scheduled("health_probe")
    alarms = fired(definitions, scenario, T0, T0 + 15 * MINUTE)
    assert ("BillingDatabaseDown" in alarms) is fires


@covers("StripeAPIErrorRate")
@pytest.mark.parametrize(("errors", "fires"), [(6, True), (5, False)])
def test_stripe_api_errors_more_than_5_in_an_hour(
    definitions, scenario, probed, errors: int, fires: bool
) -> None:
    for n, moment in enumerate(every_minute(30, 1)):
        if n % 5 == 0 and n // 5 < errors:
            probed.fail_next.append(RATE_LIMITED)  # one of the run's Stripe requests: one error
        scenario.at(moment).scheduled("health_probe")
    assert ("StripeAPIErrorRate" in fired(definitions, scenario, T0, T0 + 30 * MINUTE)) is fires


@covers("HealthProbeMissing")
@pytest.mark.parametrize(
    ("first_minute", "minutes", "fires"),
    [
        pytest.param(-10, 12, True, id="the-probe-stops"),
        pytest.param(-10, 40, False, id="the-probe-runs"),
        # The alarm exists from T0 (a fresh stack) and the probe's first run comes minutes later.
        pytest.param(3, 27, False, id="fresh-stack"),
        pytest.param(3, 5, True, id="fresh-stack-then-the-probe-stops"),
    ],
)
def test_the_dead_mans_switch_fires_when_the_probe_stops(
    definitions, scenario, first_minute: int, minutes: int, fires: bool
) -> None:
    probe_runs(scenario, every_minute(minutes, 1, start=T0 + first_minute * MINUTE))
    alarms = fired(definitions, scenario, T0, T0 + 30 * MINUTE)
    assert ("HealthProbeMissing" in alarms) is fires


# ------------------------------------------------------------------ reconciliation


@covers("ReconcileDriftFound")
@pytest.mark.parametrize(("stripe_status", "fires"), [("canceled", True), ("active", False)])
def test_reconcile_drift_found_is_any_state_that_differed_from_stripe(
    definitions, scenario, probed, stripe_status: str, fires: bool
) -> None:
    subscription = se.subscription(id="sub_1", customer="cus_1", metadata={"account_id": "acct_1"})
    assert scenario.at(T0 - 3600).webhook(se.event("customer.subscription.created", subscription)) == 200
    probed.subscriptions["sub_1"] = {**subscription, "status": stripe_status}
    assert scenario.at(T0 + 60).scheduled("reconcile")["finished"]
    assert ("ReconcileDriftFound" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


@covers("ReconcileRunFailed")
@pytest.mark.parametrize(("stripe_down", "fires"), [(True, True), (False, False)])
def test_reconcile_run_failed_is_any_run_that_stopped_on_an_error(
    definitions, scenario, probed, stripe_down: bool, fires: bool
) -> None:
    probed.failure = STRIPE_DOWN if stripe_down else None
    try:
        scenario.at(T0 + 60).scheduled("reconcile")
    except Exception:
        assert stripe_down
    assert ("ReconcileRunFailed" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


@pytest.fixture
def reporting(scenario: Scenario, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Scenario]:
    """The scenario with the billing report able to run: its stage, a log channel to take it, and
    moto's missing DescribeAlarmHistory filled in."""
    routes = tmp_path / "report-routes.json"
    routes.write_text(json.dumps(REPORT_ROUTES))
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("ALERT_ROUTES_PATH", str(routes))
    undo = install_alarm_history()
    yield scenario
    undo()


REPORT_ROUTES = {
    "repeat_interval_seconds": {"critical": 7200, "warning": 14400, "info": 43200},
    "stale_after_seconds": 86400,
    "route": {"receiver": "ops"},
    "receivers": {"ops": {"channels": [{"type": "log"}]}},
}


@covers("RevenueDriftDetected")
@pytest.mark.parametrize(
    ("stripe_usd", "recorded_usd", "probed_from_start", "stripe_key", "fires"),
    [
        (1000.0, 900.0, True, True, True),  # 10 % short: an invoice.paid never arrived
        (1000.0, None, True, True, True),  # no webhook all day (endpoint down), Stripe took money
        (1000.0, 995.0, True, True, False),  # 0.5 %: within the 1 % threshold
        (1000.0, 1000.0, True, True, False),
        (1000.0, 900.0, False, True, False),  # a first run: the stack came up during the day
        (1000.0, 900.0, True, False, False),  # no Stripe key: nothing to compare with
        (None, None, True, True, False),  # no money moved on either side
    ],
    ids=["drift", "webhooks-down", "within-threshold", "match", "first-run", "no-stripe-key", "no-data"],
)
def test_revenue_drift_detected_is_a_day_whose_recorded_money_differs_from_stripe(
    definitions,
    reporting,
    stripe_api,
    monkeypatch,
    stripe_usd: float | None,
    recorded_usd: float | None,
    probed_from_start: bool,
    stripe_key: bool,
    fires: bool,
) -> None:
    if stripe_key:
        monkeypatch.setenv("STRIPE_API_KEY", "rk_test_report")
        monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    if stripe_usd is not None:
        stripe_api.balance_transactions.append(
            se.balance_transaction(amount=int(stripe_usd * 100), created=T0 - 86400 + 3600)
        )
    reporting.at(T0).recorded_day(
        {"USD": recorded_usd} if recorded_usd else {}, probed_from_start, webhooks=recorded_usd is not None
    )
    reporting.billing_report()
    compared = any("RevenueReconciled" in document for _, document in reporting.documents)
    assert compared is (stripe_key and probed_from_start and stripe_usd is not None)
    assert ("RevenueDriftDetected" in fired(definitions, reporting, T0 - MINUTE, T0 + 10 * MINUTE)) is fires


@covers("MeterDriftDetected")
@pytest.mark.parametrize(
    ("in_stripe", "stripe_key", "fires"),
    [
        (5, True, True),  # Stripe counts 2 units more than billwatch sent
        (3, True, False),  # the units match: confirmed
        (0, True, False),  # not aggregated yet on a first comparison: settling, not drift
        (5, False, False),  # no Stripe key: nothing to compare with
        (None, True, False),  # a first run: no overage sent, nothing to compare
    ],
    ids=["over", "match", "settling", "no-stripe-key", "nothing-sent"],
)
def test_meter_drift_detected_is_a_period_whose_stripe_units_differ_from_what_was_sent(
    definitions,
    aws,
    reporting,
    stripe_api,
    monkeypatch,
    tmp_path,
    in_stripe: int | None,
    stripe_key: bool,
    fires: bool,
) -> None:
    catalog = json.loads(shipped_catalog_text())
    catalog["tiers"][0]["features"]["exports"].update(over_quota="overage", event_name="exports_overage")
    (tmp_path / "plans.json").write_text(json.dumps(catalog))
    monkeypatch.setenv("PLAN_CATALOG_PATH", str(tmp_path / "plans.json"))
    if stripe_key:
        monkeypatch.setenv("STRIPE_API_KEY", "rk_test_report")
        monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    stripe_api.meters.add_meter("exports_overage")
    if in_stripe is not None:
        # What the drain left: 3 units past FREE's quota of 10, accepted by Stripe, not yet confirmed.
        item = {
            "pk": {"S": "acct_metered"},
            "stripe_customer_id": {"S": "cus_metered"},
            "usage_since": {"N": str(T0 - 7200)},
            "overage_due": {"S": "sent#" + overage_shard("acct_metered")},
            "used_exports": {"N": "13"},
            "overage_reported_exports": {"N": "3"},
        }
        boto3.client("dynamodb").put_item(TableName=aws["BillingStateTable"], Item=item)
        if in_stripe:
            stripe_api.meters.accepted.append(
                ReceivedEvent("exports_overage", "bw_1", "cus_metered", in_stripe, T0 - 3600, T0 - 3600, "v1")
            )
    reporting.at(T0).recorded_day({})
    reporting.billing_report()
    compared = any("MeterReconciled" in document for _, document in reporting.documents)
    assert compared is (stripe_key and in_stripe is not None)
    assert ("MeterDriftDetected" in fired(definitions, reporting, T0 - MINUTE, T0 + 10 * MINUTE)) is fires


# ------------------------------------------------------------------ alert delivery


@pytest.fixture
def dispatching(scenario: Scenario, aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        yield receivers


@covers("AlertDeliveryFailures")
@pytest.mark.parametrize(("slack_answers", "fires"), [(404, True), (200, False)])
def test_alert_delivery_failures_are_any_notice_a_channel_did_not_take(
    definitions, scenario, dispatching, slack_answers: int, fires: bool
) -> None:
    dispatching.respond("/slack", [Answer(slack_answers)])
    denials = alarm_message("HighQuotaDenialRate", "ALARM", T0 + 60, severity="warning", runbook="licensing")
    assert scenario.at(T0 + 60).alert_input(sns_event(denials))["dispatched"] == 1
    assert ("AlertDeliveryFailures" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


@covers("AlertInputRejected")
@pytest.mark.parametrize(("message", "fires"), [("{not json", True), (None, False)])
def test_alert_input_rejected_is_any_record_the_dispatcher_cannot_read(
    definitions, scenario, dispatching, message: str | None, fires: bool
) -> None:
    good = alarm_message("HighQuotaDenialRate", "ALARM", T0 + 60, severity="warning", runbook="licensing")
    records = [good, message] if message else [good]
    assert scenario.at(T0 + 60).alert_input(sns_event(*records))["dispatched"] == 1
    assert ("AlertInputRejected" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


# ------------------------------------------------------------------ platform


# ------------------------------------------------------------------ the HTTP API's SLOs

API = {"ApiId": "HttpApi"}
WEBHOOK_ROUTE = {**API, "Stage": "$default", "Method": "POST", "Resource": "/webhooks/stripe"}
USAGE_ROUTE = {**API, "Stage": "$default", "Method": "POST", "Resource": "/v1/accounts/{account_id}/usage"}


def api_traffic(scenario: Scenario, minutes: int, per_minute: int, failing: set[int]) -> None:
    """API Gateway's per-minute Count and 5xx for the API from T0, after as much steady traffic
    before; request n answers 5xx if n is in ``failing``."""
    count, errors = (
        MetricKey.of("AWS/ApiGateway", "Count", **API),
        MetricKey.of("AWS/ApiGateway", "5xx", **API),
    )
    for minute in range(-minutes, minutes):
        moment = T0 + minute * MINUTE + 1
        requests = range(minute * per_minute, (minute + 1) * per_minute)
        scenario.store.put(count, moment, per_minute)
        scenario.store.put(errors, moment, sum(1 for n in requests if n in failing))


@covers("BillingHighErrorRate")
@pytest.mark.parametrize(
    ("per_minute", "failing", "fires"),
    [
        pytest.param(20, {45, 55}, True, id="2-of-100-is-over-1-percent"),
        pytest.param(40, {100}, False, id="1-of-200-is-half-a-percent"),
        pytest.param(1, {0, 1, 2, 3, 4}, True, id="5-of-5-on-a-quiet-api"),
        pytest.param(1, {0}, False, id="a-one-off-on-a-quiet-api"),
    ],
)
def test_the_api_answering_5xx_to_more_than_1_percent_pages(
    definitions, scenario, per_minute: int, failing: set[int], fires: bool
) -> None:
    """ScholarLink: BillingHighErrorRate, > 1 % for 5 minutes, high."""
    api_traffic(scenario, 10, per_minute, failing)
    assert ("BillingHighErrorRate" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


def latencies(scenario: Scenario, dimensions: dict[str, str], minutes: range, slow_ms: float) -> None:
    """20 requests a minute; in the ``minutes`` given, 2 of each 20 take ``slow_ms`` (p95 is slow)."""
    key = MetricKey.of("AWS/ApiGateway", "Latency", **dimensions)
    for minute in range(20):
        for n in range(20):
            slow = minute in minutes and n < 2
            scenario.store.put(key, T0 + minute * MINUTE + 1 + n, slow_ms if slow else 40)


@covers("BillingHighLatency")
@pytest.mark.parametrize(("slow_ms", "fires"), [(1200, True), (900, False)])
def test_an_api_p95_over_1_second_warns(definitions, scenario, slow_ms: float, fires: bool) -> None:
    latencies(scenario, API, range(5, 10), slow_ms)
    assert ("BillingHighLatency" in fired(definitions, scenario, T0, T0 + 20 * MINUTE)) is fires


@covers("StripeWebhookLatencyHigh", "LicensingApiLatencyHigh")
@pytest.mark.parametrize(
    ("alarm", "route", "slow_ms", "slow_minutes", "fires"),
    [
        ("StripeWebhookLatencyHigh", WEBHOOK_ROUTE, 3500, range(0, 15), True),
        ("StripeWebhookLatencyHigh", WEBHOOK_ROUTE, 3500, range(0, 5), False),  # one period, not 3
        ("StripeWebhookLatencyHigh", WEBHOOK_ROUTE, 2500, range(0, 15), False),
        ("LicensingApiLatencyHigh", USAGE_ROUTE, 250, range(0, 15), True),
        ("LicensingApiLatencyHigh", USAGE_ROUTE, 150, range(0, 15), False),
    ],
)
def test_a_route_slow_for_15_minutes_warns(
    definitions, scenario, alarm: str, route: dict[str, str], slow_ms: float, slow_minutes: range, fires: bool
) -> None:
    """ScholarLink's webhook latency > 3 s consistently; RSOLV's licensing API p95 < 200 ms."""
    latencies(scenario, route, slow_minutes, slow_ms)
    assert (alarm in fired(definitions, scenario, T0, T0 + 20 * MINUTE)) is fires


AWS_METRIC_OF_ALARM: dict[str, tuple[str, str, dict[str, str]]] = {
    **{
        f"{function}Lambda{metric}": ("AWS/Lambda", metric, {"FunctionName": f"{function}Function"})
        for function in (
            "WebhookIntake",
            "LicensingApi",
            "QuotaReset",
            "HealthProbe",
            "AlertDispatch",
            "Reconcile",
            "BillingReport",
            "OverageDrain",
        )
        for metric in ("Errors", "Throttles")
    },
    "HttpApi5xx": ("AWS/ApiGateway", "5xx", {"ApiId": "HttpApi"}),
    "DynamoDBThrottles": ("AWS/DynamoDB", "WriteThrottleEvents", {"TableName": "IdempotencyTable"}),
    "WebhookDLQNotEmpty": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": "WebhookDLQ.QueueName"},
    ),
    "QuotaResetDLQNotEmpty": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": "QuotaResetDLQ.QueueName"},
    ),
    "ReconcileDLQNotEmpty": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": "ReconcileDLQ.QueueName"},
    ),
    "AlertDLQNotEmpty": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": "AlertDLQ.QueueName"},
    ),
    # Overage ranges parked unbilled: fires on the first, quiet while the queue is empty (a fresh stack).
    "OverageDrainDeadLetters": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": "OverageDrainDLQ.QueueName"},
    ),
    "AlertTopicDeliveryFailures": (
        "AWS/SNS",
        "NumberOfNotificationsFailed",
        {"TopicName": "InfoAlarmTopic.TopicName"},
    ),
}


def test_every_platform_alarm_has_a_scenario(definitions) -> None:
    alarms, _ = definitions
    aws_alarms = {name for name, p in alarms.items() if p.get("Namespace", "").startswith("AWS/")}
    aws_alarms |= {
        name
        for name, p in alarms.items()
        if any(
            q["MetricStat"]["Metric"]["Namespace"].startswith("AWS/")
            for q in p.get("Metrics", [])
            if "MetricStat" in q
        )
    }
    # The API's SLO alarms read rates and percentiles of API Gateway's metrics: scenarios of their own.
    slo_alarms = {
        "BillingHighErrorRate",
        "BillingHighLatency",
        "StripeWebhookLatencyHigh",
        "LicensingApiLatencyHigh",
    }
    assert aws_alarms == set(AWS_METRIC_OF_ALARM) | slo_alarms
    assert slo_alarms <= COVERED


@pytest.mark.parametrize("alarm", sorted(AWS_METRIC_OF_ALARM))
@pytest.mark.parametrize(("value", "fires"), [(5, True), (0, False)])
def test_platform_alarms_fire_on_their_metric(
    definitions, scenario, alarm: str, value: float, fires: bool
) -> None:
    namespace, metric, dimensions = AWS_METRIC_OF_ALARM[alarm]
    key = MetricKey.of(namespace, metric, **dimensions)
    for moment in every_minute(10, 1):  # AWS publishes these every minute, zeros included
        scenario.store.put(key, moment, value if moment > T0 + 5 * MINUTE else 0)
    assert (alarm in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires


# ------------------------------------------------------------------ saved log searches


def _query_filter(query: str) -> tuple[str, str, list[str]]:
    level, message = re.search(r'level = "([A-Z]+)" and message = "([^"]+)"', query).groups()
    fields = re.search(r"^fields (.*)$", query, flags=re.MULTILINE)[1]
    return level, message, [f.strip() for f in fields.split(",") if not f.strip().startswith("@")]


def test_the_saved_log_searches_find_what_the_code_logs(template, scenario, outage) -> None:
    assert scenario.webhook_with_bad_signature() == 400
    upgrade = se.subscription(id="sub_up", customer="cus_up", metadata={"account_id": "acct_up"})
    assert scenario.webhook(se.event("customer.subscription.created", upgrade)) == 200
    with outage.during():
        assert scenario.webhook(se.event("customer.subscription.updated", upgrade, created=T0 + 5)) == 503
    queries = resolved_properties(template, QUERY_DEFINITION_TYPE)
    queries.pop("AdminActionsQuery")  # the audit trail's (tests/integration/test_audit_trail.py)
    for name, query in queries.items():
        level, message, fields = _query_filter(query["QueryString"])
        found = [log for log in scenario.logs if log.get("level") == level and log.get("message") == message]
        assert found, f"{name}: nothing logs {level} {message!r}"
        assert all(field in found[0] for field in fields), (name, sorted(found[0]))
    upgrades = [log for log in scenario.logs if log.get("message") == "User upgraded to PRO"]
    assert [log["account_id"] for log in upgrades] == ["acct_up"]


def test_every_alarm_has_its_scenarios(definitions) -> None:
    # The anomaly alarms' scenarios mark them covered when their module loads, even if run alone.
    importlib.import_module("test_anomaly_alarm_scenarios")
    alarms, composites = definitions
    building_blocks = {
        child for rule in composites.values() for child in re.findall(r'ALARM\("([^"]+)"\)', rule)
    }
    assert COVERED | set(AWS_METRIC_OF_ALARM) == (set(alarms) | set(composites)) - building_blocks
