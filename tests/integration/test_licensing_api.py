"""The LicensingApi handler: API Gateway HTTP API events in, JSON answers out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools import stripe_events as se
from tests.scenarios import STORE_FAILURES
from tests.support import LambdaContext, load_handler

CALLER = "arn:aws:sts::123456789012:assumed-role/BillingService/checkout"  # any IAM caller


@pytest.fixture
def licensing_api(aws, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    return load_handler("licensing_api")


def call(api, method: str, path: str, body=None, content_type: str = "application/json"):
    raw = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    event = se.api_gateway_event(raw or b"", headers={"content-type": content_type}, path=path, method=method)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": CALLER}}  # what AWS_IAM passes on
    if body is None:
        event.pop("body", None)
    result = api.lambda_handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"])


def test_entitlements_for_an_unseen_account(licensing_api) -> None:
    status, body = call(licensing_api, "GET", "/v1/accounts/acct_1/entitlements")
    assert status == 200
    assert body["tier"] == "FREE" and body["features"]["api_calls"]["limit"] == 1000


def test_usage_allowed_denied_and_not_in_plan(licensing_api) -> None:
    status, body = call(
        licensing_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports", "quantity": 10}
    )
    assert status == 200 and body["allowed"] is True and body["remaining"] == 0
    status, body = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports"})
    assert status == 429 and body["allowed"] is False and body["used"] == 10
    status, body = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "sso"})
    assert status == 403 and body == {"allowed": False, "feature": "sso", "reason": "feature_not_in_plan"}
    status, body = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "teleport"})
    assert status == 403 and body["reason"] == "feature_not_in_plan"


def test_a_repeated_idempotency_key_returns_the_first_answer(licensing_api) -> None:
    request = {"feature": "exports", "quantity": 4, "idempotency_key": "job-42"}
    first = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", request)
    again = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", request)
    assert first == again and first[1]["used"] == 4
    assert (
        call(licensing_api, "GET", "/v1/accounts/acct_1/entitlements")[1]["features"]["exports"]["used"] == 4
    )
    status, body = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", {**request, "quantity": 5})
    assert status == 400 and "idempotency_key" in body["message"]
    # The key belongs to the account: another account may use the same key.
    assert call(licensing_api, "POST", "/v1/accounts/acct_2/usage", request)[1]["used"] == 4


@pytest.mark.parametrize(
    ("body", "content_type", "status", "names"),
    [
        ({}, "application/json", 400, "feature"),
        ({"feature": "exports", "quantity": 0}, "application/json", 400, "quantity"),
        ({"feature": "exports", "quantity": -3}, "application/json", 400, "quantity"),
        ({"feature": "exports", "quantity": 10**12}, "application/json", 400, "quantity"),
        ({"feature": "exports", "quantity": "2"}, "application/json", 400, "quantity"),
        ({"feature": "exports", "quantity": 1.5}, "application/json", 400, "quantity"),
        ({"feature": "exports", "colour": "red"}, "application/json", 400, "colour"),
        ({"feature": ""}, "application/json", 400, "feature"),
        ("{not json", "application/json", 400, "JSON"),
        ({"feature": "exports"}, "text/plain", 415, "application/json"),
        ("feature=exports", "application/x-www-form-urlencoded", 415, "application/json"),
    ],
)
def test_bad_usage_requests_get_a_4xx_naming_the_problem(
    licensing_api, body, content_type, status, names
) -> None:
    got_status, got = call(licensing_api, "POST", "/v1/accounts/acct_1/usage", body, content_type)
    assert got_status == status, got
    assert names in got["message"]
    assert (
        call(licensing_api, "GET", "/v1/accounts/acct_1/entitlements")[1]["features"]["exports"]["used"] == 0
    )


def test_a_bad_account_id_gets_400(licensing_api) -> None:
    status, body = call(licensing_api, "GET", "/v1/accounts/" + "x" * 200 + "/entitlements")
    assert status == 400 and "account_id" in body["message"]


def test_an_unknown_route_gets_404(licensing_api) -> None:
    assert call(licensing_api, "GET", "/v1/nothing")[0] == 404


ADMIN_ROLE = "arn:aws:iam::123456789012:role/BillingAdmin"


@pytest.fixture
def admin_api(aws, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    return load_handler("licensing_api")


def admin_call(api, method: str, path: str, body=None, caller: str | None = None):
    raw = json.dumps(body) if body is not None else None
    event = se.api_gateway_event(
        raw or b"", headers={"content-type": "application/json"}, path=path, method=method
    )
    if raw is None:
        event.pop("body", None)
    if caller:
        event["requestContext"]["authorizer"] = {"iam": {"userArn": caller, "accountId": "123456789012"}}
    result = api.lambda_handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"])


ADMIN = "arn:aws:sts::123456789012:assumed-role/BillingAdmin/alice"


def test_admins_override_tiers_grant_quota_and_reset_usage(admin_api) -> None:
    status, body = admin_call(
        admin_api, "PUT", "/admin/accounts/acct_1/tier-override", {"tier": "PRO"}, ADMIN
    )
    assert status == 200 and body["tier"] == "PRO" and body["features"]["sso"]["enabled"] is True
    admin_call(admin_api, "PUT", "/admin/accounts/acct_1/tier-override", {"tier": None}, ADMIN)
    assert call(admin_api, "GET", "/v1/accounts/acct_1/entitlements")[1]["tier"] == "FREE"

    call(admin_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports", "quantity": 10})
    status, body = admin_call(
        admin_api, "POST", "/admin/accounts/acct_1/grants", {"feature": "exports", "quantity": 5}, ADMIN
    )
    assert status == 200 and body["features"]["exports"] == {
        **body["features"]["exports"],
        "limit": 15,
        "used": 10,
    }
    assert (
        call(admin_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports", "quantity": 5})[0] == 200
    )
    assert call(admin_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports"})[0] == 429

    status, body = admin_call(admin_api, "POST", "/admin/accounts/acct_1/usage-reset", None, ADMIN)
    assert (
        status == 200
        and body["features"]["exports"]["used"] == 0
        and body["features"]["exports"]["limit"] == 10
    )


@pytest.mark.parametrize(
    "caller",
    [None, "arn:aws:sts::123456789012:assumed-role/Developer/bob", "arn:aws:iam::123456789012:user/mallory"],
)
def test_other_callers_get_403_are_logged_and_counted(admin_api, metrics, caller) -> None:
    status, body = admin_call(admin_api, "POST", "/admin/accounts/acct_1/usage-reset", None, caller)
    assert status == 403 and "admin" in body["message"]
    logged = [log for log in metrics.logs() if log["message"] == "Unauthorized admin access attempt"]
    assert logged and logged[0]["level"] == "WARNING" and logged[0]["caller_arn"] == (caller or "none")
    assert metrics.total("UnauthorizedAdminAccess") == 1
    # A bad body from a non-admin is still refused as a non-admin.
    status, _ = admin_call(admin_api, "PUT", "/admin/accounts/acct_1/tier-override", {"tier": "GOLD"}, caller)
    assert status == 403


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("/admin/accounts/acct_1/tier-override", {"tier": "GOLD"}, "tier"),
        ("/admin/accounts/acct_1/tier-override", {}, "tier"),
        ("/admin/accounts/acct_1/grants", {"feature": "sso", "quantity": 5}, "feature"),
        ("/admin/accounts/acct_1/grants", {"feature": "exports", "quantity": 0}, "quantity"),
    ],
)
def test_bad_admin_requests_get_400(admin_api, path, body, names) -> None:
    method = "PUT" if path.endswith("tier-override") else "POST"
    status, got = admin_call(admin_api, method, path, body, ADMIN)
    assert status == 400 and names in got["message"]


def test_signed_webhooks_make_an_account_pro_and_the_api_shows_pro_limits(webhooks, licensing_api) -> None:
    assert call(licensing_api, "GET", "/v1/accounts/acct_e2e/entitlements")[1]["tier"] == "FREE"
    sub = se.subscription(id="sub_e2e", customer="cus_e2e", status="incomplete", metadata={})
    assert webhooks.post(se.event("customer.subscription.created", sub, created=1_790_000_000)).status == 200
    session = se.checkout_session(customer="cus_e2e", client_reference_id="acct_e2e", subscription="sub_e2e")
    assert webhooks.post(se.event("checkout.session.completed", session, created=1_790_000_001)).status == 200
    active = se.subscription(id="sub_e2e", customer="cus_e2e", status="active", metadata={})
    assert (
        webhooks.post(se.event("customer.subscription.updated", active, created=1_790_000_002)).status == 200
    )
    status, body = call(licensing_api, "GET", "/v1/accounts/acct_e2e/entitlements")
    assert status == 200 and body["tier"] == "PRO"
    assert body["features"]["api_calls"]["limit"] == 100_000 and body["features"]["sso"]["enabled"] is True
    assert body["subscription"]["status"] == "active"
    status, body = call(
        licensing_api, "POST", "/v1/accounts/acct_e2e/usage", {"feature": "exports", "quantity": 500}
    )
    assert status == 200 and body["limit"] == 1000


# --- ids and DynamoDB failures --------------------------------------------------------------------

LICENSING_ROUTES = [
    ("GET", "/v1/accounts/{}/entitlements", None),
    ("POST", "/v1/accounts/{}/usage", {"feature": "exports"}),
    ("POST", "/v1/accounts/{}/usage", {"feature": "exports", "idempotency_key": "job-1"}),
    ("POST", "/v1/accounts/{}/usage", {"feature": "sso"}),
    ("PUT", "/admin/accounts/{}/tier-override", {"tier": "PRO"}),
    ("POST", "/admin/accounts/{}/grants", {"feature": "exports", "quantity": 5}),
    ("POST", "/admin/accounts/{}/usage-reset", None),
]


@pytest.mark.parametrize(("method", "path", "body"), LICENSING_ROUTES)
@pytest.mark.parametrize(
    ("account_id", "status"),
    [
        ("x" * 129, 400),
        ("x" * 10_000, 400),
        ("é" * 10, 400),
        ("acct 1", 400),
        ("acct_1\n", 404),
        # A provisional item is keyed by its Stripe customer id until the account is known.
        ("cus_NffrFeUfNV2Hib", 400),
    ],
)
def test_an_id_the_pattern_refuses_never_reaches_dynamodb(
    admin_api, aws_calls, method, path, body, account_id, status
) -> None:
    got, answer = admin_call(admin_api, method, path.format(account_id), body, ADMIN)
    assert got == status, answer
    assert status == 404 or "account_id" in answer["message"]  # 404: no route takes a line break
    assert aws_calls == []


@pytest.fixture
def failing_dynamodb(monkeypatch) -> dict[str, Any]:
    """Every DynamoDB request fails with ``error`` once it is set, as botocore reports it."""
    from botocore.client import BaseClient

    fault: dict[str, Any] = {}
    original = BaseClient._make_api_call

    def maybe_failing(client: BaseClient, operation: str, params: dict) -> Any:
        if "error" in fault and client.meta.service_model.service_name == "dynamodb":
            raise fault["error"](operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", maybe_failing)
    return fault


@pytest.mark.parametrize(("method", "path", "body"), LICENSING_ROUTES)
@pytest.mark.parametrize(
    ("error", "status"),
    STORE_FAILURES,
)
def test_a_refused_request_is_a_422_and_only_what_may_pass_is_a_503(
    admin_api, failing_dynamodb, method, path, body, error, status
) -> None:
    failing_dynamodb["error"] = error
    got, answer = admin_call(admin_api, method, path.format("acct_1"), body, ADMIN)
    assert got == status, answer
    if status == 422:
        assert answer["error"] == "rejected_by_store" and "ValidationException" in answer["message"]
    else:
        assert answer["error"] == "temporarily_unavailable"
