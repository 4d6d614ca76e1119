"""The anomaly alarms fire in the scenario they exist for, and stay quiet in normal traffic.

An anomaly band trains on the day before each period (devtools.alarm_evaluator), 96 periods of
15 minutes. Replaying a day of real invocations would take the suite minutes, so the training day
is synthetic: one datapoint of the alarm's own metric per 15 minutes, put into ``scenario.store``
as CloudWatch would hold it. The 30 minutes under test are real invocations of the handlers, whose
EMF output lands in the same store. The real events of a period come in a batch, a second apart, at
the moment of the period where the synthetic datapoints fall, so every 15-minute window that ends on
a minute (as the timeline evaluates them) holds exactly one period's worth, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import test_alarm_scenarios as alarm_scenarios
from test_alarm_scenarios import MINUTE, T0, covers, fired, invoice_paid

from devtools import stripe_events as se
from devtools.alarm_evaluator import TRAINING_WINDOW_SECONDS, MetricKey
from tests.scenarios import Scenario

PERIOD = 15 * MINUTE  # the default period of the anomaly alarms
UNDER_TEST = 2  # periods of real invocations after T0

# The fixtures of the alarm scenarios, and through the module its COVERED set.
definitions = alarm_scenarios.definitions
scenario = alarm_scenarios.scenario


def trained_on(scenario: Scenario, metric: str, values: Sequence[float]) -> None:
    """A training day before T0 of ``metric`` [service]: one datapoint a period, taking ``values`` in turn."""
    key = MetricKey.of("Billwatch", metric, service="billwatch")
    for age in range(TRAINING_WINDOW_SECONDS // PERIOD, 0, -1):
        scenario.store.put(key, T0 - age * PERIOD + PERIOD / 2, values[age % len(values)])


def batches(per_period: int) -> list[float]:
    """``per_period`` moments a second apart in each period under test, where the training datapoints fall."""
    return [T0 + period * PERIOD + PERIOD / 2 + n for period in range(UNDER_TEST) for n in range(per_period)]


def fired_while_under_test(definitions, scenario: Scenario) -> set[str]:
    return fired(definitions, scenario, T0, T0 + UNDER_TEST * PERIOD)


@covers("WebhookVolumeAnomaly")
# A day of 8 and 12 webhooks in turn: mean 10, standard deviation 2, band 4 to 16 at 3 of them.
@pytest.mark.parametrize(("per_period", "fires"), [(10, False), (2, True), (25, True)])
def test_webhook_volume_outside_its_band_for_two_periods(
    definitions, scenario, per_period: int, fires: bool
) -> None:
    trained_on(scenario, "WebhookReceived", [8, 12])
    for n, moment in enumerate(batches(per_period)):
        assert scenario.at(moment).webhook(invoice_paid(n)) == 200
    assert ("WebhookVolumeAnomaly" in fired_while_under_test(definitions, scenario)) is fires


@covers("QuotaUsageSpike")
# A day of 40 and 60 units in turn: mean 50, standard deviation 10, upper edge 80.
@pytest.mark.parametrize(("quantity", "fires"), [(25, False), (100, True)])  # 50 or 200 a period
def test_quota_usage_above_its_band(definitions, scenario, quantity: int, fires: bool) -> None:
    trained_on(scenario, "UsageCounted", [40, 60])
    for n, moment in enumerate(batches(2)):
        assert scenario.at(moment).usage(f"acct_{n}", "api_calls", quantity) == 200
    assert ("QuotaUsageSpike" in fired_while_under_test(definitions, scenario)) is fires


@covers("PaymentFailureAnomaly")
# A day of 1 and 3 failures in turn: mean 2, standard deviation 1, upper edge 5.
@pytest.mark.parametrize(("per_period", "fires"), [(2, False), (8, True)])
def test_payment_failures_above_their_band(definitions, scenario, per_period: int, fires: bool) -> None:
    trained_on(scenario, "PaymentFailed", [1, 3])
    for n, moment in enumerate(batches(per_period)):
        failed = se.event("invoice.payment_failed", se.invoice(customer=f"cus_{n}", status="open"))
        assert scenario.at(moment).webhook(failed) == 200
    assert ("PaymentFailureAnomaly" in fired_while_under_test(definitions, scenario)) is fires


@covers("LargeQuotaGrant")
@pytest.mark.parametrize(("quantity", "fires"), [(1500, True), (1000, False)])
def test_a_grant_of_more_than_1000_units(definitions, scenario, quantity: int, fires: bool) -> None:
    grant = {"feature": "api_calls", "quantity": quantity}
    assert scenario.at(T0 + 90).licensing("POST", "/admin/accounts/acct_1/grants", grant) == 200
    assert ("LargeQuotaGrant" in fired(definitions, scenario, T0, T0 + 10 * MINUTE)) is fires
