"""Revenue metrics from Stripe subscriptions: MRR, active subscriptions by tier, movements, churn.

Pure functions over subscription objects as the Stripe API returns them, in either API-version
shape: no I/O, no clock (pass ``as_of`` for discounts that end). What counts and why is in
docs/revenue-metrics.md; the short form:

* MRR counts ``active`` and ``past_due`` subscriptions whose collection is not paused.
* Each licensed item is price x quantity normalised to a month; metered items, and tiered prices
  whose tiers are not in the object, are left out and listed in ``unpriced_items``.
* ``forever`` and ``repeating`` coupons reduce MRR (a repeating one until its ``end``), ``once``
  coupons do not. Coupons that are only an id are resolved from ``coupons``, else listed in
  ``unread_discounts`` and not applied.
* Arithmetic is exact (fractions); each subscription's MRR is rounded once, half to even, to an
  integer in the currency's minor unit, and aggregates add those integers, so every total and
  every movement reconciles to the unit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from billwatch.plans import PlanCatalog

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


@dataclass(frozen=True)
class MrrSummary:
    currency: str
    mrr: int  # minor units
    subscriptions: int  # counted subscriptions in this currency

    @property
    def major(self) -> Decimal:
        return major_units(self.mrr, self.currency)


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


def _object_id(value: Any) -> str | None:
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
        return (_exact(tier, "unit_amount") or 0) * quantity + (_exact(tier, "flat_amount") or 0)
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
    per_month = PER_MONTH.get(recurring.get("interval"))
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
    discount: Any, currency: str, coupons: Mapping[str, Mapping[str, Any]], as_of: int | None
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


def _subscription_discounts(subscription: Mapping[str, Any]) -> list[Any]:
    discounts = list(subscription.get("discounts") or [])
    legacy = subscription.get("discount")
    if isinstance(legacy, Mapping):
        # Before 2025-03-31 the singular field repeats one of `discounts`, which may hold only its id.
        discounts = [legacy, *(d for d in discounts if _object_id(d) != legacy.get("id"))]
    return discounts


def _tier_name(subscription: Mapping[str, Any], catalog: PlanCatalog) -> str:
    """The highest tier among the items' prices, as billwatch.stripe_events decides it."""
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

    def apply_discounts(discounts: Iterable[Any], items: list[_PricedItem]) -> None:
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


@dataclass(frozen=True)
class RevenueSnapshot:
    """Every subscription's revenue at one moment, keyed by subscription id."""

    subscriptions: Mapping[str, SubscriptionRevenue]
    tiers: tuple[str, ...]  # the catalog's tier names, so every tier is reported, at zero too

    @classmethod
    def from_subscriptions(
        cls,
        subscriptions: Iterable[Mapping[str, Any]],
        catalog: PlanCatalog,
        *,
        coupons: Mapping[str, Mapping[str, Any]] | None = None,
        as_of: int | None = None,
    ) -> RevenueSnapshot:
        """A subscription listed twice (a page boundary that moved) is counted once, as listed last."""
        revenues = (subscription_revenue(s, catalog, coupons=coupons, as_of=as_of) for s in subscriptions)
        return cls({revenue.id: revenue for revenue in revenues}, tuple(tier.name for tier in catalog.tiers))

    @property
    def counted_subscriptions(self) -> list[SubscriptionRevenue]:
        return [revenue for revenue in self.subscriptions.values() if revenue.counted]

    @property
    def mrr_by_currency(self) -> dict[str, MrrSummary]:
        mrr: Counter[str] = Counter()
        subscriptions: Counter[str] = Counter()
        for revenue in self.counted_subscriptions:
            mrr[revenue.currency] += revenue.mrr
            subscriptions[revenue.currency] += 1
        return {
            currency: MrrSummary(currency, mrr[currency], subscriptions[currency]) for currency in sorted(mrr)
        }

    @property
    def active_by_tier(self) -> dict[str, int]:
        return self._count_by_tier(self.counted_subscriptions)

    @property
    def trialing_by_tier(self) -> dict[str, int]:
        """With active_by_tier, what the ActiveSubscriptionsByTier index should hold (it includes trials)."""
        return self._count_by_tier([r for r in self.subscriptions.values() if r.status == "trialing"])

    def _count_by_tier(self, revenues: list[SubscriptionRevenue]) -> dict[str, int]:
        counts = Counter(revenue.tier for revenue in revenues)
        return {tier: counts[tier] for tier in self.tiers}


@dataclass(frozen=True)
class Movements:
    """What changed between two snapshots. Amounts are minor units per currency, all positive."""

    new: tuple[str, ...]
    reactivated: tuple[str, ...]
    churned: tuple[str, ...]
    expanded: tuple[str, ...]
    contracted: tuple[str, ...]
    active_at_start: int
    new_mrr: Mapping[str, int]
    reactivated_mrr: Mapping[str, int]
    churned_mrr: Mapping[str, int]
    expansion_mrr: Mapping[str, int]
    contraction_mrr: Mapping[str, int]

    @property
    def churn_rate(self) -> float:
        """Churned / counted at the start. With none at the start none could churn, so 0.0, not an error."""
        return len(self.churned) / self.active_at_start if self.active_at_start else 0.0


def movements(previous: RevenueSnapshot, current: RevenueSnapshot) -> Movements:
    """New, reactivated, churned, expanded and contracted subscriptions from ``previous`` to ``current``.

    A subscription counted before and missing now (not listed any more) has churned.
    """
    ids: dict[str, list[str]] = {
        kind: [] for kind in ("new", "reactivated", "churned", "expanded", "contracted")
    }
    amounts: dict[str, Counter[str]] = {kind: Counter() for kind in ids}
    for subscription_id in sorted(previous.subscriptions.keys() | current.subscriptions.keys()):
        before = previous.subscriptions.get(subscription_id)
        after = current.subscriptions.get(subscription_id)
        was_counted = before is not None and before.counted
        is_counted = after is not None and after.counted
        if was_counted and is_counted:
            change: Counter[str] = Counter()
            change[before.currency] -= before.mrr
            change[after.currency] += after.mrr
            # Per currency, so that even a currency change keeps each currency's bridge exact.
            for currency, delta in change.items():
                if delta:
                    kind = "expanded" if delta > 0 else "contracted"
                    amounts[kind][currency] += abs(delta)
                    ids[kind].append(subscription_id)
        elif was_counted:
            ids["churned"].append(subscription_id)
            amounts["churned"][before.currency] += before.mrr
        elif is_counted:
            kind = "reactivated" if before is not None and before.lapsed else "new"
            ids[kind].append(subscription_id)
            amounts[kind][after.currency] += after.mrr

    currencies = sorted(previous.mrr_by_currency.keys() | current.mrr_by_currency.keys())

    def per_currency(kind: str) -> dict[str, int]:
        return {currency: amounts[kind][currency] for currency in currencies}

    return Movements(
        new=tuple(ids["new"]),
        reactivated=tuple(ids["reactivated"]),
        churned=tuple(ids["churned"]),
        expanded=tuple(ids["expanded"]),
        contracted=tuple(ids["contracted"]),
        active_at_start=len(previous.counted_subscriptions),
        new_mrr=per_currency("new"),
        reactivated_mrr=per_currency("reactivated"),
        churned_mrr=per_currency("churned"),
        expansion_mrr=per_currency("expanded"),
        contraction_mrr=per_currency("contracted"),
    )
