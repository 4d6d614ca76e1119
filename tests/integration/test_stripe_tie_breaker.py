"""Same-second ties are settled by the subscription as the Stripe API returns it.

The Stripe API is stood in for by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from billwatch.core.models import BillingAccount
from devtools import stripe_events as se
from tests.support import WebhookClient, load_handler

CREATED = 1_760_000_000


@pytest.fixture
def webhooks_with_api(aws, stripe_api, monkeypatch) -> WebhookClient:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_primary")
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_local_readonly")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    return WebhookClient(load_handler("webhook_intake"))


def update(status: str, event_id: str, created: int = CREATED) -> dict:
    sub = se.subscription(id="sub_1", customer="cus_1", status=status, metadata={"account_id": "acct_1"})
    return se.event("customer.subscription.updated", sub, id=event_id, created=created)


def status() -> str:
    return BillingAccount.get("acct_1", consistent_read=True).subscription_status


def test_a_same_second_tie_is_settled_by_the_stripe_api(webhooks_with_api, stripe_api) -> None:
    # The card was retried and succeeded within the second: past_due, then active again.
    stripe_api.subscriptions["sub_1"] = se.subscription(
        id="sub_1", customer="cus_1", status="active", metadata={"account_id": "acct_1"}
    )
    webhooks_with_api.post(update("past_due", "evt_past_due"))
    response = webhooks_with_api.post(update("active", "evt_active"))
    assert response.status == 200 and response.body["outcome"] == "applied"
    assert status() == "active"
    assert stripe_api.requests == [("/v1/subscriptions/sub_1", "Bearer rk_test_local_readonly")]
    # A late delivery from the same second cannot undo what the API said: it asks again.
    stripe_api.requests.clear()
    assert webhooks_with_api.post(update("past_due", "evt_late_copy")).status == 200
    assert status() == "active" and len(stripe_api.requests) == 1


def test_events_in_different_seconds_need_no_api_call(webhooks_with_api, stripe_api) -> None:
    webhooks_with_api.post(update("past_due", "evt_1", created=CREATED))
    webhooks_with_api.post(update("active", "evt_2", created=CREATED + 1))
    assert status() == "active" and stripe_api.requests == []


def test_an_api_failure_falls_back_to_the_lifecycle_order(webhooks_with_api, stripe_api, metrics) -> None:
    webhooks_with_api.post(update("past_due", "evt_past_due"))
    response = webhooks_with_api.post(update("active", "evt_active"))
    assert response.status == 200 and response.body["outcome"] == "stale"
    assert status() == "past_due"
    assert len(stripe_api.requests) == 1
    warnings = [log for log in metrics.logs() if log["level"] == "WARNING"]
    assert any("same-second" in log["message"] for log in warnings)
    assert "rk_test_local_readonly" not in "\n".join(metrics.lines)
    # The 404 of the missing subscription counts as a Stripe API error.
    assert metrics.total("StripeApiError", Code="invalid_request") == 1
