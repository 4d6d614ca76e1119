"""Revenue from Stripe subscriptions: each one's MRR and tier, and the movements between standings.

Pure functions over subscription objects as the Stripe API returns them, in either API-version
shape, and over what billwatch stores of them (``Standing``): no I/O, no clock (pass ``as_of``
for discounts that end). What counts and why is in docs/revenue-metrics.md; the short form:

* MRR counts ``active`` and ``past_due`` subscriptions whose collection is not paused.
* Each licensed item is price x quantity normalised to a month; metered items, and tiered prices
  whose tiers are not in the object, are left out and listed in ``unpriced_items``.
* ``forever`` and ``repeating`` coupons reduce MRR (a repeating one until its ``end``), ``once``
  coupons do not. Coupons that are only an id are resolved from ``coupons``, else listed in
  ``unread_discounts`` and not applied.
* Arithmetic is exact (fractions); each subscription's MRR is rounded once, half to even, to an
  integer in the currency's minor unit, and totals add those integers, so they reconcile to the
  unit.
* A movement (new, reactivated, churned) is what one applied change does to the paying
  subscriptions, judged from the standing it replaced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Protocol

from billwatch.core.metrics import Metric, MetricPoint
from billwatch.licensing.plans import PlanCatalog

COUNTED_STATUSES = frozenset({"active", "past_due"})
# A subscription that was paying and stopped: counting it again is a reactivation, not new business.
LAPSED_STATUSES = frozenset({"canceled", "unpaid", "paused"})

# Months are the unit: a price billed every `interval` is worth this much per month, per interval_count.
PER_MONTH = {
    "month": Fraction(1),
    "year": Fraction(1, 12),
    "week": Fraction(52, 12),
    "day": Fraction(365, 12),
}
REDUCING_COUPON_DURATIONS = frozenset({"forever", "repeating"})

# Stripe's amounts are in minor units; these currencies do not have two decimals in its API
# (ISK, HUF and TWD keep two there, see https://docs.stripe.com/currencies#special-cases).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


class MalformedSubscription(ValueError):
    """The object is not a Stripe subscription this module can read; the message names the field."""


def major_units(amount: int, currency: str) -> Decimal:
    """An amount in minor units (what Stripe sends) in major units: 1999 usd -> 19.99, 500 jpy -> 500."""
    code = currency.lower()
    exponent = 0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2
    return Decimal(amount).scaleb(-exponent)


@dataclass(frozen=True)
class UnpricedItem:
    """A subscription item left out of MRR, and why (``metered``, ``tiers_missing``, ...)."""

    item_id: str | None
    reason: str


@dataclass(frozen=True)
class SubscriptionRevenue:
    id: str
    status: str
    currency: str
    tier: str
    counted: bool  # active or past_due, collection not paused
    lapsed: bool  # canceled, unpaid or paused: counting again later is a reactivation
    mrr: int  # minor units of `currency`; 0 unless counted
    unpriced_items: tuple[UnpricedItem, ...] = ()
    unread_discounts: tuple[str, ...] = ()  # discounts whose coupon was not readable, not applied


class _UnreadableDiscount(Exception):
    pass


class _Unpriced(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _PricedItem:
    monthly: Fraction
    invoices_per_month: Fraction  # how often an amount_off coupon is taken off this item
    product: str | None


def _object_id(value: object) -> str | None:
    """Stripe references another object by its id, or by the object itself when expanded."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _required_text(subscription: Mapping[str, Any], key: str) -> str:
    value = subscription.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedSubscription(f"subscription.{key} must be a non-empty string")
    return value


def _exact(mapping: Mapping[str, Any], key: str) -> Fraction | None:
    """Stripe's `<key>_decimal` string carries sub-minor-unit precision; the integer `<key>` does not."""
    decimal_text = mapping.get(f"{key}_decimal")
    if isinstance(decimal_text, str) and decimal_text:
        return Fraction(Decimal(decimal_text))
    value = mapping.get(key)
    return Fraction(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _billed_quantity(price: Mapping[str, Any], quantity: int) -> Fraction:
    transform = price.get("transform_quantity")
    if not isinstance(transform, Mapping) or not transform.get("divide_by"):
        return Fraction(quantity)
    packages = Fraction(quantity, transform["divide_by"])
    return Fraction(math.ceil(packages) if transform.get("round") == "up" else math.floor(packages))


def _tiered_amount(price: Mapping[str, Any], quantity: int) -> Fraction:
    tiers = price.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        # Stripe only sends tiers when expanded (expand[]=...price.tiers).
        raise _Unpriced("tiers_missing")
    if quantity == 0:
        return Fraction(0)
    if price.get("tiers_mode") == "volume":
        # Stripe's last tier is unbounded (up_to null), so some tier always holds the quantity.
        tier = next(t for t in tiers if t.get("up_to") is None or quantity <= t["up_to"])
        return (_exact(tier, "unit_amount") or Fraction(0)) * quantity + (
            _exact(tier, "flat_amount") or Fraction(0)
        )
    total, priced_up_to = Fraction(0), 0
    for tier in tiers:
        upper = quantity if tier.get("up_to") is None else min(quantity, tier["up_to"])
        if upper <= priced_up_to:
            break
        total += (_exact(tier, "unit_amount") or 0) * (upper - priced_up_to) + (
            _exact(tier, "flat_amount") or 0
        )
        priced_up_to = upper
    return total


def _priced_item(item: Mapping[str, Any]) -> _PricedItem:
    price = item.get("price")
    if not isinstance(price, Mapping):
        raise _Unpriced("no_price")
    recurring = price.get("recurring")
    if not isinstance(recurring, Mapping):
        raise _Unpriced("not_recurring")
    if recurring.get("usage_type") == "metered":
        raise _Unpriced("metered")
    interval = recurring.get("interval")
    # Checked: an interval that is not text (a list, say) cannot even be looked up.
    per_month = PER_MONTH.get(interval) if isinstance(interval, str) else None
    if per_month is None:
        raise _Unpriced("unknown_interval")
    invoices_per_month = per_month / (recurring.get("interval_count") or 1)
    quantity = item.get("quantity") or 0
    if price.get("billing_scheme") == "tiered":
        amount = _tiered_amount(price, quantity)
    else:
        unit_amount = _exact(price, "unit_amount")
        if unit_amount is None:
            raise _Unpriced("no_unit_amount")
        amount = unit_amount * _billed_quantity(price, quantity)
    return _PricedItem(amount * invoices_per_month, invoices_per_month, _object_id(price.get("product")))


@dataclass(frozen=True)
class _Coupon:
    percent_off: Fraction | None
    amount_off: Fraction | None
    products: frozenset[str] | None  # None: applies to every item


def _coupon(
    discount: object, currency: str, coupons: Mapping[str, Mapping[str, Any]], as_of: int | None
) -> _Coupon | None:
    """The coupon of a discount that reduces MRR now, or None if it does not."""
    if not isinstance(discount, Mapping):
        raise _UnreadableDiscount  # an id: the discounts were not expanded
    # Since 2025-09-30.clover the coupon sits in `source` and is an id unless expanded.
    coupon = discount.get("coupon") or (discount.get("source") or {}).get("coupon")
    if isinstance(coupon, str):
        coupon = coupons.get(coupon)
    if not isinstance(coupon, Mapping):
        raise _UnreadableDiscount
    end = discount.get("end")
    if coupon.get("duration") not in REDUCING_COUPON_DURATIONS or (
        as_of is not None and end and end <= as_of
    ):
        return None
    amount_off = None
    if coupon.get("amount_off") is not None:
        if str(coupon.get("currency", "")).lower() == currency:
            amount_off = Fraction(coupon["amount_off"])
        else:
            option = (coupon.get("currency_options") or {}).get(currency) or {}
            if option.get("amount_off") is None:
                raise _UnreadableDiscount
            amount_off = Fraction(option["amount_off"])
    percent_off = coupon.get("percent_off")
    products = (coupon.get("applies_to") or {}).get("products")
    return _Coupon(
        Fraction(Decimal(str(percent_off))) if percent_off is not None else None,
        amount_off,
        frozenset(products) if products else None,
    )


def _apply(coupon: _Coupon, items: list[_PricedItem]) -> None:
    applicable = [item for item in items if coupon.products is None or item.product in coupon.products]
    if coupon.percent_off is not None:
        for item in applicable:
            item.monthly *= 1 - coupon.percent_off / 100
    total = sum((item.monthly for item in applicable), Fraction(0))
    if coupon.amount_off is None or not total:
        return
    # Taken off every invoice that has something to take it from, as often as the items with an
    # amount invoice; never below zero. Spread in proportion so a later coupon sees each item's share.
    invoices_per_month = max(item.invoices_per_month for item in applicable if item.monthly)
    reduction = min(coupon.amount_off * invoices_per_month, total)
    for item in applicable:
        item.monthly -= reduction * item.monthly / total


def _subscription_discounts(subscription: Mapping[str, Any]) -> list[object]:
    discounts = list(subscription.get("discounts") or [])
    legacy = subscription.get("discount")
    if isinstance(legacy, Mapping):
        # Before 2025-03-31 the singular field repeats one of `discounts`, which may hold only its id.
        discounts = [legacy, *(d for d in discounts if _object_id(d) != legacy.get("id"))]
    return discounts


def _tier_name(subscription: Mapping[str, Any], catalog: PlanCatalog) -> str:
    """The highest tier among the items' prices, as billwatch.billing.stripe_events decides it."""
    tiers = [catalog.default_tier]
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price") if isinstance(item, Mapping) else None
        if isinstance(price, Mapping):
            lookup_key = price.get("lookup_key")
            metadata = price.get("metadata")
            tiers.append(
                catalog.tier_for_price(
                    lookup_key if isinstance(lookup_key, str) else None,
                    metadata if isinstance(metadata, Mapping) else None,
                )
            )
    return max(tiers, key=lambda tier: tier.rank).name


def subscription_revenue(
    subscription: Mapping[str, Any],
    catalog: PlanCatalog,
    *,
    coupons: Mapping[str, Mapping[str, Any]] | None = None,
    as_of: int | None = None,
) -> SubscriptionRevenue:
    """One subscription's MRR, tier and standing. ``coupons`` resolves coupons given only by id;
    ``as_of`` (epoch seconds) drops repeating discounts that ended by then."""
    subscription_id = _required_text(subscription, "id")
    status = _required_text(subscription, "status")
    currency = _required_text(subscription, "currency").lower()
    collection_paused = bool(subscription.get("pause_collection"))
    counted = status in COUNTED_STATUSES and not collection_paused
    standing = SubscriptionRevenue(
        id=subscription_id,
        status=status,
        currency=currency,
        tier=_tier_name(subscription, catalog),
        counted=counted,
        lapsed=status in LAPSED_STATUSES or collection_paused,
        mrr=0,
    )
    if not counted:
        return standing

    priced: list[_PricedItem] = []
    unpriced: list[UnpricedItem] = []
    unread: list[str] = []

    def apply_discounts(discounts: Iterable[object], items: list[_PricedItem]) -> None:
        for discount in discounts:
            try:
                coupon = _coupon(discount, currency, coupons or {}, as_of)
            except _UnreadableDiscount:
                unread.append(_object_id(discount) or "?")
                continue
            if coupon is not None:
                _apply(coupon, items)

    for item in (subscription.get("items") or {}).get("data") or []:
        try:
            priced_item = _priced_item(item)
        except _Unpriced as exc:
            unpriced.append(UnpricedItem(_object_id(item.get("id")), exc.reason))
            continue
        # Stripe applies an item's own discounts before the subscription's.
        apply_discounts(item.get("discounts") or [], [priced_item])
        priced.append(priced_item)
    apply_discounts(_subscription_discounts(subscription), priced)

    mrr = round(sum((item.monthly for item in priced), Fraction(0)))
    return replace(standing, mrr=mrr, unpriced_items=tuple(unpriced), unread_discounts=tuple(unread))


class Movement(StrEnum):
    NEW = "new"
    REACTIVATED = "reactivated"
    CHURNED = "churned"


@dataclass(frozen=True)
class Standing:
    """What billwatch stores of a subscription's revenue: its status, and its MRR while it counts."""

    status: str | None
    mrr: int | None  # minor units; None when it adds nothing to MRR

    @property
    def counted(self) -> bool:
        return self.mrr is not None

    @property
    def lapsed(self) -> bool:
        # Stored state keeps no pause_collection: an active or past_due subscription that does not
        # count has its collection paused, and counting again is a reactivation.
        return not self.counted and self.status in LAPSED_STATUSES | COUNTED_STATUSES


def movement(before: Standing | None, after: Standing) -> Movement | None:
    """What one applied change does to the paying subscriptions: a start, a return, a loss, or nothing.

    ``before`` is the stored standing the change replaced (None: nothing was stored). Summed over
    changes, new + reactivated - churned is exactly the change in the number of paying subscriptions.
    """
    was_counted = before is not None and before.counted
    if was_counted and not after.counted:
        return Movement.CHURNED
    if after.counted and not was_counted:
        return Movement.REACTIVATED if before is not None and before.lapsed else Movement.NEW
    return None


MOVEMENT_METRICS = {
    Movement.NEW: Metric.SUBSCRIPTIONS_NEW,
    Movement.REACTIVATED: Metric.SUBSCRIPTIONS_REACTIVATED,
    Movement.CHURNED: Metric.SUBSCRIPTIONS_CHURNED,
}


class StoredStanding(Protocol):
    """What was stored of a subscription before a change: the account item, or the standing an
    outbox entry copied from it."""

    @property
    def subscription_status(self) -> str | None: ...

    @property
    def mrr(self) -> float | None: ...


def applied_movement(previous: StoredStanding | None, fields: Mapping[str, Any]) -> MetricPoint | None:
    """The movement an applied subscription change made, as its metric point.

    ``previous`` is what was stored before the change (None: nothing), and ``fields`` the
    subscription fields the change wrote.
    """
    before = None
    if previous is not None:
        stored_mrr = previous.mrr
        before = Standing(previous.subscription_status, None if stored_mrr is None else int(stored_mrr))
    moved = movement(before, Standing(fields.get("subscription_status"), fields.get("mrr")))
    return MetricPoint(MOVEMENT_METRICS[moved]) if moved else None
