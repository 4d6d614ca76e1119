"""DynamoDB requests per event, and warm handler time, against moto's server on loopback.

Run as a child process by ``python -m bench`` (its stdout, where the handler logs and EMF
metrics go, is redirected to .bench/handler-stdout.log); results are written as JSON:

    python -m bench.dynamo --layer-python .bench/layer/python --out .bench/dynamo.json

The real handler module (functions/<name>/app.py, loaded with importlib under a unique name)
runs against moto.server.ThreadedMotoServer on 127.0.0.1 (AWS_ENDPOINT_URL), with the tables
template.yaml declares. Requests are counted where botocore puts them on the wire
(``Endpoint._send``, so retries count) and where clients issue them (``_make_api_call``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    DUPLICATE_MAX_REQUESTS,
    NEW_EVENT_MAX_REQUESTS,
    TEMPLATE_PATH,
    UNHANDLED_MAX_REQUESTS,
    mean,
    median,
    summary_ms,
)
from bench.environment import LAMBDA_ENV, WEBHOOK_SECRET, BenchError, FunctionConfig, function_config

DYNAMODB_TARGET_PREFIX = "DynamoDB_"


# ------------------------------------------------------------------------ request counting


@dataclass(frozen=True)
class WireRequest:
    service: str
    operation: str
    table: str | None
    seconds: float = 0.0  # round trip, as seen by botocore (includes moto's server-side work)
    body_bytes: int = 0


@dataclass
class RequestCounter:
    """Every request botocore sends, whichever client (boto3, pynamodb's botocore client) sends it."""

    wire: list[WireRequest] = field(default_factory=list)
    api_calls: list[WireRequest] = field(default_factory=list)
    api_seconds: float = 0.0
    wire_seconds: float = 0.0

    def install(self) -> None:
        from botocore.client import BaseClient
        from botocore.endpoint import Endpoint

        counter = self
        original_send = Endpoint._send
        original_call = BaseClient._make_api_call

        def _send(endpoint: Any, request: Any) -> Any:
            started = time.perf_counter()
            try:
                return original_send(endpoint, request)
            finally:
                elapsed = time.perf_counter() - started
                counter.wire_seconds += elapsed
                counter.wire.append(_describe_wire(request, elapsed))

        def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return original_call(client, operation_name, api_params)
            finally:
                counter.api_seconds += time.perf_counter() - started
                service = client.meta.service_model.service_name
                counter.api_calls.append(WireRequest(service, operation_name, api_params.get("TableName")))

        Endpoint._send = _send
        BaseClient._make_api_call = _make_api_call

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        window = Window(len(self.wire), len(self.api_calls), self.api_seconds, self.wire_seconds)
        try:
            yield window
        finally:
            window.wire = self.wire[window.wire_start :]
            window.api_calls = self.api_calls[window.api_start :]
            window.api_seconds = self.api_seconds - window.api_seconds_start
            window.wire_seconds = self.wire_seconds - window.wire_seconds_start


@dataclass
class Window:
    wire_start: int
    api_start: int
    api_seconds_start: float
    wire_seconds_start: float
    wire: list[WireRequest] = field(default_factory=list)
    api_calls: list[WireRequest] = field(default_factory=list)
    api_seconds: float = 0.0
    wire_seconds: float = 0.0

    @property
    def dynamodb(self) -> list[WireRequest]:
        return [request for request in self.wire if request.service == "dynamodb"]


def _describe_wire(request: Any, seconds: float) -> WireRequest:
    target = request.headers.get("X-Amz-Target")
    target = target.decode() if isinstance(target, bytes) else target
    body = request.body or b""
    size = len(body) if isinstance(body, bytes | str) else 0
    table = None
    if target and target.startswith(DYNAMODB_TARGET_PREFIX):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            table = json.loads(body.decode() if isinstance(body, bytes) else body).get("TableName")
        return WireRequest("dynamodb", target.rsplit(".", 1)[-1], table, seconds, size)
    return WireRequest(str(request.url), target or request.method, None, seconds, size)


# ------------------------------------------------------------------------ Stripe events


class EventFactory:
    """Realistic signed deliveries (devtools.stripe_events), `created` strictly increasing."""

    def __init__(self) -> None:
        from devtools import stripe_events

        self.se = stripe_events
        self.clock = int(time.time()) - 7 * 86_400

    def _created(self) -> int:
        self.clock += 1
        return self.clock

    def subscription(self, event_type: str, account: str | None, customer: str, sub_id: str) -> dict:
        created = self._created()
        sub = self.se.subscription(
            id=sub_id,
            customer=customer,
            metadata={"account_id": account} if account else {},
            created=created - 3600,
            current_period_start=created - 3600,
            current_period_end=created + 30 * 86_400,
        )
        return self.se.event(event_type, sub, created=created)

    def invoice_paid(self, account: str, customer: str, sub_id: str) -> dict:
        created = self._created()
        invoice = self.se.invoice(
            customer=customer,
            subscription=sub_id,
            subscription_metadata={"account_id": account},
            created=created,
            period_start=created,
            period_end=created + 30 * 86_400,
        )
        return self.se.event("invoice.paid", invoice, created=created)

    def unhandled(self, account: str, customer: str) -> dict:
        obj = self.se.customer(id=customer, metadata={"account_id": account})
        return self.se.event("customer.created", obj, created=self._created())

    def entitlements(self, customer: str) -> dict:
        summary = self.se.entitlement_summary(customer=customer, lookup_keys=("sso",))
        return self.se.event(
            "entitlements.active_entitlement_summary.updated", summary, created=self._created()
        )

    def http(self, stripe_event: dict) -> dict:
        """The API Gateway (HTTP API v2) event carrying the delivery, signed now."""
        from devtools.signing import stripe_signature_header

        body = json.dumps(stripe_event).encode()
        headers = {
            "stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET),
            "content-type": "application/json; charset=utf-8",
        }
        return self.se.api_gateway_event(body, headers=headers)


class LambdaContext:
    memory_limit_in_mb = 512

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def load_handler(function: FunctionConfig, fresh_container: bool) -> Callable[[dict, Any], dict]:
    """A new import of the handler module; ``fresh_container`` also re-imports billwatch itself."""
    if fresh_container:
        for name in [n for n in sys.modules if n == "billwatch" or n.startswith("billwatch.")]:
            del sys.modules[name]
    path = function.code_dir / (function.handler_module.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"bench_handler_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function.handler_name)


# ------------------------------------------------------------------------ the run


class Bench:
    def __init__(
        self, function: FunctionConfig, counter: RequestCounter, table_roles: dict[str, str]
    ) -> None:
        self.function = function
        self.counter = counter
        self.table_roles = table_roles
        self.events = EventFactory()

    def deliver(self, handler: Callable, stripe_event: dict) -> tuple[str, Window, float]:
        http_event = self.events.http(stripe_event)
        context = LambdaContext(self.function.logical_id)
        with self.counter.window() as window:
            started = time.perf_counter()
            response = handler(http_event, context)
            elapsed = time.perf_counter() - started
        body = json.loads(response.get("body") or "{}")
        if response.get("statusCode") != 200:
            return f"http {response.get('statusCode')}: {body}", window, elapsed
        return str(body.get("outcome")), window, elapsed

    def role(self, request: WireRequest) -> str:
        return self.table_roles.get(request.table or "", request.table or "-")

    def scenario(
        self, key: str, title: str, handler: Callable, events: list[dict], expected: str, limit: int | None
    ) -> dict[str, Any]:
        runs = []
        for stripe_event in events:
            outcome, window, _ = self.deliver(handler, stripe_event)
            runs.append(
                {
                    "event_type": stripe_event["type"],
                    "outcome": outcome,
                    "dynamodb_requests": len(window.dynamodb),
                    "sequence": [f"{r.operation}({self.role(r)})" for r in window.dynamodb],
                    "api_calls": len([c for c in window.api_calls if c.service == "dynamodb"]),
                    "other_requests": [
                        f"{r.service} {r.operation}" for r in window.wire if r.service != "dynamodb"
                    ],
                }
            )
        worst = max(run["dynamodb_requests"] for run in runs)
        by_operation = Counter(step for run in runs for step in run["sequence"])
        problems = [
            f"outcome {run['outcome']!r}, expected {expected!r}" for run in runs if run["outcome"] != expected
        ]
        problems += [
            f"{run['api_calls']} API calls but {run['dynamodb_requests']} requests on the wire (retries?)"
            for run in runs
            if run["api_calls"] != run["dynamodb_requests"]
        ]
        return {
            "key": key,
            "title": title,
            "limit": limit,
            "requests": worst,
            "pass": None if limit is None else (worst <= limit and not problems),
            "per_operation_total": dict(by_operation),
            "runs": runs,
            "problems": problems,
        }

    # -------------------------------------------------------------- scenarios

    def request_counts(self) -> tuple[list[dict[str, Any]], Callable, list[tuple[str, str]]]:
        factory = self.events
        scenarios: list[dict[str, Any]] = []
        handler = load_handler(self.function, fresh_container=True)

        scenarios.append(
            self.scenario(
                "cold_first_event",
                "first event in a fresh container (new account W) - informational",
                handler,
                [
                    factory.subscription(
                        "customer.subscription.created", "acct_bench_w", "cus_bench_w", "sub_bench_w"
                    )
                ],
                "applied",
                None,
            )
        )
        account, customer, sub_id = "acct_bench_a", "cus_bench_a", "sub_bench_a"
        scenarios.append(
            self.scenario(
                "c_new_account",
                "(c) first event of a brand-new account: +1 write for the customer redirect, once per"
                " account - informational",
                handler,
                [factory.subscription("customer.subscription.created", account, customer, sub_id)],
                "applied",
                None,
            )
        )
        updates = [
            factory.subscription("customer.subscription.updated", account, customer, sub_id) for _ in range(3)
        ]
        invoices = [factory.invoice_paid(account, customer, sub_id) for _ in range(3)]
        established = self.scenario(
            "a_established_subscription_updated",
            "(a) established account: customer.subscription.updated",
            handler,
            updates,
            "applied",
            NEW_EVENT_MAX_REQUESTS,
        )
        scenarios.append(established)
        scenarios.append(
            self.scenario(
                "a_established_invoice_paid",
                "(a) established account: invoice.paid",
                handler,
                invoices,
                "applied",
                NEW_EVENT_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "b_duplicate",
                "(b) duplicate delivery (same event id again)",
                handler,
                [updates[-1], invoices[-1]],
                "duplicate",
                DUPLICATE_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "d_unhandled",
                "(d) unhandled event type (customer.created)",
                handler,
                [factory.unhandled(account, customer)],
                "unhandled",
                UNHANDLED_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "e_customer_only_warm",
                "customer-only event (entitlements summary), link cached in the container - informational",
                handler,
                [factory.entitlements(customer)],
                "applied",
                None,
            )
        )
        fresh = load_handler(self.function, fresh_container=True)
        scenarios.append(
            self.scenario(
                "cold_established",
                "fresh container: first event, established account - informational",
                fresh,
                [factory.subscription("customer.subscription.updated", account, customer, sub_id)],
                "applied",
                None,
            )
        )
        scenarios.append(
            self.scenario(
                "e_customer_only_cold",
                "fresh container: customer-only event, link not cached yet - informational",
                fresh,
                [factory.entitlements(customer)],
                "applied",
                None,
            )
        )
        last = established["runs"][-1]["sequence"]
        sequence = [(step.partition("(")[0], step.partition("(")[2].rstrip(")")) for step in last]
        return scenarios, handler, sequence

    def role_table(self, role: str) -> str:
        return next(table for table, name in self.table_roles.items() if name == role)

    # -------------------------------------------------------------- warm timing

    def warm_timing(
        self, handler: Callable, sequence: list[tuple[str, str]], events: int, batch: int, warmup: int
    ) -> dict[str, Any]:
        import boto3

        raw = RawImplementation(boto3.client("dynamodb"), self.role_table, sequence)
        account, customer, sub_id = "acct_bench_a", "cus_bench_a", "sub_bench_a"
        factory = self.events

        def handler_batch(count: int, record: bool) -> None:
            stripe_events = [
                factory.subscription("customer.subscription.updated", account, customer, sub_id)
                for _ in range(count)
            ]
            for stripe_event in stripe_events:
                http_event = factory.http(stripe_event)  # signing and wrapping are not timed
                context = LambdaContext(self.function.logical_id)
                with self.counter.window() as window:
                    started = time.perf_counter()
                    response = handler(http_event, context)
                    elapsed = time.perf_counter() - started
                if not record:
                    continue
                outcome = json.loads(response.get("body") or "{}").get("outcome")
                record_steps("handler", window)
                results["handler"].append(elapsed)
                results["handler_api"].append(window.api_seconds)
                results["handler_wire"].append(window.wire_seconds)
                results["handler_requests"].append(len(window.dynamodb))
                if outcome != "applied":
                    results["unexpected"].append(f"{response.get('statusCode')} {outcome}")

        def raw_batch(count: int, record: bool) -> None:
            for _ in range(count):
                with self.counter.window() as window:
                    started = time.perf_counter()
                    raw.event()
                    elapsed = time.perf_counter() - started
                if record:
                    record_steps("raw", window)
                    results["raw"].append(elapsed)
                    results["raw_api"].append(window.api_seconds)
                    results["raw_wire"].append(window.wire_seconds)
                    results["raw_requests"].append(len(window.dynamodb))

        steps: dict[str, dict[str, list[tuple[float, int]]]] = {"handler": {}, "raw": {}}

        def record_steps(side: str, window: Window) -> None:
            for request in window.dynamodb:
                key = f"{request.operation}({self.role(request)})"
                steps[side].setdefault(key, []).append((request.seconds, request.body_bytes))

        results: dict[str, list] = {
            key: []
            for key in (
                "handler",
                "handler_api",
                "handler_wire",
                "handler_requests",
                "raw",
                "raw_api",
                "raw_wire",
                "raw_requests",
                "unexpected",
            )
        }
        handler_batch(warmup, record=False)
        raw_batch(warmup, record=False)
        rounds = math.ceil(events / batch)
        batch_ratios = []
        for index in range(rounds):
            size = min(batch, events - index * batch)
            first, second = (handler_batch, raw_batch) if index % 2 == 0 else (raw_batch, handler_batch)
            first(size, record=True)
            second(size, record=True)
            batch_ratios.append(median(results["handler"][-size:]) / median(results["raw"][-size:]))

        handler_median = median(results["handler"])
        raw_median = median(results["raw"])
        return {
            "events": events,
            "batch": batch,
            "warmup": warmup,
            "raw_sequence": [f"{op}({role})" for op, role in sequence],
            "handler": summary_ms(results["handler"]),
            "raw": summary_ms(results["raw"]),
            "ratio_median": round(handler_median / raw_median, 3),
            "ratio_mean": round(mean(results["handler"]) / mean(results["raw"]), 3),
            "handler_breakdown_median_ms": {
                "in_dynamodb_api_calls": round(median(results["handler_api"]) * 1000, 3),
                "on_the_wire": round(median(results["handler_wire"]) * 1000, 3),
                "outside_api_calls": round(
                    median([t - a for t, a in zip(results["handler"], results["handler_api"], strict=True)])
                    * 1000,
                    3,
                ),
            },
            "raw_breakdown_median_ms": {
                "in_dynamodb_api_calls": round(median(results["raw_api"]) * 1000, 3),
                "on_the_wire": round(median(results["raw_wire"]) * 1000, 3),
                "outside_api_calls": round(
                    median([t - a for t, a in zip(results["raw"], results["raw_api"], strict=True)]) * 1000, 3
                ),
            },
            "batch_ratio_median_min_max": [
                round(median(batch_ratios), 3),
                round(min(batch_ratios), 3),
                round(max(batch_ratios), 3),
            ],
            "per_request": [
                {
                    "request": key,
                    "handler_ms": _median_ms([seconds for seconds, _ in steps["handler"].get(key, [])]),
                    "raw_ms": _median_ms([seconds for seconds, _ in steps["raw"].get(key, [])]),
                    "handler_bytes": _median_int([size for _, size in steps["handler"].get(key, [])]),
                    "raw_bytes": _median_int([size for _, size in steps["raw"].get(key, [])]),
                }
                for key in dict.fromkeys([*steps["handler"], *steps["raw"]])
            ],
            "handler_requests_per_event": sorted(set(results["handler_requests"])),
            "raw_requests_per_event": sorted(set(results["raw_requests"])),
            "unexpected_outcomes": dict(Counter(results["unexpected"])),
        }


def _median_ms(seconds: list[float]) -> float | None:
    return round(median(seconds) * 1000, 3) if seconds else None


def _median_int(values: list[int]) -> int | None:
    return int(median(values)) if values else None


class RawImplementation:
    """What a minimal implementation would send per event: the handler's calls, made directly."""

    def __init__(self, client: Any, table_of: Callable[[str], str], sequence: list[tuple[str, str]]) -> None:
        self.client = client
        self.table_of = table_of
        self.account = "acct_bench_raw"
        self.clock = int(time.time())
        self.steps = []
        for operation, role in sequence:
            step = getattr(self, f"_{operation}_{role}", None)
            if step is None:
                raise BenchError(f"no direct equivalent for {operation} on the {role} table")
            self.steps.append(step)

    def event(self) -> None:
        self.clock += 1
        event_id = f"evt_raw_{uuid.uuid4().hex[:24]}"
        context = {"id": event_id, "version": f"{self.clock:012d}|012|{event_id}"}
        for step in self.steps:
            step(context)

    def _PutItem_idempotency(self, context: dict) -> None:
        now = int(time.time())
        self.client.put_item(
            TableName=self.table_of("idempotency"),
            Item={
                "id": {"S": context["id"]},
                "expiration": {"N": str(now + 345_600)},
                "status": {"S": "INPROGRESS"},
                "in_progress_expiration": {"N": str(now * 1000 + 15_000)},
            },
            ConditionExpression="attribute_not_exists(#id) OR #expiry < :now",
            ExpressionAttributeNames={"#id": "id", "#expiry": "expiration"},
            ExpressionAttributeValues={":now": {"N": str(now)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def _UpdateItem_idempotency(self, context: dict) -> None:
        data = {
            "outcome": "applied",
            "account_id": self.account,
            "previous_tier": "pro",
            "previous_plan_tier": "pro",
        }
        self.client.update_item(
            TableName=self.table_of("idempotency"),
            Key={"id": {"S": context["id"]}},
            UpdateExpression="SET #data = :data, #expiry = :expiry, #status = :status",
            ExpressionAttributeNames={"#data": "data", "#expiry": "expiration", "#status": "status"},
            ExpressionAttributeValues={
                ":data": {"S": json.dumps(data)},
                ":expiry": {"N": str(int(time.time()) + 345_600)},
                ":status": {"S": "COMPLETED"},
            },
        )

    def _UpdateItem_billing(self, context: dict) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())
        self.client.update_item(
            TableName=self.table_of("billing"),
            Key={"pk": {"S": self.account}},
            UpdateExpression=(
                "SET #version = :version, updated_at = :now, created_at = if_not_exists(created_at, :now), "
                "subscription_id = :sub, subscription_status = :status, tier = :tier, plan_tier = :tier, "
                "price_id = :price, price_lookup_key = :lookup, current_period_start = :start, "
                "current_period_end = :end, cancel_at_period_end = :cancel REMOVE trial_end ADD revision :one"
            ),
            ConditionExpression="attribute_not_exists(merged_into) AND "
            "(attribute_not_exists(#version) OR #version <> :version)",
            ExpressionAttributeNames={"#version": "subscription_version"},
            ExpressionAttributeValues={
                ":version": {"S": context["version"]},
                ":now": {"S": now},
                ":sub": {"S": "sub_bench_raw"},
                ":status": {"S": "active"},
                ":tier": {"S": "pro"},
                ":price": {"S": "price_pro_monthly"},
                ":lookup": {"S": "pro_monthly"},
                ":start": {"N": str(self.clock - 3600)},
                ":end": {"N": str(self.clock + 30 * 86_400)},
                ":cancel": {"BOOL": False},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_OLD",
        )

    def _GetItem_billing(self, context: dict) -> None:
        self.client.get_item(
            TableName=self.table_of("billing"), Key={"pk": {"S": self.account}}, ConsistentRead=True
        )

    def _GetItem_idempotency(self, context: dict) -> None:
        self.client.get_item(
            TableName=self.table_of("idempotency"), Key={"id": {"S": context["id"]}}, ConsistentRead=True
        )

    def _PutItem_billing(self, context: dict) -> None:
        self.client.put_item(
            TableName=self.table_of("billing"),
            Item={"pk": {"S": f"cus_raw_{context['id']}"}, "merged_into": {"S": self.account}},
            ConditionExpression="attribute_not_exists(pk) OR merged_into = :account",
            ExpressionAttributeValues={":account": {"S": self.account}},
        )


# ------------------------------------------------------------------------ entry point


def _quiet_server_logs() -> None:
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.ERROR)
    werkzeug.addHandler(logging.NullHandler())


def run(layer_python: Path, events: int, batch: int, warmup: int) -> dict[str, Any]:
    sys.dont_write_bytecode = True  # keep the built layer free of __pycache__
    sys.path.insert(0, str(layer_python))
    os.environ.update(LAMBDA_ENV)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(name, None)
    _quiet_server_logs()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"

        import boto3

        from devtools.template import create_tables, load_template

        tables = create_tables(boto3.client("dynamodb"), load_template(TEMPLATE_PATH), prefix="bench-")
        function = function_config(tables)
        os.environ.update(function.environment)
        roles = {
            function.environment["BILLING_TABLE_NAME"]: "billing",
            function.environment["IDEMPOTENCY_TABLE_NAME"]: "idempotency",
        }
        counter = RequestCounter()
        counter.install()
        bench = Bench(function, counter, roles)
        scenarios, handler, sequence = bench.request_counts()
        warm = bench.warm_timing(handler, sequence, events=events, batch=batch, warmup=warmup)
        import billwatch

        return {
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "tables": tables,
            "billwatch_from": str(Path(billwatch.__file__).parent),
            "scenarios": scenarios,
            "warm": warm,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dynamo", description=__doc__.splitlines()[0])
    parser.add_argument("--layer-python", type=Path, required=True, help="the built layer's python/ dir")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    results = run(args.layer_python.resolve(), args.events, args.batch, args.warmup)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
