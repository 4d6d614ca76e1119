"""``make bench``: cold start and first event, DynamoDB requests, warm time, size, usage checks; PASS/FAIL.

    python -m bench [--rounds 15] [--events 200] [--checks 200] [--batch 20] [--lambda-python PATH|none]

Prints the report on stdout, writes .bench/results.json, exits 1 when a target is missed
(2 when the benchmark itself could not run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    BENCH_DIR,
    COLD_START_MAX_RATIO,
    HEALTH_PROBE_MAX_REQUESTS,
    LAYER_MAX_MB,
    REPO_ROOT,
    USAGE_CHECK_WARM_MAX_RATIO,
    WARM_MAX_RATIO,
    client_overhead,
    coldstart,
    cost,
    environment,
    health_probe_cost,
    layer_size,
    overage,
    quota_reset_scale,
)
from bench.environment import BenchError

RESULTS_PATH = BENCH_DIR / "results.json"
TABLE_PATH = BENCH_DIR / "table.json"
DYNAMO_RESULTS_PATH = BENCH_DIR / "dynamo.json"
HANDLER_STDOUT_PATH = BENCH_DIR / "handler-stdout.log"
LICENSING_RESULTS_PATH = BENCH_DIR / "licensing.json"
LICENSING_STDOUT_PATH = BENCH_DIR / "licensing-stdout.log"


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _verdict(passed: bool | None) -> str:
    return "info" if passed is None else ("PASS" if passed else "FAIL")


# ------------------------------------------------------------------------ steps


def run_cold_start(
    args: argparse.Namespace, layer: dict, runtime: dict, function: Any, layer_pyc: Path
) -> dict[str, Any]:
    py313 = args.py313
    variants = coldstart.default_variants(
        function, Path(layer["python_dir"]), Path(runtime["dir"]), layer_pyc, py313
    )
    results = {}
    for variant in variants:
        _progress(f"cold start: {variant.label} ({args.rounds} interleaved rounds)")
        results[variant.key] = coldstart.run_variant(variant, function, args.rounds)
    _progress("cold start: -X importtime profile of the handler import")
    profile = coldstart.import_profile(variants[0], function)
    return {"variants": results, "import_profile": profile}


def run_first_event(args: argparse.Namespace, runtime: dict, layer_pyc: Path) -> dict[str, Any]:
    _progress(f"first event: webhook intake and usage check in fresh processes ({args.rounds} rounds, moto)")
    return coldstart.run_first_event([layer_pyc, Path(runtime["dir"])], args.rounds)


def _run_child(module: str, options: list[str], stdout_path: Path, results_path: Path) -> dict[str, Any]:
    """``python -m <module>`` with the handler's stdout to a log and its results as JSON."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "MAKE")) and key not in ("MFLAGS",)
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    with stdout_path.open("w", encoding="utf-8") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", module, *options, "--out", str(results_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=900,
        )
    if result.returncode != 0:
        raise BenchError(f"{module} failed (exit {result.returncode}):\n{result.stderr[-6000:]}")
    return json.loads(results_path.read_text(encoding="utf-8"))


def run_dynamo(args: argparse.Namespace, layer: dict) -> dict[str, Any]:
    _progress(f"DynamoDB: request counts, then {args.events} warm events vs direct calls (moto on loopback)")
    options = ["--layer-python", layer["python_dir"], "--events", str(args.events)]
    options += ["--batch", str(args.batch), "--warmup", str(args.warmup)]
    return _run_child("bench.dynamo", options, HANDLER_STDOUT_PATH, DYNAMO_RESULTS_PATH)


def run_licensing(args: argparse.Namespace, layer: dict) -> dict[str, Any]:
    _progress(
        f"usage check: request counts, then {args.checks} warm checks vs direct calls (moto on loopback)"
    )
    options = ["--layer-python", layer["python_dir"], "--checks", str(args.checks)]
    options += ["--batch", str(args.batch), "--warmup", str(args.warmup)]
    return _run_child("bench.licensing", options, LICENSING_STDOUT_PATH, LICENSING_RESULTS_PATH)


def _run_json_child(module: str, what: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", module, "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if completed.returncode != 0:
        raise BenchError(f"the {what} benchmark failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_cold_start_every_function(
    args: argparse.Namespace, layer: dict, runtime: dict, layer_pyc: Path
) -> dict[str, Any]:
    """Each function's handler import against `import boto3`, as shipped (layer with .pyc)."""
    rounds = max(5, args.rounds // 3)
    host_core = _host_pydantic_core(Path(layer["python_dir"]))
    found = {}
    for function_dir in sorted(path for path in (REPO_ROOT / "functions").iterdir() if path.is_dir()):
        function = environment.function_config(function_dir)
        variant = coldstart.default_variants(
            function, Path(layer["python_dir"]), Path(runtime["dir"]), layer_pyc, None
        )[0]
        if host_core is not None:
            variant.pythonpath.insert(1, host_core)
        _progress(f"cold start: {function.logical_id} ({rounds} interleaved rounds)")
        measured = coldstart.run_variant(variant, function, rounds)
        found[function.logical_id] = {
            "ratio_median": measured["ratio_median"],
            "handler_ms_median": measured["handler"]["median_ms"],
            "boto3_ms_median": measured["boto3"]["median_ms"],
            "rounds": rounds,
        }
    return found


def _host_pydantic_core(layer_python: Path) -> Path | None:
    """A folder holding only this interpreter's pydantic_core, when the layer's (built for
    python3.13/aarch64) cannot load here; the functions that use pydantic import it from there."""
    import shutil

    from bench.licensing import host_pydantic_core

    if host_pydantic_core(layer_python) is None:
        return None
    import pydantic_core

    folder = BENCH_DIR / "host-pydantic-core"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(Path(pydantic_core.__file__).parent, folder / "pydantic_core")
    return folder


def run_alert_dispatch() -> dict[str, Any]:
    _progress("alert dispatch: an alarm's SNS record to a local Slack receiver")
    return _run_json_child("bench.alert_latency", "alert dispatch")


def run_log_bytes() -> dict[str, Any]:
    _progress("cost: CloudWatch Logs bytes per webhook and per usage check")
    return _run_json_child("bench.cost", "log bytes")


def _requests_of(scenarios: list[dict[str, Any]], prefix: str) -> int:
    return next(scenario["requests"] for scenario in scenarios if scenario["title"].startswith(prefix))


def cost_estimate(results: dict[str, Any]) -> dict[str, Any]:
    """Every request of a new webhook and of a plain usage check is a write (Put/UpdateItem)."""
    webhook = {
        "writes": _requests_of(
            results["dynamodb"]["scenarios"], "(a) established account: customer.subscription"
        ),
        "reads": 0,
        "duration_ms": results["dynamodb"]["warm"]["handler"]["median_ms"],
    }
    usage = {
        "writes": _requests_of(results["licensing"]["scenarios"], "plain check"),
        "reads": 0,
        "duration_ms": results["licensing"]["warm"]["handler"]["median_ms"],
    }
    return cost.estimate(webhook, usage, results["log_bytes"])


def summary_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The one table: each figure beside the reference it was measured against in this run."""
    rows = []
    for function, cold in results["cold_start_all"].items():
        rows.append(
            {
                "figure": f"cold import: {function}",
                "value": f"{cold['ratio_median']:.2f}x",
                "reference": f"{cold['handler_ms_median']:.0f} ms vs import boto3"
                f" {cold['boto3_ms_median']:.0f} ms",
            }
        )
    for first in results["first_event"].values():
        rows.append(
            {
                "figure": f"first event in a fresh process: {first['label']}",
                "value": f"{first['ratio_median']:.2f}x",
                "reference": f"{first['handler']['median_ms']:.0f} ms vs {first['floor']['median_ms']:.0f} ms"
                " (import boto3, one client, one UpdateItem)",
            }
        )
    webhooks, usage = results["dynamodb"]["scenarios"], results["licensing"]["scenarios"]
    for label, scenarios, prefix in (
        ("DynamoDB requests: new webhook", webhooks, "(a) established account: customer.subscription"),
        ("DynamoDB requests: duplicate webhook", webhooks, "(b) duplicate"),
        ("DynamoDB requests: usage check", usage, "plain check"),
        ("DynamoDB requests: usage check, new idempotency key", usage, "check with a new idempotency key"),
        ("DynamoDB requests: usage check, replayed key", usage, "replayed idempotency key"),
    ):
        rows.append(
            {
                "figure": label,
                "value": str(_requests_of(scenarios, prefix)),
                "reference": "counted on the wire",
            }
        )
    for label, warm in (
        ("warm webhook", results["dynamodb"]["warm"]),
        ("warm usage check", results["licensing"]["warm"]),
    ):
        rows.append(
            {
                "figure": f"{label}: handler / its raw DynamoDB calls",
                "value": f"{warm['ratio_median']:.2f}x",
                "reference": f"{warm['handler']['median_ms']:.2f} ms vs {warm['raw']['median_ms']:.2f} ms"
                " (medians)",
            }
        )
    reset = results["quota_reset"]
    per_account_ms = reset["per_account_ms"]
    rows.append(
        {
            "figure": "quota reset: throughput, one segment",
            "value": f"{1000 / per_account_ms:,.0f} accounts/s" if per_account_ms else "n/a",
            "reference": f"{per_account_ms:.2f} ms per account on moto",
        }
    )
    projection = reset["projection"]
    rows.append(
        {
            "figure": f"quota reset: {projection['accounts']:,} accounts, {projection['segments']} segments",
            "value": f"{projection['seconds'] / 60:.1f} min",
            "reference": "the hourly schedule: 60 min",
        }
    )
    alert = results["alert_dispatch"]
    rows.append(
        {
            "figure": "alert dispatch: alarm message to the local receiver",
            "value": f"{alert['dispatcher']['median_ms']:.1f} ms",
            "reference": f"p90 {alert['dispatcher']['p90_ms']:.1f} ms; the same POST directly"
            f" {alert['direct_post']['median_ms']:.1f} ms",
        }
    )
    rows.append(
        {
            "figure": "package: layer unzipped",
            "value": f"{results['layer']['du_mb']:.1f} MB",
            "reference": "limit 50 MB (250 MB Lambda)",
        }
    )
    estimate = results["cost"]
    for key, label in (("webhooks", "webhooks"), ("usage_checks", "usage checks")):
        figures = estimate[key]
        parts = ", ".join(
            f"{name.replace('_', ' ')} ${figures[name]:.2f}"
            for name in (
                "lambda_requests",
                "lambda_duration",
                "http_api",
                "dynamodb",
                "cloudwatch_logs",
                "xray",
            )
        )
        rows.append(
            {
                "figure": f"estimated AWS cost per 1,000,000 {label}",
                "value": f"${figures['total']:.2f}",
                "reference": f"{parts} ({figures['assumptions']})",
            }
        )
    return rows + overage.table_rows(results["overage"])


def run_quota_reset() -> dict[str, Any]:
    _progress("quota reset: sweep throughput on moto's server, projected to 1,000,000 accounts")
    return _run_json_child("bench.quota_reset_scale", "quota reset")


def run_client_overhead() -> dict[str, Any]:
    _progress("client: BillwatchClient.check against a raw signed request, on a loopback server")
    return _run_json_child("bench.client_overhead", "client overhead")


def run_overage() -> dict[str, Any]:
    _progress("overage billing: usage checks past the quota, the drain's v1 and v2 meter reporting, cost")
    return _run_json_child("bench.overage", "overage billing")


def run_health_probe() -> dict[str, Any]:
    _progress("health probe: requests per scheduled run and what the subscriptions gauge reads")
    return _run_json_child("bench.health_probe_cost", "health probe")


# ------------------------------------------------------------------------ targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    primary = results["cold_start"]["variants"]["primary"]
    rows.append(
        {
            "name": "cold start: handler import / import boto3 (median)",
            "value": primary["ratio_median"],
            "limit": COLD_START_MAX_RATIO,
            "unit": "x",
            "pass": primary["ratio_median"] <= COLD_START_MAX_RATIO,
        }
    )
    for first in (first for first in results["first_event"].values() if first["gated"]):
        rows.append(
            {
                "name": f"first event in a fresh process, {first['label']} / import boto3 + one client +"
                " one UpdateItem (median)",
                "value": first["ratio_median"],
                "limit": coldstart.FIRST_EVENT_MAX_RATIO,
                "unit": "x",
                "pass": first["ratio_median"] <= coldstart.FIRST_EVENT_MAX_RATIO,
            }
        )
    rows += _scenario_targets("DynamoDB requests", results["dynamodb"]["scenarios"])
    warm = results["dynamodb"]["warm"]
    rows.append(
        {
            "name": "warm: handler time per event / same DynamoDB calls made directly (median)",
            "value": warm["ratio_median"],
            "limit": WARM_MAX_RATIO,
            "unit": "x",
            "pass": warm["ratio_median"] <= WARM_MAX_RATIO and not warm["unexpected_outcomes"],
        }
    )
    layer = results["layer"]
    rows.append(
        {
            "name": "layer size unzipped (du)",
            "value": layer["du_mb"],
            "limit": LAYER_MAX_MB,
            "unit": "MB",
            "pass": layer["du_mb"] <= LAYER_MAX_MB,
        }
    )
    licensing = results["licensing"]
    rows += _scenario_targets("usage check DynamoDB requests", licensing["scenarios"])
    usage_warm = licensing["warm"]
    rows.append(
        {
            "name": "usage check warm: handler time per plain check / the same UpdateItem made directly"
            " (median)",
            "value": usage_warm["ratio_median"],
            "limit": USAGE_CHECK_WARM_MAX_RATIO,
            "unit": "x",
            "pass": _usage_warm_passed(usage_warm),
        }
    )
    projection = results["quota_reset"]["projection"]
    rows.append(
        {
            "name": f"quota reset: {projection['accounts']:,} accounts projected within the hourly schedule",
            "value": round(projection["seconds"] / 60, 1),
            "limit": 60,
            "unit": "min",
            "pass": projection["fits_schedule"],
        }
    )
    probe = results["health_probe"]
    rows.append(
        {
            "name": "health probe: AWS requests per scheduled run",
            "value": probe["requests_total"],
            "limit": HEALTH_PROBE_MAX_REQUESTS,
            "unit": "req",
            "pass": probe["requests_total"] <= HEALTH_PROBE_MAX_REQUESTS,
        }
    )
    rows.append(
        {
            "name": "health probe: subscriptions gauge items read / a Scan's (reads live subscriptions only)",
            "value": probe["read_ratio"],
            "limit": round(probe["seeded"]["pro"] / probe["items"], 3),
            "unit": "x",
            "exact": True,
            "pass": probe["gauge_reads_only_live_subscriptions"],
        }
    )
    return rows + _overage_targets(results["overage"])


def _overage_targets(found: dict[str, Any]) -> list[dict[str, Any]]:
    warm, drain = found["warm"], found["drain"]
    return [
        *_scenario_targets("overage usage check DynamoDB requests", found["scenarios"]),
        {
            "name": "overage usage check warm: handler time past the quota / the deny-mode check (median)",
            "value": warm["ratio_median"],
            "limit": overage.OVERAGE_CHECK_WARM_MAX_RATIO,
            "unit": "x",
            "pass": overage.warm_passed(warm),
        },
        {
            "name": "overage drain: v2 stream / v1 events per second, the send alone (each unit sent once)",
            "value": drain["ratio_v2_v1_send_events_per_second"],
            "limit": f">= {overage.V2_MIN_SEND_SPEEDUP:g}",
            "unit": "x",
            "pass": overage.drain_passed(drain),
        },
    ]


def _scenario_targets(name: str, scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A target row per gated request-count scenario."""
    rows = []
    for scenario in scenarios:
        if scenario["limit"] is None:
            continue
        row = {
            "name": f"{name}: {scenario['title']}",
            "value": scenario["requests"],
            "limit": scenario["limit"],
        }
        if "exact" in scenario:
            row["exact"] = scenario["exact"]
        rows.append({**row, "unit": "req", "pass": scenario["pass"]})
    return rows


def _usage_warm_passed(warm: dict[str, Any]) -> bool:
    baseline_agrees = all(c["accepted"] == c["expected_accept"] for c in warm["raw_condition_self_check"])
    return (
        warm["ratio_median"] <= USAGE_CHECK_WARM_MAX_RATIO
        and not warm["unexpected_outcomes"]
        and baseline_agrees
    )


# ------------------------------------------------------------------------ report


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    meta = results["meta"]
    add(f"billwatch bench - {meta['generated_at']}")
    add(f"{meta['python']} {meta['machine']}, {meta['cpus']} CPUs; took {meta['seconds']:.0f} s")
    add(
        f"full results: {_rel(RESULTS_PATH)}; handler stdout (logs, EMF): {_rel(HANDLER_STDOUT_PATH)},"
        f" {_rel(LICENSING_STDOUT_PATH)}"
    )
    add("")
    _render_environment(add, results["environment"])
    _render_cold_start(add, results["cold_start"])
    for line in coldstart.render_first_event(results["first_event"]):
        add(line)
    _render_requests(add, results["dynamodb"]["scenarios"])
    _render_warm(add, results["dynamodb"]["warm"])
    _render_layer(add, results["layer"])
    _render_licensing(add, results["licensing"])
    for line in quota_reset_scale.render(results["quota_reset"]):
        add(line)
    add("")
    for line in health_probe_cost.render(results["health_probe"]):
        add(line)
    add("")
    for line in client_overhead.render(results["client_overhead"]):
        add(line)
    add("")
    for line in overage.render(results["overage"]):
        add(line)
    add("")
    add(f"The table (also {_rel(TABLE_PATH)}; unit prices there and in bench/cost.py)")
    width = max(len(row["figure"]) for row in results["table"])
    for row in results["table"]:
        add(f"   {row['figure']:<{width}}  {row['value']:>16}  {row['reference']}")
    add("")
    add("Targets")
    for row in results["targets"]:
        unit = "x" if row["unit"] == "x" else f" {row['unit']}"
        limit = "exactly" if row.get("exact") else "limit"
        add(f"   {_verdict(row['pass'])}  {row['name']}: {row['value']}{unit} ({limit} {row['limit']}{unit})")
    failed = [row for row in results["targets"] if not row["pass"]]
    total = len(results["targets"])
    add("OVERALL: " + ("PASS" if not failed else f"FAIL ({len(failed)} of {total} targets missed)"))
    return "\n".join(out)


def _render_environment(add: Callable[[str], None], env: dict[str, Any]) -> None:
    purity = env["layer"]["purity"]
    runtime = env["runtime"]
    add("Emulated Lambda import roots (PYTHONPATH in Lambda's order; `python -S`, no venv site-packages):")
    add(f"  function  {_rel(env['function_dir'])}  (handler {env['handler']})")
    add(f"  layer     {_rel(env['layer']['python_dir'])}  (`make layer`, as deployed)")
    add(f"  runtime   {_rel(runtime['dir'])}  (boto3=={runtime['boto3']} + deps, byte-compiled)")
    wheels = ", ".join(f"{d['distribution']} [{'/'.join(d['tags'])}]" for d in purity["distributions"])
    add(f"  layer wheels: {wheels}")
    if purity["all_pure"]:
        add("  -> all pure Python, no compiled extensions: the cp313/aarch64 build imports on this CPython")
    else:
        add(f"  -> NOT pure Python ({purity['binary_files'][:10]}): the local cold start is not faithful")
    add("")


def _render_cold_start(add: Callable[[str], None], cold: dict[str, Any]) -> None:
    variants = cold["variants"]
    primary = variants["primary"]
    profile = cold["import_profile"]
    add("1. Cold start: import of the handler module in a fresh interpreter vs `import boto3` alone")
    add(f"   (wall time measured inside the child; {primary['rounds']} interleaved rounds; medians)")
    add(f"   {'variant':<44} {'import boto3':>12} {'handler':>10} {'ratio':>6}  result")
    for variant in variants.values():
        gated = variant["gated"]
        verdict = _verdict(variant["ratio_median"] <= COLD_START_MAX_RATIO) if gated else "info"
        target = f" (target <= {COLD_START_MAX_RATIO}x)" if gated else ""
        add(
            f"   {variant['label']:<44} {variant['boto3']['median_ms']:>9.1f} ms"
            f" {variant['handler']['median_ms']:>7.1f} ms {variant['ratio_median']:>5.2f}x  {verdict}{target}"
        )
    boto3_ms = primary["boto3"]["median_ms"]
    budget = boto3_ms * COLD_START_MAX_RATIO
    add(
        f"   budget at {COLD_START_MAX_RATIO}x = {budget:.1f} ms, i.e. {budget - boto3_ms:.1f} ms on top of"
        f" boto3; the handler adds {primary['extra_ms_median']:.1f} ms"
    )
    handler, boto3 = primary["handler"], primary["boto3"]
    add(
        f"   spread (min-max): handler {handler['min_ms']:.1f}-{handler['max_ms']:.1f} ms,"
        f" boto3 {boto3['min_ms']:.1f}-{boto3['max_ms']:.1f} ms"
    )
    saved = variants["layer_without_bytecode"]["handler"]["median_ms"] - primary["handler"]["median_ms"]
    add(f"   without the layer's .pyc files every cold start would compile them: ~{saved:.0f} ms more")
    add(
        f"   the handler import loads {primary['handler_modules_loaded']} modules,"
        f" {profile['extra_modules']} more than `import boto3` ({profile['baseline_modules']});"
        f" requests imported: {'yes' if primary['requests_imported'] else 'no'}"
    )
    clients = ", ".join(profile["clients_created_at_import"]) or "none"
    add(
        "   work done at import besides importing: handler module body"
        f" {profile['handler_module_body_ms']} ms (its -X importtime self time),"
    )
    add(
        f"     of which botocore client creation ({clients}): {profile['client_creation_ms']} ms"
        " (incl. botocore modules it imports lazily)"
    )
    add("   top 10 modules beyond boto3 by cumulative import time (-X importtime, medians of runs;")
    add("   'beyond' counts only modules `import boto3` does not load, so nested boto3 time is excluded):")
    add(f"     {'beyond':>8} {'cumul.':>8} {'self':>7}  module  <- imported by")
    for entry in profile["top_cumulative"]:
        add(
            f"     {entry['cumulative_beyond_boto3_ms']:>5.1f} ms {entry['cumulative_ms']:>5.1f} ms"
            f" {entry['self_ms']:>4.1f} ms  {entry['module']}  <- {entry['imported_by']}"
        )
    add("   self import time beyond boto3 per top-level package (includes compiling the source):")
    for entry in profile["by_package"][:10]:
        add(f"     {entry['self_ms']:>6.1f} ms  {entry['package']} ({entry['modules']} modules)")
    add("   top 10 single modules by self time beyond boto3:")
    for entry in profile["top_self"]:
        add(f"     {entry['self_ms']:>6.1f} ms  {entry['module']}  <- {entry['imported_by']}")
    if profile["attempted_not_found"]:
        add(f"   optional imports tried and not found: {', '.join(profile['attempted_not_found'])}")
    add("")


def _render_requests(add: Callable[[str], None], scenarios: list[dict[str, Any]]) -> None:
    add("2. DynamoDB requests per event (counted on the wire at botocore's Endpoint._send; moto on loopback)")
    _render_scenarios(add, scenarios, 88, _events_and_outcomes)
    add("")


def _events_and_outcomes(runs: list[dict[str, Any]]) -> str:
    types = sorted({run["event_type"] for run in runs})
    outcomes = sorted({run["outcome"] for run in runs})
    return f"{', '.join(types)} -> {', '.join(outcomes)}"


def _render_scenarios(
    add: Callable[[str], None],
    scenarios: list[dict[str, Any]],
    width: int,
    answers: Callable[[list[dict[str, Any]]], str],
    notes: Callable[[dict[str, Any]], list[str]] = lambda scenario: [],
) -> None:
    """One line per request-count scenario, then what its runs answered and the request sequences."""
    add(f"   {'scenario':<{width}} {'req':>3} {'max':>4}  result")
    for scenario in scenarios:
        limit = scenario["limit"]
        limit = "-" if limit is None else ("=" if scenario.get("exact") else "") + str(limit)
        verdict = _verdict(scenario["pass"])
        add(f"   {scenario['title']:<{width}} {scenario['requests']:>3} {limit:>4}  {verdict}")
        sequences = sorted({" + ".join(run["sequence"]) or "(none)" for run in scenario["runs"]})
        add(f"       {answers(scenario['runs'])}: {' | '.join(sequences)}")
        others = sorted({request for run in scenario["runs"] for request in run["other_requests"]})
        if others:
            add(f"       other AWS requests: {', '.join(others)}")
        for line in notes(scenario):
            add(f"       {line}")
        for problem in scenario["problems"]:
            add(f"       PROBLEM: {problem}")


def _render_warm(add: Callable[[str], None], warm: dict[str, Any]) -> None:
    add(
        f"3. Warm time per event: {warm['events']} new signed customer.subscription.updated events through"
        " lambda_handler"
    )
    add(f"   vs the same DynamoDB calls made directly with boto3 ({' + '.join(warm['raw_sequence'])});")
    add(f"   interleaved in batches of {warm['batch']}, after {warm['warmup']} warm-up events each")
    _render_warm_sides(add, warm, "direct boto3 calls")
    passed = warm["ratio_median"] <= WARM_MAX_RATIO and not warm["unexpected_outcomes"]
    _render_warm_ratio(add, warm, passed, WARM_MAX_RATIO, "event")
    add("")


def _render_warm_sides(add: Callable[[str], None], warm: dict[str, Any], raw_label: str) -> None:
    """The handler and the direct calls side by side, then each request's round trip and size."""
    add(f"   {'':<20} {'median':>9} {'mean':>9} {'p90':>9}   in API calls  on the wire  outside API calls")
    for key, label in (("handler", "handler"), ("raw", raw_label)):
        stats, parts = warm[key], warm[f"{key}_breakdown_median_ms"]
        add(
            f"   {label:<20} {stats['median_ms']:>6.2f} ms {stats['mean_ms']:>6.2f} ms"
            f" {stats['p90_ms']:>6.2f} ms"
            f"   {parts['in_dynamodb_api_calls']:>8.2f} ms  {parts['on_the_wire']:>8.2f} ms"
            f"  {parts['outside_api_calls']:>10.2f} ms"
        )
    add("   per request (median round trip incl. moto's server-side work; request body size):")
    for step in warm["per_request"]:
        add(
            f"     {step['request']:<24} handler {step['handler_ms']} ms / {step['handler_bytes']} B"
            f"   direct {step['raw_ms']} ms / {step['raw_bytes']} B"
        )


def _render_warm_ratio(
    add: Callable[[str], None], warm: dict[str, Any], passed: bool, limit: float, unit: str
) -> None:
    """The ratio against its target, the requests per timed handler call and unexpected outcomes."""
    _, batch_min, batch_max = warm["batch_ratio_median_min_max"]
    add(
        f"   ratio {warm['ratio_median']:.2f}x (medians; means {warm['ratio_mean']:.2f}x;"
        f" per batch {batch_min:.2f}-{batch_max:.2f}x) -> {_verdict(passed)} (target <= {limit}x)"
    )
    add(f"   DynamoDB requests per timed handler {unit}: {warm[f'handler_requests_per_{unit}']}")
    if warm["unexpected_outcomes"]:
        add(f"   PROBLEM: unexpected outcomes while timing: {warm['unexpected_outcomes']}")


def _render_layer(add: Callable[[str], None], layer: dict[str, Any]) -> None:
    passed = layer["du_mb"] <= LAYER_MAX_MB
    add(
        f"4. Layer size unzipped: {layer['du_mb']:.1f} MB du ({layer['apparent_mb']:.1f} MB apparent,"
        f" {layer['files']} files) -> {_verdict(passed)} (target <= {LAYER_MAX_MB:.0f} MB)"
    )
    for entry in layer["by_package"]:
        add(f"     {entry['du_mb']:>6.2f} MB  {entry['package']}  ({entry['apparent_mb']:.2f} MB apparent)")
    largest = ", ".join(f"{e['path']} {e['apparent_mb']:.1f} MB" for e in layer["largest_sub_packages"][:6])
    add(f"   largest sub-packages (apparent): {largest}")
    add("")


USAGE_STAGES = (
    ("handler_outside_resolve", "lambda_handler around the resolver (Logger context, caller/body checks)"),
    ("emf_flush", "EMF metrics flush (one JSON line to stdout)"),
    ("resolver_outside_use", "the router outside Licensing.use (routing, validation, the JSON response)"),
    ("licensing_outside_request", "Licensing.use outside the request (condition, decision, metric)"),
    ("pynamodb_request_building", "pynamodb building the UpdateItem's expressions"),
    ("dynamodb_api_call", "the UpdateItem API call (botocore + round trip)"),
)


def _answer(run: dict[str, Any]) -> str:
    answer = run["answer"]
    if run["status"] == 200:
        return f"200 {'allowed' if answer.get('allowed') else 'denied'}"
    return f"{run['status']} {answer.get('reason') or answer.get('error') or ''}".strip()


def _answers(runs: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({_answer(run) for run in runs}))


def _idempotency_note(scenario: dict[str, Any]) -> list[str]:
    if scenario["key"] != "keyed_first" or scenario["requests"] <= (scenario["limit"] or 0):
        return []
    return [
        "(Powertools idempotency: record INPROGRESS, the check, record COMPLETED:"
        f" {scenario['requests'] - scenario['limit']} more than the target)"
    ]


def _render_licensing(add: Callable[[str], None], licensing: dict[str, Any]) -> None:
    function = licensing["function"]
    add(
        f"5. Usage check (licensing): POST /v1/accounts/{{account_id}}/usage through {function['logical_id']}"
        f" ({_rel(function['code_dir'])}, {function['handler']})"
    )
    add("   DynamoDB requests per check (counted on the wire at botocore's Endpoint._send; moto on loopback)")
    core = licensing["host_pydantic_core"]
    if core:
        add(
            f"   (pydantic_core {core['version']} comes from the venv: the layer's"
            f" {', '.join(core['layer_builds'])}"
        )
        add("   cannot load on this interpreter; everything else comes from the layer)")
    _render_scenarios(add, licensing["scenarios"], 96, _answers, _idempotency_note)
    warm = licensing["warm"]
    self_check = warm["raw_condition_self_check"]
    agreeing = sum(c["accepted"] == c["expected_accept"] for c in self_check)
    add(
        f"   Warm time per plain check: {warm['checks']} checks (api_calls x1,"
        f" {warm['accounts_per_side']} FREE accounts a side, at most {warm['highest_use_of_an_account']}"
        " uses each: no threshold)"
    )
    add(
        "   through lambda_handler vs the same UpdateItem made directly with boto3 (hand-written ADD and"
        f" condition; {agreeing}/{len(self_check)} item states"
    )
    add(
        f"   accepted/refused as the handler's condition would); interleaved in batches of {warm['batch']},"
        f" after {warm['warmup']} warm-up checks each"
    )
    _render_warm_sides(add, warm, "direct boto3 call")
    handler_parts, raw_parts = warm["handler_breakdown_median_ms"], warm["raw_breakdown_median_ms"]
    extra = warm["handler"]["median_ms"] - warm["raw"]["median_ms"]
    inside = handler_parts["in_dynamodb_api_calls"] - raw_parts["in_dynamodb_api_calls"]
    outside = handler_parts["outside_api_calls"] - raw_parts["outside_api_calls"]
    wire = handler_parts["on_the_wire"] - raw_parts["on_the_wire"]
    add(
        f"   handler - direct: {extra:+.2f} ms (medians) = outside API calls {outside:+.2f} ms"
        f" + in API calls {inside:+.2f} ms (of which on the wire {wire:+.2f} ms)"
    )
    stages = warm["stages_median_ms"]
    add(
        f"   where the handler's time goes (separate pass of {warm['stage_checks']} checks with stage timers;"
        f" medians, total {stages['total']:.2f} ms):"
    )
    for key, label in USAGE_STAGES:
        add(f"     {stages[key]:>6.2f} ms  {label}")
    _render_warm_ratio(add, warm, _usage_warm_passed(warm), USAGE_CHECK_WARM_MAX_RATIO, "check")
    for entry in self_check:
        if entry["accepted"] != entry["expected_accept"]:
            add(f"   PROBLEM: the direct call's condition disagrees for {entry['state']}")
    add("")


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="cold-start rounds per variant (default 15)")
    parser.add_argument("--events", type=int, default=200, help="timed warm events (default 200)")
    parser.add_argument(
        "--batch", type=int, default=20, help="warm events per interleaved batch (default 20)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up events (default 20)")
    parser.add_argument("--checks", type=int, default=200, help="timed warm usage checks (default 200)")
    parser.add_argument(
        "--lambda-python",
        default=None,
        help="a CPython 3.13 for an extra, informational cold-start run (default: found on PATH or"
        " in pyenv, or $BENCH_LAMBDA_PYTHON); 'none' to skip",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    try:
        _progress("building the SharedLayer with `make layer` into .bench/layer")
        layer = environment.build_layer()
        layer_sizes = layer_size.measure(environment.LAYER_DIR)  # before anything could add bytecode
        args.py313 = environment.lambda_version_python(args.lambda_python)
        _progress("preparing the emulated runtime (boto3 + deps) in .bench/runtime")
        runtime = environment.build_runtime([sys.executable, *([args.py313] if args.py313 else [])])
        function = environment.function_config()
        layer_pyc = environment.compiled_layer_copy([sys.executable])
        cold = run_cold_start(args, layer, runtime, function, layer_pyc)
        first_event = run_first_event(args, runtime, layer_pyc)
        dynamo = run_dynamo(args, layer)
        licensing = run_licensing(args, layer)
        quota_reset = run_quota_reset()
        health_probe = run_health_probe()
        client = run_client_overhead()
        overage_billing = run_overage()
        cold_all = run_cold_start_every_function(args, layer, runtime, layer_pyc)
        alert_dispatch = run_alert_dispatch()
        log_bytes = run_log_bytes()
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "meta": {
            "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "python": f"CPython {platform.python_version()}",
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "seconds": round(time.perf_counter() - started, 1),
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "environment": {
            "function_dir": str(function.code_dir),
            "handler": f"{function.handler_module}.{function.handler_name}",
            "function_env": function.environment,
            "layer": layer,
            "runtime": runtime,
            "lambda_version_python": args.py313,
        },
        "cold_start": cold,
        "first_event": first_event,
        "dynamodb": dynamo,
        "layer": layer_sizes,
        "licensing": licensing,
        "quota_reset": quota_reset,
        "health_probe": health_probe,
        "client_overhead": client,
        "overage": overage_billing,
        "cold_start_all": cold_all,
        "alert_dispatch": alert_dispatch,
        "log_bytes": log_bytes,
    }
    results["cost"] = cost_estimate(results)
    results["targets"] = targets(results)
    results["table"] = summary_table(results)
    RESULTS_PATH.write_text(json.dumps(results, indent=2), encoding="utf-8")
    TABLE_PATH.write_text(
        json.dumps({"rows": results["table"], "cost": results["cost"]}, indent=2), encoding="utf-8"
    )
    print(render(results))
    return 0 if all(row["pass"] for row in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
