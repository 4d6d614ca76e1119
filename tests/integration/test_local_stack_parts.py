"""The whole template on the local stack: every schedule fires, every alarm is evaluated, and an
alarm that fires reaches the alert dispatcher through its SNS topic.

The stack runs with autorun off, so each test moves the schedules and the alarms itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools.emulator import LocalEmulator
from devtools.template import ALARM_TYPE, COMPOSITE_ALARM_TYPE, load_template, resources_of_type, schedules
from tests.integration.test_local_stack import call

TEMPLATE = load_template("template.yaml")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalEmulator]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("STRIPE_WEBHOOK_SECRET", "SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
            patch.delenv(name, raising=False)
        with LocalEmulator(autorun=False).start(port=0) as running:
            yield running


def test_every_schedule_of_a_deployed_function_fires_with_its_triggers_event(stack: LocalEmulator) -> None:
    expected = {(s.function, s.name) for s in schedules(TEMPLATE) if s.function not in stack.undeployed}
    assert {(s.function, s.name) for s in stack.schedules} == expected
    # Reconcile and the overage drain need a Stripe key (their Condition): without one CloudFormation
    # leaves them out.
    assert stack.undeployed == ["OverageDrainFunction", "ReconcileFunction"]

    fired = [stack.scheduler.fire(schedule) for schedule in stack.schedules]

    failures = [(f.schedule.function, f.schedule.name, f.error) for f in fired if not f.succeeded]
    assert failures == []
    assert list(stack.fired)[-len(fired) :] == fired
    _, _, body = call(stack.url + "/health", method="GET")
    assert json.loads(body)["checks"]["probe"]["status"] == "ok"  # the scheduled probe ran


def test_the_scheduler_fires_what_falls_due_in_order_on_the_local_clock(stack: LocalEmulator) -> None:
    start = stack.clock.now()
    fired = stack.scheduler.fire_due(start + 3 * 60)

    assert [f.schedule.function for f in fired].count("HealthProbeFunction") >= 3  # every minute
    assert [f.at for f in fired] == sorted(f.at for f in fired)
    assert all(f.succeeded for f in fired)


def test_every_alarm_of_the_template_is_evaluated(stack: LocalEmulator) -> None:
    stack.alarms.evaluate()

    alarms = {*resources_of_type(TEMPLATE, ALARM_TYPE), *resources_of_type(TEMPLATE, COMPOSITE_ALARM_TYPE)}
    # Alarms on what only a Stripe key makes (the reconcile function, the revenue reconciliation)
    # share its Condition: without a key CloudFormation makes none of them.
    resources = TEMPLATE["Resources"]
    not_deployed = {name for name in alarms if resources[name].get("Condition") == "HasStripeApiKeySecret"}
    assert not_deployed and set(stack.alarms.states) == alarms - not_deployed
    assert stack.alarms.evaluations >= 1


def test_a_failing_function_fires_its_errors_alarm_and_the_alert_reaches_the_dispatcher(
    stack: LocalEmulator,
) -> None:
    with pytest.raises(ValueError, match="not a billing report request"):
        stack.invoke("BillingReportFunction", {"period": "monthly"})

    events = stack.alarms.evaluate(stack.clock.now() + 60)
    stack.topics.drain()

    fired = [event for event in events if event.alarm == "BillingReportLambdaErrors"]
    assert [(e.new_state, e.topics) for e in fired] == [("ALARM", ("WarningAlarmTopic",))]
    sent = [a for a in stack.alerts_sent if a["alert"]["name"] == "BillingReportLambdaErrors"]
    assert [(a["receiver"], a["kind"], a["alert"]["severity"]) for a in sent] == [
        ("oncall-warning", "firing", "warning")
    ]
    assert any(d.topic == "WarningAlarmTopic" and d.succeeded for d in stack.deliveries)


def test_the_status_api_shows_requests_schedules_alarms_alerts_and_accounts(stack: LocalEmulator) -> None:
    from tests.integration.test_local_stack import post_signed, subscription_created

    webhook = stack.url + "/webhooks/stripe"
    event = subscription_created("acct_status", "evt_status_1")
    assert post_signed(webhook, event, list(stack.webhook_secrets))[1]["outcome"] == "applied"
    assert post_signed(webhook, event, list(stack.webhook_secrets))[1]["outcome"] == "duplicate"

    status, _, body = call(stack.url + "/_local/api/status", method="GET")
    assert status == 200
    shown = json.loads(body)
    webhooks = [r for r in shown["requests"] if r.get("id") == "evt_status_1"]
    assert [(r["status"], r["outcome"], r["type"]) for r in webhooks] == [
        (200, "duplicate", "customer.subscription.created"),
        (200, "applied", "customer.subscription.created"),
    ]
    assert {s["function"] for s in shown["schedules"]} == {s.function for s in stack.schedules}
    assert all(s["next"] for s in shown["schedules"])
    assert {a["id"] for a in shown["alarms"]} == set(stack.alarms.states)
    assert {a["severity"] for a in shown["alarms"]} <= {"critical", "warning", "info"}

    status, _, body = call(stack.url + "/_local/api/accounts", method="GET")
    (account,) = [a for a in json.loads(body) if a["account"] == "acct_status"]
    assert (account["tier"], account["subscription_status"]) == ("PRO", "active")
    assert {u["feature"] for u in account["usage"]} and all(u["used"] == 0 for u in account["usage"])
