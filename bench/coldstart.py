"""Cold start: importing the handler module in a fresh interpreter, against `import boto3`.

Every measurement is a new ``python -S -c`` process whose only import roots are the function
dir, the built layer and the emulated runtime (PYTHONPATH, in Lambda's order); ``-S`` keeps
the venv's site-packages out of sys.path. The child times the import itself with
time.perf_counter (wall time, no interpreter start-up) and prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import FUNCTION_DIR, LICENSING_FUNCTION_DIR, TEMPLATE_PATH, median, summary_ms
from bench.environment import (
    LAMBDA_ENV,
    WORK_DIR,
    BenchError,
    FunctionConfig,
    function_config,
    lambda_child_env,
)

_MARK = "BENCH_RESULT "
REFERENCE_HANDLER_DIR = Path(__file__).resolve().parent / "reference_handler"
# The first event in a fresh process / import boto3 + one client + one UpdateItem, same run.
FIRST_EVENT_MAX_RATIO = 1.3

_TIMED_IMPORT = """
import time
_t0 = time.perf_counter()
import {module}
_t1 = time.perf_counter()
import json, sys
_leaks = sorted(
    name for name, mod in list(sys.modules.items())
    if "site-packages" in (getattr(mod, "__file__", None) or "")
)
print({mark!r} + json.dumps({{"seconds": _t1 - _t0, "modules": len(sys.modules), "leaks": _leaks,
    "requests_imported": "requests" in sys.modules}}))
"""

# Work the handler module does at import besides importing: boto3/botocore client creation.
_PROFILED_IMPORT = """
import time
import botocore.session
_clients = []
_create_client = botocore.session.Session.create_client
def _timed_create_client(self, service_name, *args, **kwargs):
    started = time.perf_counter()
    try:
        return _create_client(self, service_name, *args, **kwargs)
    finally:
        _clients.append((service_name, time.perf_counter() - started))
botocore.session.Session.create_client = _timed_create_client
import {module}
import json
print({mark!r} + json.dumps({{"clients": _clients}}))
"""


@dataclass
class Variant:
    """One way of running the comparison: an interpreter and the import roots it sees."""

    key: str
    label: str
    python: str
    pythonpath: list[Path]
    gated: bool = False
    boto3: list[float] = field(default_factory=list)
    handler: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _run_child(
    argv: list[str], function: FunctionConfig, env: dict[str, str], what: str, stdin: str | None = None
) -> tuple[str, str]:
    """A child process's ``_MARK`` line (without the mark) and its stderr; ``what`` names it on failure."""
    result = subprocess.run(
        argv,
        cwd=function.code_dir,  # Lambda's working directory is the function code (/var/task)
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    payload = next((line for line in result.stdout.splitlines() if line.startswith(_MARK)), None)
    if result.returncode != 0 or payload is None:
        raise BenchError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
        )
    return payload[len(_MARK) :], result.stderr


def _child(variant: Variant, function: FunctionConfig, code: str, *flags: str) -> tuple[str, str]:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    argv = [variant.python, "-S", *flags, "-c", code]
    env = lambda_child_env(function, variant.pythonpath)
    return _run_child(argv, function, env, f"cold-start child ({variant.label})")


def _timed(variant: Variant, function: FunctionConfig, module: str) -> dict:
    payload, _ = _child(variant, function, _TIMED_IMPORT.format(module=module, mark=_MARK))
    data = json.loads(payload)
    if data["leaks"]:
        raise BenchError(
            f"{variant.label}: modules imported from outside the emulated roots: {data['leaks']}"
        )
    return data


def run_variant(variant: Variant, function: FunctionConfig, rounds: int) -> dict[str, Any]:
    """Interleaved rounds (order alternating each round), after one discarded warm-up round each."""
    handler_module = function.handler_module
    _timed(variant, function, "boto3")
    first = _timed(variant, function, handler_module)
    for index in range(rounds):
        order = ("boto3", handler_module) if index % 2 == 0 else (handler_module, "boto3")
        for module in order:
            seconds = _timed(variant, function, module)["seconds"]
            (variant.boto3 if module == "boto3" else variant.handler).append(seconds)
    boto3_ms = median(variant.boto3) * 1000
    handler_ms = median(variant.handler) * 1000
    return {
        "label": variant.label,
        "python": variant.python,
        "pythonpath": [str(path) for path in variant.pythonpath],
        "gated": variant.gated,
        "rounds": rounds,
        "boto3": summary_ms(variant.boto3),
        "handler": summary_ms(variant.handler),
        "ratio_median": round(handler_ms / boto3_ms, 3),
        "extra_ms_median": round(handler_ms - boto3_ms, 2),
        "handler_modules_loaded": first["modules"],
        "requests_imported": first["requests_imported"],
        **variant.details,
    }


# ------------------------------------------------------------------------ -X importtime


@dataclass
class _Node:
    name: str
    self_us: int
    cumulative_us: int
    depth: int
    children: list[_Node] = field(default_factory=list)
    parent: _Node | None = None


def parse_importtime(stderr: str) -> list[_Node]:
    """All nodes of a ``-X importtime`` report, parents linked (the report is post-order)."""
    nodes: list[_Node] = []
    pending: list[_Node] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.partition(":")[2].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        node = _Node(name.strip(), int(self_us), int(cumulative_us), depth)
        while pending and pending[-1].depth > depth:
            child = pending.pop()
            child.parent = node
            node.children.insert(0, child)
        pending.append(node)
        nodes.append(node)
    return nodes


def _beyond(node: _Node, baseline: set[str], memo: dict[int, int]) -> int:
    """Self time of the subtree, counting only modules that `import boto3` alone does not load."""
    key = id(node)
    if key not in memo:
        own = 0 if node.name in baseline else node.self_us
        memo[key] = own + sum(_beyond(child, baseline, memo) for child in node.children)
    return memo[key]


def _top_package(name: str) -> str:
    return name.split(".", 1)[0]


def _importtime(variant: Variant, function: FunctionConfig, module: str) -> tuple[list[_Node], set[str]]:
    """The -X importtime tree of ``import module`` and the modules loaded at the end.

    The loaded set is printed without importing anything else, so nothing extra shows up.
    """
    code = f"import {module}\nimport sys\nprint({_MARK!r} + ' '.join(sorted(sys.modules)))"
    payload, stderr = _child(variant, function, code, "-X", "importtime")
    return parse_importtime(stderr), set(payload.split())


def import_profile(variant: Variant, function: FunctionConfig, runs: int = 3) -> dict[str, Any]:
    """Which modules the handler import adds on top of boto3's, and what they cost (medians of runs)."""
    baseline: set[str] = set()
    baseline_attempts: set[str] = set()  # includes optional imports boto3 itself tries and misses
    for _ in range(runs):
        nodes, loaded = _importtime(variant, function, "boto3")
        baseline |= loaded
        baseline_attempts |= {node.name for node in nodes}

    per_module: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    importer: dict[str, str] = {}
    not_found: dict[str, str] = {}
    handler_module = function.handler_module
    for _ in range(runs):
        nodes, loaded = _importtime(variant, function, handler_module)
        memo: dict[int, int] = {}
        for node in nodes:
            if node.name in baseline:
                continue
            parent = node.parent.name if node.parent else "(top level)"
            if node.name not in loaded:  # an optional import that failed (module not installed)
                if node.name not in baseline_attempts:
                    not_found[node.name] = parent
                continue
            stats = per_module[node.name]
            stats["self"].append(node.self_us)
            stats["cumulative"].append(node.cumulative_us)
            stats["beyond"].append(_beyond(node, baseline, memo))
            importer[node.name] = parent

    def ms(values: list[int]) -> float:
        return round(median(values) / 1000, 2)

    modules: list[dict[str, Any]] = [
        {
            "module": name,
            "imported_by": importer[name],
            "cumulative_beyond_boto3_ms": ms(stats["beyond"]),
            "cumulative_ms": ms(stats["cumulative"]),
            "self_ms": ms(stats["self"]),
        }
        for name, stats in per_module.items()
    ]
    packages: dict[str, dict[str, float]] = defaultdict(lambda: {"self_ms": 0.0, "modules": 0})
    for entry in modules:
        if entry["module"] == handler_module:
            continue
        package = packages[_top_package(entry["module"])]
        package["self_ms"] = round(package["self_ms"] + entry["self_ms"], 2)
        package["modules"] += 1
    by_package = [
        {"package": name, **values}
        for name, values in sorted(packages.items(), key=lambda item: item[1]["self_ms"], reverse=True)
    ]
    body = next((entry for entry in modules if entry["module"] == handler_module), None)

    clients: list[list[tuple[str, float]]] = []
    for _ in range(runs):
        payload, _ = _child(variant, function, _PROFILED_IMPORT.format(module=handler_module, mark=_MARK))
        clients.append(json.loads(payload)["clients"])
    services = [service for service, _ in clients[0]]
    return {
        "runs": runs,
        "baseline_modules": len(baseline),
        "extra_modules": len(modules),
        "attempted_not_found": [f"{name} <- {parent}" for name, parent in sorted(not_found.items())],
        "top_cumulative": sorted(modules, key=lambda m: m["cumulative_beyond_boto3_ms"], reverse=True)[:10],
        "top_self": sorted(modules, key=lambda m: m["self_ms"], reverse=True)[:10],
        "by_package": by_package,
        "handler_module_body_ms": body["self_ms"] if body else None,
        "clients_created_at_import": services,
        "client_creation_ms": round(median([sum(s for _, s in run) for run in clients]) * 1000, 2),
    }


def default_variants(
    function: FunctionConfig, layer_python: Path, runtime: Path, layer_pyc: Path, py313: str | None
) -> list[Variant]:
    """The gated run imports the layer with bytecode, as it ships: its Makefile precompiles it for
    the target Python (Lambda cannot write .pyc files to /opt), here for the measuring one."""
    variants = [
        Variant(
            "primary",
            f"layer with .pyc, as shipped, {_version(sys.executable)}",
            sys.executable,
            [function.code_dir, layer_pyc, runtime],
            gated=True,
        ),
        Variant(
            "layer_without_bytecode",
            f"layer without .pyc, {_version(sys.executable)}",
            sys.executable,
            [function.code_dir, layer_python, runtime],
        ),
    ]
    if py313:
        variants.append(
            Variant(
                "python313",
                f"layer as built (3.13 .pyc), {_version(py313)}",
                py313,
                [function.code_dir, layer_python, runtime],
            )
        )
    return variants


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-S", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"CPython {out.stdout.strip() or '?'}"


# ------------------------------------------------------------------------ first event

# What the first invocation of a new container costs, import included: the handler's first answer
# against the least any DynamoDB handler pays (import boto3, one client, one request).
# The Lambda context a child's handler gets (a format string: {function}).
_CONTEXT = """
class _Context:
    function_name = {function!r}
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + {function!r}
    aws_request_id = "bench"
    def get_remaining_time_in_millis(self):
        return 15000
"""
_FIRST_EVENT = (
    """
import json, sys, time
_event = json.loads(sys.stdin.read())
"""
    + _CONTEXT
    + """
_t0 = time.perf_counter()
import {module}
_t1 = time.perf_counter()
{wire}
_answer = {module}.{handler}(_event, _Context())
_t2 = time.perf_counter()
print({mark!r} + json.dumps({{"seconds": _t2 - _t0, "import_seconds": _t1 - _t0, "answer": _answer,
    "requests": _wire}}))
"""
)

_FLOOR = """
import json, sys, time
sys.stdin.read()
_t0 = time.perf_counter()
import boto3
_t1 = time.perf_counter()
{wire}
boto3.client("dynamodb").update_item(
    TableName={table!r},
    Key={{"pk": {{"S": "bench#first-event-floor"}}}},
    UpdateExpression="ADD floor_requests :one",
    ExpressionAttributeValues={{":one": {{"N": "1"}}}},
)
_t2 = time.perf_counter()
print({mark!r} + json.dumps({{"seconds": _t2 - _t0, "import_seconds": _t1 - _t0, "requests": _wire}}))
"""


# Each request's time on the wire (botocore's Endpoint._send: from sending to the response read),
# installed once the import is done. Set-up, serialising and parsing stay outside it.
_WIRE = """
import botocore.endpoint
_wire = []
_send = botocore.endpoint.Endpoint._send
def _timed_send(self, request):
    started = time.perf_counter()
    try:
        return _send(self, request)
    finally:
        _wire.append(time.perf_counter() - started)
botocore.endpoint.Endpoint._send = _timed_send
"""


# A warm container answering the events that set up the rounds' accounts, untimed.
_SEED = (
    """
import json, sys
_events = json.loads(sys.stdin.read())
"""
    + _CONTEXT
    + """
import {module}
_answers = [{module}.{handler}(_event, _Context()) for _event in _events]
print({mark!r} + json.dumps({{"answers": _answers}}))
"""
)


@dataclass
class FirstEvent:
    """One function's first event: how to build it, and whether the handler's answer is the one expected.

    ``seed`` gives the events that set up ``count`` rounds (answered beforehand by one warm
    container); ``event`` gives the next round's event. Every round has an account of its own, so
    no round finds what an earlier one left on an item. ``code_dir`` runs other code with the
    function's environment: the reference handler, which has no target of its own.
    """

    key: str
    label: str
    function_dir: Path
    event: Callable[[], dict[str, Any]]
    answered: Callable[[dict[str, Any]], bool]
    seed: Callable[[int], list[dict[str, Any]]] = lambda count: []
    code_dir: Path | None = None

    @property
    def gated(self) -> bool:
        return self.code_dir is None


def _first_event_child(
    code: str, function: FunctionConfig, pythonpath: list[Path], endpoint: str, stdin: Any
) -> dict[str, Any]:
    env = lambda_child_env(function, pythonpath)
    env["AWS_ENDPOINT_URL"] = endpoint
    argv = [sys.executable, "-S", "-c", code]
    what = f"first-event child ({function.logical_id})"
    payload, _ = _run_child(argv, function, env, what, stdin=json.dumps(stdin))
    return json.loads(payload)


def _webhook_first_event() -> FirstEvent:
    """A subscription update for a customer already linked to its account: the steady state."""
    from bench.dynamo import EventFactory

    events = EventFactory()
    subscribers: list[tuple[str, str, str]] = []  # (account, customer, subscription), one per round

    def seed(count: int) -> list[dict[str, Any]]:
        subscribers[:] = [
            (f"acct_first{token}", f"cus_first{token}", f"sub_first{token}")
            for token in (uuid.uuid4().hex[:12] for _ in range(count))
        ]
        return [
            events.http(events.subscription("customer.subscription.created", *subscriber))
            for subscriber in subscribers
        ]

    def event() -> dict[str, Any]:  # signed when the child starts
        return events.http(events.subscription("customer.subscription.updated", *subscribers.pop()))

    def answered(answer: dict[str, Any]) -> bool:
        body = json.loads(answer.get("body") or "{}")
        return answer.get("statusCode") == 200 and body.get("outcome") == "applied"

    return FirstEvent(
        "webhook", "webhook intake: a signed subscription event", FUNCTION_DIR, event, answered, seed
    )


def _reference_first_event() -> FirstEvent:
    """bench/reference_handler on the webhook intake's environment, with the same deliveries."""
    from bench.dynamo import EventFactory

    events = EventFactory()

    def event() -> dict[str, Any]:
        token = uuid.uuid4().hex[:12]
        update = events.subscription(
            "customer.subscription.updated", f"acct_ref{token}", f"cus_ref{token}", f"sub_ref{token}"
        )
        return events.http(update)

    def answered(answer: dict[str, Any]) -> bool:
        body = json.loads(answer.get("body") or "{}")
        return answer.get("statusCode") == 200 and body.get("outcome") == "applied"

    return FirstEvent(
        "reference",
        "reference: tutorial-style, same stack",
        FUNCTION_DIR,
        event,
        answered,
        code_dir=REFERENCE_HANDLER_DIR,
    )


def _usage_first_event() -> FirstEvent:
    from bench.licensing import FEATURE, usage_event

    def event() -> dict[str, Any]:
        return usage_event(f"acct_first{uuid.uuid4().hex[:12]}", {"feature": FEATURE, "quantity": 1})

    def answered(answer: dict[str, Any]) -> bool:
        body = json.loads(answer.get("body") or "{}")
        return answer.get("statusCode") == 200 and body.get("allowed") is True

    return FirstEvent("licensing", "licensing API: a usage check", LICENSING_FUNCTION_DIR, event, answered)


def run_first_event(pythonpath: list[Path], rounds: int) -> dict[str, Any]:
    """Each function's first event in a fresh process against the floor, interleaved, on moto."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from devtools.template import create_tables, load_template

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name=LAMBDA_ENV["AWS_REGION"],
            aws_access_key_id=LAMBDA_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LAMBDA_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        tables = create_tables(client, load_template(TEMPLATE_PATH), prefix="bench-")
        return {
            scenario.key: _first_event_rounds(scenario, tables, pythonpath, endpoint, rounds)
            for scenario in (_webhook_first_event(), _reference_first_event(), _usage_first_event())
        }
    finally:
        server.stop()


def _first_event_rounds(
    scenario: FirstEvent, tables: dict[str, str], pythonpath: list[Path], endpoint: str, rounds: int
) -> dict[str, Any]:
    function = function_config(scenario.function_dir, tables)
    if scenario.code_dir is not None:
        function = replace(
            function, code_dir=scenario.code_dir, handler_module="app", handler_name="lambda_handler"
        )
    roots = [function.code_dir, *pythonpath]
    handler_code = _FIRST_EVENT.format(
        function=function.logical_id,
        module=function.handler_module,
        handler=function.handler_name,
        mark=_MARK,
        wire=_WIRE,
    )
    floor_code = _FLOOR.format(table=function.environment["BILLING_TABLE_NAME"], mark=_MARK, wire=_WIRE)
    sides: dict[str, list[dict[str, Any]]] = {"handler": [], "floor": []}
    seeds = scenario.seed(rounds + 1)
    if seeds:
        seed_code = _SEED.format(
            function=function.logical_id,
            module=function.handler_module,
            handler=function.handler_name,
            mark=_MARK,
        )
        seeded = _first_event_child(seed_code, function, roots, endpoint, seeds)
        refused = [answer for answer in seeded["answers"] if not scenario.answered(answer)]
        if refused:
            raise BenchError(f"{scenario.label}: setting up the rounds failed: {refused[0]}")

    def run(side: str) -> dict[str, Any]:
        if side == "floor":
            return _first_event_child(floor_code, function, roots, endpoint, {})
        measured = _first_event_child(handler_code, function, roots, endpoint, scenario.event())
        if not scenario.answered(measured["answer"]):
            raise BenchError(f"{scenario.label}: unexpected answer {measured['answer']}")
        return measured

    run("floor"), run("handler")  # discarded: the first children warm the page cache and moto
    for index in range(rounds):
        for side in ("floor", "handler") if index % 2 == 0 else ("handler", "floor"):
            sides[side].append(run(side))
    first = {side: [m["seconds"] for m in runs] for side, runs in sides.items()}
    imports = {side: [m["import_seconds"] for m in runs] for side, runs in sides.items()}
    wire = {side: [sum(m["requests"]) for m in runs] for side, runs in sides.items()}
    requests = {side: sorted({len(m["requests"]) for m in runs}) for side, runs in sides.items()}
    # The handler as if each request beyond the floor's took no time on the wire: what is left of
    # the ratio once the requests the design needs are set aside.
    without_extra_wire = [
        seconds - max(0.0, extra - median(wire["floor"]))
        for seconds, extra in zip(first["handler"], wire["handler"], strict=True)
    ]
    return {
        "label": scenario.label,
        "gated": scenario.gated,
        "function": function.logical_id,
        "rounds": rounds,
        "floor": summary_ms(first["floor"]),
        "handler": summary_ms(first["handler"]),
        "ratio_median": round(median(first["handler"]) / median(first["floor"]), 3),
        "import_boto3": summary_ms(imports["floor"]),
        "handler_import": summary_ms(imports["handler"]),
        "import_ratio_median": round(median(imports["handler"]) / median(imports["floor"]), 3),
        "requests": requests,
        "wire": {side: summary_ms(values) for side, values in wire.items()},
        "ratio_without_extra_wire": round(median(without_extra_wire) / median(first["floor"]), 3),
    }


def render_first_event(first_event: dict[str, Any]) -> list[str]:
    lines = [
        "1b. First event: a fresh process imports the handler and answers one event (moto on loopback)",
        "    vs a fresh process that imports boto3, makes one DynamoDB client and sends one UpdateItem",
        f"    {'function':<44} {'floor':>9} {'handler':>10} {'ratio':>6}   import: boto3 / handler",
    ]
    for first in first_event.values():
        passed = first["ratio_median"] <= FIRST_EVENT_MAX_RATIO
        verdict = ("PASS" if passed else "FAIL") if first["gated"] else "no target"
        floor_ms, handler_ms = first["floor"]["median_ms"], first["handler"]["median_ms"]
        lines.append(
            f"    {first['label']:<44} {floor_ms:>6.1f} ms {handler_ms:>7.1f} ms"
            f" {first['ratio_median']:>5.2f}x   {first['import_boto3']['median_ms']:.1f} /"
            f" {first['handler_import']['median_ms']:.1f} ms ({first['import_ratio_median']:.2f}x)"
            f"  {verdict}" + (f" (target <= {FIRST_EVENT_MAX_RATIO}x)" if first["gated"] else "")
        )
        requests = "/".join(str(count) for count in first["requests"]["handler"])
        lines.append(
            f"    {'':<44} requests: floor {'/'.join(str(c) for c in first['requests']['floor'])}"
            f" ({first['wire']['floor']['median_ms']:.1f} ms on the wire), handler {requests}"
            f" ({first['wire']['handler']['median_ms']:.1f} ms); without the extra wire time"
            f" {first['ratio_without_extra_wire']:.2f}x"
        )
    if {"webhook", "reference"} <= first_event.keys():
        webhook, reference = first_event["webhook"], first_event["reference"]
        lines.append(
            f"    webhook intake / reference handler: {webhook['handler']['median_ms']:.1f} /"
            f" {reference['handler']['median_ms']:.1f} ms"
            f" = {webhook['handler']['median_ms'] / reference['handler']['median_ms']:.2f}x"
        )
    rounds = next(iter(first_event.values()))["rounds"]
    return [*lines, f"    ({rounds} interleaved rounds each; medians)", ""]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.coldstart``: only the first-event figures, on the layer and runtime as
    ``make bench`` builds them (about a minute instead of three)."""
    import argparse

    from bench.environment import build_layer, build_runtime, compiled_layer_copy

    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per function (default 15)")
    args = parser.parse_args(argv)
    try:
        build_layer()
        runtime = build_runtime([sys.executable])
        figures = run_first_event([compiled_layer_copy([sys.executable]), Path(runtime["dir"])], args.rounds)
    except BenchError as error:
        print(f"bench.coldstart: {error}", file=sys.stderr)
        return 2
    print("\n".join(render_first_event(figures)))
    gated = [first for first in figures.values() if first["gated"]]
    return 0 if all(first["ratio_median"] <= FIRST_EVENT_MAX_RATIO for first in gated) else 1


if __name__ == "__main__":
    sys.exit(main())
