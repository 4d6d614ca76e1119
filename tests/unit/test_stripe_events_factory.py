"""Shapes produced by devtools.stripe_events, and the committed events/ samples."""

import base64
import json
from pathlib import Path

import pytest

from billwatch.billing.stripe_events import HANDLED_EVENT_TYPES
from devtools import make_sample_events
from devtools import stripe_events as se

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
ENVELOPE_KEYS = {
    "id",
    "object",
    "type",
    "created",
    "api_version",
    "data",
    "livemode",
    "pending_webhooks",
    "request",
}


def test_fixtures_live_in_the_repo():
    assert se.FIXTURES_DIR == REPO / "tests" / "fixtures" / "stripe"
    for name in ("LICENSE-stripe-openapi", "README.md", "subscription.json", "invoice.json", "event.json"):
        assert (se.FIXTURES_DIR / name).is_file()


def test_fixture_returns_independent_copies():
    a = se.fixture("subscription")
    a["items"]["data"].clear()
    assert se.fixture("subscription")["items"]["data"]


# --- subscription ---------------------------------------------------------------------------------


def test_subscription_new_shape_periods_only_on_items():
    sub = se.subscription(id="sub_1", current_period_start=10, current_period_end=20)
    assert "current_period_start" not in sub and "current_period_end" not in sub
    (item,) = sub["items"]["data"]
    assert (item["current_period_start"], item["current_period_end"]) == (10, 20)
    assert item["subscription"] == "sub_1"
    assert sub["items"]["url"] == "/v1/subscription_items?subscription=sub_1"


def test_subscription_legacy_shape_periods_at_top_level():
    sub = se.subscription(id="sub_1", current_period_start=10, current_period_end=20, legacy=True)
    assert (sub["current_period_start"], sub["current_period_end"]) == (10, 20)
    (item,) = sub["items"]["data"]
    assert "current_period_start" not in item and "current_period_end" not in item


def test_subscription_fields_and_price():
    sub = se.subscription(
        id="sub_x",
        customer="cus_x",
        status="trialing",
        lookup_key="team_yearly",
        price_id="price_team",
        price_metadata={"seats": "10"},
        interval="year",
        metadata={"account_id": "acct_1"},
        cancel_at_period_end=True,
        trial_end=123,
    )
    assert sub["object"] == "subscription"
    assert (sub["id"], sub["customer"], sub["status"]) == ("sub_x", "cus_x", "trialing")
    assert sub["metadata"] == {"account_id": "acct_1"}
    assert sub["cancel_at_period_end"] is True and sub["cancel_at"] == 1_702_592_000
    assert sub["trial_end"] == 123
    price = sub["items"]["data"][0]["price"]
    assert price["id"] == "price_team" and price["lookup_key"] == "team_yearly"
    assert price["metadata"] == {"seats": "10"} and price["recurring"]["interval"] == "year"
    # The rest of the real shape is kept.
    assert {"billing_cycle_anchor", "collection_method", "default_payment_method", "livemode"} <= sub.keys()


def test_subscription_defaults_and_generated_ids():
    a, b = se.subscription(), se.subscription()
    assert a["id"].startswith("sub_") and a["id"] != b["id"]
    assert a["customer"] == "cus_test" and a["status"] == "active" and a["metadata"] == {}
    assert a["trial_end"] is None and a["cancel_at_period_end"] is False
    assert se.subscription(id="sub_same") == se.subscription(id="sub_same")


def test_builder_metadata_is_not_aliased():
    meta = {"account_id": "acct_1"}
    sub = se.subscription(id="sub_1", metadata=meta)
    sub["metadata"]["x"] = "y"
    assert meta == {"account_id": "acct_1"}


# --- invoice --------------------------------------------------------------------------------------


def test_invoice_new_shape_links_subscription_via_parent():
    inv = se.invoice(id="in_1", subscription="sub_1", subscription_metadata={"account_id": "acct_1"})
    assert "subscription" not in inv and "subscription_details" not in inv
    details = inv["parent"]["subscription_details"]
    assert details == {"metadata": {"account_id": "acct_1"}, "subscription": "sub_1"}
    assert inv["parent"]["type"] == "subscription_details"
    line = inv["lines"]["data"][0]
    assert line["parent"]["subscription_item_details"]["subscription"] == "sub_1"
    assert line["pricing"]["price_details"]["price"] == "price_pro_monthly"


def test_invoice_legacy_shape_top_level_subscription():
    inv = se.invoice(id="in_1", subscription="sub_1", subscription_metadata={"a": "b"}, legacy=True)
    assert "parent" not in inv
    assert inv["subscription"] == "sub_1"
    assert inv["subscription_details"] == {"metadata": {"a": "b"}}
    line = inv["lines"]["data"][0]
    assert "parent" not in line and line["subscription"] == "sub_1"
    assert line["price"]["id"] == "price_pro_monthly"


def test_invoice_amounts_and_status():
    paid = se.invoice(amount_due=4200, currency="eur", billing_reason="subscription_create")
    assert (paid["amount_due"], paid["amount_paid"], paid["amount_remaining"]) == (4200, 4200, 0)
    assert paid["currency"] == "eur" and paid["billing_reason"] == "subscription_create"
    assert paid["status_transitions"]["paid_at"] is not None
    failed = se.invoice(status="open")
    assert (failed["amount_paid"], failed["amount_remaining"], failed["attempted"]) == (0, 2000, True)
    assert failed["status_transitions"]["paid_at"] is None


def test_invoice_without_subscription():
    assert se.invoice(subscription=None)["parent"] is None
    legacy = se.invoice(subscription=None, legacy=True)
    assert legacy["subscription"] is None and legacy["subscription_details"] is None


# --- other objects --------------------------------------------------------------------------------


def test_checkout_session():
    cs = se.checkout_session(id="cs_1", client_reference_id="acct_1", metadata={"k": "v"})
    assert cs["object"] == "checkout.session"
    assert (cs["customer"], cs["client_reference_id"], cs["subscription"]) == (
        "cus_test",
        "acct_1",
        "sub_test",
    )
    assert (cs["status"], cs["mode"], cs["payment_status"], cs["metadata"]) == (
        "complete",
        "subscription",
        "paid",
        {"k": "v"},
    )
    expired = se.checkout_session(status="expired", customer=None, subscription=None)
    assert expired["customer"] is None and expired["status"] == "expired" and expired["url"] is None
    assert expired["id"].startswith("cs_test_")


def test_customer_deleted_has_the_full_object():
    cus = se.customer(id="cus_1", metadata={"account_id": "acct_1"}, deleted=True)
    assert cus["object"] == "customer" and cus["id"] == "cus_1" and "deleted" not in cus
    assert cus["metadata"] == {"account_id": "acct_1"}
    assert cus == se.customer(id="cus_1", metadata={"account_id": "acct_1"})


def test_entitlement_summary():
    summary = se.entitlement_summary(customer="cus_1", lookup_keys=("sso", "audit_log"))
    assert summary["object"] == "entitlements.active_entitlement_summary"
    assert summary["customer"] == "cus_1"
    ents = summary["entitlements"]
    assert ents["object"] == "list" and ents["has_more"] is False and ents["url"]
    assert [e["lookup_key"] for e in ents["data"]] == ["sso", "audit_log"]
    for e in ents["data"]:
        assert e["object"] == "entitlements.active_entitlement"
        assert e["feature"].startswith("feat_") and e["id"].startswith("ent_")
    assert se.entitlement_summary(lookup_keys=())["entitlements"]["data"] == []


def test_invoice_payment_moments_and_method_types():
    inv = se.invoice(created=100, paid_at=190, payment_method_types=["sepa_debit"])
    assert (inv["status_transitions"]["finalized_at"], inv["status_transitions"]["paid_at"]) == (100, 190)
    assert inv["payment_settings"]["payment_method_types"] == ["sepa_debit"]
    assert se.invoice()["payment_settings"]["payment_method_types"] is None
    assert se.invoice(status="open", paid_at=190)["status_transitions"]["paid_at"] is None


def test_checkout_sessions_are_each_their_own_buyer_unless_told():
    one, other = se.checkout_session(id="cs_1"), se.checkout_session(id="cs_2")
    assert one["customer_details"]["email"] != other["customer_details"]["email"]
    assert se.checkout_session(id="cs_1")["customer_details"]["email"] == one["customer_details"]["email"]
    assert se.checkout_session(email="a@example.com")["customer_details"]["email"] == "a@example.com"


def test_refunded_charge():
    ch = se.charge(id="ch_1", customer="cus_1", amount=2000, amount_refunded=500, currency="eur")
    assert (ch["object"], ch["amount_refunded"], ch["refunded"]) == ("charge", 500, False)
    assert ch["currency"] == "eur"
    assert se.charge(amount=2000, amount_refunded=2000)["refunded"] is True
    assert ch["refunds"]["url"] == "/v1/charges/ch_1/refunds"


def test_failed_payment_intent_carries_its_error():
    pi = se.payment_intent(id="pi_1", decline_code="lost_card", error_code="card_declined")
    assert pi["object"] == "payment_intent" and pi["status"] == "requires_payment_method"
    error = pi["last_payment_error"]
    assert (error["code"], error["decline_code"]) == ("card_declined", "lost_card")


def test_dispute_and_early_fraud_warning():
    dp = se.dispute(id="dp_1", charge="ch_1", reason="duplicate", created=100)
    assert (dp["object"], dp["charge"], dp["reason"], dp["evidence_details"]["due_by"]) == (
        "dispute",
        "ch_1",
        "duplicate",
        100 + 7 * 86_400,
    )
    warning = se.early_fraud_warning(id="issfr_1", charge="ch_1", fraud_type="misc")
    assert (warning["object"], warning["charge"], warning["fraud_type"]) == (
        "radar.early_fraud_warning",
        "ch_1",
        "misc",
    )


# --- envelopes ------------------------------------------------------------------------------------


def test_event_envelope_keys():
    sub = se.subscription(id="sub_1")
    evt = se.event("customer.subscription.updated", sub, id="evt_1", created=5)
    assert set(evt) == ENVELOPE_KEYS
    assert evt["object"] == "event" and evt["type"] == "customer.subscription.updated"
    assert (evt["id"], evt["created"], evt["livemode"]) == ("evt_1", 5, False)
    assert evt["data"] == {"object": sub} and evt["data"]["object"] is not sub
    assert evt["request"] == {"id": None, "idempotency_key": None}
    assert se.event("x", sub)["id"].startswith("evt_")


def test_event_previous_attributes_only_when_given():
    evt = se.event(
        "customer.subscription.updated", se.subscription(), previous_attributes={"status": "trialing"}
    )
    assert evt["data"]["previous_attributes"] == {"status": "trialing"}


@pytest.mark.parametrize(
    ("obj", "kwargs", "expected"),
    [
        (se.subscription(), {}, se.NEW_API_VERSION),
        (se.subscription(legacy=True), {}, se.LEGACY_API_VERSION),
        (se.invoice(), {}, se.NEW_API_VERSION),
        (se.invoice(legacy=True), {}, se.LEGACY_API_VERSION),
        (se.customer(), {}, se.NEW_API_VERSION),
        (se.customer(), {"legacy": True}, se.LEGACY_API_VERSION),
        (se.subscription(legacy=True), {"legacy": False}, se.NEW_API_VERSION),
        (se.subscription(), {"api_version": "2025-03-31.basil"}, "2025-03-31.basil"),
    ],
)
def test_event_api_version(obj, kwargs, expected):
    assert se.NEW_API_VERSION == "2025-09-30.clover"
    assert se.event("t", obj, **kwargs)["api_version"] == expected


@pytest.mark.parametrize("body", [b'{"id": "evt_1", "x": "\xc3\xa9"}', '{"id": "evt_1", "x": "é"}'])
def test_api_gateway_event_base64_round_trip(body):
    raw = body.encode() if isinstance(body, str) else body
    evt = se.api_gateway_event(body, headers={"Stripe-Signature": "t=1,v1=ab"}, base64=True)
    assert evt["isBase64Encoded"] is True
    assert base64.b64decode(evt["body"]) == raw
    plain = se.api_gateway_event(body, headers={"Stripe-Signature": "t=1,v1=ab"})
    assert plain["isBase64Encoded"] is False and plain["body"].encode() == raw


def test_api_gateway_event_shape():
    evt = se.api_gateway_event("{}", headers={"Stripe-Signature": "sig", "X-Custom": "1"}, time_epoch_ms=1000)
    assert evt["version"] == "2.0"
    assert evt["routeKey"] == "POST /webhooks/stripe" and evt["rawPath"] == "/webhooks/stripe"
    assert evt["headers"]["stripe-signature"] == "sig" and evt["headers"]["x-custom"] == "1"
    assert all(k == k.lower() for k in evt["headers"])
    ctx = evt["requestContext"]
    assert ctx["http"]["method"] == "POST" and ctx["http"]["path"] == "/webhooks/stripe"
    assert ctx["http"]["sourceIp"] and ctx["requestId"] and ctx["timeEpoch"] == 1000
    other = se.api_gateway_event("{}", headers={}, path="/x", method="get")
    assert other["routeKey"] == "GET /x" and other["requestContext"]["http"]["method"] == "GET"


def test_eventbridge_event():
    stripe_evt = se.event("invoice.paid", se.invoice(), id="evt_eb", created=1_759_276_800)
    eb = se.eventbridge_event(stripe_evt)
    assert set(eb) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert eb["detail-type"] == stripe_evt["type"] == "invoice.paid"
    assert eb["detail"] == stripe_evt and eb["version"] == "0" and eb["resources"] == []
    assert eb["source"] == "aws.partner/stripe.com/ed_test_123"
    assert eb["time"] == "2025-10-01T00:00:00Z"
    assert se.eventbridge_event(stripe_evt, source="aws.partner/stripe.com/ed_x")["source"].endswith("ed_x")


# --- committed samples ----------------------------------------------------------------------------

HANDLED_TYPES = sorted(HANDLED_EVENT_TYPES)


def _json_files(root: Path) -> dict[str, object]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def _strip_signature(docs: dict[str, object]) -> dict[str, object]:
    for rel, doc in docs.items():
        if rel.startswith("apigw/"):
            doc["headers"].pop("stripe-signature", None)
    return docs


def test_committed_events_are_up_to_date(tmp_path):
    make_sample_events.write(tmp_path)
    generated, committed = _json_files(tmp_path), _json_files(EVENTS)
    assert sorted(committed) == sorted(generated), "run: python -m devtools.make_sample_events"
    assert _strip_signature(committed) == _strip_signature(generated), (
        "run: python -m devtools.make_sample_events"
    )


def test_samples_cover_every_handled_type():
    for type_ in HANDLED_TYPES:
        evt = json.loads((EVENTS / f"{type_}.json").read_text())
        assert evt["type"] == type_ and set(evt) == ENVELOPE_KEYS
    assert (
        json.loads((EVENTS / "legacy/invoice.paid.json").read_text())["api_version"] == se.LEGACY_API_VERSION
    )
    assert (EVENTS / "README.md").is_file()


def test_sample_checkout_and_account_links():
    cs = json.loads((EVENTS / "checkout.session.completed.json").read_text())["data"]["object"]
    assert (cs["client_reference_id"], cs["customer"]) == ("acct_demo", "cus_demo")
    for name in ("customer.subscription.updated", "customer.deleted", "legacy/customer.subscription.updated"):
        obj = json.loads((EVENTS / f"{name}.json").read_text())["data"]["object"]
        assert obj["metadata"]["account_id"] == "acct_demo"


def test_sample_apigw_wrapper_carries_the_signed_event():
    import stripe

    wrapper = json.loads((EVENTS / "apigw/customer.subscription.updated.json").read_text())
    assert wrapper["version"] == "2.0" and wrapper["isBase64Encoded"] is False
    assert json.loads(wrapper["body"]) == json.loads(
        (EVENTS / "customer.subscription.updated.json").read_text()
    )
    header = wrapper["headers"]["stripe-signature"]
    # Signed with the documented local secret, at a fixed (stale) time: verifies without a tolerance.
    assert stripe.WebhookSignature.verify_header(
        wrapper["body"], header, "whsec_local_dev_secret", tolerance=None
    )


def test_sample_eventbridge_wrapper():
    wrapper = json.loads((EVENTS / "eventbridge/customer.subscription.updated.json").read_text())
    assert wrapper["detail-type"] == wrapper["detail"]["type"] == "customer.subscription.updated"
    assert wrapper["source"].startswith("aws.partner/stripe.com/")
