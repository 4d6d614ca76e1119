from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billwatch.billing.stripe_events import (
    HANDLED_EVENT_TYPES,
    STRIPE_EPOCH,
    MalformedEvent,
    event_version,
    parse_event,
)
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from devtools import stripe_events as se

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")


@pytest.mark.parametrize("legacy", [False, True])
def test_subscription_period_is_read_from_either_api_shape(legacy: bool) -> None:
    obj = se.subscription(current_period_start=1_760_000_010, current_period_end=1_760_000_020, legacy=legacy)
    assert ("current_period_end" in obj) is legacy
    parsed = parse_event(se.event("customer.subscription.updated", obj), CATALOG)
    assert (parsed.change.fields["current_period_start"], parsed.change.fields["current_period_end"]) == (
        1_760_000_010,
        1_760_000_020,
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_invoice_account_is_read_from_either_api_shape(legacy: bool) -> None:
    obj = se.invoice(subscription_metadata={"account_id": "acct_9"}, legacy=legacy)
    assert ("parent" in obj and obj["parent"]) is not legacy
    parsed = parse_event(se.event("invoice.paid", obj), CATALOG)
    assert parsed.account.account_id == "acct_9"
    assert parsed.change.fields["last_payment_status"] == "succeeded"


def test_account_identity_prefers_metadata_then_client_reference_then_customer() -> None:
    session = se.checkout_session(
        customer="cus_1", client_reference_id="acct_ref", metadata={"account_id": "acct_md"}
    )
    assert (
        parse_event(se.event("checkout.session.completed", session), CATALOG).account.account_id == "acct_md"
    )
    session = se.checkout_session(customer="cus_1", client_reference_id="acct_ref", metadata={})
    assert (
        parse_event(se.event("checkout.session.completed", session), CATALOG).account.account_id == "acct_ref"
    )
    sub = se.subscription(customer="cus_1", metadata={})
    ref = parse_event(se.event("customer.subscription.created", sub), CATALOG).account
    assert (ref.account_id, ref.customer_id) == (None, "cus_1")


def test_an_expanded_customer_is_read_by_id() -> None:
    sub = se.subscription()
    sub["customer"] = {"id": "cus_expanded", "object": "customer"}
    assert (
        parse_event(se.event("customer.subscription.created", sub), CATALOG).account.customer_id
        == "cus_expanded"
    )


@pytest.mark.parametrize(
    ("status", "tier"),
    [("active", "PRO"), ("trialing", "PRO"), ("past_due", "PRO"), ("unpaid", "FREE"), ("canceled", "FREE")],
)
def test_tier_follows_entitling_statuses(status: str, tier: str) -> None:
    parsed = parse_event(se.event("customer.subscription.updated", se.subscription(status=status)), CATALOG)
    assert parsed.change.fields["tier"] == tier and parsed.change.fields["plan_tier"] == "PRO"


def test_unhandled_types_are_read_without_a_change() -> None:
    parsed = parse_event(se.event("payout.paid", {"id": "po_1", "object": "payout"}), CATALOG)
    assert not parsed.handled and parsed.change is None
    assert "payout.paid" not in HANDLED_EVENT_TYPES


def test_entitlement_lookup_keys_are_sorted_and_unique() -> None:
    summary = se.entitlement_summary(lookup_keys=("sso", "audit", "sso"))
    parsed = parse_event(se.event("entitlements.active_entitlement_summary.updated", summary), CATALOG)
    assert parsed.change.fields["entitlement_lookup_keys"] == ["audit", "sso"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.update(type=7), "type"),
        (lambda e: e.update(created=True), "created"),
        (lambda e: e["data"].update(object=[]), "data.object"),
        (lambda e: e["data"]["object"]["entitlements"].update(data="x"), "entitlements.data"),
    ],
)
def test_malformed_events_name_the_field(mutate, field: str) -> None:
    event = se.event("entitlements.active_entitlement_summary.updated", se.entitlement_summary())
    mutate(event)
    with pytest.raises(MalformedEvent, match=field):
        parse_event(json.loads(json.dumps(event)), CATALOG)


@given(
    st.integers(0, 10**11),
    st.integers(0, 999),
    st.text("abc", min_size=1, max_size=4),
    st.integers(0, 10**11),
    st.integers(0, 999),
    st.text("abc", min_size=1, max_size=4),
)
def test_versions_compare_as_strings_like_tuples(c1, r1, id1, c2, r2, id2) -> None:
    # DynamoDB compares the stored version as a string; it must agree with (created, rank, id).
    assert (event_version(c1, r1, id1) < event_version(c2, r2, id2)) == ((c1, r1, id1) < (c2, r2, id2))


NOW = 1_800_000_000
FIVE_YEARS = 5 * 366 * 86400


def _subscription_event(**subscription: object) -> dict:
    return se.event("customer.subscription.updated", se.subscription(**subscription), created=NOW - 60)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (se.event("invoice.paid", se.invoice(), created=10**13), "created"),
        (se.event("invoice.paid", se.invoice(), created=NOW + 3601), "created"),
        (se.event("invoice.paid", se.invoice(), created=STRIPE_EPOCH - 1), "created"),
        (se.event("invoice.paid", se.invoice(), created=-1), "created"),
        (_subscription_event(current_period_end=10**13), "current_period_end"),
        (_subscription_event(current_period_end=NOW + FIVE_YEARS + 1), "current_period_end"),
        (_subscription_event(current_period_start=0, created=NOW - 86400), "current_period_start"),
        (_subscription_event(trial_end=2**63), "trial_end"),
        (
            se.event("invoice.payment_failed", {**se.invoice(), "amount_due": 10**13}, created=NOW),
            "amount_due",
        ),
        (se.event("invoice.payment_failed", {**se.invoice(), "amount_paid": -1}, created=NOW), "amount_paid"),
        (se.event("invoice.paid", se.invoice(), created=NOW, id="evt_1#x"), "id"),
        (se.event("invoice.paid", se.invoice(), created=NOW, id="x" * 5000), "id"),
        (se.event("x" * 129, {"id": "obj_1"}, created=NOW), "type"),
        (se.event("Invoice.Paid\n", {"id": "obj_1"}, created=NOW), "type"),
        (
            se.event("invoice.payment_failed", {**se.invoice(), "currency": "usd\u0000"}, created=NOW),
            "currency",
        ),
        (
            se.event("invoice.payment_failed", {**se.invoice(), "attempt_count": -1}, created=NOW),
            "attempt_count",
        ),
    ],
)
def test_out_of_range_times_amounts_and_ids_are_malformed_and_named(event: dict, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse_event(event, CATALOG, now=NOW)


def _priced(**price: object) -> dict:
    subscription = se.subscription()
    subscription["items"]["data"][0]["price"].update(price)
    return se.event("customer.subscription.updated", subscription, created=NOW - 60)


def _discounted(coupon: dict) -> dict:
    return se.event(
        "customer.subscription.updated",
        {**se.subscription(), "discounts": [{"id": "di_1", "coupon": {"duration": "forever", **coupon}}]},
        created=NOW - 60,
    )


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_priced(recurring={"interval": "month", "interval_count": -1}), "interval_count"),
        (_priced(recurring={"interval": "month", "interval_count": 10**6}), "interval_count"),
        (_priced(unit_amount_decimal="1e40"), "unit_amount_decimal"),
        (_priced(unit_amount_decimal="-5"), "unit_amount_decimal"),
        (_priced(unit_amount_decimal="NaN"), "unit_amount_decimal"),
        (_discounted({"percent_off": 300}), "percent_off"),
        (_discounted({"amount_off": -100, "currency": "usd"}), "amount_off"),
        (
            _subscription_event(current_period_start=NOW + 86400 * 365, created=NOW - 60),
            "current_period_start",
        ),
        (
            _subscription_event(current_period_start=NOW - 10, current_period_end=NOW - 20, created=NOW - 60),
            "current_period_end is not after",
        ),
    ],
)
def test_prices_discounts_and_periods_out_of_range_are_malformed(event: dict, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse_event(event, CATALOG, now=NOW)


def test_a_monthly_revenue_beyond_any_real_one_is_malformed() -> None:
    subscription = se.subscription()
    subscription["items"]["data"][0]["quantity"] = 10**9
    subscription["items"]["data"][0]["price"].update(
        unit_amount=999_999_999_999, unit_amount_decimal="999999999999"
    )
    with pytest.raises(MalformedEvent, match="monthly revenue"):
        parse_event(
            se.event("customer.subscription.updated", subscription, created=NOW - 60), CATALOG, now=NOW
        )


def test_plausible_edges_are_read() -> None:
    parse_event(se.event("invoice.paid", se.invoice(), created=NOW + 3600), CATALOG, now=NOW)
    parse_event(_subscription_event(current_period_end=NOW + FIVE_YEARS), CATALOG, now=NOW)


HOSTILE_IDS = [
    "health#last-probe",
    "marker#webhook-received",
    "job#quota-reset",
    "a b",
    "a\nb",
    "x" * 129,
    "",
    "\u0430cct",  # a Cyrillic a
    "cus_imposter",
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda v: se.event(
                "checkout.session.completed",
                {**se.checkout_session(), "client_reference_id": v, "metadata": {}},
            ),
            "data.object.client_reference_id",
        ),
        (
            lambda v: se.event("customer.subscription.created", se.subscription(metadata={"account_id": v})),
            "data.object.metadata.account_id",
        ),
        (
            lambda v: se.event("invoice.paid", se.invoice(subscription_metadata={"account_id": v})),
            "subscription_details.metadata.account_id",
        ),
    ],
)
def test_hostile_account_ids_leave_the_event_unattributed(hostile: str, build, field: str) -> None:
    parsed = parse_event(build(hostile), CATALOG)
    assert parsed.refused_id_field is not None and parsed.refused_id_field.endswith(field)
    assert parsed.account.account_id is None and parsed.account.customer_id is None


@pytest.mark.parametrize("hostile", ["health#last-probe", "acct_1", "cus_", "cus_a#b", "cus_" + "a" * 200])
def test_customer_ids_must_look_like_stripe_customers(hostile: str) -> None:
    parsed = parse_event(
        se.event("customer.subscription.created", se.subscription(customer=hostile)), CATALOG
    )
    assert parsed.refused_id_field == "data.object.customer"


def test_a_decimal_amount_is_read_as_stripe_python_gives_it_too() -> None:
    """Reconciliation reads subscriptions through stripe-python, which turns *_decimal into Decimal."""
    from decimal import Decimal

    from billwatch.billing.stripe_events import subscription_change

    subscription = se.subscription()
    subscription["items"]["data"][0]["price"]["unit_amount_decimal"] = Decimal("2000")
    change, _ = subscription_change("reconcile-1", NOW, 999, subscription, CATALOG)
    assert change.fields["mrr"] == 2000


# --- what an event counts -------------------------------------------------------------------------


def test_events_that_only_count_carry_their_bounded_facts_and_no_change() -> None:
    refund = se.event(
        "charge.refunded", se.charge(amount_refunded=700), previous_attributes={"amount_refunded": 200}
    )
    declined = se.event("payment_intent.payment_failed", se.payment_intent(decline_code="do_not_honor"))
    warning = se.event("radar.early_fraud_warning.created", se.early_fraud_warning(fraud_type="misc"))
    dispute = se.event("charge.dispute.created", se.dispute(reason="bank_said_so"))
    parsed = [parse_event(event, CATALOG) for event in (refund, declined, warning, dispute)]
    assert [p.change for p in parsed] == [None] * 4 and all(p.handled and p.counts for p in parsed)
    assert [dict(p.signals) for p in parsed] == [
        {"refund": {"amount": 500, "currency": "usd"}},
        {"decline_reason": "card_declined"},
        {"fraud_type": "misc"},
        {"dispute_reason": "other"},
    ]


def _refund(total: int, previous: object = None, refunds: list[tuple[int, int]] | None = None) -> dict:
    charge = se.charge(amount_refunded=total)
    if refunds is not None:
        charge["refunds"]["data"] = [{"amount": amount, "created": created} for amount, created in refunds]
    return se.event("charge.refunded", charge, previous_attributes=previous)


@pytest.mark.parametrize(
    ("event", "refunded"),
    [
        (_refund(1500, {"amount_refunded": 500}), 1000),
        # previous_attributes wins over the refunds list: it is the event's own account of the change.
        (_refund(1500, {"amount_refunded": 500}, [(700, 1_700_000_100)]), 1000),
        (_refund(1500, None, [(500, 1_700_000_000), (1000, 1_700_000_100)]), 1000),
        (_refund(1500, {"refunded": False}, [(1000, 1_700_000_100), (500, 1_700_000_000)]), 1000),
        # The same second: Stripe lists the newest first.
        (_refund(1500, None, [(1000, 1_700_000_100), (500, 1_700_000_100)]), 1000),
        (_refund(1500, None, []), 1500),
        (_refund(1500, None), 1500),
    ],
)
def test_a_refund_counts_what_the_event_newly_refunded(event: dict, refunded: int) -> None:
    assert parse_event(event, CATALOG).signals == {"refund": {"amount": refunded, "currency": "usd"}}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_refund(500, "junk"), "data.previous_attributes must be an object"),
        (_refund(500, {"amount_refunded": "100"}), "data.previous_attributes.amount_refunded"),
        (_refund(500, {"amount_refunded": True}), "data.previous_attributes.amount_refunded"),
        (_refund(500, {"amount_refunded": -1}), "data.previous_attributes.amount_refunded"),
        (_refund(500, {"amount_refunded": 501}), "data.previous_attributes.amount_refunded"),
        (_refund(500, None, [(501, 1_700_000_000)]), r"data.object.refunds.data\[0\].amount"),
        (_refund(500, None, [(500, "today")]), r"data.object.refunds.data\[0\].created"),
    ],
)
def test_a_refund_s_before_that_no_stripe_event_can_hold_is_malformed(event: dict, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse_event(event, CATALOG)


@pytest.mark.parametrize(
    ("event_type", "obj", "signals"),
    [
        (
            "payment_intent.payment_failed",
            se.payment_intent(decline_code="Do_Not_Honor", error_code="card_declined"),
            {"decline_reason": "card_declined"},
        ),
        (
            "payment_intent.payment_failed",
            se.payment_intent(decline_code="x" * 1000, error_code="Card Declined; DROP TABLE"),
            {"decline_reason": "other"},
        ),
        (
            "radar.early_fraud_warning.created",
            se.early_fraud_warning(fraud_type="Misc"),
            {"fraud_type": "other"},
        ),
        ("charge.dispute.created", se.dispute(reason="product not received"), {"dispute_reason": "other"}),
    ],
)
def test_a_reason_of_any_spelling_is_counted_in_its_bounded_class(
    event_type: str, obj: dict, signals
) -> None:
    assert parse_event(se.event(event_type, obj), CATALOG).signals == signals


def test_a_refund_s_refused_customer_leaves_it_unattributed_but_counted() -> None:
    parsed = parse_event(
        se.event("charge.refunded", se.charge(customer="cus_#x", amount_refunded=5)), CATALOG
    )
    assert parsed.refused_id_field == "data.object.customer" and parsed.counts
    assert parsed.signals == {"refund": {"amount": 5, "currency": "usd"}}


def test_a_paid_invoice_counts_its_duration_and_a_checkout_its_buyers() -> None:
    paid = parse_event(
        se.event("invoice.paid", se.invoice(created=1_700_000_000, paid_at=1_700_000_042)), CATALOG
    )
    assert paid.signals == {"payment_duration": {"seconds": 42, "method": "default"}}
    session = se.checkout_session(
        id="cs_1", customer="cus_1", email=" Buyer@Example.com", created=1_700_000_000
    )
    checkout = parse_event(se.event("checkout.session.completed", session), CATALOG).checkout
    assert checkout is not None and (checkout.id, checkout.created) == ("cs_1", 1_700_000_000)
    kinds = dict(checkout.buyers)
    assert (
        kinds["customer"] == "cus_1" and "buyer" not in kinds["email"].lower() and len(kinds["email"]) == 64
    )
