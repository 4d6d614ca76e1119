"""Stripe's thin events (event notifications) by webhook and by EventBridge: verified, resolved to
the v1 event they stand for through a stand-in Stripe API on 127.0.0.1, and applied by the same
idempotent, ordered path as snapshot events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billwatch.billing.stripe_events import HANDLED_EVENT_TYPES
from billwatch.core.models import BillingAccount
from devtools import stripe_events as se
from tests.integration.test_ordering_property import final_state, lifecycle
from tests.support import WEBHOOK_SECRET, FakeStripeApi, WebhookClient, load_handler

NOW = 1_760_000_000
ACCOUNT = {"account_id": "acct_thin"}

# One snapshot event of each type billwatch handles, as the builders make them.
OBJECT_OF: dict[str, Callable[[], dict[str, Any]]] = {
    "checkout.session.completed": lambda: se.checkout_session(
        customer="cus_thin", client_reference_id="acct_thin", created=NOW
    ),
    "checkout.session.expired": lambda: se.checkout_session(
        customer=None, subscription=None, status="expired", created=NOW
    ),
    "invoice.paid": lambda: se.invoice(customer="cus_thin", subscription_metadata=ACCOUNT, created=NOW),
    "invoice.payment_failed": lambda: se.invoice(
        customer="cus_thin", status="open", subscription_metadata=ACCOUNT, created=NOW
    ),
    "entitlements.active_entitlement_summary.updated": lambda: se.entitlement_summary(customer="cus_thin"),
    "customer.deleted": lambda: se.customer(id="cus_thin", metadata=ACCOUNT),
    "charge.refunded": lambda: se.charge(customer="cus_thin", amount_refunded=2000, created=NOW),
    "payment_intent.payment_failed": lambda: se.payment_intent(customer="cus_thin", created=NOW),
    "charge.dispute.created": lambda: se.dispute(created=NOW),
    "radar.early_fraud_warning.created": lambda: se.early_fraud_warning(created=NOW),
    **{
        event_type: lambda: se.subscription(id="sub_thin", customer="cus_thin", metadata=ACCOUNT)
        for event_type in HANDLED_EVENT_TYPES
        if event_type.startswith("customer.subscription.")
    },
}


@pytest.fixture
def thin_webhooks(aws, stripe_api, monkeypatch) -> WebhookClient:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_local_readonly")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    return WebhookClient(load_handler("webhook_intake"))


def published(stripe_api: FakeStripeApi, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The thin notification of ``snapshot``, with both events where Stripe's API serves them."""
    stripe_api.add_event(snapshot)
    notification = se.thin_event_of(snapshot)
    stripe_api.v2_events[notification["id"]] = se.fetched_thin_event(notification, snapshot["id"])
    return notification


def subscription_event(event_type: str, status: str = "active", created: int = NOW) -> dict[str, Any]:
    sub = se.subscription(id="sub_thin", customer="cus_thin", status=status, metadata=ACCOUNT)
    return se.event(event_type, sub, created=created)


def test_the_covered_types_are_the_handled_ones() -> None:
    assert set(OBJECT_OF) == HANDLED_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(HANDLED_EVENT_TYPES))
def test_every_handled_type_delivered_thin_is_applied_as_its_v1_event(
    thin_webhooks, stripe_api, event_type: str
) -> None:
    snapshot = se.event(event_type, OBJECT_OF[event_type](), created=NOW)
    answer = thin_webhooks.post(published(stripe_api, snapshot))
    assert answer.status == 200
    assert answer.body["event_id"] == snapshot["id"]  # the v1 event's identity, not the notification's
    assert answer.body["outcome"] in {"applied", "counted", "unattributed"}
    # The same change delivered as a snapshot event is the same event: applied once.
    assert thin_webhooks.post(snapshot).body["outcome"] == "duplicate"


@pytest.mark.parametrize("thin_first", [True, False], ids=["thin-then-snapshot", "snapshot-then-thin"])
def test_a_change_delivered_in_both_formats_is_applied_once(
    thin_webhooks, stripe_api, metrics, thin_first: bool
) -> None:
    snapshot = subscription_event("customer.subscription.created")
    notification = published(stripe_api, snapshot)
    deliveries = [notification, snapshot] if thin_first else [snapshot, notification]
    outcomes = [thin_webhooks.post(delivery).body["outcome"] for delivery in deliveries]
    assert outcomes == ["applied", "duplicate"]
    assert BillingAccount.get("acct_thin", consistent_read=True).tier == "PRO"
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 1
    # Two deliveries, each received once, as the v1 event both resolve to.
    assert metrics.total("WebhookReceived", EventType="customer.subscription.created") == 2
    assert metrics.total("WebhookReceived", EventType="v1.customer.subscription.created") == 0


IN_ORDER: list[dict[str, Any]] = []


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_lifecycle_in_any_order_and_any_mix_of_formats_ends_in_the_in_order_state(
    thin_webhooks, stripe_api, data
) -> None:
    """A migration's deliveries: each change as a snapshot event, a thin event or both, any order."""
    if not IN_ORDER:  # the same in every example: delivered once
        in_order = uuid.uuid4().hex[:10]
        for event in lifecycle(in_order, metadata_on_subscription=True, tied=False):
            assert thin_webhooks.post(event).status == 200
        IN_ORDER.append(final_state(in_order))
    shuffled = uuid.uuid4().hex[:10]
    events = lifecycle(shuffled, metadata_on_subscription=True, tied=False)
    deliveries: list[dict[str, Any]] = []
    for event in events:
        as_thin = published(stripe_api, event)
        deliveries += data.draw(st.sampled_from([[event], [as_thin], [event, as_thin]]), label="formats")
    for delivery in data.draw(st.permutations(deliveries), label="delivery order"):
        assert thin_webhooks.post(delivery).status == 200
    assert final_state(shuffled) == IN_ORDER[0]


def test_order_is_kept_across_formats(thin_webhooks, stripe_api) -> None:
    """A thin event of an older change, arriving after a newer snapshot event, is stale."""
    older = published(stripe_api, subscription_event("customer.subscription.updated", "active", NOW - 60))
    assert thin_webhooks.post(subscription_event("customer.subscription.deleted", "canceled")).status == 200
    assert thin_webhooks.post(older).body["outcome"] == "stale"
    assert BillingAccount.get("acct_thin", consistent_read=True).subscription_status == "canceled"


def test_eventbridge_delivers_thin_events_through_the_same_path(thin_webhooks, stripe_api) -> None:
    snapshot = subscription_event("customer.subscription.created")
    notification = published(stripe_api, snapshot)
    assert thin_webhooks.eventbridge(notification) == {"event_id": snapshot["id"], "outcome": "applied"}
    assert thin_webhooks.eventbridge(snapshot)["outcome"] == "duplicate"


def test_a_bad_signature_gets_400_before_anything_is_read(thin_webhooks, stripe_api, metrics) -> None:
    notification = published(stripe_api, subscription_event("customer.subscription.created"))
    answer = thin_webhooks.post(notification, secrets="whsec_someone_else")
    assert answer.status == 400 and answer.body["error"] == "invalid_signature"
    assert stripe_api.requests == []
    assert metrics.total("WebhookSignatureInvalid") == 1


def test_without_a_restricted_key_a_thin_event_gets_503_naming_the_key(webhooks, metrics) -> None:
    notification = se.thin_event("v1.invoice.paid", "in_thin", "invoice")
    answer = webhooks.post(notification)
    assert answer.status == 503
    assert "STRIPE_API_KEY_SECRET_ID" in answer.body["message"]
    assert metrics.total("ThinEventUnresolved", Reason="NoRestrictedKey") == 1
    assert metrics.total("WebhookReceived", EventType="v1.invoice.paid") == 1
    assert metrics.total("WebhookFailed", EventType="v1.invoice.paid", Reason="ThinEventUnresolved") == 1
    from billwatch.billing.intake import ProcessingFailed

    with pytest.raises(ProcessingFailed, match="STRIPE_API_KEY_SECRET_ID"):  # Lambda retries, then the DLQ
        webhooks.eventbridge(notification)


def test_stripe_failing_to_serve_the_event_gets_503_and_the_retry_applies(
    thin_webhooks, stripe_api, metrics
) -> None:
    snapshot = subscription_event("customer.subscription.created")
    notification = published(stripe_api, snapshot)
    # A key without the Events read permission: fixed by granting it, so Stripe's retry can succeed.
    stripe_api.failing_paths[f"/v1/events/{snapshot['id']}"] = (
        403,
        {"type": "invalid_request_error", "message": "The provided key does not have access"},
    )
    assert thin_webhooks.post(notification).status == 503
    assert metrics.total("ThinEventUnresolved", Reason="StripeFailed") == 1
    assert metrics.total("StripeApiError", Code="permission") == 1
    stripe_api.failing_paths.clear()
    assert thin_webhooks.post(notification).body["outcome"] == "applied"


def test_a_thin_event_stripe_names_no_v1_event_for_gets_422(thin_webhooks, stripe_api, metrics) -> None:
    notification = se.thin_event("v1.invoice.paid", "in_thin", "invoice")
    stripe_api.v2_events[notification["id"]] = se.fetched_thin_event(notification, None)
    answer = thin_webhooks.post(notification)
    assert answer.status == 422
    assert metrics.total("ThinEventUnresolved", Reason="NoSnapshotEvent") == 1


@pytest.mark.parametrize("event_type", ["v1.customer.updated", "v2.core.event_destination.ping"])
def test_unhandled_thin_types_get_200_without_a_fetch(thin_webhooks, stripe_api, metrics, event_type) -> None:
    answer = thin_webhooks.post(se.thin_event(event_type, "obj_1", "customer"))
    assert answer.status == 200 and answer.body["outcome"] == "unhandled"
    assert stripe_api.requests == []
    assert metrics.total("WebhookUnhandled", EventType=event_type) == 1


@pytest.mark.parametrize(
    ("event_type", "counted_as"),
    [
        ("v1.billing.meter.error_report_triggered", "error_report_triggered"),
        ("v1.billing.meter.no_meter_found", "no_meter_found"),
    ],
)
def test_meter_errors_are_counted_even_without_a_key(webhooks, metrics, event_type, counted_as) -> None:
    answer = webhooks.post(se.thin_event(event_type, "mtr_123", "billing.meter"))
    assert answer.status == 200 and answer.body["outcome"] == "counted"
    assert metrics.total("MeterErrorReported", Type=counted_as) == 1
    assert any(log.get("meter") == "mtr_123" for log in metrics.logs())


def test_a_notification_without_a_valid_id_gets_400(webhooks) -> None:
    notification = {**se.thin_event("v1.invoice.paid", "in_thin", "invoice"), "id": "../v1/customers"}
    answer = webhooks.post(notification)
    assert answer.status == 400 and "id" in answer.body["message"]
