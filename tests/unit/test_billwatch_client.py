"""clients/python: signing, retries, errors and the entitlements cache, against a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from billwatch_client import BillwatchClient, BillwatchError, FeatureNotInPlan, QuotaExceeded, Unavailable
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALLOWED = {"allowed": True, "feature": "api_calls", "used": 1, "limit": 10, "remaining": 9, "resets_at": 1}
# (status, body, extra headers, seconds to wait before answering)
Answer = tuple[int, dict[str, Any], dict[str, str], float]


class ScriptedApi(ThreadingHTTPServer):
    """Answers each request with the next scripted answer, then with ``default``; keeps every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer] = []
        self.default: Answer = (200, ALLOWED, {}, 0.0)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.released = threading.Event()
        self.on_request: Callable[[], None] = lambda: None  # runs while the request is in flight

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, _, body in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedApi

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, dict(self.headers.items()), body))
        self.server.on_request()
        status, answer, headers, delay = (
            self.server.script.pop(0) if self.server.script else self.server.default
        )
        if delay:
            self.server.released.wait(delay)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    server = ScriptedApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def client(api: ScriptedApi, clock: Clock | None = None, **options: Any) -> BillwatchClient:
    clock = clock or Clock()
    return BillwatchClient(api.url, sign=False, clock=clock, sleep=clock.sleep, **options)


# --- signing --------------------------------------------------------------------------------------


def test_a_signed_check_carries_sigv4_for_execute_api_over_its_body(api: ScriptedApi) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", "session-token")
    signed = BillwatchClient(api.url, region="eu-west-1", credentials=credentials)
    signed.check("acct_1", "api_calls", 2, idempotency_key="k1")
    _, path, headers, body = api.requests[0]
    assert path == "/v1/accounts/acct_1/usage"
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "x-amz-date" in authorization and "x-amz-security-token" in authorization
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert headers["X-Amz-Date"].endswith("Z")
    assert json.loads(body) == {"feature": "api_calls", "quantity": 2, "idempotency_key": "k1"}
    # Verified as API Gateway would: the canonical request rebuilt from what arrived, body hash included.
    signed_headers = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    received = {name: value for name, value in headers.items() if name.lower() in signed_headers}
    assert {"host", "x-amz-date", "content-type"} <= set(signed_headers)
    verifier = SigV4Auth(credentials, "execute-api", "eu-west-1")

    def signature_of(payload: bytes) -> str:
        request = AWSRequest(method="POST", url=api.url + path, data=payload, headers=received)
        request.context["timestamp"] = headers["X-Amz-Date"]
        canonical = verifier.canonical_request(request)
        assert canonical.endswith(hashlib.sha256(payload).hexdigest())
        return verifier.signature(verifier.string_to_sign(request, canonical), request)

    assert authorization.endswith(f"Signature={signature_of(body)}")
    assert not authorization.endswith(f"Signature={signature_of(body.replace(b'2', b'3'))}")


def test_the_signature_changes_with_the_body(api: ScriptedApi) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret")
    signed = BillwatchClient(api.url, region="eu-west-1", credentials=credentials)
    signed.check("acct_1", "api_calls", 1, idempotency_key="same")
    signed.check("acct_1", "api_calls", 2, idempotency_key="same")
    signatures = [headers["Authorization"].rsplit("Signature=", 1)[1] for _, _, headers, _ in api.requests]
    assert signatures[0] != signatures[1]


def test_unsigned_requests_carry_no_authorization(api: ScriptedApi) -> None:
    client(api).entitlements("acct_1")
    assert "Authorization" not in api.requests[0][2]


def test_signing_without_a_region_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ValueError, match="region"):
        BillwatchClient("http://127.0.0.1:1", credentials=Credentials("a", "b"))


# --- retries --------------------------------------------------------------------------------------


def test_a_check_retried_after_503s_sends_one_generated_key_every_time(api: ScriptedApi) -> None:
    clock = Clock()
    api.script = [(503, {"message": "Service Unavailable"}, {}, 0.0)] * 2
    assert client(api, clock).check("acct_1", "api_calls") == ALLOWED
    keys = {body["idempotency_key"] for body in api.bodies()}
    assert len(api.requests) == 3 and len(keys) == 1
    assert len(clock.slept) == 2 and all(0 <= delay <= 0.4 for delay in clock.slept)


def test_each_check_call_gets_its_own_key_and_a_given_key_is_kept(api: ScriptedApi) -> None:
    billwatch = client(api)
    billwatch.check("acct_1", "api_calls")
    billwatch.check("acct_1", "api_calls")
    billwatch.check("acct_1", "api_calls", idempotency_key="order-17")
    keys = [body["idempotency_key"] for body in api.bodies()]
    assert keys[0] != keys[1] and keys[2] == "order-17"


def test_throttling_honours_retry_after_but_a_quota_429_is_an_answer(api: ScriptedApi) -> None:
    clock = Clock()
    api.script = [(429, {"message": "Too Many Requests"}, {"Retry-After": "2"}, 0.0)]
    assert client(api, clock).check("acct_1", "api_calls") == ALLOWED
    assert clock.slept == [2.0]
    refused = {"allowed": False, "feature": "api_calls", "reason": "quota_exceeded", "used": 10, "limit": 10}
    api.script = [(429, refused, {}, 0.0)]
    with pytest.raises(QuotaExceeded) as raised:
        client(api, clock).check("acct_1", "api_calls")
    assert (raised.value.status, raised.value.body["limit"], len(api.requests)) == (429, 10, 3)


def test_a_retry_after_longer_than_the_budget_fails_at_once(api: ScriptedApi) -> None:
    api.script = [(503, {"message": "down"}, {"Retry-After": "60"}, 0.0)]
    with pytest.raises(Unavailable, match="down"):
        client(api, max_backoff=5).check("acct_1", "api_calls")
    assert len(api.requests) == 1


def test_unavailable_after_every_retry_failed(api: ScriptedApi) -> None:
    api.default = (502, {"message": "Bad Gateway"}, {}, 0.0)
    with pytest.raises(Unavailable) as raised:
        client(api, retries=2).entitlements("acct_1")
    assert (raised.value.status, len(api.requests)) == (502, 3)


def test_a_slow_answer_times_out_and_is_retried_under_the_same_key(api: ScriptedApi) -> None:
    api.script = [(200, ALLOWED, {}, 5.0)]
    assert client(api, timeout=0.2).check("acct_1", "api_calls") == ALLOWED
    assert len({body["idempotency_key"] for body in api.bodies()}) == 1 and len(api.requests) == 2


def test_a_refused_connection_is_unavailable() -> None:
    clock = Clock()
    closed = ScriptedApi()
    closed.server_close()  # the port is free again: nothing listens
    with pytest.raises(Unavailable):
        BillwatchClient(closed.url, sign=False, retries=1, sleep=clock.sleep).entitlements("acct_1")
    assert len(clock.slept) == 1


# --- errors ---------------------------------------------------------------------------------------


def test_refusals_are_typed_and_carry_the_servers_message(api: ScriptedApi) -> None:
    api.script = [
        (403, {"allowed": False, "feature": "sso", "reason": "feature_not_in_plan"}, {}, 0.0),
        (400, {"error": "invalid_request", "message": "quantity: Input should be greater than 0"}, {}, 0.0),
        (404, {"error": "account_not_found", "message": "no account acct_9"}, {}, 0.0),
    ]
    billwatch = client(api)
    with pytest.raises(FeatureNotInPlan):
        billwatch.check("acct_1", "sso")
    with pytest.raises(BillwatchError) as invalid:
        billwatch.check("acct_1", "api_calls", 0)
    assert (invalid.value.status, invalid.value.error) == (400, "invalid_request")
    assert str(invalid.value) == "quantity: Input should be greater than 0"
    with pytest.raises(BillwatchError, match="no account acct_9") as missing:
        billwatch.usage_report("acct_9", from_="2026-11-01", to="2026-11-30")
    assert type(missing.value) is BillwatchError and len(api.requests) == 3
    assert api.requests[2][1] == "/v1/accounts/acct_9/usage-report?from=2026-11-01&to=2026-11-30"


def test_an_account_id_is_one_path_segment(api: ScriptedApi) -> None:
    client(api).entitlements("acct/../admin")
    assert api.requests[0][1] == "/v1/accounts/acct%2F..%2Fadmin/entitlements"


# --- the entitlements cache -----------------------------------------------------------------------


def test_entitlements_are_cached_for_the_ttl(api: ScriptedApi) -> None:
    clock = Clock()
    api.default = (200, {"account_id": "acct_1", "tier": "PRO"}, {}, 0.0)
    billwatch = client(api, clock, cache_ttl=30)
    assert billwatch.entitlements("acct_1")["tier"] == "PRO"
    clock.now += 29
    billwatch.entitlements("acct_1")
    assert len(api.requests) == 1
    clock.now += 1
    billwatch.entitlements("acct_1")
    assert len(api.requests) == 2


def test_a_caller_that_edits_its_answer_does_not_change_the_cached_one(api: ScriptedApi) -> None:
    api.default = (200, {"account_id": "acct_1", "features": {"api_calls": {"limit": 10}}}, {}, 0.0)
    billwatch = client(api, cache_ttl=30)
    billwatch.entitlements("acct_1")["features"]["api_calls"]["limit"] = 999
    billwatch.entitlements("acct_1")["features"].clear()
    assert billwatch.entitlements("acct_1")["features"] == {"api_calls": {"limit": 10}}
    assert len(api.requests) == 1


def test_invalidate_forgets_one_account_or_all(api: ScriptedApi) -> None:
    billwatch = client(api)
    for account in ("acct_1", "acct_2", "acct_1", "acct_2"):
        billwatch.entitlements(account)
    assert len(api.requests) == 2
    billwatch.invalidate("acct_1")
    billwatch.entitlements("acct_1")
    billwatch.entitlements("acct_2")
    assert len(api.requests) == 3
    billwatch.invalidate()
    billwatch.entitlements("acct_2")
    assert len(api.requests) == 4


def test_a_usage_threshold_event_from_sns_invalidates_its_account(api: ScriptedApi) -> None:
    billwatch = client(api)
    billwatch.entitlements("acct_1")
    billwatch.entitlements("acct_2")
    crossing = {"type": "usage.threshold_crossed", "account_id": "acct_1", "feature": "api_calls"}
    sns_event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(crossing)}}]}
    assert billwatch.handle_business_event(sns_event) == {"acct_1"}
    billwatch.entitlements("acct_1")
    billwatch.entitlements("acct_2")
    assert [path for _, path, _, _ in api.requests][2:] == ["/v1/accounts/acct_1/entitlements"]
    assert billwatch.handle_business_event({"type": "billing.payment_failed", "account_id": "acct_2"}) == {
        "acct_2"
    }
    assert billwatch.handle_business_event({"Records": [{"Sns": {"Message": "{}"}}]}) == set()


def test_an_answer_fetched_across_an_invalidation_is_not_kept(api: ScriptedApi) -> None:
    billwatch = client(api)
    api.on_request = lambda: billwatch.invalidate("acct_1")  # the tier changes while the read is out
    billwatch.entitlements("acct_1")
    api.on_request = lambda: None
    billwatch.entitlements("acct_1")
    billwatch.entitlements("acct_1")
    assert len(api.requests) == 2


def test_a_zero_ttl_caches_nothing(api: ScriptedApi) -> None:
    billwatch = client(api, cache_ttl=0)
    billwatch.entitlements("acct_1")
    billwatch.entitlements("acct_1")
    assert len(api.requests) == 2
