"""Property: any delivery order of a subscription's lifecycle, duplicates included, ends in the
same billing state as in-order delivery."""

from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billwatch.core.models import BillingAccount
from devtools import stripe_events as se

BASE = 1_760_000_000
# Bookkeeping, not state: when it was written, how often, and side effects still to deliver.
VOLATILE = {"created_at", "updated_at", "revision", "outbox_shard", "outbox_written"}


def lifecycle(suffix: str, *, metadata_on_subscription: bool, tied: bool) -> list[dict]:
    """Checkout, created, upgraded, paid, renewal failed, past_due, deleted: Stripe's usual story."""
    account, customer, sub = f"acct_{suffix}", f"cus_{suffix}", f"sub_{suffix}"
    metadata = {"account_id": account} if metadata_on_subscription else {}

    def at(step: int) -> int:
        # With `tied`, neighbouring events share a second, as Stripe's one-second `created` allows.
        return BASE + (step // 2 if tied else step) * 1

    def subscription_event(event_type: str, step: int, **fields) -> dict:
        obj = se.subscription(id=sub, customer=customer, metadata=metadata, **fields)
        return se.event(event_type, obj, id=f"evt_{step}_{suffix}", created=at(step))

    invoice_meta = {"account_id": account} if metadata_on_subscription else None

    def invoice_event(event_type: str, step: int, **fields) -> dict:
        obj = se.invoice(customer=customer, subscription=sub, subscription_metadata=invoice_meta, **fields)
        return se.event(event_type, obj, id=f"evt_{step}_{suffix}", created=at(step))

    return [
        se.event(
            "checkout.session.completed",
            se.checkout_session(
                id=f"cs_{suffix}", customer=customer, client_reference_id=account, subscription=sub
            ),
            id=f"evt_0_{suffix}",
            created=at(0),
        ),
        subscription_event("customer.subscription.created", 1, status="incomplete"),
        subscription_event("customer.subscription.updated", 2, status="active", lookup_key="pro_yearly"),
        invoice_event("invoice.paid", 3, id=f"in_1_{suffix}", billing_reason="subscription_create"),
        invoice_event("invoice.payment_failed", 4, id=f"in_2_{suffix}", status="open"),
        subscription_event("customer.subscription.updated", 5, status="past_due", lookup_key="pro_yearly"),
        subscription_event("customer.subscription.deleted", 6, status="canceled", lookup_key="pro_yearly"),
    ]


def final_state(suffix: str) -> dict:
    item = BillingAccount.get(f"acct_{suffix}", consistent_read=True)
    state = {key: value for key, value in item.attribute_values.items() if key not in VOLATILE}
    return json.loads(json.dumps(state, default=str).replace(suffix, "X"))


# The in-order state of each story (account in the metadata or not, neighbours tied or not): the
# same in every example, so each story is delivered in order once, not once per example.
IN_ORDER: dict[tuple[bool, bool], dict] = {}


def in_order_state(webhooks, metadata_on_subscription: bool, tied: bool) -> dict:
    story = (metadata_on_subscription, tied)
    if story not in IN_ORDER:
        suffix = uuid.uuid4().hex[:10]
        for event in lifecycle(suffix, metadata_on_subscription=metadata_on_subscription, tied=tied):
            assert webhooks.eventbridge(event)["outcome"] in {"applied", "stale"}
        IN_ORDER[story] = final_state(suffix)
    return IN_ORDER[story]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    metadata_on_subscription=st.booleans(),
    tied=st.booleans(),
)
def test_every_delivery_order_ends_in_the_in_order_state(
    webhooks, data, metadata_on_subscription, tied
) -> None:
    shuffled = uuid.uuid4().hex[:10]
    expected = in_order_state(webhooks, metadata_on_subscription, tied)
    assert expected["subscription_status"] == "canceled" and expected["tier"] == "FREE"
    assert expected["last_payment_status"] == "failed" and expected["stripe_customer_id"] == "cus_X"

    events = lifecycle(shuffled, metadata_on_subscription=metadata_on_subscription, tied=tied)
    order = data.draw(st.permutations(range(len(events))), label="delivery order")
    repeats = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=4), label="redelivered")
    deliveries = list(order)
    for index in repeats:
        position = data.draw(st.integers(0, len(deliveries)), label="redelivery position")
        deliveries.insert(position, index)
    for index in deliveries:
        webhooks.eventbridge(events[index])

    assert final_state(shuffled) == expected
    # Nothing is left stranded under the customer id: it only redirects to the account.
    redirect = BillingAccount.get(f"cus_{shuffled}", consistent_read=True)
    assert redirect.merged_into == f"acct_{shuffled}" and redirect.subscription_status is None
