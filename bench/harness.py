"""The in-process Lambda harness shared by the ``bench.dynamo`` and ``bench.licensing`` children.

Both children run a real handler module (loaded with importlib under a unique name, billwatch and
the third-party packages from the built layer) against moto.server.ThreadedMotoServer on
127.0.0.1 (AWS_ENDPOINT_URL) with the tables template.yaml declares. This module holds what they
share: the moto server and the deployed function, request counting where botocore puts requests
on the wire (``Endpoint._send``, so retries count) and where clients issue them
(``_make_api_call``), the scenario summary, the interleaved warm timing against direct boto3
calls, and the child's command line.
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
from types import ModuleType
from typing import Any

from bench import TEMPLATE_PATH, mean, median, summary_ms
from bench.environment import LAMBDA_ENV, BenchError, FunctionConfig, function_config

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

    def timed(self, call: Callable[..., Any], *args: Any) -> tuple[Any, Window, float]:
        """``call(*args)`` inside a counting window: its result, the window and its wall time."""
        with self.window() as window:
            started = time.perf_counter()
            result = call(*args)
            elapsed = time.perf_counter() - started
        return result, window, elapsed


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


# ------------------------------------------------------------------------ the function on moto


class LambdaContext:
    memory_limit_in_mb = 512

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def load_handler_module(function: FunctionConfig, fresh_container: bool) -> ModuleType:
    """A new import of the handler module; ``fresh_container`` also re-imports billwatch itself."""
    if fresh_container:
        for name in [n for n in sys.modules if n == "billwatch" or n.startswith("billwatch.")]:
            del sys.modules[name]
    path = function.code_dir / (function.handler_module.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"bench_{function.code_dir.name}_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def moto_server(layer_python: Path, unset: tuple[str, ...] = ()) -> Iterator[str]:
    """The layer on sys.path, Lambda's environment and moto's server on loopback: its endpoint."""
    sys.dont_write_bytecode = True  # keep the built layer free of __pycache__
    sys.path.insert(0, str(layer_python))
    os.environ.update(LAMBDA_ENV)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_DYNAMODB", *unset):
        os.environ.pop(name, None)
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.ERROR)
    werkzeug.addHandler(logging.NullHandler())

    from moto.server import ThreadedMotoServer

    from devtools.moto_patches import install_item_rollback_transactions

    undo_transactions = install_item_rollback_transactions()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        undo_transactions()


@dataclass
class Deployment:
    tables: dict[str, str]  # logical id -> table name on moto
    function: FunctionConfig
    table_roles: dict[str, str]  # table name -> "billing" / "idempotency"
    counter: RequestCounter


def deploy(function_dir: Path, extra_env: Callable[[], dict[str, str]] | None = None) -> Deployment:
    """The template's tables on moto, the function's environment set, the request counter installed."""
    import boto3

    from devtools.template import create_tables, load_template

    tables = create_tables(boto3.client("dynamodb"), load_template(TEMPLATE_PATH), prefix="bench-")
    function = function_config(function_dir, tables)
    if extra_env is not None:
        function.environment.update(extra_env())
    os.environ.update(function.environment)
    roles = {
        function.environment["BILLING_TABLE_NAME"]: "billing",
        function.environment["IDEMPOTENCY_TABLE_NAME"]: "idempotency",
    }
    counter = RequestCounter()
    counter.install()
    return Deployment(tables, function, roles, counter)


class FunctionBench:
    """What both children's benches share: the function, the counter and the tables' roles."""

    def __init__(self, deployment: Deployment) -> None:
        self.function = deployment.function
        self.counter = deployment.counter
        self.table_roles = deployment.table_roles

    def context(self) -> LambdaContext:
        return LambdaContext(self.function.logical_id)

    def role(self, table: str | None) -> str:
        return self.table_roles.get(table or "", table or "-")

    def table_of(self, role: str) -> str:
        return next(table for table, name in self.table_roles.items() if name == role)

    def step(self, request: WireRequest) -> str:
        """``Operation(role)``, e.g. ``UpdateItem(billing)``."""
        return f"{request.operation}({self.role(request.table)})"

    def counts(self, window: Window) -> dict[str, Any]:
        """The DynamoDB requests on the wire in ``window``, their sequence and the client calls."""
        return {
            "dynamodb_requests": len(window.dynamodb),
            "sequence": [self.step(request) for request in window.dynamodb],
            "api_calls": len([c for c in window.api_calls if c.service == "dynamodb"]),
        }

    def load_module(self, fresh_container: bool) -> ModuleType:
        return load_handler_module(self.function, fresh_container)

    def new_warm_timing(self) -> WarmTiming:
        return WarmTiming(self.counter, self.step)


def scenario_result(
    key: str,
    title: str,
    runs: list[dict[str, Any]],
    problems: list[str],
    limit: int | None,
    exact: bool | None = None,
) -> dict[str, Any]:
    """A request-count scenario: the worst run against ``limit`` (``exact``: every run equal to it).

    ``exact=None`` leaves the ``exact`` and ``requests_min`` keys out.
    """
    counts = [run["dynamodb_requests"] for run in runs]
    problems = problems + [
        f"{run['api_calls']} API calls but {run['dynamodb_requests']} requests on the wire (retries?)"
        for run in runs
        if run["api_calls"] != run["dynamodb_requests"]
    ]
    if limit is not None and exact:
        problems += [f"{count} requests, expected exactly {limit}" for count in counts if count != limit]
    if limit is None:
        passed = None
    elif exact:
        passed = all(count == limit for count in counts) and not problems
    else:
        passed = max(counts) <= limit and not problems
    result: dict[str, Any] = {"key": key, "title": title, "limit": limit}
    if exact is not None:
        result["exact"] = exact
    result["requests"] = max(counts)
    if exact is not None:
        result["requests_min"] = min(counts)
    result |= {
        "pass": passed,
        "per_operation_total": dict(Counter(step for run in runs for step in run["sequence"])),
        "runs": runs,
        "problems": problems,
    }
    return result


# ------------------------------------------------------------------------ warm timing


class WarmTiming:
    """Handler calls against the same DynamoDB calls made directly, in interleaved batches."""

    SIDES = ("handler", "raw")

    def __init__(self, counter: RequestCounter, step: Callable[[WireRequest], str]) -> None:
        self.counter = counter
        self.step = step
        self.results: dict[str, list] = {
            f"{side}{suffix}": [] for side in self.SIDES for suffix in ("", "_api", "_wire", "_requests")
        }
        self.results["unexpected"] = []
        self.steps: dict[str, dict[str, list[tuple[float, int]]]] = {side: {} for side in self.SIDES}
        self.batch_ratios: list[float] = []

    def record(self, side: str, seconds: float, window: Window) -> None:
        for request in window.dynamodb:
            self.steps[side].setdefault(self.step(request), []).append((request.seconds, request.body_bytes))
        self.results[side].append(seconds)
        self.results[f"{side}_api"].append(window.api_seconds)
        self.results[f"{side}_wire"].append(window.wire_seconds)
        self.results[f"{side}_requests"].append(len(window.dynamodb))

    def unexpected(self, problem: str) -> None:
        self.results["unexpected"].append(problem)

    def run(
        self,
        handler_call: Callable[[bool], tuple[float, Window] | None],
        direct_call: Callable[[], Any],
        count: int,
        batch: int,
        warmup: int,
    ) -> None:
        """``warmup`` untimed calls a side, then ``count`` a side in batches, the order alternating.

        ``handler_call(record)`` makes one timed handler call and returns its time and window;
        ``direct_call()`` is timed here.
        """

        def handler_batch(size: int, record: bool) -> None:
            for _ in range(size):
                timed = handler_call(record)
                if record and timed is not None:
                    self.record("handler", *timed)

        def raw_batch(size: int, record: bool) -> None:
            for _ in range(size):
                _, window, elapsed = self.counter.timed(direct_call)
                if record:
                    self.record("raw", elapsed, window)

        handler_batch(warmup, record=False)
        raw_batch(warmup, record=False)
        for index in range(math.ceil(count / batch)):
            size = min(batch, count - index * batch)
            first, second = (handler_batch, raw_batch) if index % 2 == 0 else (raw_batch, handler_batch)
            first(size, record=True)
            second(size, record=True)
            handler, raw = self.results["handler"][-size:], self.results["raw"][-size:]
            self.batch_ratios.append(median(handler) / median(raw))

    def summary(self, unit: str) -> dict[str, Any]:
        """Both sides' figures; ``unit`` names the per-call request counts (``event``, ``check``)."""
        results, steps = self.results, self.steps
        return {
            "handler": summary_ms(results["handler"]),
            "raw": summary_ms(results["raw"]),
            "ratio_median": round(median(results["handler"]) / median(results["raw"]), 3),
            "ratio_mean": round(mean(results["handler"]) / mean(results["raw"]), 3),
            "handler_breakdown_median_ms": self._breakdown("handler"),
            "raw_breakdown_median_ms": self._breakdown("raw"),
            "batch_ratio_median_min_max": [
                round(median(self.batch_ratios), 3),
                round(min(self.batch_ratios), 3),
                round(max(self.batch_ratios), 3),
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
            f"handler_requests_per_{unit}": sorted(set(results["handler_requests"])),
            f"raw_requests_per_{unit}": sorted(set(results["raw_requests"])),
            "unexpected_outcomes": dict(Counter(results["unexpected"])),
        }

    def _breakdown(self, side: str) -> dict[str, float]:
        totals, api = self.results[side], self.results[f"{side}_api"]
        return {
            "in_dynamodb_api_calls": round(median(api) * 1000, 3),
            "on_the_wire": round(median(self.results[f"{side}_wire"]) * 1000, 3),
            "outside_api_calls": round(median([t - a for t, a in zip(totals, api, strict=True)]) * 1000, 3),
        }


def _median_ms(seconds: list[float]) -> float | None:
    return round(median(seconds) * 1000, 3) if seconds else None


def _median_int(values: list[int]) -> int | None:
    return int(median(values)) if values else None


# ------------------------------------------------------------------------ the child's command line


def child_main(
    prog: str,
    doc: str,
    run: Callable[[Path, int, int, int], dict[str, Any]],
    count_option: str,
    argv: list[str] | None = None,
) -> int:
    """``python -m <prog> --layer-python DIR --out FILE [--<count_option> N] [--batch N] [--warmup N]``."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.splitlines()[0])
    parser.add_argument("--layer-python", type=Path, required=True, help="the built layer's python/ dir")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument(f"--{count_option}", type=int, default=200, dest="count")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    results = run(args.layer_python.resolve(), args.count, args.batch, args.warmup)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
