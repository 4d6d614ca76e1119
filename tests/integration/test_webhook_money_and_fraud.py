"""Money, declines and suspicious activity from Stripe's events, through the webhook handler on moto.

Some of these events change an account (a paid or failed invoice, a checkout); the others only
count (a refund, a declined payment attempt, a dispute, an early fraud warning): each is counted
once per event id, whoever delivers it how often, and a delivery that fails is Stripe's to retry.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from billwatch.billing.velocity import KEY_PREFIX
from devtools import stripe_events as se
from tests.integration.test_webhook_intake import account, sub_event, table_items
from tests.support import WebhookClient, load_handler

NOW = int(time.time())
MINUTE = NOW - NOW % 60 - 600  # a whole minute, ten minutes ago


def paid_invoice(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    fields.setdefault("customer", "cus_1")
    fields.setdefault("subscription", "sub_1")
    fields.setdefault("subscription_metadata", {"account_id": "acct_1"})
    fields.setdefault("created", NOW - 120)
    return se.event("invoice.paid", se.invoice(**fields), id=event_id, created=NOW)


def refund(
    amount_refunded: int,
    before: int | None,
    event_id: str | None = None,
    refunds: list[tuple[int, int]] | None = None,
    **fields: Any,
) -> dict:
    """A charge.refunded of ch_1; ``refunds``: the charge's expanded refunds list, (amount, created)."""
    fields.setdefault("customer", "cus_1")
    charge = se.charge(id="ch_1", amount=2000, amount_refunded=amount_refunded, **fields)
    charge["refunds"]["data"] = [
        {"id": f"re_{created}", "object": "refund", "amount": amount, "created": created, "currency": "usd"}
        for amount, created in refunds or ()
    ]
    previous = None if before is None else {"amount_refunded": before}
    return se.event("charge.refunded", charge, id=event_id, created=NOW, previous_attributes=previous)


@pytest.fixture
def pro_account(webhooks: WebhookClient) -> None:
    """acct_1, Stripe customer cus_1, on PRO."""
    assert webhooks.post(sub_event("customer.subscription.created", created=NOW - 300)).status == 200


# --- invoices -------------------------------------------------------------------------------------


def test_a_first_paid_invoice_counts_its_amount_its_duration_and_the_funnel(
    webhooks, metrics, pro_account
) -> None:
    invoice = paid_invoice(
        billing_reason="subscription_create", paid_at=NOW - 30, payment_method_types=["card"], amount_due=4900
    )
    assert webhooks.post(invoice).status == 200
    assert metrics.total("FirstInvoicePaid", Tier="PRO") == 1
    assert metrics.total("PaymentDuration", PaymentMethod="card") == 90
    assert metrics.total("PaymentAmount", Currency="USD", Tier="PRO") == 49.0
    assert metrics.total("SubscriptionRenewed", Tier="PRO") == 0


def test_a_renewal_is_no_first_payment(webhooks, metrics, pro_account) -> None:
    assert webhooks.post(paid_invoice(billing_reason="subscription_cycle")).status == 200
    assert metrics.total("FirstInvoicePaid", Tier="PRO") == 0
    assert metrics.total("SubscriptionRenewed", Tier="PRO") == 1


@pytest.mark.parametrize(
    ("types", "method"),
    [
        (None, "default"),
        ([], "default"),
        (["sepa_debit"], "sepa_debit"),
        (["us_bank_account"], "us_bank_account"),
        (["wechat_pay"], "other"),
        (["card", "link"], "other"),
        (["Card"], "other"),
        (["a_type_stripe_adds_" + "x" * 100], "other"),
    ],
)
def test_the_payment_method_is_the_invoice_s_one_type_else_default_or_other(
    webhooks, metrics, types, method
) -> None:
    assert webhooks.post(paid_invoice(paid_at=NOW - 60, payment_method_types=types)).status == 200
    assert metrics.total("PaymentDuration", PaymentMethod=method) == 60


def test_an_invoice_without_its_finalisation_has_no_duration(webhooks, metrics) -> None:
    invoice = paid_invoice()
    invoice["data"]["object"]["status_transitions"]["finalized_at"] = None
    assert webhooks.post(invoice).status == 200
    assert metrics.total("PaymentDuration") == 0 and metrics.total("PaymentSucceeded") == 1


def test_a_failed_invoice_counts_the_amount_due_by_currency_and_plan(webhooks, metrics, pro_account) -> None:
    failed = se.invoice(
        status="open", customer="cus_1", subscription_metadata={"account_id": "acct_1"}, amount_due=1250
    )
    failed["currency"] = "eur"
    assert webhooks.post(se.event("invoice.payment_failed", failed, created=NOW)).status == 200
    assert metrics.total("PaymentFailedAmount", Currency="EUR", Tier="PRO") == 12.5
    assert metrics.total("PaymentFailed") == 1
    # A failed invoice carries no decline: the payment intent's own event does (counted below).
    assert metrics.total("PaymentDeclined") == 0


def test_an_invoice_s_failed_amount_is_counted_at_its_first_failure_only(
    webhooks, metrics, pro_account
) -> None:
    def failed(attempt: int) -> dict[str, Any]:
        invoice = se.invoice(
            id="in_dunned", status="open", customer="cus_1", subscription_metadata={"account_id": "acct_1"}
        )
        invoice.update(amount_due=4900, attempt_count=attempt)
        return se.event(
            "invoice.payment_failed", invoice, id=f"evt_dunning_{attempt}", created=NOW - 10 + attempt
        )

    for attempt in (1, 2, 3):  # the first attempt, then two of Stripe's dunning retries
        assert webhooks.post(failed(attempt)).status == 200
    assert webhooks.post(failed(1)).body["outcome"] == "duplicate"
    assert metrics.total("PaymentFailed") == 3
    assert metrics.total("PaymentFailedAmount", Currency="USD", Tier="PRO") == 49.0
    assert webhooks.post(paid_invoice(id="in_dunned", amount_due=4900)).status == 200
    assert metrics.total("PaymentAmount", Currency="USD", Tier="PRO") == 49.0
    assert metrics.total("PaymentFailedAmount") == 49.0


# --- events that only count -----------------------------------------------------------------------


def test_a_refund_counts_what_it_newly_refunded_once_per_event(webhooks, metrics, aws, pro_account) -> None:
    first = refund(500, 0, event_id="evt_refund_1")
    assert webhooks.post(first).body["outcome"] == "counted"
    assert webhooks.post(refund(1500, 500, event_id="evt_refund_2")).status == 200
    resent = webhooks.post(first)
    assert (resent.status, resent.body["outcome"]) == (200, "duplicate")
    assert metrics.total("RefundAmount", Currency="USD", Tier="PRO") == 5.0 + 10.0
    assert metrics.total("RefundAmount", Currency="USD") == 15.0
    assert account("acct_1").last_invoice_id is None  # counted, not applied


def test_a_refund_without_previous_attributes_counts_all_that_is_refunded(webhooks, metrics) -> None:
    assert webhooks.post(refund(700, None, customer=None)).status == 200
    # No customer names an account: counted all the same, as the default plan.
    assert metrics.total("RefundAmount", Currency="USD", Tier="FREE") == 7.0


def test_partial_refunds_without_previous_attributes_count_the_charge_s_newest_refund(
    webhooks, metrics, pro_account
) -> None:
    first = refund(500, None, event_id="evt_partial_1", refunds=[(500, NOW - 60)])
    second = refund(1500, None, event_id="evt_partial_2", refunds=[(1000, NOW - 5), (500, NOW - 60)])
    for event in (second, first):  # in either order
        assert webhooks.post(event).status == 200
    assert metrics.total("RefundAmount", Currency="USD", Tier="PRO") == 5.0 + 10.0


def test_partial_refunds_without_either_count_the_running_total_each_time(
    webhooks, metrics, pro_account
) -> None:
    """The documented over-count (docs/metrics.md): without previous_attributes or the expanded
    refunds list, an event tells only the charge's total refunded so far."""
    assert webhooks.post(refund(500, None, event_id="evt_total_1")).status == 200
    assert webhooks.post(refund(1500, None, event_id="evt_total_2")).status == 200
    assert metrics.total("RefundAmount", Currency="USD", Tier="PRO") == 5.0 + 15.0


def test_previous_attributes_without_the_total_fall_back_to_the_refunds_list(webhooks, metrics) -> None:
    event = refund(1500, None, refunds=[(1000, NOW - 5), (500, NOW - 60)])
    event["data"]["previous_attributes"] = {"refunded": False}
    assert webhooks.post(event).status == 200
    assert metrics.total("RefundAmount", Currency="USD") == 10.0


def test_a_refund_of_an_unknown_customer_is_counted_and_stores_nothing(webhooks, metrics, aws) -> None:
    assert webhooks.post(refund(300, 0, customer="cus_stranger")).status == 200
    assert metrics.total("RefundAmount", Currency="USD", Tier="FREE") == 3.0
    assert table_items(aws["BillingStateTable"]) == []


def test_a_declined_payment_attempt_is_counted_by_its_class_once(webhooks, metrics, aws) -> None:
    declined = se.event(
        "payment_intent.payment_failed",
        se.payment_intent(decline_code="stolen_card", error_code="card_declined"),
        id="evt_declined",
        created=NOW,
    )
    for _ in range(3):
        assert webhooks.post(declined).status == 200
    assert metrics.total("PaymentDeclined", DeclineReason="fraudulent") == 1
    assert metrics.total("PaymentDeclined") == 1
    assert metrics.total("WebhookDuplicate", EventType="payment_intent.payment_failed") == 2
    assert table_items(aws["BillingStateTable"]) == []


@pytest.mark.parametrize(
    ("decline_code", "code", "reason"),
    [
        ("Do_Not_Honor", "card_declined", "card_declined"),  # Stripe's error code decides
        ("Do_Not_Honor", None, "other"),
        ("x" * 500, "Card Declined; DROP TABLE", "other"),
        (None, "A Code Stripe Adds Next Year", "other"),
    ],
)
def test_a_decline_billwatch_cannot_read_is_counted_as_other_not_refused(
    webhooks, metrics, decline_code, code, reason
) -> None:
    intent = se.payment_intent(decline_code=decline_code, error_code=code)
    response = webhooks.post(se.event("payment_intent.payment_failed", intent, created=NOW))
    assert (response.status, response.body["outcome"]) == (200, "counted")
    assert metrics.total("PaymentDeclined", DeclineReason=reason) == 1
    assert metrics.total("WebhookFailed") == 0


def test_a_payment_intent_without_an_error_is_declined_as_other(webhooks, metrics) -> None:
    intent = se.payment_intent()
    intent["last_payment_error"] = None
    assert webhooks.post(se.event("payment_intent.payment_failed", intent, created=NOW)).status == 200
    assert metrics.total("PaymentDeclined", DeclineReason="other") == 1


@pytest.mark.parametrize(
    ("event_type", "obj", "metric", "labels"),
    [
        (
            "radar.early_fraud_warning.created",
            se.early_fraud_warning(fraud_type="made_with_stolen_card"),
            "EarlyFraudWarning",
            {"FraudType": "made_with_stolen_card"},
        ),
        (
            "radar.early_fraud_warning.created",
            se.early_fraud_warning(fraud_type="new_kind_of_fraud"),
            "EarlyFraudWarning",
            {"FraudType": "other"},
        ),
        (
            "charge.dispute.created",
            se.dispute(reason="fraudulent"),
            "DisputeOpened",
            {"Reason": "fraudulent"},
        ),
        ("charge.dispute.created", se.dispute(reason="duplicate"), "DisputeOpened", {"Reason": "duplicate"}),
        ("charge.dispute.created", se.dispute(reason="something_new"), "DisputeOpened", {"Reason": "other"}),
        ("charge.dispute.created", se.dispute(reason="x" * 65), "DisputeOpened", {"Reason": "other"}),
        ("charge.dispute.created", se.dispute(reason="Fraudulent"), "DisputeOpened", {"Reason": "other"}),
        (
            "radar.early_fraud_warning.created",
            se.early_fraud_warning(fraud_type="Made With Stolen Card!"),
            "EarlyFraudWarning",
            {"FraudType": "other"},
        ),
    ],
)
def test_suspicious_activity_is_counted_once_by_stripe_s_class(
    webhooks, metrics, aws, event_type, obj, metric, labels
) -> None:
    event = se.event(event_type, obj, created=NOW)
    assert webhooks.post(event).body["outcome"] == "counted"
    assert webhooks.post(event).body["outcome"] == "duplicate"
    assert metrics.total(metric, **labels) == 1 and metrics.total(metric) == 1
    warning = [log for log in metrics.logs() if log["message"] == "Stripe reported suspicious activity"]
    assert [(log["event_id"], log["class"]) for log in warning] == [
        (event["id"], next(iter(labels.values())))
    ]
    assert table_items(aws["BillingStateTable"]) == []


def test_what_fails_to_go_out_is_stripe_s_to_retry_and_then_counted_once(webhooks, metrics, aws) -> None:
    intake = webhooks.handler.intake
    deliver = intake._effects.deliver

    def failing(*args: Any, **kwargs: Any) -> list[str]:
        raise OSError("stdout is gone")

    warning = se.event("radar.early_fraud_warning.created", se.early_fraud_warning(), created=NOW)
    intake._effects.deliver = failing
    assert webhooks.post(warning).status == 503
    intake._effects.deliver = deliver
    assert webhooks.post(warning).body["outcome"] == "counted"
    assert webhooks.post(warning).body["outcome"] == "duplicate"
    assert metrics.total("EarlyFraudWarning", FraudType="made_with_stolen_card") == 1


def test_an_unattributed_checkout_whose_metrics_fail_is_stripe_s_to_retry(webhooks, metrics, aws) -> None:
    """No account to write to, so no outbox entry keeps its effects: the retry must deliver them."""
    intake = webhooks.handler.intake
    deliver = intake._effects.deliver
    abandoned = se.checkout_session(customer=None, status="expired", subscription=None)
    expired = se.event("checkout.session.expired", abandoned, created=NOW)

    def failing(*args: Any, **kwargs: Any) -> list[str]:
        raise OSError("stdout is gone")

    intake._effects.deliver = failing
    assert webhooks.post(expired).status == 503
    intake._effects.deliver = deliver
    assert webhooks.post(expired).body["outcome"] == "unattributed"
    assert metrics.total("CheckoutExpired") == 1


# --- bad input ------------------------------------------------------------------------------------


def _set(path: str, value: Any):
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        holder = event
        for key in parents:
            holder = holder[key]
        holder[last] = value

    return mutate


BAD_INPUT = [
    (lambda: refund(500, 0), _set("data.object.amount_refunded", "500"), "data.object.amount_refunded"),
    (lambda: refund(500, 0), _set("data.object.amount_refunded", 10**13), "data.object.amount_refunded"),
    (lambda: refund(500, 0), _set("data.object.currency", "dollars"), "data.object.currency"),
    (lambda: refund(500, 0), _set("data.object.currency", None), "data.object.currency"),
    (lambda: refund(500, 900), lambda _: None, "data.previous_attributes.amount_refunded"),
    (lambda: refund(500, 0), _set("data.previous_attributes.amount_refunded", -1), "amount_refunded"),
    (lambda: refund(500, 0), _set("data.previous_attributes", "junk"), "data.previous_attributes"),
    (lambda: refund(500, 0), _set("data.previous_attributes", [500]), "data.previous_attributes"),
    (
        lambda: refund(500, 0),
        _set("data.previous_attributes.amount_refunded", "100"),
        "data.previous_attributes.amount_refunded",
    ),
    (
        lambda: refund(500, 0),
        _set("data.previous_attributes.amount_refunded", 2.5),
        "data.previous_attributes.amount_refunded",
    ),
    (
        lambda: refund(500, None, refunds=[(600, NOW)]),
        lambda _: None,
        "data.object.refunds.data[0].amount",
    ),
    (
        lambda: refund(500, None, refunds=[(500, NOW)]),
        _set("data.object.refunds.data", "re_1"),
        "data.object.refunds.data",
    ),
    (
        lambda: refund(500, None, refunds=[(500, NOW)]),
        lambda event: event["data"]["object"]["refunds"]["data"][0].pop("created"),
        "data.object.refunds.data[0].created",
    ),
    (
        lambda: se.event("payment_intent.payment_failed", se.payment_intent(), created=NOW),
        _set("data.object.last_payment_error.decline_code", 51),
        "data.object.last_payment_error.decline_code",
    ),
    (
        lambda: se.event("payment_intent.payment_failed", se.payment_intent(), created=NOW),
        _set("data.object.last_payment_error.code", ["card_declined"]),
        "data.object.last_payment_error.code",
    ),
    (
        lambda: se.event("payment_intent.payment_failed", se.payment_intent(), created=NOW),
        _set("data.object.last_payment_error", "declined"),
        "data.object.last_payment_error",
    ),
    (
        lambda: se.event("radar.early_fraud_warning.created", se.early_fraud_warning(), created=NOW),
        _set("data.object.fraud_type", {"kind": "misc"}),
        "data.object.fraud_type",
    ),
    (
        lambda: se.event("radar.early_fraud_warning.created", se.early_fraud_warning(), created=NOW),
        _set("data.object.id", None),
        "data.object.id",
    ),
    (
        lambda: se.event("charge.dispute.created", se.dispute(), created=NOW),
        _set("data.object.reason", 7),
        "data.object.reason",
    ),
    (
        lambda: se.event("charge.dispute.created", se.dispute(), created=NOW),
        _set("data.object.amount", -1),
        "data.object.amount",
    ),
    (
        lambda: se.event("charge.dispute.created", se.dispute(), created=NOW),
        _set("data.object.currency", "US"),
        "data.object.currency",
    ),
    (
        lambda: paid_invoice(),
        _set("data.object.status_transitions.paid_at", NOW + 10 * 86_400),
        "data.object.status_transitions.paid_at",
    ),
    (
        lambda: paid_invoice(),
        _set("data.object.status_transitions.finalized_at", "yesterday"),
        "data.object.status_transitions.finalized_at",
    ),
    (
        lambda: paid_invoice(),
        _set("data.object.payment_settings.payment_method_types", "card"),
        "data.object.payment_settings.payment_method_types",
    ),
    (
        lambda: paid_invoice(),
        _set("data.object.payment_settings.payment_method_types", ["card", 7]),
        "data.object.payment_settings.payment_method_types[1]",
    ),
    (
        lambda: se.event("checkout.session.completed", se.checkout_session(), created=NOW),
        _set("data.object.customer_details.email", "a" * 600 + "@example.com"),
        "data.object.customer_details.email",
    ),
    (
        lambda: se.event("checkout.session.completed", se.checkout_session(), created=NOW),
        _set("data.object.customer_details.email", ["a@example.com"]),
        "data.object.customer_details.email",
    ),
]


@pytest.mark.parametrize(("build", "mutate", "field"), BAD_INPUT)
def test_a_field_no_stripe_event_can_hold_is_refused_by_name_and_stores_nothing(
    webhooks, metrics, aws, build, mutate, field
) -> None:
    event = build()
    mutate(event)
    response = webhooks.post(event)
    assert response.status == 400 and response.body["error"] == "malformed_event", response
    assert field in response.body["message"], response.body
    assert table_items(aws["BillingStateTable"]) == [] and table_items(aws["IdempotencyTable"]) == []
    assert metrics.total("WebhookFailed", EventType=event["type"], Reason="MalformedEvent") == 1


# --- the checkout velocity rule -------------------------------------------------------------------


def session_ended(
    number: int, *, customer: str | None = "cus_buyer", email: str | None = None, created: int = MINUTE
) -> dict[str, Any]:
    session = se.checkout_session(
        id=f"cs_velocity_{number}", customer=customer, email=email, created=created, subscription=None
    )
    return se.event("checkout.session.completed", session, id=f"evt_velocity_{number}", created=NOW)


def velocity_items(table: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return [item for item in items if item["id"]["S"].startswith(KEY_PREFIX)]


def test_the_eleventh_session_of_one_customer_in_a_minute_goes_over_once(webhooks, metrics, aws) -> None:
    for number in range(10):
        assert webhooks.post(session_ended(number, created=MINUTE + number)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 0
    for number in range(10, 14):
        assert webhooks.post(session_ended(number, created=MINUTE + 50)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 1
    logged = [log for log in metrics.logs() if log["message"].startswith("Checkout velocity exceeded")]
    assert [(log["checkout_session_id"], log["buyer_kinds"]) for log in logged] == [
        ("cs_velocity_10", ["customer"])
    ]


def test_resent_sessions_count_once(webhooks, metrics, aws) -> None:
    for _ in range(3):
        for number in range(10):
            assert webhooks.post(session_ended(number)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 0
    # The same session again under another event id (its completion and a replay by hand).
    replayed = session_ended(3)
    replayed["id"] = "evt_velocity_replayed"
    assert webhooks.post(replayed).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 0
    # The customer's count, and one for each session's own buyer's email.
    counts = sorted(int(item["sessions"]["N"]) for item in velocity_items(aws["IdempotencyTable"]))
    assert counts == [1] * 10 + [10]


def test_sessions_of_two_minutes_are_two_counts(webhooks, metrics) -> None:
    for number in range(20):
        created = MINUTE + (59 if number < 10 else 60)
        assert webhooks.post(session_ended(number, created=created)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 0


def test_one_email_over_many_new_customers_goes_over_and_is_never_stored(webhooks, metrics, aws) -> None:
    email = "Card.Tester@Example.com"
    for number in range(11):
        customer = f"cus_new{number}"
        typed = email if number % 2 else f"  {email.lower()} "
        assert webhooks.post(session_ended(number, customer=customer, email=typed)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 1
    stored = json.dumps(velocity_items(aws["IdempotencyTable"])).lower()
    printed = "\n".join(metrics.lines).lower()
    assert "card.tester" not in stored and "card.tester" not in printed
    assert all(
        len(item["id"]["S"]) == len(KEY_PREFIX) + 64 for item in velocity_items(aws["IdempotencyTable"])
    )


def test_expired_sessions_without_a_customer_count_by_email(webhooks, metrics) -> None:
    for number in range(11):
        session = se.checkout_session(
            id=f"cs_gone_{number}", customer=None, status="expired", subscription=None, email="x@example.com"
        )
        session["created"] = MINUTE
        assert webhooks.post(se.event("checkout.session.expired", session, created=NOW)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 1


def test_a_session_whose_reference_is_refused_still_counts(webhooks, metrics, aws) -> None:
    for number in range(11):
        event = session_ended(number)
        event["data"]["object"]["client_reference_id"] = f"health#last-probe-{number}"
        response = webhooks.post(event)
        assert (response.status, response.body["outcome"]) == (200, "unattributed")
    assert metrics.total("CheckoutVelocityExceeded") == 1
    assert table_items(aws["BillingStateTable"]) == []


def test_the_limit_is_a_setting(aws, monkeypatch, metrics) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_secret")
    monkeypatch.setenv("CHECKOUT_VELOCITY_LIMIT", "2")
    webhooks = WebhookClient(load_handler("webhook_intake"))
    for number in range(3):
        assert webhooks.post(session_ended(number), "whsec_test_secret").status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 1


def test_a_velocity_counter_in_trouble_is_stripe_s_to_retry(webhooks, metrics, monkeypatch) -> None:
    from billwatch.billing import velocity

    for number in range(10):
        webhooks.post(session_ended(number))
    real_update = velocity.conditional_update

    def throttled(*args: Any, **kwargs: Any) -> Any:
        from billwatch.core.dynamo import StoreUnavailable

        raise StoreUnavailable("ProvisionedThroughputExceededException")

    monkeypatch.setattr(velocity, "conditional_update", throttled)
    assert webhooks.post(session_ended(10)).status == 503
    monkeypatch.setattr(velocity, "conditional_update", real_update)
    assert webhooks.post(session_ended(10)).status == 200
    assert metrics.total("CheckoutVelocityExceeded") == 1
