"""Test helpers shared by unit, integration and contract tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import loaders
from moto import mock_aws
from moto.core.responses import BaseResponse

from devtools import stripe_events as se
from devtools.fake_meters import FakeMeters
from devtools.moto_patches import install_item_rollback_transactions
from devtools.signing import stripe_signature_header
from devtools.template import create_tables

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_test_primary"


def _share_botocore_models() -> None:
    """Every mock_aws start drops boto3's default session, and each new session's loader parses
    botocore's service models and endpoint rules again: megabytes of JSON, a quarter of a typical
    moto-backed test's CPU. The files are the same for every session in a process, so the loaders
    share what they parsed, as one loader already shares it between its own clients."""
    shared: dict[Any, Any] = {}
    original_init = loaders.Loader.__init__

    def init_sharing(loader: loaders.Loader, *args: Any, **kwargs: Any) -> None:
        original_init(loader, *args, **kwargs)
        loader._cache = shared

    loaders.Loader.__init__ = init_sharing  # type: ignore[method-assign]


_share_botocore_models()


class LambdaContext:
    function_name = "WebhookIntakeFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:WebhookIntakeFunction"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def load_handler(function_dir: str) -> Any:
    """A fresh import of a function's app.py, so its cold-start code runs with this test's env."""
    spec = importlib.util.spec_from_file_location(
        f"{function_dir}_app_{uuid.uuid4().hex}", ROOT / "functions" / function_dir / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: pydantic resolves annotations through it
    spec.loader.exec_module(module)
    return module


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class WebhookClient:
    """Posts Stripe events to the handler the way API Gateway delivers Stripe's requests."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def post_raw(self, body: bytes, headers: dict[str, str], base64: bool = False) -> Response:
        event = se.api_gateway_event(body, headers=headers, base64=base64)
        result = self.handler.lambda_handler(event, LambdaContext())
        return Response(result["statusCode"], json.loads(result["body"]))

    def post(
        self, stripe_event: dict[str, Any], secrets: str | list[str] = WEBHOOK_SECRET, **kwargs: Any
    ) -> Response:
        body = json.dumps(stripe_event).encode()
        timestamp = kwargs.pop("timestamp", None)
        header = stripe_signature_header(body, secrets, timestamp=timestamp)
        return self.post_raw(body, {"stripe-signature": header, "content-type": "application/json"}, **kwargs)

    def eventbridge(self, stripe_event: dict[str, Any]) -> dict[str, Any]:
        return self.handler.lambda_handler(se.eventbridge_event(stripe_event), LambdaContext())


@dataclass(frozen=True)
class EmittedMetric:
    name: str
    value: float
    dimensions: dict[str, str]
    namespace: str
    unit: str


def parse_emf(output: str) -> list[EmittedMetric]:
    """Every (metric, dimension set) pair in the EMF documents printed to stdout."""
    emitted = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                for dimension_set in directive["Dimensions"]:
                    dims = {name: document[name] for name in dimension_set}
                    for value in values if isinstance(values, list) else [values]:
                        emitted.append(
                            EmittedMetric(metric["Name"], value, dims, directive["Namespace"], metric["Unit"])
                        )
    return emitted


class MetricsCapture:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.lines: list[str] = []

    def read(self) -> list[EmittedMetric]:
        self.lines.extend(self._capsys.readouterr().out.splitlines())
        return parse_emf("\n".join(self.lines))

    def total(self, name: str, **labels: str) -> float:
        """The sum over the dimension set that is exactly service + the given labels."""
        wanted = {"service": "billwatch", **labels}
        return sum(m.value for m in self.read() if m.name == name and m.dimensions == wanted)

    def logs(self) -> list[dict[str, Any]]:
        self.read()
        return [
            json.loads(line)
            for line in self.lines
            if line.startswith("{") and '"level"' in line and '"_aws"' not in line
        ]


class CurrentStdout:
    """Writes to whatever sys.stdout is now, so pytest's per-test capture sees the JSON logs."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class Clock:
    """A clock the test sets by hand, for code that takes ``clock=``."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeStripeApi(ThreadingHTTPServer):
    """The Stripe API's subscription, event (v1, and v2 thin events), webhook endpoint and balance
    transaction reads, on 127.0.0.1, with Stripe's list pagination. It starts with one enabled
    webhook endpoint.

    ``failure`` makes every request fail; ``fail_next`` fails the next requests, one each;
    ``failing_paths`` fails every request to a path; ``delay_seconds`` makes every answer that late.
    Balance transactions are stored with their source expanded, and listed so only when asked
    (``expand[]=data.source``), else with the source's id, as Stripe does. ``meters`` serves the billing
    meter endpoints (devtools.fake_meters), and is also the v2 meter events host (``url`` for both).
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StripeHandler)
        self.subscriptions: dict[str, dict] = {}
        self.events: list[tuple[dict, bool]] = []  # (event, whether its delivery succeeded)
        self.v2_events: dict[str, dict] = {}  # GET /v2/core/events/{id}: thin events, fetched
        self.webhook_endpoints: list[dict] = [webhook_endpoint(STRIPE_ENDPOINT_URL)]
        self.balance_transactions: list[dict] = []
        self.failure: tuple[int, dict] | None = None  # (HTTP status, Stripe error object)
        self.failing_paths: dict[
            str, tuple[int, dict]
        ] = {}  # e.g. "/v1/events": what every request there gets
        self.fail_next: list[tuple[int, dict]] = []
        self.delay_seconds = 0.0
        self.requests: list[tuple[str, str]] = []
        self.meters = FakeMeters()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_event(self, event: dict, delivered: bool = True) -> None:
        self.events.append((event, delivered))


STRIPE_ENDPOINT_URL = "https://billing.example.com/webhooks/stripe"


def webhook_endpoint(url: str, status: str = "enabled") -> dict:
    """A webhook endpoint object as Stripe lists it (the fields the probe reads, and its id)."""
    return {
        "id": f"we_{uuid.uuid5(uuid.NAMESPACE_URL, url).hex[:24]}",
        "object": "webhook_endpoint",
        "url": url,
        "status": status,
        "created": 1_700_000_000,
        "enabled_events": ["*"],
    }


def _page(items: list[dict], query: dict[str, str], url: str) -> dict:
    """A Stripe list: newest first, ``limit`` at a time, after ``starting_after``."""
    ordered = sorted(items, key=lambda item: (item.get("created", 0), item["id"]), reverse=True)
    if query.get("starting_after"):
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(query["starting_after"]) + 1 :]
    limit = int(query.get("limit", 10))
    return {"object": "list", "data": ordered[:limit], "has_more": len(ordered) > limit, "url": url}


def _id_of(expandable: object) -> object:
    return expandable.get("id") if isinstance(expandable, dict) else expandable


def _matches_types(event_type: str, patterns: list[str]) -> bool:
    return not patterns or any(
        event_type == p or (p.endswith(".*") and event_type.startswith(p[:-1])) for p in patterns
    )


class _StripeHandler(BaseHTTPRequestHandler):
    server: FakeStripeApi

    def _answer(self) -> tuple[int, dict]:
        path, _, raw_query = self.path.partition("?")
        query = {key: values[-1] for key, values in urllib.parse.parse_qs(raw_query).items()}
        if self.server.fail_next:
            status, error = self.server.fail_next.pop(0)
            return status, {"error": error}
        if self.server.failure:
            status, error = self.server.failure
            return status, {"error": error}
        if path in self.server.failing_paths:
            status, error = self.server.failing_paths[path]
            return status, {"error": error}
        if path == "/v1/events":
            since = int(query.get("created[gte]", 0))
            types = [value for key, value in query.items() if key.startswith("types[")]
            undelivered = query.get("delivery_success") == "false"
            events = [
                event
                for event, delivered in self.server.events
                if event["created"] >= since
                and _matches_types(event["type"], types)
                and not (undelivered and delivered)
            ]
            return 200, _page(events, query, "/v1/events")
        if path.startswith(("/v1/events/", "/v2/core/events/")):
            event_id = path.rpartition("/")[2]
            if path.startswith("/v2/"):
                found = self.server.v2_events.get(event_id)
            else:
                found = next((event for event, _ in self.server.events if event["id"] == event_id), None)
            if found is None:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such event"}}
            return 200, found
        if path == "/v1/balance_transactions":
            since, before = int(query.get("created[gte]", 0)), int(query.get("created[lt]", 2**63))
            listed = [bt for bt in self.server.balance_transactions if since <= bt["created"] < before]
            if "data.source" not in query.values():
                listed = [{**bt, "source": _id_of(bt.get("source"))} for bt in listed]
            return 200, _page(listed, query, "/v1/balance_transactions")
        if path == "/v1/webhook_endpoints":
            return 200, _page(self.server.webhook_endpoints, query, "/v1/webhook_endpoints")
        if path == "/v1/billing/meters":
            return 200, _page(self.server.meters.listed_meters(), query, path)
        subscription_id = path.removeprefix("/v1/subscriptions").strip("/")
        if not subscription_id:
            return 200, _page(list(self.server.subscriptions.values()), query, "/v1/subscriptions")
        if subscription_id in self.server.subscriptions:
            return 200, self.server.subscriptions[subscription_id]
        return 404, {"error": {"type": "invalid_request_error", "message": "No such subscription"}}

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        time.sleep(self.server.delay_seconds)
        meter_answer = self.server.meters.answer("GET", self.path, self.headers, b"")
        self._send(*(meter_answer or (*self._answer(), {})))

    def do_POST(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.meters.answer("POST", self.path, self.headers, body)
        if answer is None:
            unknown = {"type": "invalid_request_error", "message": "Unrecognized request URL"}
            answer = 404, {"error": unknown}, {}
        self._send(*answer)

    def _send(self, status: int, body: dict, headers: dict[str, str]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args) -> None:
        pass


@contextmanager
def fake_stripe_api() -> Iterator[FakeStripeApi]:
    server = FakeStripeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "STRIPE_API_KEY", "WEBHOOK_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def moto_with_tables(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto's in-process AWS with the template's tables; yields logical id -> table name."""
    # DynamoDB applies each request atomically; moto's in-process backend does not lock, so
    # concurrent conditional writes could interleave inside it. One request at a time restores
    # the guarantee the code relies on, which is what the concurrency tests are about.
    original = BaseResponse.call_action
    lock = threading.Lock()

    def atomic_call_action(self: BaseResponse) -> Any:
        with lock:
            return original(self)

    monkeypatch.setattr(BaseResponse, "call_action", atomic_call_action)
    undo_transactions = install_item_rollback_transactions()
    with contextlib.ExitStack() as cleanup, mock_aws():
        cleanup.callback(undo_transactions)
        names = create_tables(boto3.client("dynamodb"), template)
        monkeypatch.setenv("BILLING_TABLE_NAME", names["BillingStateTable"])
        monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", names["IdempotencyTable"])
        monkeypatch.setenv("AUDIT_TABLE_NAME", names["AuditTable"])
        # A Licensing built without settings records its admin actions here.
        from billwatch.core.models import bind_audit_table

        bind_audit_table(names["AuditTable"])
        monkeypatch.setenv("USAGE_HISTORY_TABLE_NAME", names["UsageHistoryTable"])
        # A Licensing built without settings (as most tests build it) keeps closed periods here.
        from billwatch.core.models import bind_usage_history_table

        bind_usage_history_table(names["UsageHistoryTable"])
        yield names
