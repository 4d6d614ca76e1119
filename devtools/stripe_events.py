"""Build realistic Stripe objects and event envelopes for tests and local runs.

Every builder starts from a deep copy of a real Stripe object shape (``tests/fixtures/stripe/*.json``,
copied from Stripe's OpenAPI fixtures, MIT licence) and overwrites only the fields billwatch depends
on, so parsers meet the full, real shape.  Nothing here reads outside the repository.

Two API-version shapes are supported (``legacy=`` on the builders):

* new (API version >= 2025-03-31, default ``"2025-09-30.clover"``): ``current_period_start/end`` live
  on each subscription item only; an invoice links its subscription via
  ``parent.subscription_details.subscription`` (metadata in ``parent.subscription_details.metadata``)
  and has no top-level ``subscription`` key.
* legacy (e.g. ``"2024-06-20"``): ``subscription.current_period_start/end`` at the top level (absent
  from items); ``invoice.subscription`` (string) and ``invoice.subscription_details.metadata``; no
  ``parent`` on the invoice or its lines.

``event()`` picks ``api_version`` in this order: the explicit ``api_version=`` argument; else
``legacy=True/False`` if given; else it is inferred from the object's shape (a subscription with
top-level period fields, or an invoice with a top-level ``subscription`` key and no ``parent``, is
legacy).  Legacy events get ``LEGACY_API_VERSION``, everything else ``NEW_API_VERSION``.

Builders are deterministic for given arguments; ids that are left as ``None`` are generated as
``<prefix>`` + random hex.
"""

from __future__ import annotations

import base64 as _b64
import copy
import hashlib
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe"

NEW_API_VERSION = "2025-09-30.clover"
LEGACY_API_VERSION = "2024-06-20"

DEFAULT_PRODUCT = "prod_test_pro"

__all__ = [
    "FIXTURES_DIR",
    "LEGACY_API_VERSION",
    "NEW_API_VERSION",
    "api_gateway_event",
    "balance_transaction",
    "charge",
    "checkout_session",
    "customer",
    "dispute",
    "early_fraud_warning",
    "entitlement_summary",
    "event",
    "eventbridge_event",
    "fixture",
    "invoice",
    "is_legacy_shape",
    "payment_intent",
    "subscription",
]


@cache
def _fixture_text(name: str) -> str:
    return (FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    """A fresh (mutable) copy of ``tests/fixtures/stripe/<name>.json``."""
    return json.loads(_fixture_text(name))


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _suffix(obj_id: str) -> str:
    """``sub_abc`` -> ``abc``; used to derive deterministic child ids."""
    return obj_id.split("_", 1)[1] if "_" in obj_id else obj_id


def _stable_hex(*parts: str, n: int = 16) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:n]


def _price(
    *, price_id: str, lookup_key: str | None, metadata: dict | None, interval: str, amount: int, created: int
) -> dict[str, Any]:
    price = fixture("price")
    price.update(
        id=price_id,
        lookup_key=lookup_key,
        metadata=dict(metadata or {}),
        product=DEFAULT_PRODUCT,
        created=created,
        unit_amount=amount,
        unit_amount_decimal=str(amount),
        transform_quantity=None,
    )
    price["recurring"]["interval"] = interval
    price["recurring"]["interval_count"] = 1
    return price


def _plan_like(price: dict[str, Any]) -> dict[str, Any]:
    """The legacy ``plan`` mirror of a recurring price, as Stripe still embeds it in items."""
    plan = fixture("subscription")["items"]["data"][0]["plan"]
    plan.update(
        id=price["id"],
        active=True,
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        billing_scheme="per_unit",
        created=price["created"],
        currency=price["currency"],
        interval=price["recurring"]["interval"],
        interval_count=price["recurring"]["interval_count"],
        livemode=False,
        metadata=dict(price["metadata"]),
        product=price["product"],
        transform_usage=None,
    )
    return plan


# --------------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------------


def subscription(
    *,
    id: str | None = None,
    customer: str = "cus_test",
    status: str = "active",
    lookup_key: str | None = "pro_monthly",
    price_id: str = "price_pro_monthly",
    price_metadata: dict | None = None,
    interval: str = "month",
    metadata: dict | None = None,
    cancel_at_period_end: bool = False,
    current_period_start: int = 1_700_000_000,
    current_period_end: int = 1_702_592_000,
    trial_end: int | None = None,
    legacy: bool = False,
    created: int | None = None,
    amount: int = 2000,
) -> dict[str, Any]:
    """A ``subscription`` object with one item.

    ``created`` defaults to ``current_period_start``.  Status-dependent fields are made consistent:
    ``canceled_at``/``ended_at`` are set for ``canceled``, ``cancel_at`` when ``cancel_at_period_end``,
    ``trial_start`` when ``trial_end`` is given.
    """
    sub_id = id or _new_id("sub_")
    created = current_period_start if created is None else created
    sub = fixture("subscription")

    sub.update(
        id=sub_id,
        customer=customer,
        status=status,
        metadata=dict(metadata or {}),
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=current_period_end if cancel_at_period_end else None,
        canceled_at=current_period_end if status == "canceled" else None,
        ended_at=current_period_end if status == "canceled" else None,
        created=created,
        start_date=created,
        billing_cycle_anchor=current_period_start,
        billing_cycle_anchor_config=None,
        trial_end=trial_end,
        trial_start=current_period_start if trial_end is not None else None,
        next_pending_invoice_item_invoice=None,
        pending_invoice_item_interval=None,
        pending_update=None,
        pause_collection=None,
        transfer_data=None,
        billing_thresholds=None,
        latest_invoice=None,
    )

    price = _price(
        price_id=price_id,
        lookup_key=lookup_key,
        metadata=price_metadata,
        interval=interval,
        amount=amount,
        created=created,
    )
    item = sub["items"]["data"][0]
    item.update(
        id="si_" + _suffix(sub_id),
        subscription=sub_id,
        created=created,
        price=price,
        plan=_plan_like(price),
        billing_thresholds=None,
        quantity=1,
    )
    sub["items"]["data"] = [item]
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"

    if legacy:
        item.pop("current_period_start", None)
        item.pop("current_period_end", None)
        sub["current_period_start"] = current_period_start
        sub["current_period_end"] = current_period_end
    else:
        item["current_period_start"] = current_period_start
        item["current_period_end"] = current_period_end
        sub.pop("current_period_start", None)
        sub.pop("current_period_end", None)
    return sub


def invoice(
    *,
    id: str | None = None,
    customer: str = "cus_test",
    subscription: str | None = "sub_test",
    billing_reason: str = "subscription_cycle",
    status: str = "paid",
    amount_due: int = 2000,
    currency: str = "usd",
    subscription_metadata: dict | None = None,
    legacy: bool = False,
    created: int = 1_700_000_000,
    period_start: int = 1_700_000_000,
    period_end: int = 1_702_592_000,
    price_id: str = "price_pro_monthly",
    lookup_key: str | None = "pro_monthly",
    paid_at: int | None = None,
    payment_method_types: list[str] | None = None,
) -> dict[str, Any]:
    """An ``invoice`` object with one line.  ``subscription=None`` builds a one-off invoice.

    ``status="paid"`` -> fully paid; ``"open"`` (what ``invoice.payment_failed`` carries) -> attempted,
    unpaid; ``"draft"`` -> not finalized.  A paid invoice is finalized at ``created`` and paid at
    ``paid_at`` (default: the same second).  ``payment_method_types`` is
    ``payment_settings.payment_method_types``: None leaves the choice to the customer's default.
    """
    inv_id = id or _new_id("in_")
    inv = fixture("invoice")
    paid = status == "paid"
    finalized = status != "draft"

    inv.update(
        id=inv_id,
        customer=customer,
        billing_reason=billing_reason,
        status=status,
        currency=currency,
        created=created,
        effective_at=created if finalized else None,
        amount_due=amount_due,
        amount_paid=amount_due if paid else 0,
        amount_remaining=0 if paid else amount_due,
        amount_overpaid=0,
        subtotal=amount_due,
        subtotal_excluding_tax=amount_due,
        total=amount_due,
        total_excluding_tax=amount_due,
        attempted=status in ("paid", "open"),
        attempt_count=1 if status in ("paid", "open") else 0,
        auto_advance=not paid and finalized,
        due_date=None,
        from_invoice=None,
        last_finalization_error=None,
        shipping_cost=None,
        shipping_details=None,
        customer_shipping=None,
        next_payment_attempt=None if paid or not finalized else created + 3 * 86_400,
        number=f"TEST-{_stable_hex(inv_id, n=4).upper()}-0001" if finalized else None,
        period_start=period_start,
        period_end=period_end,
        webhooks_delivered_at=created,
        hosted_invoice_url=None,
        invoice_pdf=None,
    )
    inv["status_transitions"].update(
        finalized_at=created if finalized else None,
        paid_at=(created if paid_at is None else paid_at) if paid else None,
    )
    inv["payment_settings"]["payment_method_types"] = (
        None if payment_method_types is None else list(payment_method_types)
    )

    line = inv["lines"]["data"][0]
    line_id = "il_" + _suffix(inv_id)
    si_id = "si_" + _suffix(subscription) if subscription else None
    line.update(
        id=line_id,
        invoice=inv_id,
        amount=amount_due,
        subtotal=amount_due,
        currency=currency,
        description=f"1 x Pro (at {amount_due / 100:.2f} {currency.upper()} / month)"
        if subscription
        else "One-off charge",
        period={"start": period_start, "end": period_end},
        discountable=True,
        quantity=1,
    )
    inv["lines"]["data"] = [line]
    inv["lines"]["url"] = f"/v1/invoices/{inv_id}/lines"

    meta = dict(subscription_metadata or {})
    if legacy:
        inv.pop("parent", None)
        inv["subscription"] = subscription
        inv["subscription_details"] = {"metadata": meta} if subscription else None
        # Pre-basil line items: price/plan/proration/subscription on the line, no parent/pricing.
        line.pop("parent", None)
        line.pop("pricing", None)
        line.pop("pretax_credit_amounts", None)
        line.pop("taxes", None)
        price = _price(
            price_id=price_id,
            lookup_key=lookup_key,
            metadata=None,
            interval="month",
            amount=amount_due,
            created=created,
        )
        line.update(
            price=price,
            plan=_plan_like(price),
            proration=False,
            proration_details={"credited_items": None},
            subscription=subscription,
            subscription_item=si_id,
            type="subscription" if subscription else "invoiceitem",
            tax_amounts=[],
        )
    else:
        inv.pop("subscription", None)
        inv.pop("subscription_details", None)
        if subscription:
            inv["parent"] = {
                "quote_details": None,
                "subscription_details": {"metadata": meta, "subscription": subscription},
                "type": "subscription_details",
            }
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription,
                    "subscription_item": si_id,
                },
                "type": "subscription_item_details",
            }
        else:
            inv["parent"] = None
            line["parent"] = {
                "invoice_item_details": {
                    "invoice_item": "ii_" + _suffix(inv_id),
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        line["subscription"] = subscription
        line["pricing"] = {
            "price_details": {"price": price_id, "product": DEFAULT_PRODUCT},
            "type": "price_details",
            "unit_amount_decimal": str(amount_due),
        }
    return inv


def checkout_session(
    *,
    id: str | None = None,
    customer: str | None = "cus_test",
    client_reference_id: str | None = None,
    status: str = "complete",
    mode: str = "subscription",
    subscription: str | None = "sub_test",
    metadata: dict | None = None,
    created: int = 1_700_000_000,
    amount_total: int = 2000,
    email: str | None = None,
) -> dict[str, Any]:
    """A ``checkout.session``.  For an expired session pass ``status="expired"``, and usually
    ``customer=None, subscription=None``.  ``email`` is what the buyer typed
    (``customer_details.email``); by default one of the session's own, so that sessions built
    in a loop are different buyers to the checkout velocity rule."""
    cs_id = id or _new_id("cs_test_")
    cs = fixture("checkout.session")
    complete = status == "complete"
    cs["customer_details"]["email"] = email or f"buyer-{_stable_hex(cs_id, n=12)}@example.com"
    cs.update(
        id=cs_id,
        customer=customer,
        client_reference_id=client_reference_id,
        status=status,
        mode=mode,
        subscription=subscription if mode == "subscription" else None,
        metadata=dict(metadata or {}),
        created=created,
        expires_at=created + 86_400,
        currency="usd",
        amount_subtotal=amount_total,
        amount_total=amount_total,
        payment_status="paid" if complete else "unpaid",
        payment_intent=None,
        customer_creation="always" if customer is None and not complete else None,
        currency_conversion=None,
        shipping_address_collection=None,
        shipping_cost=None,
        collected_information=None,
        after_expiration=None,
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        # Stripe clears the hosted URL once a session is complete or expired.
        url=f"https://checkout.stripe.com/c/pay/{cs_id}" if status == "open" else None,
    )
    if mode != "payment":
        cs["invoice_creation"] = None
    return cs


def customer(
    *,
    id: str = "cus_test",
    metadata: dict | None = None,
    deleted: bool = False,
    email: str | None = "demo@example.com",
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A ``customer`` object.

    ``deleted`` is accepted for readability only: a ``customer.deleted`` event carries the full
    customer object (no ``deleted`` key), so the shape is the same either way.
    """
    del deleted
    cus = fixture("customer")
    cus.update(
        id=id,
        metadata=dict(metadata or {}),
        email=email,
        created=created,
        discount=None,
        invoice_prefix=_stable_hex(id, n=8).upper(),
    )
    return cus


def entitlement_summary(*, customer: str = "cus_test", lookup_keys: tuple[str, ...] = ("sso",)) -> dict:
    """An ``entitlements.active_entitlement_summary`` (what
    ``entitlements.active_entitlement_summary.updated`` carries); ``feature`` is an id, as delivered."""
    summary = fixture("entitlements.active_entitlement_summary")
    template = fixture("entitlements.active_entitlement")
    data = []
    for key in lookup_keys:
        ent = copy.deepcopy(template)
        ent.update(
            id="ent_test_" + _stable_hex(customer, key, n=24),
            feature="feat_test_" + _stable_hex(key, n=24),
            lookup_key=key,
            livemode=False,
        )
        data.append(ent)
    summary.update(customer=customer, livemode=False)
    summary["entitlements"] = {
        "object": "list",
        "data": data,
        "has_more": False,
        "url": f"/v1/customers/{customer}/entitlements",
    }
    return summary


def charge(
    *,
    id: str | None = None,
    customer: str | None = "cus_test",
    amount: int = 2000,
    amount_refunded: int = 0,
    currency: str = "usd",
    payment_intent: str | None = None,
    metadata: dict | None = None,
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A succeeded ``charge``; ``amount_refunded`` > 0 is what ``charge.refunded`` carries (pass
    the amount refunded before as ``event(previous_attributes={"amount_refunded": ...})``)."""
    ch_id = id or _new_id("ch_")
    ch = fixture("charge")
    ch.update(
        id=ch_id,
        customer=customer,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount,
        currency=currency,
        payment_intent=payment_intent,
        metadata=dict(metadata or {}),
        created=created,
        captured=True,
        paid=True,
        status="succeeded",
        balance_transaction="txn_" + _suffix(ch_id),
        receipt_url=None,
    )
    ch["refunds"]["url"] = f"/v1/charges/{ch_id}/refunds"
    return ch


def payment_intent(
    *,
    id: str | None = None,
    customer: str | None = "cus_test",
    amount: int = 2000,
    currency: str = "usd",
    decline_code: str | None = "insufficient_funds",
    error_code: str | None = "card_declined",
    metadata: dict | None = None,
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A ``payment_intent`` whose last attempt failed (what ``payment_intent.payment_failed`` carries):
    ``last_payment_error.code`` is ``error_code``, ``.decline_code`` is ``decline_code`` (Stripe
    sets the decline code only when the issuer declined a card)."""
    pi_id = id or _new_id("pi_")
    pi = fixture("payment_intent")
    pi.update(
        id=pi_id,
        customer=customer,
        amount=amount,
        amount_received=0,
        currency=currency,
        status="requires_payment_method",
        metadata=dict(metadata or {}),
        created=created,
        client_secret=f"{pi_id}_secret_{_stable_hex(pi_id, n=12)}",
        latest_charge="ch_" + _suffix(pi_id),
        last_payment_error={
            "type": "card_error",
            "code": error_code,
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "doc_url": f"https://stripe.com/docs/error-codes/{error_code}" if error_code else None,
            "charge": "ch_" + _suffix(pi_id),
            "advice_code": None,
            "network_decline_code": None,
            "param": None,
            "payment_method_type": "card",
        },
    )
    return pi


def dispute(
    *,
    id: str | None = None,
    charge: str = "ch_test",
    amount: int = 2000,
    currency: str = "usd",
    reason: str = "fraudulent",
    status: str = "needs_response",
    payment_intent: str | None = None,
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A ``dispute`` (what ``charge.dispute.created`` carries); the evidence is due a week on."""
    dp = fixture("dispute")
    dp.update(
        id=id or _new_id("dp_"),
        charge=charge,
        amount=amount,
        currency=currency,
        reason=reason,
        status=status,
        payment_intent=payment_intent,
        created=created,
    )
    dp["evidence_details"]["due_by"] = created + 7 * 86_400
    return dp


def early_fraud_warning(
    *,
    id: str | None = None,
    charge: str = "ch_test",
    fraud_type: str = "made_with_stolen_card",
    payment_intent: str | None = None,
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A ``radar.early_fraud_warning`` (what ``radar.early_fraud_warning.created`` carries)."""
    warning = fixture("radar.early_fraud_warning")
    warning.update(
        id=id or _new_id("issfr_"),
        charge=charge,
        fraud_type=fraud_type,
        created=created,
        livemode=False,
    )
    if payment_intent is not None:
        warning["payment_intent"] = payment_intent
    return warning


def balance_transaction(
    *,
    amount: int,
    created: int,
    type: str = "charge",
    currency: str = "usd",
    id: str | None = None,
    charged: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """A balance transaction: gross ``amount`` in minor units of the settlement ``currency``
    (negative for a refund), no fee, with its source expanded (``expand[]=data.source``) for a
    charge, payment or refund. ``charged``: the source's own (amount, currency) when it was settled
    in another currency (then ``exchange_rate`` is amount / charged amount); else the same."""
    transaction = fixture("balance_transaction")
    source_amount, source_currency = charged or (abs(amount), currency)
    source: dict[str, Any] | str = _new_id("po_")
    if type in ("charge", "payment"):
        source = {**fixture("charge"), "id": _new_id("ch_" if type == "charge" else "py_")}
        source.update(amount=source_amount, amount_captured=source_amount, currency=source_currency)
    elif type in ("refund", "payment_refund"):
        source = {
            "id": _new_id("re_"),
            "object": "refund",
            "amount": source_amount,
            "currency": source_currency,
        }
    transaction.update(
        id=id or _new_id("txn_"),
        amount=amount,
        net=amount,
        created=created,
        available_on=created,
        type=type,
        reporting_category="refund" if amount < 0 else "charge",
        currency=currency,
        exchange_rate=abs(amount) / source_amount if charged and source_amount else None,
        source=source,
    )
    return transaction


# --------------------------------------------------------------------------------------------------
# Envelopes
# --------------------------------------------------------------------------------------------------


def is_legacy_shape(obj: dict[str, Any]) -> bool:
    """True if ``obj`` is a subscription or invoice in the pre-2025-03-31 shape."""
    kind = obj.get("object")
    if kind == "subscription":
        return "current_period_start" in obj or "current_period_end" in obj
    if kind == "invoice":
        return "subscription" in obj and "parent" not in obj
    return False


def event(
    type: str,
    obj: dict[str, Any],
    *,
    id: str | None = None,
    created: int = 1_700_000_000,
    api_version: str | None = None,
    previous_attributes: dict | None = None,
    livemode: bool = False,
    legacy: bool | None = None,
    pending_webhooks: int = 1,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe ``event`` envelope around (a deep copy of) ``obj``.

    api_version: explicit value wins; else ``legacy`` if given; else inferred via ``is_legacy_shape``.
    ``data.previous_attributes`` is present only when ``previous_attributes`` is given.
    """
    if api_version is None:
        is_legacy = is_legacy_shape(obj) if legacy is None else legacy
        api_version = LEGACY_API_VERSION if is_legacy else NEW_API_VERSION
    env = fixture("event")
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(previous_attributes)
    env.update(
        id=id or _new_id("evt_"),
        object="event",
        type=type,
        created=created,
        api_version=api_version,
        data=data,
        livemode=livemode,
        pending_webhooks=pending_webhooks,
        request={"id": request_id, "idempotency_key": None},
    )
    return env


def thin_event(
    type: str, related_id: str, related_type: str, *, id: str | None = None, created: int = 1_700_000_000
) -> dict[str, Any]:
    """The thin event notification (``"object": "v2.core.event"``) an event destination set to the
    thin payload sends: fixture ``v2.core.event.json`` with ``related_object`` pointing at the v1
    object (``/v1/<type with dots as slashes>s/<id>``) and ``created`` as an RFC 3339 time."""
    env = fixture("v2.core.event")
    when = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    env.update(
        id=id or _new_id("evt_"),
        type=type,
        created=when.replace("+00:00", "Z"),
        livemode=False,
        context=None,
        related_object={
            "id": related_id,
            "type": related_type,
            "url": f"/v1/{related_type.replace('.', '/')}s/{related_id}",
        },
    )
    return env


def thin_event_of(snapshot: dict[str, Any], *, id: str | None = None) -> dict[str, Any]:
    """The thin event notification Stripe sends for the v1 snapshot event ``snapshot``."""
    obj = snapshot["data"]["object"]
    related_id = obj.get("id") or obj.get("customer")  # an entitlement summary has no id of its own
    return thin_event(f"v1.{snapshot['type']}", related_id, obj["object"], id=id, created=snapshot["created"])


def fetched_thin_event(notification: dict[str, Any], snapshot_event: str | None) -> dict[str, Any]:
    """What GET /v2/core/events/{id} answers for ``notification``: the same fields, and
    ``snapshot_event``, the id of the v1 event it stands for (None where Stripe has none)."""
    return {**copy.deepcopy(notification), "snapshot_event": snapshot_event}


def api_gateway_event(
    body: bytes | str,
    *,
    headers: dict[str, str],
    path: str = "/webhooks/stripe",
    method: str = "POST",
    base64: bool = False,
    request_id: str | None = None,
    time_epoch_ms: int | None = None,
    source_ip: str = "3.18.12.63",
    stage: str = "$default",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) Lambda event carrying ``body``.

    Header names are lower-cased (as API Gateway delivers them) and merged over realistic defaults.
    With ``base64=True`` the body is base64-encoded and ``isBase64Encoded`` is true.
    ``request_id``/``time_epoch_ms`` default to random / now; pass them for a deterministic event.
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if time_epoch_ms is None:
        time_epoch_ms = int(time.time() * 1000)
    request_id = request_id or (_b64.b32encode(uuid.uuid4().bytes).decode()[:14] + "=")
    user_agent = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    all_headers = {
        "accept": "*/*; q=0.5, application/xml",
        "cache-control": "no-cache",
        "content-length": str(len(raw)),
        "content-type": "application/json; charset=utf-8",
        "host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "user-agent": user_agent,
        "x-amzn-trace-id": f"Root=1-{time_epoch_ms // 1000:x}-{_stable_hex(request_id, n=24)}",
        "x-forwarded-for": source_ip,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    all_headers.update({k.lower(): v for k, v in headers.items()})
    when = datetime.fromtimestamp(time_epoch_ms / 1000, tz=UTC)
    route_key = f"{method.upper()} {path}"
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": all_headers.get("user-agent", user_agent),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": stage,
            "time": when.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": time_epoch_ms,
        },
        "body": _b64.b64encode(raw).decode("ascii") if base64 else raw.decode("utf-8"),
        "isBase64Encoded": base64,
    }


def eventbridge_event(
    stripe_event: dict[str, Any],
    *,
    source: str = "aws.partner/stripe.com/ed_test_123",
    id: str | None = None,
    account: str = "123456789012",
    region: str = "us-east-1",
) -> dict[str, Any]:
    """The EventBridge event a Stripe "Amazon EventBridge" event destination delivers (snapshot or
    thin payload): ``detail-type`` is the Stripe event type, ``detail`` the Stripe event, ``time`` its
    ``created``.  ``id`` defaults to a UUID derived from the Stripe event id (deterministic)."""
    eb_id = id or str(uuid.uuid5(uuid.NAMESPACE_URL, "stripe-event:" + stripe_event["id"]))
    created = stripe_event["created"]
    # A thin event's created is already an RFC 3339 time.
    when = (
        created
        if isinstance(created, str)
        else datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return {
        "version": "0",
        "id": eb_id,
        "detail-type": stripe_event["type"],
        "source": source,
        "account": account,
        "time": when,
        "region": region,
        "resources": [],
        "detail": copy.deepcopy(stripe_event),
    }
