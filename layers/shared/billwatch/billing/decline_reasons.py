"""Stripe's reasons, read into the bounded classes a metric may carry as a dimension.

Stripe's decline codes (https://docs.stripe.com/declines/codes) number in the dozens and grow; a
dashboard needs the few that tell someone what to do. Every other value, and every value Stripe
adds later, is ``other``: a dimension never takes a value from outside as it is.
"""

from __future__ import annotations

from enum import StrEnum


class DeclineReason(StrEnum):
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CARD_DECLINED = "card_declined"
    EXPIRED_CARD = "expired_card"
    AUTHENTICATION_REQUIRED = "authentication_required"
    PROCESSING_ERROR = "processing_error"
    FRAUDULENT = "fraudulent"
    OTHER = "other"


# The issuer's reason (last_payment_error.decline_code), which is the more specific of the two.
_BY_DECLINE_CODE = {
    "insufficient_funds": DeclineReason.INSUFFICIENT_FUNDS,
    "withdrawal_count_limit_exceeded": DeclineReason.INSUFFICIENT_FUNDS,
    "card_velocity_exceeded": DeclineReason.INSUFFICIENT_FUNDS,
    "expired_card": DeclineReason.EXPIRED_CARD,
    "authentication_required": DeclineReason.AUTHENTICATION_REQUIRED,
    "processing_error": DeclineReason.PROCESSING_ERROR,
    "issuer_not_available": DeclineReason.PROCESSING_ERROR,
    "reenter_transaction": DeclineReason.PROCESSING_ERROR,
    "try_again_later": DeclineReason.PROCESSING_ERROR,
    "fraudulent": DeclineReason.FRAUDULENT,
    "lost_card": DeclineReason.FRAUDULENT,
    "stolen_card": DeclineReason.FRAUDULENT,
    "pickup_card": DeclineReason.FRAUDULENT,
    "merchant_blacklist": DeclineReason.FRAUDULENT,
    "security_violation": DeclineReason.FRAUDULENT,
    "generic_decline": DeclineReason.CARD_DECLINED,
    "do_not_honor": DeclineReason.CARD_DECLINED,
    "card_declined": DeclineReason.CARD_DECLINED,
    "call_issuer": DeclineReason.CARD_DECLINED,
    "no_action_taken": DeclineReason.CARD_DECLINED,
    "not_permitted": DeclineReason.CARD_DECLINED,
    "restricted_card": DeclineReason.CARD_DECLINED,
    "revocation_of_all_authorizations": DeclineReason.CARD_DECLINED,
    "revocation_of_authorization": DeclineReason.CARD_DECLINED,
    "transaction_not_allowed": DeclineReason.CARD_DECLINED,
}
# Stripe's error code (last_payment_error.code), for failures the issuer gave no decline code for.
_BY_ERROR_CODE = {
    "expired_card": DeclineReason.EXPIRED_CARD,
    "authentication_required": DeclineReason.AUTHENTICATION_REQUIRED,
    "payment_intent_authentication_failure": DeclineReason.AUTHENTICATION_REQUIRED,
    "processing_error": DeclineReason.PROCESSING_ERROR,
    "card_declined": DeclineReason.CARD_DECLINED,
}


def decline_reason(decline_code: str | None, code: str | None) -> DeclineReason:
    """The class of a failed payment attempt, from its ``last_payment_error``."""
    if decline_code in _BY_DECLINE_CODE:
        return _BY_DECLINE_CODE[decline_code]
    return _BY_ERROR_CODE.get(code or "", DeclineReason.OTHER)


# Stripe's enums, as of API version 2025-09-30: a value Stripe adds later is "other" until it is listed.
FRAUD_TYPES = frozenset(
    {
        "card_never_received",
        "fraudulent_card_application",
        "made_with_counterfeit_card",
        "made_with_lost_card",
        "made_with_stolen_card",
        "misc",
        "unauthorized_use_of_card",
    }
)
DISPUTE_REASONS = frozenset(
    {
        "bank_cannot_process",
        "check_returned",
        "credit_not_processed",
        "customer_initiated",
        "debit_not_authorized",
        "duplicate",
        "fraudulent",
        "general",
        "incorrect_account_details",
        "insufficient_funds",
        "noncompliant",
        "product_not_received",
        "product_unacceptable",
        "subscription_canceled",
        "unrecognized",
    }
)
# The payment method types an invoice may name (payment_settings.payment_method_types) that a
# dashboard shows on their own; the rest are "other". "default": the invoice names none, and the
# customer's default payment method pays it.
PAYMENT_METHODS = frozenset(
    {
        "card",
        "link",
        "sepa_debit",
        "us_bank_account",
        "bacs_debit",
        "acss_debit",
        "au_becs_debit",
        "nz_bank_account",
        "ach_credit_transfer",
        "customer_balance",
        "paypal",
        "ideal",
        "bancontact",
        "konbini",
        "boleto",
        "pix",
    }
)
OTHER = "other"
DEFAULT_PAYMENT_METHOD = "default"


def bounded(value: str | None, known: frozenset[str]) -> str:
    return value if value in known else OTHER


def payment_method(types: list[str] | None) -> str:
    """The PaymentMethod dimension of a paid invoice, from ``payment_settings.payment_method_types``.

    Several types leave the customer to choose at payment time, and the invoice does not say which
    was used: ``other``, rather than a guess.
    """
    if not types:
        return DEFAULT_PAYMENT_METHOD
    if len(types) > 1:
        return OTHER
    return bounded(types[0], PAYMENT_METHODS)
