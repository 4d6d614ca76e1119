"""Side effects of a committed change are delivered at least once (issue: SNS failures, crashes).

Each test breaks one step after the write commits, and checks that the failed-payment event and
the business metrics still get out: through Stripe's retry, or through the scheduled sweep.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from billwatch.billing import side_effects
from billwatch.core import outbox
from billwatch.core.models import BillingAccount
from billwatch.licensing.usage_events import BusinessEventPublisher
from devtools import stripe_events as se
from tests.support import WEBHOOK_SECRET, LambdaContext, WebhookClient, load_handler


class Crash(BaseException):
    """The invocation dies: nothing in the function catches it, as nothing survives a kill."""


@pytest.fixture
def billing_topic(aws, monkeypatch: pytest.MonkeyPatch) -> Any:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    queues = {}
    for name, variable in (("billing", "BILLING_EVENTS_TOPIC_ARN"), ("usage", "USAGE_EVENTS_TOPIC_ARN")):
        topic = sns.create_topic(Name=f"{name}-events")["TopicArn"]
        queue = sqs.create_queue(QueueName=f"{name}-tap")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        monkeypatch.setenv(variable, topic)
        queues[name] = queue

    def received(name: str = "billing") -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queues[name], MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    return received


@pytest.fixture
def handler(billing_topic, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setattr(side_effects, "SWEEP_GRACE_SECONDS", 0)
    return load_handler("webhook_intake")


def sweep(handler: Any) -> dict[str, Any]:
    return handler.lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, LambdaContext())


def failed_payment(n: int = 1) -> dict[str, Any]:
    invoice = se.invoice(
        id=f"in_{n}", customer=f"cus_{n}", status="open", subscription_metadata={"account_id": f"acct_{n}"}
    )
    return se.event("invoice.payment_failed", invoice, created=int(time.time()) - 5)


def pending_items() -> list[str]:
    return list(outbox.pending_keys())


def failing_once(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    original = BusinessEventPublisher.publish
    calls = {"n": 0}

    def publish(self: BusinessEventPublisher, event: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        original(self, event)

    monkeypatch.setattr(BusinessEventPublisher, "publish", publish)


def dies_after_the_commit(
    webhooks: WebhookClient, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posts ``event`` to an invocation that a Crash kills, and lets its time run out."""
    monkeypatch.setattr(LambdaContext, "get_remaining_time_in_millis", lambda self: 1)
    with pytest.raises(Crash):
        webhooks.post(event)
    time.sleep(0.01)  # the dead invocation's time is up, and with it its in-progress record


def test_a_publish_that_fails_after_the_commit_is_delivered_by_the_sweep(
    handler, billing_topic, metrics, monkeypatch
) -> None:
    failing_once(monkeypatch, RuntimeError("SNS is down"))
    webhooks = WebhookClient(handler)
    event = failed_payment()
    response = webhooks.post(event)
    # Applied and on record: a retry cannot help, so Stripe is told it is done.
    assert (response.status, response.body["outcome"]) == (200, "applied")
    assert billing_topic() == []
    assert webhooks.post(event).body["outcome"] == "duplicate"
    assert billing_topic() == []
    assert pending_items() == ["acct_1"]

    assert sweep(handler)["delivered"] == 1
    (published,) = billing_topic()
    assert (published["invoice_id"], published["stripe_event_id"]) == ("in_1", event["id"])
    # The metrics had gone out with the first delivery: the sweep did not count them again.
    assert metrics.total("PaymentFailed") == 1
    assert pending_items() == []
    assert sweep(handler)["delivered"] == 0


def test_a_crash_right_after_the_commit_is_delivered_by_stripes_retry(
    handler, billing_topic, metrics, monkeypatch
) -> None:
    failing_once(monkeypatch, Crash())
    webhooks = WebhookClient(handler)
    event = failed_payment()
    dies_after_the_commit(webhooks, event, monkeypatch)
    response = webhooks.post(event)
    assert (response.status, response.body["outcome"]) == (200, "duplicate")
    (published,) = billing_topic()
    assert published["stripe_event_id"] == event["id"]
    assert metrics.total("PaymentFailed") >= 1


def test_a_crash_with_no_retry_is_delivered_by_the_sweep(
    handler, billing_topic, metrics, monkeypatch
) -> None:
    failing_once(monkeypatch, Crash())
    dies_after_the_commit(WebhookClient(handler), failed_payment(), monkeypatch)
    metrics_before = metrics.total("PaymentFailed")
    assert sweep(handler) == {"delivered": 1, "removed": 1, "failed": 0}
    assert len(billing_topic()) == 1
    assert metrics.total("PaymentFailed") == metrics_before + 1
    assert pending_items() == []


def test_a_crash_before_the_metrics_loses_no_business_movement(handler, metrics, monkeypatch) -> None:
    """The movement is judged from the standing the change replaced, which the entry kept."""
    original = side_effects.BusinessEffects.deliver
    crashed = {"once": False}

    def deliver(self: Any, effects: Any, *args: Any) -> list[str]:
        if not crashed["once"]:
            crashed["once"] = True
            raise Crash()
        return original(self, effects, *args)

    monkeypatch.setattr(side_effects.BusinessEffects, "deliver", deliver)
    live = se.subscription(id="sub_1", customer="cus_1", metadata={"account_id": "acct_1"})
    created = se.event("customer.subscription.created", live, created=int(time.time()) - 5)
    dies_after_the_commit(WebhookClient(handler), created, monkeypatch)
    assert metrics.total("SubscriptionsNew") == 0
    sweep(handler)
    assert metrics.total("SubscriptionsNew") == 1
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 1


def test_delivered_side_effects_are_removed_without_being_sent_again(handler, billing_topic, metrics) -> None:
    webhooks = WebhookClient(handler)
    for n in (1, 2, 3):
        assert webhooks.post(failed_payment(n)).status == 200
    assert len(billing_topic()) == 3
    assert sorted(pending_items()) == ["acct_1", "acct_2", "acct_3"]
    assert sweep(handler) == {"delivered": 0, "removed": 3, "failed": 0}
    assert billing_topic() == [] and metrics.total("PaymentFailed") == 3
    assert pending_items() == []
    item = outbox.raw_item("acct_1")
    assert outbox.entries(item) == {} and outbox.SHARD_ATTRIBUTE not in item
    assert not [name for name in item if name.startswith(outbox.PREFIX) and name != outbox.WRITTEN_ATTRIBUTE]


def test_a_containers_next_write_to_an_item_removes_what_it_delivered_there(handler, metrics) -> None:
    """Entries do not pile up on a busy account between sweeps: every write is charged by size."""
    webhooks = WebhookClient(handler)
    for n in range(5):
        event = failed_payment()
        event["data"]["object"]["id"] = f"in_{n}"
        event["created"] += n  # each newer than the last: within one second the ids would decide
        assert webhooks.post(event).body["outcome"] == "applied"
        assert list(outbox.entries(outbox.raw_item("acct_1"))) == [event["id"]]  # its own, no other
    assert metrics.total("PaymentFailed") == 5


def test_a_usage_announcement_whose_publish_fails_is_delivered_by_the_sweep(
    handler, billing_topic, monkeypatch
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    licensing = load_handler("licensing_api").licensing
    failing_once(monkeypatch, RuntimeError("SNS is down"))
    decision = licensing.use("acct_quota", "exports", 8)  # 80 % of the free tier's 10
    assert decision.allowed and decision.crossed_thresholds
    assert billing_topic("usage") == []
    assert pending_items() == ["acct_quota"]
    assert sweep(handler)["delivered"] == 1
    (published,) = billing_topic("usage")
    assert (published["account_id"], published["threshold"]) == ("acct_quota", 80)
    assert pending_items() == []


def test_an_entry_younger_than_the_grace_is_left_to_its_invocation(handler, monkeypatch) -> None:
    monkeypatch.setattr(side_effects, "SWEEP_GRACE_SECONDS", 3600)
    failing_once(monkeypatch, RuntimeError("SNS is down"))
    WebhookClient(handler).post(failed_payment())
    assert sweep(handler) == {"delivered": 0, "removed": 0, "failed": 0}
    assert BillingAccount.get("acct_1").outbox_written == 1


def test_an_event_delivered_twice_is_removed_once_and_never_beside_its_own_entry(
    handler, billing_topic, metrics, monkeypatch
) -> None:
    """Found by the chaos replay: a retry of a delivered event wrote its entry and removed it in
    one expression, and a doubly delivered entry was removed twice (DynamoDB refuses both)."""
    failing_once(monkeypatch, Crash())
    webhooks = WebhookClient(handler)
    event = failed_payment()
    dies_after_the_commit(webhooks, event, monkeypatch)
    assert webhooks.post(event).body["outcome"] == "duplicate"  # delivered by the retry
    store = handler.intake._store
    store.delivered("acct_1", event["id"])  # and once more, as a second retry would
    again = failed_payment()
    again["data"]["object"]["id"] = "in_2"
    again["created"] = event["created"] + 1  # newer: within one second the ids would decide
    assert webhooks.post(again).body["outcome"] == "applied"
    assert list(outbox.entries(outbox.raw_item("acct_1"))) == [again["id"]]
