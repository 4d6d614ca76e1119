"""Stripe's reasons read into the bounded classes a metric dimension may take."""

from __future__ import annotations

import pytest

from billwatch.billing.decline_reasons import (
    DISPUTE_REASONS,
    FRAUD_TYPES,
    DeclineReason,
    bounded,
    decline_reason,
    payment_method,
)

# (last_payment_error.decline_code, last_payment_error.code, the class)
DECLINES = [
    ("insufficient_funds", "card_declined", "insufficient_funds"),
    ("withdrawal_count_limit_exceeded", "card_declined", "insufficient_funds"),
    ("lost_card", "card_declined", "fraudulent"),
    ("stolen_card", "card_declined", "fraudulent"),
    ("fraudulent", "card_declined", "fraudulent"),
    ("pickup_card", "card_declined", "fraudulent"),
    ("generic_decline", "card_declined", "card_declined"),
    ("do_not_honor", "card_declined", "card_declined"),
    ("card_declined", None, "card_declined"),
    ("expired_card", "expired_card", "expired_card"),
    (None, "expired_card", "expired_card"),
    ("authentication_required", "card_declined", "authentication_required"),
    (None, "authentication_required", "authentication_required"),
    (None, "payment_intent_authentication_failure", "authentication_required"),
    ("processing_error", "processing_error", "processing_error"),
    (None, "processing_error", "processing_error"),
    ("try_again_later", "card_declined", "processing_error"),
    # The issuer's decline code is the more specific: it wins over Stripe's error code.
    ("insufficient_funds", "expired_card", "insufficient_funds"),
    # Unknown decline code: Stripe's error code decides.
    ("a_code_stripe_adds_next_year", "card_declined", "card_declined"),
    ("a_code_stripe_adds_next_year", None, "other"),
    (None, "amount_too_large", "other"),
    (None, "payment_method_unactivated", "other"),
    (None, None, "other"),
    # Spelled otherwise than Stripe's codes: matched exactly, so the class stays one of the seven.
    ("Do_Not_Honor", None, "other"),
    ("INSUFFICIENT_FUNDS", "Card_Declined", "other"),
    ("x" * 10_000, "y" * 10_000, "other"),
]


@pytest.mark.parametrize(("decline_code", "code", "expected"), DECLINES)
def test_each_failure_falls_in_one_class(decline_code: str | None, code: str | None, expected: str) -> None:
    assert decline_reason(decline_code, code) == expected


def test_the_classes_are_the_seven_of_the_dashboard() -> None:
    assert {reason.value for reason in DeclineReason} == {
        "insufficient_funds",
        "card_declined",
        "expired_card",
        "authentication_required",
        "processing_error",
        "fraudulent",
        "other",
    }


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (None, "default"),
        ([], "default"),
        (["card"], "card"),
        (["link"], "link"),
        (["sepa_debit"], "sepa_debit"),
        (["wechat_pay"], "other"),
        (["card", "sepa_debit"], "other"),
    ],
)
def test_the_payment_method_is_one_named_type_the_customer_s_default_or_other(
    types: list[str] | None, expected: str
) -> None:
    assert payment_method(types) == expected


def test_stripe_s_enums_pass_and_anything_else_is_other() -> None:
    assert bounded("made_with_stolen_card", FRAUD_TYPES) == "made_with_stolen_card"
    assert bounded("fraudulent", DISPUTE_REASONS) == "fraudulent"
    assert bounded("product_not_received", DISPUTE_REASONS) == "product_not_received"
    assert bounded("made_up", FRAUD_TYPES) == bounded(None, DISPUTE_REASONS) == "other"
    assert bounded("Fraudulent", DISPUTE_REASONS) == bounded("misc ", FRAUD_TYPES) == "other"
