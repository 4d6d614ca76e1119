"""The seeds' rules on the local stack: a failure a quiet night would have hidden shows on the status
page, and the local receiver gets the alert with the severity the seed gave it."""

from __future__ import annotations

import json

import pytest

from devtools import stripe_events as se
from devtools.emulator import LocalEmulator
from tests.integration.test_local_stack import call, post_signed
from tests.scenarios import DynamoDBOutage


def status(stack: LocalEmulator) -> dict:
    code, _, body = call(stack.url + "/_local/api/status", method="GET")
    assert code == 200
    return json.loads(body)


def test_nine_of_nine_webhooks_failing_on_a_quiet_stack_page_as_critical(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STRIPE_WEBHOOK_SECRET", "SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.delenv(name, raising=False)
    # Started in the test, not a fixture: the stack reads the functions' EMF from the sys.stdout of
    # the phase it starts in, and pytest gives each phase its own.
    with LocalEmulator(autorun=False).start(port=0) as stack:
        outage = DynamoDBOutage(monkeypatch, {"PutItem", "UpdateItem"})
        with outage.during():
            for n in range(9):
                invoice = se.invoice(customer=f"cus_quiet_{n}")
                event = se.event("invoice.paid", invoice)
                answer, _ = post_signed(stack.url + "/webhooks/stripe", event, list(stack.webhook_secrets))
                assert answer == 503
        failed_at = stack.clock.now()
        for minutes in (1, 2, 3):  # rounds a minute apart, all within the 5-minute window of the failures
            stack.alarms.evaluate(failed_at + minutes * 60)
            stack.topics.drain()
        page = status(stack)

    shown = {alarm["id"]: alarm for alarm in page["alarms"]}
    # ScholarLink's 5-minute rule and seed 000's 10-minute rule, both critical.
    for name in ("StripeWebhookFailures", "HighWebhookFailureRate"):
        assert (shown[name]["state"], shown[name]["severity"]) == ("ALARM", "critical"), name
    paged = {
        (alert["receiver"], alert["name"], alert["severity"])
        for alert in page["alerts"]
        if alert["kind"] == "firing"
    }
    assert ("oncall-critical", "StripeWebhookFailures", "critical") in paged, paged
