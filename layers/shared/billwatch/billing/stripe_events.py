"""Reading Stripe events into billing-state changes.

Stripe moves fields between API versions and a webhook endpoint receives the shape of its
pinned version, so every reader here accepts both the older and the newer placement.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard, TypeVar

from billwatch.billing.decline_reasons import (
    DISPUTE_REASONS,
    FRAUD_TYPES,
    bounded,
    decline_reason,
    payment_method,
)
from billwatch.billing.store import AccountRef, StateChange
from billwatch.billing.velocity import CheckoutSession, email_digest
from billwatch.core.ids import is_account_id, is_customer_id, is_event_id
from billwatch.licensing.plans import PlanCatalog, Tier

SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.paused",
    "customer.subscription.resumed",
)
# Events that change no account's state: what they tell is only counted (money, declines, fraud).
COUNTED_EVENT_TYPES = frozenset(
    {
        "charge.refunded",
        "payment_intent.payment_failed",
        "charge.dispute.created",
        "radar.early_fraud_warning.created",
    }
)
# Every checkout session ends in exactly one of these: where the velocity rule counts it.
CHECKOUT_SESSION_ENDS = ("checkout.session.completed", "checkout.session.expired")
HANDLED_EVENT_TYPES = frozenset(
    {
        *CHECKOUT_SESSION_ENDS,
        *SUBSCRIPTION_EVENTS,
        "invoice.paid",
        "invoice.payment_failed",
        "entitlements.active_entitlement_summary.updated",
        "customer.deleted",
        *COUNTED_EVENT_TYPES,
    }
)
# Statuses that keep the paid tier. past_due keeps it through Stripe's dunning retries, so a
# card that fails once does not lock a paying customer out.
ENTITLING_STATUSES = frozenset({"active", "trialing", "past_due"})

# Ties inside one second of `created` are broken by where an event sits in a lifecycle, so
# every delivery order ends in the same state.
_SUBSCRIPTION_EVENT_RANK = {
    "customer.subscription.created": 0,
    "customer.subscription.trial_will_end": 1,
    "customer.subscription.updated": 1,
    "customer.subscription.paused": 1,
    "customer.subscription.resumed": 1,
    "customer.subscription.deleted": 2,
}
_SUBSCRIPTION_STATUS_RANK = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "unpaid": 4,
    "paused": 5,
    "incomplete_expired": 6,
    "canceled": 7,
}

# Stripe's subscription statuses: a bounded set, so a metric may carry one as a dimension.
SUBSCRIPTION_STATUSES = frozenset(_SUBSCRIPTION_STATUS_RANK)

# Plausible times: not before Stripe existed, and not far ahead of now. An event's own `created`
# orders every later event of its account, so it may run ahead only by clock skew: one from the
# far future would make every real event after it "stale". Period ends and trial ends lie ahead
# by design, at most Stripe's longest billing interval (3 years) and trial (2 years).
STRIPE_EPOCH = 1_293_840_000  # 2011-01-01T00:00:00Z
CREATED_MAX_AHEAD_SECONDS = 3600
SCHEDULED_MAX_AHEAD_SECONDS = 5 * 366 * 86400
# Minor units: Stripe's largest amount is 12 digits (zero-decimal currencies such as IDR).
MAX_AMOUNT = 999_999_999_999
MAX_QUANTITY = 1_000_000_000
MAX_ATTEMPTS = 10_000
_CURRENCY = re.compile(r"^[a-z]{3}$")
MAX_EMAIL_LENGTH = 512
MAX_PAYMENT_METHOD_TYPES = 64
# Stripe bills at most every three years (1,095 days, 156 weeks, 36 months).
MAX_INTERVAL_COUNT = 1095
# What one subscription may add to MRR, in minor units: far beyond any real one, and far inside
# the 38 digits a DynamoDB number holds.
MAX_MONTHLY_REVENUE = 10**15


# Event types become a metric dimension (EventType): their shape is bounded like an id's.
_EVENT_TYPE = re.compile(r"^[a-z0-9_.]{1,128}$")


def is_event_type(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _EVENT_TYPE.fullmatch(value) is not None


class MalformedEvent(ValueError):
    """The payload is not a Stripe event this service can read; the message names the field."""


class Bounds:
    """The ranges of one reading of an event, from one reading of the clock."""

    def __init__(self, now: float) -> None:
        self.now = int(now)

    def created(self, value: int, where: str) -> int:
        return _within(value, STRIPE_EPOCH, self.now + CREATED_MAX_AHEAD_SECONDS, where)

    def scheduled(self, value: int | None, where: str) -> int | None:
        if value is None:
            return None
        return _within(value, STRIPE_EPOCH, self.now + SCHEDULED_MAX_AHEAD_SECONDS, where)


def _within(value: int, lowest: int, highest: int, where: str) -> int:
    if not lowest <= value <= highest:
        raise MalformedEvent(f"{where} is {value}, outside the plausible range {lowest} to {highest}")
    return value


def _amount(mapping: object, key: str, where: str, highest: int = MAX_AMOUNT) -> int | None:
    value = _optional(mapping, key, int, where)
    return None if value is None else _within(value, 0, highest, f"{where}{key}")


def _currency(mapping: object, where: str) -> str | None:
    currency = _optional(mapping, "currency", str, where)
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise MalformedEvent(f"{where}currency must be a three-letter ISO currency code")
    return currency


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    type: str
    created: int
    account: AccountRef
    change: StateChange | None
    plan_tier: Tier | None = None
    billing_reason: str | None = None
    # The field whose id could not be trusted to name an account: the event is left unattributed.
    refused_id_field: str | None = None
    # What the event counts, read and bounded here (JSON): money and suspicious activity.
    signals: Mapping[str, Any] = field(default_factory=dict)
    # The checkout session the event ends, for the velocity rule.
    checkout: CheckoutSession | None = None

    @property
    def handled(self) -> bool:
        return self.type in HANDLED_EVENT_TYPES

    @property
    def counts(self) -> bool:
        """Whether the event counts something even where it changes no account's state."""
        return self.type in COUNTED_EVENT_TYPES or self.checkout is not None


def event_version(created: int, rank: int, event_id: str) -> str:
    """Sortable as a string, which is how the DynamoDB condition compares it."""
    return f"{created:012d}|{rank:03d}|{event_id}"


def _dig(source: object, *path: str) -> object:
    for key in path:
        if not isinstance(source, Mapping):
            return None
        source = source.get(key)
    return source


def _object_id(value: object) -> str | None:
    """Stripe fields that reference another object hold its id, or the object when expanded."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


class RefusedId(ValueError):
    """An id from outside that may not address an item; the message is the field that held it."""


def _account_id(*metadata_sources: tuple[object, str]) -> str | None:
    """The first account id named, from ``(metadata, where)`` pairs in order of precedence."""
    for metadata, where in metadata_sources:
        value = _dig(metadata, "account_id")
        if value is None:
            continue
        value = value.strip() if isinstance(value, str) else value
        if not is_account_id(value):
            raise RefusedId(f"{where}metadata.account_id")
        return value
    return None


def _customer_id(value: object, where: str) -> str | None:
    customer_id = _object_id(value)
    if value is not None and not is_customer_id(customer_id):
        raise RefusedId(where)
    return customer_id


JsonValue = TypeVar("JsonValue", str, int, bool, dict[str, Any])


def _require(mapping: Mapping[str, Any], key: str, kind: type[JsonValue], where: str) -> JsonValue:
    value = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        raise MalformedEvent(f"{where}{key} must be a {'non-empty string' if kind is str else kind.__name__}")
    return value


def _optional(mapping: object, key: str, kind: type[JsonValue], where: str) -> JsonValue | None:
    """A field that may be absent or null, but has the right type when present."""
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MalformedEvent(f"{where}{key} must be {_TYPE_NAMES[kind]} or null")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


def _items(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = _dig(subscription, "items", "data")
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


# Outranks every event of the same second: the object as the Stripe API returns it now.
AUTHORITATIVE_RANK = 999


def subscription_account(sub: Mapping[str, Any], where: str = "data.object.") -> AccountRef:
    """The account a subscription belongs to: its metadata's account id, and its customer.

    Raises RefusedId when either id cannot be trusted to name an account's item.
    """
    return AccountRef(
        _account_id((sub.get("metadata"), where)), _customer_id(sub.get("customer"), f"{where}customer")
    )


def _started(sub: Mapping[str, Any], bounds: Bounds, where: str) -> int | None:
    """The subscription's start_date: a moment that has come, like an event's creation."""
    started = _optional(sub, "start_date", int, where)
    return None if started is None else bounds.created(started, f"{where}start_date")


def subscription_change(
    event_id: str,
    created: int,
    rank: int,
    sub: Mapping[str, Any],
    catalog: PlanCatalog,
    bounds: Bounds | None = None,
) -> tuple[StateChange, Tier]:
    """The account's subscription fields, and the tier of the subscription's price."""
    bounds = bounds or Bounds(time.time())
    where = "data.object."
    status = _require(sub, "status", str, where)
    subscription_id = _require(sub, "id", str, where)
    items = _items(sub)
    priced = []
    for index, item in enumerate(items):
        price_where = f"{where}items.data[{index}].price."
        price = item.get("price")
        if not isinstance(price, Mapping):
            price = {}
        lookup_key = _optional(price, "lookup_key", str, price_where)
        _amount(price, "unit_amount", price_where)
        _amount(item, "quantity", f"{where}items.data[{index}].", MAX_QUANTITY)
        _decimal_amount(price, "unit_amount_decimal", price_where)
        recurring = price.get("recurring")
        if isinstance(recurring, Mapping) and recurring.get("interval_count") is not None:
            count = _require(recurring, "interval_count", int, f"{price_where}recurring.")
            _within(count, 1, MAX_INTERVAL_COUNT, f"{price_where}recurring.interval_count")
        tier = catalog.tier_for_price(lookup_key, _optional(price, "metadata", dict, price_where))
        priced.append((tier, item, _optional(price, "id", str, price_where), lookup_key))
    plan_tier, item, price_id, lookup_key = max(
        priced, key=lambda entry: entry[0].rank, default=(catalog.default_tier, {}, None, None)
    )

    def period(name: str) -> int | None:
        # Before API version 2025-03-31 the billing period sat on the subscription; now on each item.
        candidates = [bounds.scheduled(_optional(sub, name, int, where), f"{where}{name}")]
        candidates += [
            bounds.scheduled(
                _optional(i, name, int, f"{where}items.data[{n}]."), f"{where}items.data[{n}].{name}"
            )
            for n, i in enumerate(items)
        ]
        return next((value for value in candidates if value), None)

    period_start, period_end = period("current_period_start"), period("current_period_end")
    if period_start is not None:
        # The current period has begun: one that starts later would restart the quotas on every use.
        _within(
            period_start, STRIPE_EPOCH, bounds.now + CREATED_MAX_AHEAD_SECONDS, f"{where}current_period_start"
        )
    if period_start is not None and period_end is not None and period_end <= period_start:
        raise MalformedEvent(f"{where}current_period_end is not after current_period_start")
    _check_discounts(sub, where)
    live = status in ENTITLING_STATUSES
    change = StateChange(
        group="subscription",
        version=event_version(created, rank, event_id),
        fields={
            "subscription_id": subscription_id,
            "subscription_status": status,
            "tier": plan_tier.name if live else catalog.default_tier.name,
            "plan_tier": plan_tier.name,
            # Absent unless live, so the ActiveSubscriptionsByTier index holds live subscriptions only.
            "active_tier": plan_tier.name if live else None,
            "price_id": price_id,
            "price_lookup_key": lookup_key,
            "current_period_start": period_start,
            "current_period_end": period_end,
            "cancel_at_period_end": bool(_optional(sub, "cancel_at_period_end", bool, where)),
            "trial_end": bounds.scheduled(_optional(sub, "trial_end", int, where), f"{where}trial_end"),
            "subscription_started_at": _started(sub, bounds, where),
            **_monthly_revenue(sub, catalog),
        },
        subscription_id=subscription_id,
        subscription_live=live,
    )
    return change, plan_tier


def _monthly_revenue(sub: Mapping[str, Any], catalog: PlanCatalog) -> dict[str, Any]:
    """What the subscription adds to MRR (minor units), kept with it for the gauge; None if nothing."""
    from billwatch.billing.revenue import subscription_revenue

    try:
        revenue = subscription_revenue(sub, catalog)
    except Exception:
        # MRR is a measurement, not the state: an object it cannot price (however it is mangled)
        # still applies, and the parse above decides whether the event can be read at all.
        return {"mrr": None, "mrr_currency": None}
    if not revenue.counted:
        return {"mrr": None, "mrr_currency": None}
    _within(revenue.mrr, 0, MAX_MONTHLY_REVENUE, "the monthly revenue of data.object.items and discounts")
    return {"mrr": revenue.mrr, "mrr_currency": revenue.currency}


def _decimal_amount(mapping: Mapping[str, Any], key: str, where: str) -> None:
    """Stripe's decimal amounts: minor units with up to 12 decimals, as a string in a webhook and as
    a Decimal once stripe-python has read them."""
    value = mapping.get(key)
    if value is None:
        return
    try:
        amount = Decimal(value) if isinstance(value, Decimal | str) and len(str(value)) <= 32 else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= MAX_AMOUNT:
        raise MalformedEvent(f"{where}{key} must be a decimal string from 0 to {MAX_AMOUNT}")


def _check_discounts(sub: Mapping[str, Any], where: str) -> None:
    discounts = list(sub.get("discounts") or []) if isinstance(sub.get("discounts"), list) else []
    discounts.append(sub.get("discount"))
    for index, discount in enumerate(discounts):
        if not isinstance(discount, Mapping):
            continue
        coupon = discount.get("coupon") or _dig(discount, "source", "coupon")
        if not isinstance(coupon, Mapping):
            continue
        coupon_where = f"{where}discounts[{index}].coupon."
        percent = coupon.get("percent_off")
        if percent is not None and (
            isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100
        ):
            raise MalformedEvent(f"{coupon_where}percent_off must be a number from 0 to 100")
        _amount(coupon, "amount_off", coupon_where)


def parse_event(event: Any, catalog: PlanCatalog, now: float | None = None) -> ParsedEvent:
    """The event as a change of billing state.

    Raises MalformedEvent for what cannot be read (a missing field, a wrong type, a time or an
    amount out of range). An id that cannot be trusted to name an account leaves the event
    unattributed instead (``refused_id_field``): the rest of it may be fine, but nothing applies.
    """
    if not isinstance(event, Mapping):
        raise MalformedEvent("the body must be a JSON object")
    event_id = _require(event, "id", str, "")
    if not is_event_id(event_id):
        raise MalformedEvent("id must be a Stripe event id (evt_ followed by letters and digits)")
    event_type = _require(event, "type", str, "")
    if not is_event_type(event_type):
        raise MalformedEvent("type must be a Stripe event type (lowercase letters, digits, '_' and '.')")
    bounds = Bounds(time.time() if now is None else now)
    created = bounds.created(_require(event, "created", int, ""), "created")
    obj = _dig(event, "data", "object")
    if not isinstance(obj, Mapping):
        raise MalformedEvent("data.object must be an object")
    if event_type not in HANDLED_EVENT_TYPES:
        return ParsedEvent(event_id, event_type, created, AccountRef(None, None), None)
    object_created = _optional(obj, "created", int, "data.object.")
    if object_created is not None:
        bounds.created(object_created, "data.object.created")
    # Read before the account: an id that cannot name one leaves what the event counts intact.
    signals = _signals(event_type, event, obj, bounds)
    checkout = _checkout_session(obj, object_created) if event_type in CHECKOUT_SESSION_ENDS else None
    try:
        parsed = _parse_handled(event_id, event_type, created, obj, catalog, bounds)
    except RefusedId as refused:
        parsed = ParsedEvent(
            event_id, event_type, created, AccountRef(None, None), None, refused_id_field=str(refused)
        )
    return replace(parsed, signals=signals, checkout=checkout)


def _signals(
    event_type: str, event: Mapping[str, Any], obj: Mapping[str, Any], bounds: Bounds
) -> dict[str, Any]:
    """What the event counts beyond its arrival, validated and bounded (billing.side_effects)."""
    where = "data.object."
    if event_type == "invoice.paid":
        return _paid_invoice_signals(obj, bounds)
    if event_type == "charge.refunded":
        _require(obj, "id", str, where)
        refunded = _within(
            _require(obj, "amount_refunded", int, where), 0, MAX_AMOUNT, f"{where}amount_refunded"
        )
        currency = _currency(obj, where)
        if currency is None:
            raise MalformedEvent(f"{where}currency must be a three-letter ISO currency code")
        return {"refund": {"amount": _newly_refunded(event, obj, refunded), "currency": currency}}
    # Stripe's reasons are strings whatever their spelling: one billwatch does not know, or one Stripe
    # adds or spells differently, is counted as "other" (decline_reasons), never refused for Stripe
    # to retry for three days. Only a value that is no string at all is not the event Stripe sends.
    if event_type == "payment_intent.payment_failed":
        _require(obj, "id", str, where)
        error = _optional(obj, "last_payment_error", dict, where)
        error_where = f"{where}last_payment_error."
        reason = decline_reason(
            _optional(error, "decline_code", str, error_where), _optional(error, "code", str, error_where)
        )
        return {"decline_reason": reason.value}
    if event_type == "radar.early_fraud_warning.created":
        _require(obj, "id", str, where)
        return {"fraud_type": bounded(_optional(obj, "fraud_type", str, where), FRAUD_TYPES)}
    if event_type == "charge.dispute.created":
        _require(obj, "id", str, where)
        _amount(obj, "amount", where)
        _currency(obj, where)
        return {"dispute_reason": bounded(_optional(obj, "reason", str, where), DISPUTE_REASONS)}
    return {}


def _newly_refunded(event: Mapping[str, Any], charge: Mapping[str, Any], refunded: int) -> int:
    """What this charge.refunded event refunded: ``amount_refunded`` is the charge's running total.

    Stripe tells the total before the event in ``data.previous_attributes.amount_refunded``. Without
    it, the newest refund in the charge's ``refunds`` list (sent only if the endpoint expands it, since
    API version 2022-11-15) is the one the event is about; without either, all that is refunded is
    counted, which counts a second partial refund's predecessors again (docs/metrics.md says so).
    """
    where = "data.previous_attributes."
    previous = event["data"].get("previous_attributes")  # data is an object: parse_event read data.object
    if previous is not None and not isinstance(previous, Mapping):
        raise MalformedEvent("data.previous_attributes must be an object or null")
    before = _amount(previous, "amount_refunded", where, highest=refunded)
    if before is not None:
        return refunded - before
    newest = _newest_refund(charge, refunded)
    return refunded if newest is None else newest


def _newest_refund(charge: Mapping[str, Any], refunded: int) -> int | None:
    """The amount of the charge's latest refund, if the event carries its refunds list."""
    where = "data.object.refunds."
    refunds = _optional(charge, "refunds", dict, "data.object.")
    listed = _dig(refunds, "data")
    if listed is None:
        return None
    if not isinstance(listed, list):
        raise MalformedEvent(f"{where}data must be a list")
    newest: tuple[int, int] | None = None
    for index, entry in enumerate(listed):
        entry_where = f"{where}data[{index}]."
        if not isinstance(entry, Mapping):
            raise MalformedEvent(f"{where}data[{index}] must be an object")
        amount = _within(_require(entry, "amount", int, entry_where), 0, refunded, f"{entry_where}amount")
        created = _require(entry, "created", int, entry_where)
        # Stripe lists the newest first: a later entry of the same second is an older refund.
        if newest is None or created > newest[0]:
            newest = (created, amount)
    return None if newest is None else newest[1]


def _paid_invoice_signals(invoice: Mapping[str, Any], bounds: Bounds) -> dict[str, Any]:
    """How long the invoice took from finalised to paid, and by which payment method type."""
    where = "data.object.status_transitions."
    transitions = _optional(invoice, "status_transitions", dict, "data.object.")
    moments = {}
    for name in ("finalized_at", "paid_at"):
        moment = _optional(transitions, name, int, where)
        moments[name] = None if moment is None else bounds.created(moment, f"{where}{name}")
    settings = _optional(invoice, "payment_settings", dict, "data.object.")
    # None: the invoice names no type, and leaves the payment to the customer's default method.
    listed = _dig(settings, "payment_method_types")
    types_where = "data.object.payment_settings.payment_method_types"
    if listed is not None and (not isinstance(listed, list) or len(listed) > MAX_PAYMENT_METHOD_TYPES):
        raise MalformedEvent(
            f"{types_where} must be a list of at most {MAX_PAYMENT_METHOD_TYPES} types, or null"
        )
    methods: list[str] = []
    for index, entry in enumerate(listed if isinstance(listed, list) else ()):
        if not isinstance(entry, str):  # a type billwatch does not know is "other" (payment_method)
            raise MalformedEvent(f"{types_where}[{index}] must be a string")
        methods.append(entry)
    finalized, paid = moments["finalized_at"], moments["paid_at"]
    # An invoice paid out of band may carry no finalisation, and a duration from one moment is none.
    if finalized is None or paid is None or paid < finalized:
        return {}
    return {"payment_duration": {"seconds": paid - finalized, "method": payment_method(methods)}}


def _checkout_session(session: Mapping[str, Any], created: int | None) -> CheckoutSession | None:
    """The session and whoever may be its buyer; None when it names neither or has no ``created``."""
    where = "data.object.customer_details."
    email = _optional(_optional(session, "customer_details", dict, "data.object."), "email", str, where)
    if email is not None and len(email) > MAX_EMAIL_LENGTH:
        raise MalformedEvent(f"{where}email must be at most {MAX_EMAIL_LENGTH} characters")
    buyers = []
    customer = _object_id(session.get("customer"))
    # An id the account parse refuses is still one buyer's: the counter's key is a hash of it.
    if customer is not None:
        buyers.append(("customer", customer))
    if email and email.strip():
        buyers.append(("email", email_digest(email)))
    session_id = _require(session, "id", str, "data.object.")
    if created is None or not buyers:
        return None
    return CheckoutSession(session_id, created, tuple(buyers))


def _parse_handled(
    event_id: str,
    event_type: str,
    created: int,
    obj: Mapping[str, Any],
    catalog: PlanCatalog,
    bounds: Bounds,
) -> ParsedEvent:
    if event_type in SUBSCRIPTION_EVENTS:
        status_rank = _SUBSCRIPTION_STATUS_RANK.get(_require(obj, "status", str, "data.object."), 9)
        rank = _SUBSCRIPTION_EVENT_RANK[event_type] * 10 + status_rank
        change, plan_tier = subscription_change(event_id, created, rank, obj, catalog, bounds)
        return ParsedEvent(
            event_id, event_type, created, subscription_account(obj), change, plan_tier=plan_tier
        )

    if event_type in COUNTED_EVENT_TYPES:
        if event_type != "charge.refunded":
            return ParsedEvent(event_id, event_type, created, AccountRef(None, None), None)
        # A refund's amount is told by the plan of its customer's account.
        account = AccountRef(
            _account_id((obj.get("metadata"), "data.object.")),
            _customer_id(obj.get("customer"), "data.object.customer"),
        )
        return ParsedEvent(event_id, event_type, created, account, None)

    customer_id = _customer_id(obj.get("customer"), "data.object.customer")

    if event_type.startswith("invoice."):
        # Newer API versions: parent.subscription_details; older: subscription_details.
        details_where = "data.object.parent.subscription_details."
        details = _dig(obj, "parent", "subscription_details")
        if not details:
            details_where, details = "data.object.subscription_details.", obj.get("subscription_details")
        for amount in ("amount_due", "amount_paid", "amount_remaining"):
            _amount(obj, amount, "data.object.")
        _amount(obj, "attempt_count", "data.object.", MAX_ATTEMPTS)
        _currency(obj, "data.object.")
        paid = event_type == "invoice.paid"
        change = StateChange(
            group="payment",
            version=event_version(created, 1 if paid else 0, event_id),
            fields={
                "last_invoice_id": _require(obj, "id", str, "data.object."),
                "last_payment_status": "succeeded" if paid else "failed",
                "last_billing_reason": _optional(obj, "billing_reason", str, "data.object."),
                "last_payment_at": created,
            },
        )
        account = AccountRef(
            _account_id((_dig(details, "metadata"), details_where), (obj.get("metadata"), "data.object.")),
            customer_id,
        )
        return ParsedEvent(
            event_id,
            event_type,
            created,
            account,
            change,
            billing_reason=change.fields["last_billing_reason"],
        )

    if event_type.startswith("checkout.session."):
        completed = event_type == "checkout.session.completed"
        account_id = _account_id((obj.get("metadata"), "data.object."))
        claimed = account_id is None and _client_reference(obj) is not None
        account_id = account_id or _client_reference(obj)
        change = StateChange(
            group="checkout",
            version=event_version(created, 1 if completed else 0, event_id),
            fields={
                "last_checkout_session_id": _require(obj, "id", str, "data.object."),
                "last_checkout_status": "completed" if completed else "expired",
            },
        )
        return ParsedEvent(
            event_id, event_type, created, AccountRef(account_id, customer_id, claimed), change
        )

    if event_type == "entitlements.active_entitlement_summary.updated":
        entries = _dig(obj, "entitlements", "data")
        if not isinstance(entries, list):
            raise MalformedEvent("data.object.entitlements.data must be a list")
        lookup_keys = sorted(
            {
                e["lookup_key"]
                for e in entries
                if isinstance(e, Mapping) and isinstance(e.get("lookup_key"), str)
            }
        )
        change = StateChange(
            group="entitlements",
            version=event_version(created, 0, event_id),
            fields={"entitlement_lookup_keys": lookup_keys},
        )
        return ParsedEvent(event_id, event_type, created, AccountRef(None, customer_id), change)

    # customer.deleted: the object is the customer itself.
    change = StateChange(
        group="customer", version=event_version(created, 0, event_id), fields={"customer_deleted": True}
    )
    account = AccountRef(
        _account_id((obj.get("metadata"), "data.object.")), _customer_id(obj.get("id"), "data.object.id")
    )
    return ParsedEvent(event_id, event_type, created, account, change)


def _client_reference(session: Mapping[str, Any]) -> str | None:
    """A checkout's client_reference_id: set by whoever built the checkout link, buyers included."""
    reference = session.get("client_reference_id")
    if reference is None:
        return None
    if not is_account_id(reference):
        raise RefusedId("data.object.client_reference_id")
    return reference
