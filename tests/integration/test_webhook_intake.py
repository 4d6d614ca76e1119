"""The webhook intake handler end to end, on moto's DynamoDB: HTTP in, billing state and EMF out."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from pynamodb.exceptions import UpdateError

from billwatch.billing.store import BillingStore
from billwatch.billing.webhook_marker import MARKER_KEY
from billwatch.core.models import BillingAccount
from devtools import stripe_events as se
from tests.support import WEBHOOK_SECRET, WebhookClient, load_handler

NOW = int(time.time())


def account(pk: str) -> BillingAccount | None:
    try:
        return BillingAccount.get(pk, consistent_read=True)
    except BillingAccount.DoesNotExist:
        return None


def table_items(table: str) -> list[dict]:
    """The items of a table, less the webhook arrival marker (the intake's own, not an account's)."""
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return [item for item in items if item.get("pk") != {"S": MARKER_KEY}]


def sub_event(event_type: str, created: int = NOW, event_id: str | None = None, legacy: bool = False, **sub):
    sub.setdefault("id", "sub_1")
    sub.setdefault("customer", "cus_1")
    sub.setdefault("metadata", {"account_id": "acct_1"})
    return se.event(event_type, se.subscription(legacy=legacy, **sub), id=event_id, created=created)


# --- signatures and bad input ---------------------------------------------------------------


def test_valid_signature_applies_the_event(webhooks: WebhookClient, metrics) -> None:
    response = webhooks.post(sub_event("customer.subscription.created", event_id="evt_ok"))
    assert response.status == 200
    assert response.body == {"received": True, "event_id": "evt_ok", "outcome": "applied"}
    assert account("acct_1").tier == "PRO"
    assert metrics.total("WebhookReceived", EventType="customer.subscription.created") == 1


def test_any_active_secret_is_accepted_during_a_roll(aws, monkeypatch, metrics) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new")
    webhooks = WebhookClient(load_handler("webhook_intake"))
    # Stripe signs with every active secret while a roll is in progress.
    assert (
        webhooks.post(sub_event("customer.subscription.created", event_id="evt_a"), ["whsec_new"]).status
        == 200
    )
    assert (
        webhooks.post(sub_event("customer.subscription.updated", event_id="evt_b"), ["whsec_old"]).status
        == 200
    )
    both = sub_event("customer.subscription.updated", created=NOW + 1, event_id="evt_c")
    assert webhooks.post(both, ["whsec_other", "whsec_old"]).status == 200


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing_signature_header"),
        ("garbled", "malformed_signature_header"),
        ("no_v1", "malformed_signature_header"),
        ("forged", "no_matching_signature"),
        ("stale", "timestamp_outside_tolerance"),
        ("tampered", "no_matching_signature"),
    ],
)
def test_bad_signatures_get_400_and_change_nothing(webhooks, metrics, aws, case: str, reason: str) -> None:
    event = sub_event("customer.subscription.created", event_id="evt_sig")
    body = json.dumps(event).encode()
    from devtools.signing import stripe_signature_header

    headers = {
        "missing": {},
        "garbled": {"stripe-signature": "this is not a stripe signature"},
        "no_v1": {"stripe-signature": f"t={NOW},v0=abc"},
        "forged": {"stripe-signature": stripe_signature_header(body, "whsec_attacker")},
        "stale": {"stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET, timestamp=NOW - 301)},
        "tampered": {"stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET)},
    }[case]
    if case == "tampered":
        body = body.replace(b'"active"', b'"canceled"')
    response = webhooks.post_raw(body, headers)
    assert response.status == 400
    assert response.body["error"] == "invalid_signature"
    assert response.body["reason"] == reason
    assert table_items(aws["BillingStateTable"]) == []
    assert table_items(aws["IdempotencyTable"]) == []
    assert metrics.total("WebhookSignatureInvalid") == 1
    failures = [log for log in metrics.logs() if log["message"] == "Webhook signature verification failed"]
    assert failures and failures[0]["level"] == "ERROR" and failures[0]["reason"] == reason
    printed = "\n".join(metrics.lines)
    assert WEBHOOK_SECRET not in printed and "whsec_attacker" not in printed and '"sub_1"' not in printed


def test_base64_encoded_bodies_are_verified_on_the_decoded_raw_bytes(webhooks) -> None:
    response = webhooks.post(sub_event("customer.subscription.created", event_id="evt_b64"), base64=True)
    assert response.status == 200
    assert account("acct_1").subscription_status == "active"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json at all", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "JSON object"),
        (b'{"type": "invoice.paid", "created": 1, "data": {"object": {}}}', "id must be"),
        (
            b'{"id": "evt_1", "type": "invoice.paid", "created": "yesterday", "data": {"object": {}}}',
            "created",
        ),
        (b'{"id": "evt_1", "type": "invoice.paid", "created": 1700000000, "data": {}}', "data.object"),
        (b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "\\ud800"}}}', "lone surrogate"),
        (
            b'{"id": "evt_1", "type": "customer.subscription.updated", "created": 1700000000,'
            b' "data": {"object": {}}}',
            "status",
        ),
    ],
)
def test_signed_bodies_that_are_not_stripe_events_get_400(webhooks, aws, metrics, body, message) -> None:
    from devtools.signing import stripe_signature_header

    # API Gateway base64-encodes bodies it cannot pass as text.
    headers = {"stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET)}
    response = webhooks.post_raw(body, headers, base64=True)
    assert response.status == 400
    assert response.body["error"] == "malformed_event"
    assert message in response.body["message"]
    assert table_items(aws["BillingStateTable"]) == []
    assert table_items(aws["IdempotencyTable"]) == []


def test_an_invalid_base64_body_gets_400(webhooks) -> None:
    event = se.api_gateway_event(b"{}", headers={"stripe-signature": "t=1,v1=00"})
    event.update(body="%%%not-base64%%%", isBase64Encoded=True)
    from tests.support import LambdaContext

    result = webhooks.handler.lambda_handler(event, LambdaContext())
    assert result["statusCode"] == 400


# --- idempotency ------------------------------------------------------------------------------


def test_a_duplicate_gets_200_and_is_not_reapplied(webhooks, metrics) -> None:
    created = sub_event("customer.subscription.created", event_id="evt_dup")
    assert webhooks.post(created).body["outcome"] == "applied"
    revision = account("acct_1").revision
    second = webhooks.post(created)
    assert second.status == 200 and second.body["outcome"] == "duplicate"
    assert account("acct_1").revision == revision
    assert metrics.total("WebhookDuplicate", EventType="customer.subscription.created") == 1
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 1
    assert metrics.total("SubscriptionsNew") == 1


def test_concurrent_duplicates_apply_once(webhooks, monkeypatch) -> None:
    calls = []
    original = BillingStore.apply

    def slow_apply(self, ref, change):
        calls.append(change.version)
        time.sleep(0.3)
        return original(self, ref, change)

    monkeypatch.setattr(BillingStore, "apply", slow_apply)
    event = sub_event("customer.subscription.created", event_id="evt_race")
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(webhooks.post(event))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.status for r in results) == [200, 409, 409, 409]
    assert all(r.body.get("outcome") == "applied" for r in results if r.status == 200)
    assert account("acct_1").revision == 1
    # Stripe's later retry of a delivery that got 409 is answered from the idempotency record.
    assert webhooks.post(event).body["outcome"] == "duplicate"


def test_idempotency_records_outlive_stripes_retry_window(webhooks, aws) -> None:
    webhooks.post(sub_event("customer.subscription.created", event_id="evt_ttl"))
    (record,) = table_items(aws["IdempotencyTable"])
    assert int(record["expiration"]["N"]) - time.time() > 3 * 24 * 3600


# --- transient failures -----------------------------------------------------------------------


def test_a_throttled_write_gets_503_and_the_retry_applies_once(webhooks, aws, monkeypatch, metrics) -> None:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    original = BaseClient._make_api_call
    throttled = []

    def throttle_first_state_write(client, operation, params):
        # What botocore raises once its own retries give up on a throttled table.
        update = operation == "UpdateItem" and params["TableName"] == aws["BillingStateTable"]
        if update and params["Key"]["pk"]["S"] != MARKER_KEY and not throttled:
            throttled.append(operation)
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
            raise ClientError(error, operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle_first_state_write)
    event = sub_event("customer.subscription.created", event_id="evt_retry")
    first = webhooks.post(event)
    assert first.status == 503
    assert account("acct_1") is None
    failed = [log for log in metrics.logs() if log["message"] == "Failed to process subscription update"]
    assert failed and failed[0]["level"] == "ERROR"
    assert (
        metrics.total("WebhookFailed", EventType="customer.subscription.created", Reason="StoreUnavailable")
        == 1
    )
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 0

    retry = webhooks.post(event)
    assert retry.status == 200 and retry.body["outcome"] == "applied"
    assert account("acct_1").revision == 1
    assert webhooks.post(event).body["outcome"] == "duplicate"
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 1


def test_unavailable_secrets_get_503_not_400(aws, monkeypatch, metrics) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WEBHOOK_SECRET_ID", "billwatch/missing-secret")
    webhooks = WebhookClient(load_handler("webhook_intake"))
    assert webhooks.post(sub_event("customer.subscription.created")).status == 503
    # Counted as a failed delivery, so the failure-rate alarms see an outage of the secret.
    assert metrics.total("WebhookFailed", EventType="unknown", Reason="SecretsUnavailable") == 1
    assert metrics.total("WebhookReceived") == 1


# --- secrets from AWS ---------------------------------------------------------------------------


def test_secrets_come_from_secrets_manager(aws, monkeypatch) -> None:
    secret = boto3.client("secretsmanager").create_secret(
        Name="billwatch/webhook", SecretString="whsec_from_sm"
    )
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WEBHOOK_SECRET_ID", secret["ARN"])
    webhooks = WebhookClient(load_handler("webhook_intake"))
    assert webhooks.post(sub_event("customer.subscription.created"), "whsec_from_sm").status == 200
    assert webhooks.post(sub_event("customer.subscription.updated"), WEBHOOK_SECRET).status == 400


def test_secrets_come_from_an_ssm_securestring(aws, monkeypatch) -> None:
    boto3.client("ssm").put_parameter(
        Name="/billwatch/webhook", Value="whsec_one,whsec_two", Type="SecureString"
    )
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", "/billwatch/webhook")
    webhooks = WebhookClient(load_handler("webhook_intake"))
    assert webhooks.post(sub_event("customer.subscription.created"), "whsec_two").status == 200


# --- event types: effect on state and metrics ---------------------------------------------------


def test_subscription_lifecycle_state_and_metrics(webhooks, metrics) -> None:
    now = int(time.time())  # UpgradeLatency is measured against the real clock
    webhooks.post(sub_event("customer.subscription.created", created=now - 50, status="incomplete"))
    state = account("acct_1")
    assert (state.tier, state.plan_tier, state.subscription_status) == ("FREE", "PRO", "incomplete")
    assert metrics.total("SubscriptionCreated", Tier="PRO") == 1

    webhooks.post(sub_event("customer.subscription.updated", created=now - 40, cancel_at_period_end=True))
    state = account("acct_1")
    assert (state.tier, state.subscription_status, state.cancel_at_period_end) == ("PRO", "active", True)
    assert state.current_period_end == 1_702_592_000 and state.stripe_customer_id == "cus_1"
    upgrades = [log for log in metrics.logs() if log["message"] == "User upgraded to PRO"]
    assert len(upgrades) == 1 and upgrades[0]["account_id"] == "acct_1" and upgrades[0]["level"] == "INFO"
    (latency,) = [m for m in metrics.read() if m.name == "UpgradeLatency"]
    assert 30_000 <= latency.value < 120_000 and latency.unit == "Milliseconds"

    webhooks.post(
        sub_event("customer.subscription.trial_will_end", created=now - 30, trial_end=now + 3 * 86400)
    )
    assert account("acct_1").trial_end == now + 3 * 86400
    webhooks.post(sub_event("customer.subscription.paused", created=now - 20, status="paused"))
    assert (account("acct_1").tier, account("acct_1").subscription_status) == ("FREE", "paused")
    webhooks.post(sub_event("customer.subscription.resumed", created=now - 10, status="active"))
    assert account("acct_1").tier == "PRO"
    webhooks.post(sub_event("customer.subscription.deleted", created=now, status="canceled"))
    assert (account("acct_1").tier, account("acct_1").subscription_status) == ("FREE", "canceled")
    assert metrics.total("SubscriptionCanceled", Tier="PRO") == 1
    assert metrics.total("SubscriptionCanceled") == 1
    # incomplete -> active starts paying, paused stops, resumed pays again, deleted stops for good.
    assert metrics.total("SubscriptionsNew") == 1
    assert metrics.total("SubscriptionsReactivated") == 1
    assert metrics.total("SubscriptionsChurned") == 2
    for event_type in ("created", "updated", "trial_will_end", "paused", "resumed", "deleted"):
        assert metrics.total("WebhookReceived", EventType=f"customer.subscription.{event_type}") == 1
    assert metrics.total("WebhookReceived") == 6
    assert all(m.namespace == "Billwatch" for m in metrics.read())


def test_a_higher_tier_for_a_counted_subscription_is_an_upgrade_and_a_signup_is_not(
    webhooks, metrics
) -> None:
    webhooks.post(sub_event("customer.subscription.created", created=NOW - 20, lookup_key=None, amount=0))
    webhooks.post(sub_event("customer.subscription.updated", created=NOW - 10))
    webhooks.post(
        sub_event(
            "customer.subscription.created",
            created=NOW,
            id="sub_2",
            customer="cus_2",
            metadata={"account_id": "acct_2"},
        )
    )

    # The free price counts (at 0 MRR): moving it to PRO is an upgrade; acct_2 started on PRO.
    assert metrics.total("SubscriptionsNew") == 2
    assert metrics.total("SubscriptionsUpgraded") == 1
    assert len([m for m in metrics.read() if m.name == "UpgradeLatency"]) == 2


def test_an_upgrade_that_reaches_us_late_is_not_a_latency(webhooks, metrics) -> None:
    """A replayed or backfilled upgrade (a year-old sample, say) says nothing about how fast we are."""
    webhooks.post(
        sub_event("customer.subscription.created", created=NOW - 2 * 3600, lookup_key=None, amount=0)
    )
    webhooks.post(sub_event("customer.subscription.updated", created=NOW - 3601))
    assert metrics.total("SubscriptionsUpgraded") == 1
    assert [m for m in metrics.read() if m.name == "UpgradeLatency"] == []


def test_metadata_tier_maps_a_price_without_a_lookup_key(webhooks) -> None:
    webhooks.post(
        sub_event(
            "customer.subscription.created",
            lookup_key=None,
            price_id="price_x",
            price_metadata={"tier": "PRO"},
        )
    )
    assert account("acct_1").tier == "PRO"


def test_an_unknown_price_is_the_free_tier(webhooks) -> None:
    webhooks.post(sub_event("customer.subscription.created", lookup_key="enterprise_custom"))
    assert account("acct_1").tier == "FREE"


@pytest.mark.parametrize("legacy", [False, True], ids=["api-2025-09-30", "api-2024-06-20"])
def test_both_api_version_shapes(webhooks, metrics, legacy: bool) -> None:
    event = sub_event(
        "customer.subscription.created",
        legacy=legacy,
        current_period_start=NOW - 111,
        current_period_end=NOW + 222,
    )
    assert event["api_version"] == (se.LEGACY_API_VERSION if legacy else se.NEW_API_VERSION)
    webhooks.post(event)
    state = account("acct_1")
    assert (state.current_period_start, state.current_period_end) == (NOW - 111, NOW + 222)

    invoice = se.invoice(
        id="in_1",
        customer="cus_1",
        subscription="sub_1",
        legacy=legacy,
        subscription_metadata={"account_id": "acct_1"},
    )
    assert webhooks.post(se.event("invoice.paid", invoice, created=NOW + 1)).status == 200
    state = account("acct_1")
    assert (state.last_invoice_id, state.last_payment_status, state.last_billing_reason) == (
        "in_1",
        "succeeded",
        "subscription_cycle",
    )
    assert metrics.total("PaymentSucceeded") == 1
    assert metrics.total("SubscriptionRenewed", Tier="PRO") == 1


def test_invoice_payment_failed_and_first_invoice_is_not_a_renewal(webhooks, metrics) -> None:
    webhooks.post(sub_event("customer.subscription.created"))
    first = se.invoice(id="in_1", customer="cus_1", billing_reason="subscription_create")
    webhooks.post(se.event("invoice.paid", first, created=NOW + 1))
    assert metrics.total("SubscriptionRenewed", Tier="PRO") == 0
    failed = se.invoice(id="in_2", customer="cus_1", status="open")
    webhooks.post(se.event("invoice.payment_failed", failed, created=NOW + 2))
    state = account("acct_1")
    assert (state.last_invoice_id, state.last_payment_status) == ("in_2", "failed")
    assert metrics.total("PaymentFailed") == 1 and metrics.total("PaymentSucceeded") == 1
    # What was paid, in major units per currency (ScholarLink's purchases in money); a failure paid nothing.
    assert metrics.total("PaymentAmount", Currency="USD") == 20.0
    yen = se.invoice(id="in_3", customer="cus_1", amount_due=5000, currency="jpy")
    webhooks.post(se.event("invoice.paid", yen, created=NOW + 3))
    assert metrics.total("PaymentAmount", Currency="JPY") == 5000.0  # JPY has no minor unit


def test_checkout_funnel(webhooks, metrics) -> None:
    session = se.checkout_session(id="cs_1", customer="cus_9", client_reference_id="acct_9")
    assert webhooks.post(se.event("checkout.session.completed", session)).status == 200
    state = account("acct_9")
    assert (state.last_checkout_session_id, state.last_checkout_status, state.stripe_customer_id) == (
        "cs_1",
        "completed",
        "cus_9",
    )
    assert account("cus_9").merged_into == "acct_9"
    expired = se.checkout_session(id="cs_2", customer=None, client_reference_id=None, status="expired")
    response = webhooks.post(se.event("checkout.session.expired", expired))
    assert response.status == 200 and response.body["outcome"] == "unattributed"
    assert metrics.total("CheckoutCompleted") == 1 and metrics.total("CheckoutExpired") == 1


def test_entitlement_summary_stores_lookup_keys_through_the_customer_link(webhooks) -> None:
    webhooks.post(sub_event("customer.subscription.created"))
    summary = se.entitlement_summary(customer="cus_1", lookup_keys=("sso", "audit_log"))
    webhooks.post(se.event("entitlements.active_entitlement_summary.updated", summary, created=NOW + 1))
    assert account("acct_1").entitlement_lookup_keys == ["audit_log", "sso"]
    assert account("cus_1").entitlement_lookup_keys is None


def test_customer_deleted(webhooks) -> None:
    webhooks.post(sub_event("customer.subscription.created"))
    customer = se.customer(id="cus_1", metadata={"account_id": "acct_1"})
    webhooks.post(se.event("customer.deleted", customer, created=NOW + 1))
    assert account("acct_1").customer_deleted is True


@pytest.mark.parametrize("event_type", ["charge.captured", "product.created", "made.up.type"])
def test_unhandled_types_get_200_are_counted_and_ignored(webhooks, aws, metrics, event_type: str) -> None:
    response = webhooks.post(se.event(event_type, {"id": "obj_1", "object": "thing"}))
    assert response.status == 200 and response.body["outcome"] == "unhandled"
    assert metrics.total("WebhookUnhandled", EventType=event_type) == 1
    assert table_items(aws["BillingStateTable"]) == [] and table_items(aws["IdempotencyTable"]) == []


# --- ordering and account identity --------------------------------------------------------------


def test_a_stale_event_never_overwrites_newer_state(webhooks, metrics) -> None:
    webhooks.post(sub_event("customer.subscription.deleted", created=NOW, status="canceled"))
    late = webhooks.post(sub_event("customer.subscription.updated", created=NOW - 60, status="active"))
    assert late.status == 200 and late.body["outcome"] == "stale"
    assert account("acct_1").subscription_status == "canceled"
    assert metrics.total("WebhookStaleIgnored", EventType="customer.subscription.updated") == 1
    assert metrics.total("SubscriptionsNew") == metrics.total("SubscriptionsChurned") == 0


def test_same_second_ties_are_broken_by_lifecycle_position(webhooks) -> None:
    webhooks.post(sub_event("customer.subscription.deleted", created=NOW, status="canceled"))
    assert webhooks.post(sub_event("customer.subscription.updated", created=NOW)).body["outcome"] == "stale"
    assert account("acct_1").subscription_status == "canceled"


def test_a_dead_subscription_does_not_displace_the_live_one(webhooks) -> None:
    webhooks.post(sub_event("customer.subscription.created", id="sub_new", created=NOW))
    old = sub_event("customer.subscription.deleted", id="sub_old", created=NOW + 5, status="canceled")
    assert webhooks.post(old).body["outcome"] == "stale"
    assert (account("acct_1").subscription_id, account("acct_1").tier) == ("sub_new", "PRO")


@pytest.mark.parametrize("cancel_first", [True, False])
def test_a_cancel_and_the_next_subscription_in_the_same_second_end_on_the_live_one(
    webhooks, cancel_first: bool
) -> None:
    webhooks.post(sub_event("customer.subscription.created", id="sub_old", created=NOW - 100))
    cancel = sub_event("customer.subscription.deleted", id="sub_old", created=NOW, status="canceled")
    successor = sub_event(
        "customer.subscription.created", id="sub_next", created=NOW, lookup_key="pro_yearly"
    )
    for event in (cancel, successor) if cancel_first else (successor, cancel):
        assert webhooks.post(event).status == 200

    # Found by the chaos replay: the lifecycle rank alone let the cancel win when it came first.
    state = account("acct_1")
    assert (state.subscription_id, state.subscription_status, state.tier) == ("sub_next", "active", "PRO")


def test_state_stored_under_the_customer_moves_to_the_account_when_linked(webhooks, aws) -> None:
    # Checkout often delivers the subscription before checkout.session.completed names the account.
    unlinked = {"customer": "cus_7", "metadata": {}, "id": "sub_7"}
    webhooks.post(sub_event("customer.subscription.created", created=NOW - 10, **unlinked))
    invoice = se.invoice(
        id="in_7", customer="cus_7", subscription="sub_7", billing_reason="subscription_create"
    )
    webhooks.post(se.event("invoice.paid", invoice, created=NOW - 9))
    assert account("cus_7").tier == "PRO"

    session = se.checkout_session(
        id="cs_7", customer="cus_7", client_reference_id="acct_7", subscription="sub_7"
    )
    webhooks.post(se.event("checkout.session.completed", session, created=NOW - 8))
    state = account("acct_7")
    assert (state.tier, state.subscription_id, state.last_invoice_id, state.last_checkout_session_id) == (
        "PRO",
        "sub_7",
        "in_7",
        "cs_7",
    )
    assert state.stripe_customer_id == "cus_7"
    redirect = account("cus_7")
    assert redirect.merged_into == "acct_7" and redirect.tier is None

    # Later events that only name the customer follow the redirect.
    webhooks.post(sub_event("customer.subscription.updated", created=NOW, status="past_due", **unlinked))
    assert account("acct_7").subscription_status == "past_due"
    assert account("cus_7").subscription_status is None
    assert len(table_items(aws["BillingStateTable"])) == 2


def test_a_customer_linked_to_one_account_is_not_moved_to_another(webhooks) -> None:
    webhooks.post(
        se.event("checkout.session.completed", se.checkout_session(customer="cus_1", client_reference_id="a"))
    )
    webhooks.post(
        se.event("checkout.session.completed", se.checkout_session(customer="cus_1", client_reference_id="b"))
    )
    assert account("cus_1").merged_into == "a"


# --- EventBridge --------------------------------------------------------------------------------


def test_eventbridge_delivery_uses_the_same_processing(webhooks, metrics) -> None:
    event = sub_event("customer.subscription.created", event_id="evt_eb")
    assert webhooks.eventbridge(event) == {"event_id": "evt_eb", "outcome": "applied"}
    assert account("acct_1").tier == "PRO"
    # The same event also delivered by HTTP is a duplicate: one idempotency key across both paths.
    assert webhooks.post(event).body["outcome"] == "duplicate"
    assert (
        webhooks.eventbridge(sub_event("customer.subscription.updated", created=NOW - 100))["outcome"]
        == "stale"
    )


def test_eventbridge_failures_raise_so_lambda_retries_then_dead_letters(webhooks, monkeypatch) -> None:
    from billwatch.billing.intake import ProcessingFailed

    def broken(*_args, **_kwargs):
        raise UpdateError("Failed to update item")

    monkeypatch.setattr(BillingStore, "_conditional_update", broken)
    with pytest.raises(ProcessingFailed):
        webhooks.eventbridge(sub_event("customer.subscription.created"))


# --- bad input never gets a 5xx (signed events mangled at random: tests/integration/test_hostile_input.py)


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("current_period_end", "next month", 400),
        ("trial_end", {"when": "soon"}, 400),
        ("cancel_at_period_end", "yes", 400),
        ("id", 42, 400),
        ("items", {"data": [{"price": "price_1"}]}, 200),
    ],
)
def test_wrongly_typed_subscription_fields_get_400_naming_them(
    webhooks, aws, field: str, value, status
) -> None:
    event = sub_event("customer.subscription.updated", legacy=True)
    event["data"]["object"][field] = value
    response = webhooks.post(event)
    assert response.status == status, response.body
    if status == 400:
        assert f"data.object.{field}" in response.body["message"]
        assert table_items(aws["BillingStateTable"]) == [] and table_items(aws["IdempotencyTable"]) == []
    else:
        assert account("acct_1").tier == "FREE"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ValidationException", 422, "unprocessable_event"),
        ("ItemCollectionSizeLimitExceededException", 422, "unprocessable_event"),
        ("ProvisionedThroughputExceededException", 503, "temporarily_unavailable"),
        ("InternalServerError", 503, "temporarily_unavailable"),
    ],
)
def test_a_permanent_store_failure_is_not_dressed_up_as_temporary(
    webhooks, aws, monkeypatch, code: str, status: int, error: str
) -> None:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    original = BaseClient._make_api_call

    def refusing(self: BaseClient, operation: str, params: dict) -> dict:
        if operation == "UpdateItem" and params.get("TableName") == aws["BillingStateTable"]:
            raise ClientError({"Error": {"Code": code, "Message": "from the test"}}, operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refusing)
    response = webhooks.post(sub_event("customer.subscription.updated"))
    assert (response.status, response.body["error"]) == (status, error)
    assert code in response.body["message"] or status == 503
    assert table_items(aws["BillingStateTable"]) == []


def test_a_buyers_client_reference_id_cannot_take_over_another_customers_account(webhooks, metrics) -> None:
    """A Payment Link takes client_reference_id from its URL: anyone can name any account with it."""
    victim = se.subscription(id="sub_victim", customer="cus_victim", metadata={"account_id": "acct_victim"})
    assert webhooks.post(se.event("customer.subscription.created", victim, created=NOW)).status == 200
    before = table_items_by_key()

    claim = se.checkout_session(customer="cus_attacker", client_reference_id="acct_victim")
    claim["metadata"] = {}
    response = webhooks.post(se.event("checkout.session.completed", claim, created=NOW + 1))
    assert (response.status, response.body["outcome"]) == (200, "unattributed")
    assert metrics.total("WebhookIdRefused", Field="data.object.client_reference_id") == 1
    # The attacker's own subscription, then its cancellation, stay with the attacker's customer.
    own = se.subscription(id="sub_attacker", customer="cus_attacker")
    webhooks.post(se.event("customer.subscription.created", own, created=NOW + 2))
    webhooks.post(se.event("customer.subscription.deleted", {**own, "status": "canceled"}, created=NOW + 3))
    after = table_items_by_key()
    assert after["acct_victim"] == before["acct_victim"]
    assert account("acct_victim").tier == "PRO" and account("acct_victim").stripe_customer_id == "cus_victim"
    assert "merged_into" not in after["cus_attacker"]


def test_a_claim_names_an_account_no_customer_holds_or_the_claimants_own(webhooks) -> None:
    fresh = se.checkout_session(customer="cus_new", client_reference_id="acct_new")
    fresh["metadata"] = {}
    assert (
        webhooks.post(se.event("checkout.session.completed", fresh, created=NOW)).body["outcome"] == "applied"
    )
    again = se.checkout_session(customer="cus_new", client_reference_id="acct_new")
    again["metadata"] = {}
    assert (
        webhooks.post(se.event("checkout.session.completed", again, created=NOW + 1)).body["outcome"]
        == "applied"
    )
    assert account("acct_new").stripe_customer_id == "cus_new"


def table_items_by_key() -> dict[str, dict]:
    return {item["pk"]["S"]: item for item in table_items(BillingAccount.Meta.table_name)}
