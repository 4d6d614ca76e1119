"""Bodies the IAM routes of the HTTP API cannot take: a 4xx naming the problem, never a 5xx.

Python's JSON reader (which Powertools uses) crashes on deep nesting, on integers of more than 4,300
digits and on bytes that are not UTF-8, and takes NaN, Infinity and 1e999 for numbers. The shared
pre-routing check reads every body strictly first, so the licensing, admin, silences and reconcile
routes all answer the same 400, and nothing reaches DynamoDB, Lambda or the Stripe API. A silence
DynamoDB cannot store is refused too (the licensing routes' store failures: test_licensing_api.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from billwatch.core.self_invoke import SelfInvoker
from tests.alert_events import dispatcher_environment
from tests.alert_receivers import alert_receivers
from tests.scenarios import ADMIN_CALLER, ADMIN_ROLE, STORE_FAILURES, iam_api_event
from tests.support import LambdaContext, load_handler

DEEP = 100_000
HUGE_INTEGER = "1" + "0" * 4999  # 5,000 digits: past Python's own limit for reading integers

# (what it is, the body as API Gateway hands it over, whether it is marked base64, what the message names)
PATHOLOGICAL_BODIES = [
    ("a 5,000-digit quantity", f'{{"feature": "exports", "quantity": {HUGE_INTEGER}}}', False, "digits"),
    ("a 5,000-digit number alone", HUGE_INTEGER, False, "digits"),
    ("a 65-digit quantity", '{"feature": "exports", "quantity": ' + "9" * 65 + "}", False, "digits"),
    ("arrays nested 100,000 deep", "[" * DEEP + "]" * DEEP, False, "nested more than"),
    ("objects nested 100,000 deep", '{"a":' * DEEP + "1" + "}" * DEEP, False, "nested more than"),
    ("nesting never closed", '{"matchers": ' + "[" * DEEP, False, "nested more than"),
    ("NaN", '{"feature": "exports", "quantity": NaN}', False, "NaN"),
    ("Infinity", '{"feature": "exports", "quantity": Infinity}', False, "Infinity"),
    ("-Infinity", '{"tier": -Infinity}', False, "Infinity"),
    ("1e999", '{"feature": "exports", "quantity": 1e999}', False, "out of range"),
    ("binary, not UTF-8", base64.b64encode(b'{"feature": "\xff\xfe"}').decode(), True, "UTF-8"),
    ("Latin-1 text", base64.b64encode('{"comment": "été"}'.encode("latin-1")).decode(), True, "UTF-8"),
    ("a lone surrogate", '{"feature": "\ud800"}', False, "UTF-8"),
    ("deep nesting, base64", base64.b64encode(b"[" * DEEP + b"]" * DEEP).decode(), True, "nested"),
    ("not JSON", "{feature: exports}", False, "not valid JSON"),
]

SILENCE = "0123456789abcdef0123456789abcdef"
ALERT = "dXNhZ2UjYWNjdF8xI2FwaV9jYWxscyM5NSM"  # a usage alert's fingerprint in base64url
ROUTES = [
    ("licensing_api", "POST", "/v1/accounts/acct_1/usage"),
    ("licensing_api", "GET", "/v1/accounts/acct_1/entitlements"),
    ("licensing_api", "GET", "/v1/accounts/acct_1/usage-report"),
    ("licensing_api", "PUT", "/admin/accounts/acct_1/tier-override"),
    ("licensing_api", "POST", "/admin/accounts/acct_1/grants"),
    ("licensing_api", "POST", "/admin/accounts/acct_1/usage-reset"),
    ("alert_dispatch", "POST", "/admin/silences"),
    ("alert_dispatch", "GET", "/admin/silences"),
    ("alert_dispatch", "DELETE", f"/admin/silences/{SILENCE}"),
    ("alert_dispatch", "GET", "/admin/alert-channels"),
    ("alert_dispatch", "GET", "/admin/alerts"),
    ("alert_dispatch", "POST", f"/admin/alerts/{ALERT}/ack"),
    ("alert_dispatch", "POST", f"/admin/alerts/{ALERT}/resolve"),
    ("reconcile", "POST", "/admin/reconcile"),
]


@pytest.fixture
def handlers(aws, monkeypatch, tmp_path, stripe_api, metrics) -> Iterator[dict[str, Any]]:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_route_bodies")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        yield {name: load_handler(name) for name in ("licensing_api", "alert_dispatch", "reconcile")}


@pytest.fixture
def reconciliations_started(monkeypatch) -> list[dict]:
    started: list[dict] = []
    monkeypatch.setattr(SelfInvoker, "start", lambda self, payload: started.append(payload))
    return started


def request(method: str, path: str, body: str, base64_encoded: bool) -> dict[str, Any]:
    event = iam_api_event(method, path, {}, ADMIN_CALLER)
    event.update(body=body, isBase64Encoded=base64_encoded)
    return event


@pytest.mark.parametrize(("function", "method", "path"), ROUTES)
def test_every_pathological_body_gets_a_400_naming_it_and_touches_nothing(
    handlers, aws_calls, reconciliations_started, function, method, path
) -> None:
    for what, body, base64_encoded, named in PATHOLOGICAL_BODIES:
        aws_calls.clear()
        result = handlers[function].lambda_handler(
            request(method, path, body, base64_encoded), LambdaContext()
        )
        answer = json.loads(result["body"])
        assert result["statusCode"] == 400, (what, answer)
        assert answer["error"] == "invalid_request" and named in answer["message"], (what, answer)
        assert aws_calls == [], what
    assert reconciliations_started == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/accounts/acct_1/usage", {"feature": "exports", "quantity": 10**63}, "quantity"),
        ("PUT", "/admin/accounts/acct_1/tier-override", {"tier": [[[[[[[[[[["GOLD"]]]]]]]]]]]}, "tier"),
        ("POST", "/admin/accounts/acct_1/grants", {"feature": "exports", "quantity": -1.5e308}, "quantity"),
    ],
)
def test_bodies_within_the_limits_reach_the_route_and_its_own_validation(
    handlers, method, path, body, field
) -> None:
    result = handlers["licensing_api"].lambda_handler(
        iam_api_event(method, path, body, ADMIN_CALLER), LambdaContext()
    )
    answer = json.loads(result["body"])
    assert result["statusCode"] == 400 and answer["message"].startswith(f"{field}: "), answer


def test_a_well_formed_request_still_starts_a_reconciliation(handlers, reconciliations_started) -> None:
    result = handlers["reconcile"].lambda_handler(
        iam_api_event("POST", "/admin/reconcile", {}, ADMIN_CALLER), LambdaContext()
    )
    assert result["statusCode"] == 202 and len(reconciliations_started) == 1


# --- silences DynamoDB cannot store, or cannot take now ---------------------------------------------


def test_a_silence_too_big_for_dynamodb_is_refused_at_the_door(handlers, aws_calls) -> None:
    matcher = "alertname=" + "x" * 250_000  # two of them pass DynamoDB's 400 KB item
    window = {"matchers": [matcher, matcher], "ends_at": "2099-01-01T00:00:00Z", "comment": "c"}
    aws_calls.clear()
    result = handlers["alert_dispatch"].lambda_handler(
        iam_api_event("POST", "/admin/silences", window, ADMIN_CALLER), LambdaContext()
    )
    answer = json.loads(result["body"])
    assert result["statusCode"] == 400 and answer["message"].startswith("matchers.0: "), answer
    assert aws_calls == []


SILENCES_ROUTES = [
    (
        "POST",
        "/admin/silences",
        {"matchers": ["alertname=x"], "ends_at": "2099-01-01T00:00:00Z", "comment": "c"},
    ),
    ("GET", "/admin/silences", None),
    ("DELETE", f"/admin/silences/{SILENCE}", None),
    ("GET", "/admin/alert-channels", None),
    ("GET", "/admin/alerts", None),
    ("POST", f"/admin/alerts/{ALERT}/ack", {"reason": "r"}),
    ("POST", f"/admin/alerts/{ALERT}/resolve", {"reason": "r"}),
]


@pytest.mark.parametrize(("method", "path", "body"), SILENCES_ROUTES)
@pytest.mark.parametrize(
    ("error", "status"),
    STORE_FAILURES,
)
def test_the_silences_routes_answer_a_refusal_with_422_and_an_outage_with_503(
    handlers, monkeypatch, method, path, body, error, status
) -> None:
    original = BaseClient._make_api_call

    def failing(client: BaseClient, operation: str, params: dict) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            raise error(operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", failing)
    result = handlers["alert_dispatch"].lambda_handler(
        iam_api_event(method, path, body, ADMIN_CALLER), LambdaContext()
    )
    answer = json.loads(result["body"])
    assert result["statusCode"] == status, answer
    expected = "rejected_by_store" if status == 422 else "temporarily_unavailable"
    assert answer["error"] == expected
