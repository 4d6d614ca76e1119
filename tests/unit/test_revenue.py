from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billwatch.billing.revenue import (
    MalformedSubscription,
    Movement,
    Standing,
    UnpricedItem,
    major_units,
    movement,
    subscription_revenue,
)
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from devtools import stripe_events as se

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")
NOT_COUNTED_STATUSES = ["trialing", "incomplete", "incomplete_expired", "canceled", "unpaid", "paused"]


def subscription(
    *,
    currency: str = "usd",
    interval_count: int = 1,
    quantity: int = 1,
    discounts: list[Any] | None = None,
    **factory_args: Any,
) -> dict[str, Any]:
    sub = se.subscription(**factory_args)
    sub["currency"] = currency
    item = sub["items"]["data"][0]
    item["quantity"] = quantity
    for price in (item["price"], item["plan"]):
        price["currency"] = currency
    item["price"]["recurring"]["interval_count"] = item["plan"]["interval_count"] = interval_count
    sub["discounts"] = discounts or []
    return sub


def add_item(
    sub: dict[str, Any],
    *,
    amount: int,
    interval: str = "month",
    quantity: int = 1,
    usage_type: str = "licensed",
    product: str = se.DEFAULT_PRODUCT,
) -> dict[str, Any]:
    item = copy.deepcopy(sub["items"]["data"][0])
    item["id"] = f"si_extra{len(sub['items']['data'])}"
    item["quantity"] = None if usage_type == "metered" else quantity
    item["discounts"] = []
    price = item["price"]
    price.update(
        id=f"price_{item['id']}", unit_amount=amount, unit_amount_decimal=str(amount), product=product
    )
    price["recurring"].update(interval=interval, usage_type=usage_type)
    sub["items"]["data"].append(item)
    return item


def coupon(
    *,
    percent_off: float | None = None,
    amount_off: int | None = None,
    currency: str | None = "usd",
    duration: str = "forever",
    products: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "id": "co_test",
        "object": "coupon",
        "amount_off": amount_off,
        "currency": currency if amount_off is not None else None,
        "duration": duration,
        "duration_in_months": 3 if duration == "repeating" else None,
        "percent_off": percent_off,
        "applies_to": {"products": products} if products else None,
        "valid": True,
        **fields,
    }


def discount(
    coupon_or_id: dict[str, Any] | str, *, shape: str = "clover", id: str = "di_test", end=None
) -> dict:
    """A Discount as each API version shapes it: clover (2025-09-30) puts the coupon in `source`,
    earlier versions inline it as `coupon`."""
    found = se.fixture("subscription")["pending_update"]["discount"]
    found.update(id=id, end=end, subscription="sub_test")
    if shape == "clover":
        found["source"] = {"coupon": coupon_or_id, "type": "coupon"}
    else:
        del found["source"]
        found["coupon"] = coupon_or_id
    return found


def mrr(sub: dict[str, Any], **options: Any) -> int:
    return subscription_revenue(sub, CATALOG, **options).mrr


# ------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("legacy", [False, True])
def test_monthly_price_is_its_mrr_in_either_api_shape(legacy: bool) -> None:
    sub = subscription(amount=2000, legacy=legacy)
    assert ("current_period_start" in sub) is legacy
    revenue = subscription_revenue(sub, CATALOG)
    assert (revenue.mrr, revenue.currency, revenue.tier, revenue.counted) == (2000, "usd", "PRO", True)


@pytest.mark.parametrize(
    ("interval", "interval_count", "amount", "expected"),
    [
        ("year", 1, 24_000, 2000),  # exactly a twelfth
        ("year", 1, 1000, 83),  # 83.33
        ("year", 1, 30, 2),  # 2.5: half to even
        ("year", 1, 42, 4),  # 3.5: half to even
        ("month", 3, 6000, 2000),  # quarterly
        ("year", 2, 48_000, 2000),
        ("week", 1, 1200, 5200),  # 52 weeks / 12
        ("week", 2, 1200, 2600),
        ("day", 1, 120, 3650),  # 365 days / 12
    ],
)
def test_prices_are_normalised_to_a_month(
    interval: str, interval_count: int, amount: int, expected: int
) -> None:
    assert mrr(subscription(interval=interval, interval_count=interval_count, amount=amount)) == expected


def test_quantity_multiplies_the_price() -> None:
    assert mrr(subscription(amount=2000, quantity=5)) == 10_000


def test_sub_cent_unit_amounts_are_kept_exact_until_the_single_rounding() -> None:
    sub = subscription(amount=1, quantity=1000)
    sub["items"]["data"][0]["price"]["unit_amount_decimal"] = "1.255"
    assert mrr(sub) == 1255


@pytest.mark.parametrize(("rounding", "expected"), [("up", 3 * 500), ("down", 2 * 500)])
def test_transform_quantity_bills_packages(rounding: str, expected: int) -> None:
    sub = subscription(amount=500, quantity=25)
    sub["items"]["data"][0]["price"]["transform_quantity"] = {"divide_by": 10, "round": rounding}
    assert mrr(sub) == expected


def test_several_items_add_up_and_metered_ones_are_left_out() -> None:
    sub = subscription(amount=2000, id="sub_many")
    add_item(sub, amount=12_000, interval="year", quantity=2)
    metered = add_item(sub, amount=5, usage_type="metered")
    revenue = subscription_revenue(sub, CATALOG)
    assert revenue.mrr == 2000 + 2000
    assert revenue.unpriced_items == (UnpricedItem(metered["id"], "metered"),)


def test_a_one_time_price_is_left_out() -> None:
    sub = subscription(amount=2000)
    extra = add_item(sub, amount=999)
    extra["price"].update(type="one_time", recurring=None)
    assert subscription_revenue(sub, CATALOG).unpriced_items == (UnpricedItem(extra["id"], "not_recurring"),)
    assert mrr(sub) == 2000


def tiered(sub: dict[str, Any], mode: str, tiers: list[dict] | None) -> dict[str, Any]:
    price = sub["items"]["data"][0]["price"]
    price.update(billing_scheme="tiered", tiers_mode=mode, unit_amount=None, unit_amount_decimal=None)
    if tiers is not None:
        price["tiers"] = tiers
    return sub


TIERS = [
    {
        "up_to": 10,
        "unit_amount": 1000,
        "unit_amount_decimal": "1000",
        "flat_amount": None,
        "flat_amount_decimal": None,
    },
    {
        "up_to": None,
        "unit_amount": 500,
        "unit_amount_decimal": "500",
        "flat_amount": 2000,
        "flat_amount_decimal": "2000",
    },
]


@pytest.mark.parametrize(
    ("mode", "quantity", "expected"),
    [
        ("graduated", 4, 4 * 1000),
        ("graduated", 15, 10 * 1000 + 5 * 500 + 2000),
        ("volume", 4, 4 * 1000),
        ("volume", 15, 15 * 500 + 2000),
        ("volume", 0, 0),
    ],
)
def test_tiered_prices_are_computed_from_their_tiers(mode: str, quantity: int, expected: int) -> None:
    assert mrr(tiered(subscription(quantity=quantity), mode, TIERS)) == expected


def test_tiered_prices_without_their_tiers_are_left_out_and_named() -> None:
    sub = subscription(id="sub_tiers", amount=2000)
    add_item(sub, amount=700)
    tiered(sub, "volume", None)
    revenue = subscription_revenue(sub, CATALOG)
    assert revenue.mrr == 700
    assert revenue.unpriced_items == (UnpricedItem("si_tiers", "tiers_missing"),)


# ------------------------------------------------------------------------------------ statuses


@pytest.mark.parametrize("status", NOT_COUNTED_STATUSES)
def test_subscriptions_that_do_not_pay_now_have_no_mrr(status: str) -> None:
    revenue = subscription_revenue(subscription(status=status, trial_end=1_702_592_000), CATALOG)
    assert (revenue.counted, revenue.mrr) == (False, 0)
    assert revenue.lapsed is (status in {"canceled", "unpaid", "paused"})


def test_past_due_counts_until_it_churns() -> None:
    assert mrr(subscription(status="past_due", amount=2000)) == 2000


def test_paused_collection_is_not_counted_and_counts_as_lapsed() -> None:
    sub = subscription(amount=2000)
    sub["pause_collection"] = {"behavior": "void", "resumes_at": None}
    revenue = subscription_revenue(sub, CATALOG)
    assert (revenue.counted, revenue.lapsed, revenue.mrr) == (False, True, 0)


def test_a_subscription_without_an_id_is_refused() -> None:
    sub = subscription()
    del sub["id"]
    with pytest.raises(MalformedSubscription, match=r"subscription\.id"):
        subscription_revenue(sub, CATALOG)


# ----------------------------------------------------------------------------------- discounts


@pytest.mark.parametrize("shape", ["clover", "basil"])
@pytest.mark.parametrize(("duration", "expected"), [("forever", 1500), ("repeating", 1500), ("once", 2000)])
def test_percent_off_reduces_mrr_unless_once(shape: str, duration: str, expected: int) -> None:
    sub = subscription(
        amount=2000, discounts=[discount(coupon(percent_off=25, duration=duration), shape=shape)]
    )
    assert mrr(sub) == expected


@pytest.mark.parametrize(("duration", "expected"), [("forever", 1500), ("repeating", 1500), ("once", 2000)])
def test_amount_off_reduces_mrr_unless_once(duration: str, expected: int) -> None:
    sub = subscription(amount=2000, discounts=[discount(coupon(amount_off=500, duration=duration))])
    assert mrr(sub) == expected


def test_amount_off_is_taken_off_each_invoice_so_a_yearly_one_is_spread_over_twelve_months() -> None:
    sub = subscription(interval="year", amount=24_000, discounts=[discount(coupon(amount_off=1200))])
    assert mrr(sub) == 2000 - 100


def test_amount_off_on_mixed_intervals_follows_the_most_frequent_invoice_with_an_amount() -> None:
    sub = subscription(amount=2000, discounts=[discount(coupon(amount_off=300))])
    add_item(sub, amount=12_000, interval="year")
    add_item(sub, amount=100, interval="day", quantity=0)  # invoices daily, but nothing to discount
    assert mrr(sub) == 2000 + 1000 - 300


def test_amount_off_never_takes_mrr_below_zero() -> None:
    assert mrr(subscription(amount=2000, discounts=[discount(coupon(amount_off=5000))])) == 0


def test_a_repeating_discount_stops_reducing_mrr_at_its_end() -> None:
    sub = subscription(
        amount=2000, discounts=[discount(coupon(percent_off=50, duration="repeating"), end=1000)]
    )
    assert (mrr(sub, as_of=999), mrr(sub, as_of=1000)) == (1000, 2000)


def test_stacked_discounts_apply_in_turn() -> None:
    first = discount(coupon(percent_off=10), id="di_1")
    second = discount(coupon(percent_off=10), id="di_2")
    assert mrr(subscription(amount=2000, discounts=[first, second])) == 1620  # 19 %, not 20 %


def test_item_discounts_apply_to_their_item_before_the_subscription_discounts() -> None:
    sub = subscription(amount=2000, discounts=[discount(coupon(amount_off=300), id="di_sub")])
    add_item(sub, amount=1000)["discounts"] = [discount(coupon(percent_off=50), id="di_item")]
    assert mrr(sub) == 2000 + 500 - 300


def test_a_coupon_for_some_products_reduces_only_their_items() -> None:
    sub = subscription(amount=2000, discounts=[discount(coupon(percent_off=50, products=["prod_addon"]))])
    add_item(sub, amount=1000, product="prod_addon")
    assert mrr(sub) == 2000 + 500


def test_amount_off_in_another_currency_uses_its_currency_option() -> None:
    euro_coupon = coupon(amount_off=400, currency="usd", currency_options={"eur": {"amount_off": 300}})
    assert mrr(subscription(currency="eur", amount=2000, discounts=[discount(euro_coupon)])) == 1700


def test_amount_off_in_another_currency_without_an_option_is_not_applied_and_named() -> None:
    sub = subscription(currency="eur", amount=2000, discounts=[discount(coupon(amount_off=400), id="di_usd")])
    revenue = subscription_revenue(sub, CATALOG)
    assert (revenue.mrr, revenue.unread_discounts) == (2000, ("di_usd",))


def test_a_coupon_given_by_id_is_read_from_the_coupons_passed_in() -> None:
    sub = subscription(amount=2000, discounts=[discount("co_half", id="di_half")])
    unresolved = subscription_revenue(sub, CATALOG)
    assert (unresolved.mrr, unresolved.unread_discounts) == (2000, ("di_half",))
    assert mrr(sub, coupons={"co_half": coupon(percent_off=50)}) == 1000


def test_unexpanded_discount_ids_are_named_not_guessed() -> None:
    revenue = subscription_revenue(subscription(amount=2000, discounts=["di_unexpanded"]), CATALOG)
    assert (revenue.mrr, revenue.unread_discounts) == (2000, ("di_unexpanded",))


def test_legacy_singular_discount_is_applied_once_though_discounts_lists_its_id() -> None:
    sub = subscription(amount=2000, legacy=True, discounts=["di_legacy"])
    sub["discount"] = discount(coupon(percent_off=25), shape="basil", id="di_legacy")
    revenue = subscription_revenue(sub, CATALOG)
    assert (revenue.mrr, revenue.unread_discounts) == (1500, ())


def test_fractional_percent_off() -> None:
    assert mrr(subscription(amount=2000, discounts=[discount(coupon(percent_off=12.5))])) == 1750


# ---------------------------------------------------------------------------------- currencies


def test_major_units_follow_stripes_minor_units() -> None:
    assert major_units(1999, "USD") == Decimal("19.99")
    assert major_units(500, "jpy") == Decimal("500")
    assert major_units(1250, "kwd") == Decimal("1.250")
    assert major_units(100, "isk") == Decimal("1.00")  # two decimals in Stripe's API


def test_each_subscription_keeps_its_own_currency() -> None:
    assert subscription_revenue(subscription(currency="EUR", amount=1500), CATALOG).currency == "eur"
    assert mrr(subscription(currency="jpy", amount=3000)) == 3000


def tier(sub: dict[str, Any]) -> str:
    return subscription_revenue(sub, CATALOG).tier


def test_the_tier_follows_the_plan_catalog() -> None:
    assert tier(subscription(lookup_key="pro_yearly", interval="year")) == "PRO"
    assert tier(subscription(lookup_key=None, price_metadata={"tier": "pro"})) == "PRO"
    assert tier(subscription(lookup_key="legacy_plan")) == "FREE"


# ----------------------------------------------------------------------------------- movements


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, Standing("active", 2000), Movement.NEW),
        (Standing(None, None), Standing("active", 0), Movement.NEW),  # a free price still counts
        (Standing("trialing", None), Standing("active", 2000), Movement.NEW),  # a trial that converts
        (Standing("incomplete", None), Standing("past_due", 2000), Movement.NEW),
        (Standing("canceled", None), Standing("active", 2000), Movement.REACTIVATED),
        (Standing("unpaid", None), Standing("active", 2000), Movement.REACTIVATED),
        (Standing("paused", None), Standing("active", 2000), Movement.REACTIVATED),
        (Standing("active", None), Standing("active", 2000), Movement.REACTIVATED),  # collection resumed
        (Standing("active", 2000), Standing("canceled", None), Movement.CHURNED),
        (Standing("past_due", 2000), Standing("unpaid", None), Movement.CHURNED),
        (Standing("active", 2000), Standing("active", None), Movement.CHURNED),  # collection paused
        (Standing("active", 2000), Standing("past_due", 2000), None),  # dunning keeps counting
        (Standing("active", 2000), Standing("active", 6000), None),  # expansion is not a movement
        (None, Standing("trialing", None), None),
        (Standing("trialing", None), Standing("canceled", None), None),  # never paid, never churned
    ],
)
def test_movements_follow_the_standing_a_change_replaced(
    before: Standing | None, after: Standing, expected: Movement | None
) -> None:
    assert movement(before, after) is expected


# ----------------------------------------------------------------------------------- properties

CURRENCIES = ["usd", "eur", "jpy"]
STATUSES = ["active", "past_due", *NOT_COUNTED_STATUSES]


@st.composite
def subscriptions(draw: st.DrawFn, id: str | None = None) -> dict[str, Any]:
    coupons = st.one_of(
        st.none(),
        st.builds(
            lambda percent, duration: coupon(percent_off=percent, duration=duration),
            st.floats(0, 100, allow_nan=False).map(lambda p: round(p, 2)),
            st.sampled_from(["forever", "repeating", "once"]),
        ),
        st.builds(lambda amount: coupon(amount_off=amount), st.integers(0, 100_000)),
    )
    chosen = draw(coupons)
    return subscription(
        id=id or draw(st.sampled_from(["sub_a", "sub_b", "sub_c", "sub_d"])),
        status=draw(st.sampled_from(STATUSES)),
        currency=draw(st.sampled_from(CURRENCIES)),
        amount=draw(st.integers(0, 1_000_000)),
        interval=draw(st.sampled_from(["day", "week", "month", "year"])),
        interval_count=draw(st.integers(1, 12)),
        quantity=draw(st.integers(0, 50)),
        legacy=draw(st.booleans()),
        discounts=[discount(chosen)] if chosen else [],
    )


@settings(max_examples=150, deadline=None)
@given(subscriptions(), st.integers(0, 1_000_000), st.sampled_from(["day", "week", "month", "year"]))
def test_mrr_is_never_negative_and_a_zero_quantity_item_changes_nothing(
    sub: dict[str, Any], amount: int, interval: str
) -> None:
    before = mrr(sub)
    assert before >= 0
    add_item(sub, amount=amount, interval=interval, quantity=0)
    assert mrr(sub) == before


STANDINGS = st.builds(
    Standing, st.sampled_from([None, *STATUSES]), st.one_of(st.none(), st.integers(0, 100_000))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STANDINGS, min_size=1, max_size=12))
def test_movements_add_up_to_the_change_in_paying_subscriptions(history: list[Standing]) -> None:
    moved = [movement(before, after) for before, after in zip([None, *history], history, strict=False)]
    gained = moved.count(Movement.NEW) + moved.count(Movement.REACTIVATED)
    assert gained - moved.count(Movement.CHURNED) == int(history[-1].counted)
