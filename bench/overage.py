"""Overage billing: the usage check's requests with overage enabled, the drain's meter reporting
throughput (v1 against the v2 stream) and the cost per 1,000,000 overage units.

Run as ``python -m bench.overage`` (``--json`` for make bench). In one process, on moto's server on
loopback with the tables template.yaml declares (bench.harness: requests counted where botocore puts
them on the wire):

1. the real functions/licensing_api/app.py loaded twice, once with the shipped catalog (FREE
   api_calls denies past its quota) and once with a catalog where FREE api_calls bills its overage
   (no hard cap, meter ``api_calls_overage``); request counts per check past the quota, then the
   overage check's warm time against the deny-mode check's, in interleaved batches;
2. the real OverageDrain (ledger, pins, settles, releases on moto) sending to the Stripe meters
   stand-in (devtools.fake_meters.MeterServer, on 127.0.0.1, keep-alive) through V1MeterSender (one
   request per event) and V2MeterEventStream (100 events a request), the two sides alternating over
   rounds of freshly seeded accounts; every unit must reach the stand-in exactly once;
3. from those counts and times, the AWS cost of 1,000,000 overage units (bench.cost's unit prices).

The handlers' and the drain's logs and EMF lines go to .bench/overage-stdout.log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import BENCH_DIR, LICENSING_FUNCTION_DIR, REPO_ROOT, TEMPLATE_PATH, median
from bench.cost import LAMBDA_PLATFORM_LOG_BYTES, UNIT_PRICES_USD
from bench.environment import BenchError
from bench.harness import FunctionBench, Window, deploy, moto_server

FEATURE = "api_calls"
QUOTA = 1000  # FREE's api_calls quota in the shipped catalog
EVENT_NAME = "api_calls_overage"
STDOUT_LOG = BENCH_DIR / "overage-stdout.log"
CATALOG_PATH = BENCH_DIR / "overage-plans.json"

# Targets (exact counts, the "1, or 2 with a key") and the warm ratio's bound.
OVERAGE_CHECK_REQUESTS = 1
OVERAGE_CHECK_KEYED_REQUESTS = 2
OVERAGE_FIRST_ANSWER_REQUESTS = 2  # the check's write + the write that puts it on the drain's list
OVERAGE_CHECK_WARM_MAX_RATIO = 1.3  # overage check / deny-mode check, handler time (medians)
# The send alone, v2 stream / v1 (1 request per 100 events against 1 per event): a wide margin on
# loopback, where a Stripe request costs about a millisecond.
V2_MIN_SEND_SPEEDUP = 5.0

# Cost assumptions (what loopback cannot measure).
STRIPE_REQUEST_MS = 100.0  # one Stripe request's round trip from Lambda (loopback's is ~1 ms)
RUNS_A_MONTH = 1440 * 30  # the drain's rate(1 minute) schedule
INDEX_QUERIES_PER_RUN = 16  # 8 OverageDue shards x 2 indexes (account items, closed periods)
QUERY_READ_UNITS = 0.5  # an eventually consistent Query of a KEYS_ONLY index page under 4 KB


# ------------------------------------------------------------------------ 1. the usage check


def overage_catalog_file() -> Path:
    """The shipped catalog with FREE api_calls billed past its quota (no hard cap)."""
    from billwatch.licensing.plans import shipped_catalog_text

    document = json.loads(shipped_catalog_text())
    document["tiers"][0]["features"][FEATURE].update(over_quota="overage", event_name=EVENT_NAME)
    CATALOG_PATH.write_text(json.dumps(document), encoding="utf-8")
    return CATALOG_PATH


def _expect(check: Any, used: int, overage: int | None) -> str | None:
    answer = check.answer
    if check.status != 200 or answer.get("allowed") is not True:
        return f"answer {check.status} {answer}"
    if answer.get("used") != used or answer.get("overage") != overage:
        return f"used {answer.get('used')} overage {answer.get('overage')}, expected {used} / {overage}"
    return None


class CheckBench:
    def __init__(self, bench: Any, deny_app: ModuleType, overage_app: ModuleType) -> None:
        self.bench = bench  # bench.licensing.Bench: calls through lambda_handler, counted
        self.deny = deny_app
        self.overage = overage_app
        self.tag = uuid.uuid4().hex[:6]

    def past_quota(self, account: str) -> None:
        """The quota used up (its thresholds announced), then the first unit past it (the marker)."""
        for quantity, used, overage in ((QUOTA, QUOTA, 0), (1, QUOTA + 1, 1)):
            check = self.bench.call(self.overage, account, {"feature": FEATURE, "quantity": quantity})
            if (problem := _expect(check, used, overage)) is not None:
                raise BenchError(f"setting up {account} past its quota: {problem}")

    def request_counts(self) -> list[dict[str, Any]]:
        bench, tag, one = self.bench, self.tag, {"feature": FEATURE, "quantity": 1}
        scenarios = []
        accounts = [f"acct_ovr_{index}_{tag}" for index in range(3)]
        first = []
        for account in accounts:
            setup = bench.call(self.overage, account, {"feature": FEATURE, "quantity": QUOTA})
            if (problem := _expect(setup, QUOTA, 0)) is not None:
                raise BenchError(f"using up {account}'s quota: {problem}")
            check = bench.call(self.overage, account, one)
            first.append((check, _expect(check, QUOTA + 1, 1)))
        scenarios.append(
            bench.scenario(
                "overage_first",
                "first overage answer of the period (the check + the write that puts the account on the"
                " drain's list; 3 accounts)",
                first,
                OVERAGE_FIRST_ANSWER_REQUESTS,
                exact=True,
            )
        )
        plain = []
        for round_ in range(2):
            for account in accounts:
                check = bench.call(self.overage, account, one)
                plain.append((check, _expect(check, QUOTA + 2 + round_, 1)))
        scenarios.append(
            bench.scenario(
                "overage_plain",
                f"plain check past the quota, account on the drain's list: {FEATURE} x1 (3 accounts x 2)",
                plain,
                OVERAGE_CHECK_REQUESTS,
                exact=True,
            )
        )
        keyed_requests = [
            (account, {**one, "idempotency_key": f"job-{uuid.uuid4().hex[:8]}"}) for account in accounts
        ]
        keyed = [bench.call(self.overage, account, request) for account, request in keyed_requests]
        scenarios.append(
            bench.scenario(
                "overage_keyed",
                "check past the quota with a new idempotency key (3 accounts)",
                [(check, _expect(check, QUOTA + 4, 1)) for check in keyed],
                OVERAGE_CHECK_KEYED_REQUESTS,
                exact=True,
            )
        )
        replays = []
        for check, (account, request) in zip(keyed, keyed_requests, strict=True):
            replay = bench.call(self.overage, account, request)
            same = (replay.status, replay.answer) == (check.status, check.answer)
            replays.append((replay, None if same else f"answer {replay.answer} differs from {check.answer}"))
        scenarios.append(
            bench.scenario(
                "overage_replay",
                "replayed idempotency key past the quota (the first answer back)",
                replays,
                1,
            )
        )
        account = f"acct_ovr_keyfirst_{tag}"
        setup = bench.call(self.overage, account, {"feature": FEATURE, "quantity": QUOTA})
        if (problem := _expect(setup, QUOTA, 0)) is not None:
            raise BenchError(f"using up {account}'s quota: {problem}")
        check = bench.call(self.overage, account, {**one, "idempotency_key": f"job-{tag}"})
        scenarios.append(
            bench.scenario(
                "overage_keyed_first",
                "first overage answer with a new idempotency key (marker in its transaction) - information",
                [(check, _expect(check, QUOTA + 1, 1))],
                None,
            )
        )
        deny = bench.call(self.deny, f"acct_deny_{tag}", one)
        scenarios.append(
            bench.scenario(
                "deny_plain",
                "the same check with the shipped catalog (deny past the quota), within it - reference",
                [(deny, _expect(deny, 1, None))],
                None,
            )
        )
        return scenarios

    def warm_timing(self, checks: int, batch: int, warmup: int) -> dict[str, Any]:
        """Overage checks past the quota (accounts already listed) against deny-mode checks within it."""
        pool = 4
        overage_accounts = [f"acct_ovr_warm_{index}_{self.tag}" for index in range(pool)]
        for account in overage_accounts:
            self.past_quota(account)
        deny_accounts = [f"acct_deny_warm_{index}_{self.tag}" for index in range(pool)]
        request = {"feature": FEATURE, "quantity": 1}
        from bench.licensing import usage_event

        # Built before the clock starts, as Bench.call builds the overage side's.
        deny_events = iter(
            [usage_event(deny_accounts[n % pool], request) for n in range(warmup + checks + batch)]
        )
        context = self.bench.context()
        sequence = {"overage": 0}
        timing = self.bench.new_warm_timing()

        def overage_call(record: bool) -> tuple[float, Window]:
            account = overage_accounts[sequence["overage"] % pool]
            sequence["overage"] += 1
            check = self.bench.call(self.overage, account, request)
            problem = None if check.answer.get("overage") == 1 else f"answer {check.status} {check.answer}"
            if problem is None and len(check.window.dynamodb) != 1:
                problem = f"{len(check.window.dynamodb)} requests"
            if problem:
                timing.unexpected(problem)
            return check.seconds, check.window

        def deny_call() -> Any:
            response = self.deny.lambda_handler(next(deny_events), context)
            if response.get("statusCode") != 200:
                timing.unexpected(f"deny-mode check answered {response.get('statusCode')}")
            return response

        timing.run(overage_call, deny_call, checks, batch, warmup)
        summary = timing.summary("check")
        return {
            "checks": checks,
            "batch": batch,
            "warmup": warmup,
            "overage": summary["handler"],
            "deny": summary["raw"],
            "ratio_median": summary["ratio_median"],
            "ratio_mean": summary["ratio_mean"],
            "batch_ratio_median_min_max": summary["batch_ratio_median_min_max"],
            "overage_requests_per_check": summary["handler_requests_per_check"],
            "deny_requests_per_check": summary["raw_requests_per_check"],
            "unexpected_outcomes": summary["unexpected_outcomes"],
        }


# ------------------------------------------------------------------------ 2. the drain


class _TimedSender:
    """The drain's sender, the time it spends sending summed."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.seconds = 0.0

    def send(self, events: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.sender.send(events)
        finally:
            self.seconds += time.perf_counter() - started


class DrainBench:
    def __init__(self, bench: FunctionBench, catalog: Any, billing_table: str) -> None:
        import boto3

        from billwatch.billing.meter_stream import RetryPolicy, V1MeterSender, V2MeterEventStream
        from devtools.fake_meters import FakeMeters, MeterServer

        self.counter = bench.counter
        self.step = bench.step
        self.catalog = catalog
        self.table = billing_table
        self.client = boto3.client("dynamodb")
        self.meters = FakeMeters()
        self.meters.add_meter(EVENT_NAME)
        self.server = MeterServer(self.meters)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        key = lambda: "rk_test_bench"  # noqa: E731
        policy = RetryPolicy(attempts=1)  # a failure is a bench problem, not something to wait out
        self.senders = {
            "v1": V1MeterSender(key, self.server.url, policy),
            "v2": V2MeterEventStream(key, self.server.url, self.server.url, policy),
        }
        self.queue = boto3.client("sqs").create_queue(QueueName="bench-overage-drain-dlq")["QueueUrl"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seed(self, count: int, tag: str) -> dict[str, int]:
        """``count`` FREE accounts past the quota and on the drain's list, as checks leave them."""
        from billwatch.core.models import overage_shard

        now = int(time.time())
        owed = {f"acct_drain_{tag}_{n:04d}": 1 + (n * 37) % 1000 for n in range(count)}
        items = [
            {
                "pk": {"S": account},
                "stripe_customer_id": {"S": f"cus_{account}"},
                "usage_since": {"N": str(now)},
                f"used_{FEATURE}": {"N": str(QUOTA + units)},
                "overage_due": {"S": overage_shard(account)},
            }
            for account, units in owed.items()
        ]
        for start in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            self.client.batch_write_item(RequestItems={self.table: batch})
        return owed

    def drain(self, timed: _TimedSender, name: str) -> Any:
        """The drain as deployed, its SenderChoice held to one side: v1 for any run, or v2 for any run."""
        from billwatch.billing.overage_drain import DeadLetters, OverageDrain, SenderChoice, SendFailures
        from billwatch.core.metrics import MetricsRecorder
        from billwatch.licensing.overage_ledger import OverageLedger

        return OverageDrain(
            OverageLedger(self.catalog),
            SenderChoice(timed, timed, threshold=sys.maxsize if name == "v1" else 1),
            MetricsRecorder("Billwatch", "billwatch"),
            DeadLetters(self.queue),
            SendFailures(),
        )

    def run(self, drain: Any, timed: _TimedSender | None = None) -> dict[str, Any]:
        logged = _stdout_bytes()
        with self.counter.window() as window:
            started, cpu = time.perf_counter(), time.thread_time()
            result = drain.run()
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
        return {
            "result": result,
            "log_bytes": _stdout_bytes() - logged,
            "seconds": wall,
            "cpu_seconds": cpu,  # this thread's: the drain's own work, not moto's nor the stand-in's
            "send_seconds": timed.seconds if timed else 0.0,
            "requests": Counter(self.step(request) for request in window.dynamodb),
            "dynamodb_requests": len(window.dynamodb),
        }

    def side(self, name: str, accounts: int, tag: str) -> dict[str, Any]:
        owed = self.seed(accounts, tag)
        units_before, batches_before = self.meters.units(), len(self.meters.stream_batches)
        sessions_before = self.meters.sessions_created
        timed = _TimedSender(self.senders[name])
        sent = self.run(self.drain(timed, name), timed)
        result = sent["result"]
        problems = []
        received = self.meters.units() - units_before
        if (result.events_sent, result.units_sent, received) != (
            len(owed),
            sum(owed.values()),
            sum(owed.values()),
        ):
            problems.append(
                f"{result.events_sent} events / {result.units_sent} units settled, {received} received;"
                f" expected {len(owed)} / {sum(owed.values())}"
            )
        released = self.run(self.drain(timed, name))  # everything sent: each account leaves the list
        if released["result"].released != len(owed):
            problems.append(f"the next run released {released['result'].released} of {len(owed)}")
        stripe_requests = (
            len(owed)
            if name == "v1"
            else len(self.meters.stream_batches)
            - batches_before
            + self.meters.sessions_created
            - sessions_before
        )
        return {
            "events": result.events_sent,
            "units": result.units_sent,
            "seconds": sent["seconds"],
            "send_seconds": sent["send_seconds"],
            "cpu_seconds": sent["cpu_seconds"],
            "stripe_requests": stripe_requests,
            "send_requests": dict(sent["requests"]),
            "send_dynamodb_requests": sent["dynamodb_requests"],
            "log_bytes": sent["log_bytes"],
            "release_seconds": released["seconds"],
            "release_log_bytes": released["log_bytes"],
            "release_requests": dict(released["requests"]),
            "release_dynamodb_requests": released["dynamodb_requests"],
            "problems": problems,
        }

    def throughput(self, accounts: int, rounds: int) -> dict[str, Any]:
        # One untimed round per side: the sessions, the connections, the code paths warmed.
        for name in self.senders:
            self.side(name, 20, f"warm{name}")
        empty = self.run(self.drain(_TimedSender(self.senders["v1"]), "v1"))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in self.senders}
        for round_ in range(rounds):
            for name in ("v1", "v2") if round_ % 2 == 0 else ("v2", "v1"):
                runs[name].append(self.side(name, accounts, f"{name}r{round_}"))
        sides = {name: _side_summary(found) for name, found in runs.items()}
        return {
            "accounts_per_run": accounts,
            "rounds": rounds,
            "sides": sides,
            "ratio_v2_v1_events_per_second": round(
                sides["v2"]["events_per_second"] / sides["v1"]["events_per_second"], 2
            ),
            "ratio_v2_v1_send_events_per_second": round(
                sides["v2"]["send_events_per_second"] / sides["v1"]["send_events_per_second"], 2
            ),
            "empty_run": {
                "seconds": round(empty["seconds"], 4),
                "log_bytes": empty["log_bytes"],
                "dynamodb_requests": empty["dynamodb_requests"],
                "requests": dict(empty["requests"]),
            },
            "problems": [problem for found in runs.values() for run in found for problem in run["problems"]],
        }


def _side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side: rates from the median run, requests per event summed over the runs."""
    events = sum(run["events"] for run in runs)

    def per_event(key: str) -> dict[str, float]:
        total: Counter[str] = Counter()
        for run in runs:
            total.update(run[key])
        return {step: round(count / events, 3) for step, count in sorted(total.items())}

    def rate(key: str, of: str = "events") -> float:
        return round(median([run[of] / run[key] for run in runs]), 1)

    return {
        "runs": len(runs),
        "events": events,
        "units": sum(run["units"] for run in runs),
        "events_per_second": rate("seconds"),
        "units_per_second": rate("seconds", "units"),
        "send_events_per_second": rate("send_seconds"),
        "ms_per_event": round(median([run["seconds"] / run["events"] for run in runs]) * 1000, 3),
        "cpu_ms_per_event": round(median([run["cpu_seconds"] / run["events"] for run in runs]) * 1000, 3),
        "stripe_requests_per_event": round(sum(run["stripe_requests"] for run in runs) / events, 3),
        "send_requests_per_event": per_event("send_requests"),
        "send_dynamodb_requests_per_event": round(
            sum(run["send_dynamodb_requests"] for run in runs) / events, 3
        ),
        "release_requests_per_account": per_event("release_requests"),
        "release_dynamodb_requests_per_account": round(
            sum(run["release_dynamodb_requests"] for run in runs) / events, 3
        ),
        "log_bytes_per_event": round(sum(run["log_bytes"] for run in runs) / events),
        "release_log_bytes_per_account": round(sum(run["release_log_bytes"] for run in runs) / events),
        "release_ms_per_account": round(
            median([run["release_seconds"] / run["events"] for run in runs]) * 1000, 3
        ),
    }


# ------------------------------------------------------------------------ 3. cost


def drain_memory_gb() -> float:
    from devtools.template import function_properties, load_template

    return int(function_properties(load_template(TEMPLATE_PATH), "OverageDrainFunction")["MemorySize"]) / 1024


def _units(requests: dict[str, float], operations: tuple[str, ...]) -> float:
    return sum(count for step, count in requests.items() if step.split("(")[0] in operations)


def cost_per_million_units(drain: dict[str, Any], memory_gb: float) -> dict[str, Any]:
    """Dollars for 1,000,000 overage units a month, from the measured requests and times.

    Every UpdateItem is one write unit (items under 1 KB), every item read by a consistent
    BatchGetItem or GetItem one read unit (under 4 KB), every index Query half a unit (eventually
    consistent, pages under 4 KB). A run's Lambda time is the measured wall time on loopback (moto
    standing in for DynamoDB's milliseconds) plus STRIPE_REQUEST_MS per Stripe request."""
    prices = UNIT_PRICES_USD
    v1 = drain["sides"]["v1"]
    send, release = v1["send_requests_per_event"], v1["release_requests_per_account"]
    gb_second = memory_gb * prices["lambda_gb_second_arm64"]

    def dollars(writes: float, reads: float, seconds: float, log_bytes: float) -> float:
        return (
            writes * prices["dynamodb_write_request_unit"]
            + reads * prices["dynamodb_read_request_unit"]
            + seconds * gb_second
            + log_bytes / 1e9 * prices["logs_ingested_gb"]
        )

    # Per event: the pin and the settle, its item read in the run's BatchGetItem, v1's request to Stripe
    # (runs of fewer than 100 events use v1; the index queries are the schedule's, counted below).
    event_writes = _units(send, ("UpdateItem", "PutItem", "DeleteItem"))
    event_reads = 1.0  # its item, in a BatchGetItem of up to 100: units are per item, not per request
    event_seconds = v1["ms_per_event"] / 1000 + v1["stripe_requests_per_event"] * STRIPE_REQUEST_MS / 1000
    per_event = dollars(event_writes, event_reads, event_seconds, v1["log_bytes_per_event"])
    # After a burst: the next run finds nothing owed and releases the account (its item read in the
    # batch, read again and written), and the next check past the quota marks it again (one write).
    release_writes = _units(release, ("UpdateItem",)) + 1
    release_reads = 1 + _units(release, ("GetItem",))
    per_burst = dollars(
        release_writes,
        release_reads,
        v1["release_ms_per_account"] / 1000,
        v1["release_log_bytes_per_account"],
    )
    # A run: its invocation, the index queries, an empty run's time and logs (with Lambda's own lines),
    # and its trace: X-Ray's default rule records the first request each second, so every run.
    empty = drain["empty_run"]
    per_run = (
        prices["lambda_request"]
        + INDEX_QUERIES_PER_RUN * QUERY_READ_UNITS * prices["dynamodb_read_request_unit"]
        + max(0.001, empty["seconds"]) * gb_second
        + (empty["log_bytes"] + LAMBDA_PLATFORM_LOG_BYTES) / 1e9 * prices["logs_ingested_gb"]
        + prices["xray_trace_recorded"]
    )
    fixed_month = RUNS_A_MONTH * per_run
    # Worst case: every unit alone (a new unit per account each minute): an event each, and after it the
    # account released and marked again. Aggregated: 1,000 accounts x 1,000 units, a month each in one
    # event. Either way the units arrive over a month, a few events a run: v1.
    worst_events = 1_000_000
    aggregated_events = 1_000
    return {
        "assumptions": {
            "stripe_request_ms": STRIPE_REQUEST_MS,
            "memory_gb": memory_gb,
            "runs_a_month": RUNS_A_MONTH,
            "event_writes": event_writes,
            "event_reads": event_reads,
            "event_seconds": round(event_seconds, 4),
            "release_writes_incl_remark": release_writes,
            "release_reads": release_reads,
            "index_queries_per_run": INDEX_QUERIES_PER_RUN,
            "log_bytes_per_event": v1["log_bytes_per_event"],
            "log_bytes_per_run": empty["log_bytes"] + LAMBDA_PLATFORM_LOG_BYTES,
        },
        "per_event_usd": per_event,
        "per_burst_usd": per_burst,
        "fixed_month_usd": round(fixed_month, 4),
        "worst_case": {
            "events": worst_events,
            "usd": round(fixed_month + worst_events * (per_event + per_burst), 2),
            "without_releases_usd": round(fixed_month + worst_events * per_event, 2),
            "dynamodb_usd": round(
                worst_events
                * (
                    event_writes * prices["dynamodb_write_request_unit"]
                    + event_reads * prices["dynamodb_read_request_unit"]
                ),
                2,
            ),
            "lambda_usd": round(worst_events * event_seconds * gb_second, 2),
            "release_and_remark_usd": round(worst_events * per_burst, 2),
        },
        "aggregated": {
            "events": aggregated_events,
            "usd": round(fixed_month + aggregated_events * (per_event + per_burst), 2),
        },
    }


# ------------------------------------------------------------------------ entry point


def _stdout_bytes() -> int:
    """What the process has written to its stdout (the log file) so far."""
    sys.stdout.flush()
    return os.fstat(1).st_size


@contextlib.contextmanager
def _stdout_to_log() -> Iterator[None]:
    """The handlers' and the drain's logs to a file: Powertools keeps the stream it was made with."""
    sys.stdout.flush()
    saved = os.dup(1)
    with STDOUT_LOG.open("w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def measure(
    checks: int = 150, batch: int = 15, warmup: int = 15, accounts: int = 100, rounds: int = 2
) -> dict[str, Any]:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    layer = REPO_ROOT / "layers" / "shared"  # the package as checked in; its dependencies from the venv
    with _stdout_to_log(), moto_server(layer, unset=("STRIPE_WEBHOOK_SECRET",)) as endpoint:
        from bench.licensing import Bench, _usage_events_topic

        deployment = deploy(LICENSING_FUNCTION_DIR, extra_env=_usage_events_topic)
        bench = Bench(deployment)
        deny_app = bench.load_module(fresh_container=True)
        os.environ["PLAN_CATALOG_PATH"] = str(overage_catalog_file())
        overage_app = bench.load_module(fresh_container=False)
        # The drain first: the accounts the checks put on its list (no Stripe customer) would be read by
        # every run.
        drain_bench = DrainBench(bench, overage_app.licensing.policy.catalog, bench.table_of("billing"))
        try:
            drain = drain_bench.throughput(accounts, rounds)
        finally:
            drain_bench.close()
        checks_bench = CheckBench(bench, deny_app, overage_app)
        scenarios = checks_bench.request_counts()
        warm = checks_bench.warm_timing(checks, batch, warmup)
    memory_gb = drain_memory_gb()
    return {
        "endpoint": endpoint,
        "scenarios": scenarios,
        "warm": warm,
        "drain": drain,
        "cost": cost_per_million_units(drain, memory_gb),
        "seconds": round(time.perf_counter() - started, 1),
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
    }


def warm_passed(warm: dict[str, Any]) -> bool:
    return warm["ratio_median"] <= OVERAGE_CHECK_WARM_MAX_RATIO and not warm["unexpected_outcomes"]


def drain_passed(drain: dict[str, Any]) -> bool:
    return drain["ratio_v2_v1_send_events_per_second"] >= V2_MIN_SEND_SPEEDUP and not drain["problems"]


def render(figures: dict[str, Any]) -> list[str]:
    lines = [
        "8. Overage billing (moto's server and the Stripe meters stand-in on loopback; bench/overage.py)"
    ]
    add = lines.append
    add("   usage check, overage enabled (FREE api_calls billed past its quota of 1000): DynamoDB requests")
    for scenario in figures["scenarios"]:
        limit = scenario["limit"]
        mark = "-" if limit is None else ("=" if scenario.get("exact") else "<=") + str(limit)
        verdict = "info" if scenario["pass"] is None else ("PASS" if scenario["pass"] else "FAIL")
        sequences = sorted({" + ".join(run["sequence"]) for run in scenario["runs"]})
        add(f"     {scenario['requests']:>2} ({mark:>3}) {verdict:<4}  {scenario['title']}")
        add(f"                      {' | '.join(sequences)}")
        for problem in scenario["problems"]:
            add(f"       PROBLEM: {problem}")
    warm = figures["warm"]
    _, low, high = warm["batch_ratio_median_min_max"]
    add(
        "   warm handler time, overage check past the quota / deny-mode check within it:"
        f" {warm['ratio_median']:.2f}x ({warm['overage']['median_ms']:.2f} vs"
        f" {warm['deny']['median_ms']:.2f} ms medians, {warm['checks']} checks a side,"
        f" batches {low:.2f}-{high:.2f}x)"
        f" -> {'PASS' if warm_passed(warm) else 'FAIL'}"
        f" (target <= {OVERAGE_CHECK_WARM_MAX_RATIO}x)"
    )
    if warm["unexpected_outcomes"]:
        add(f"   PROBLEM: unexpected outcomes while timing: {warm['unexpected_outcomes']}")
    drain = figures["drain"]
    add(
        f"   meter reporting: OverageDrain.run over {drain['accounts_per_run']} accounts owing 1-1000 units,"
        f" {drain['rounds']} runs a side, alternating (medians of the runs):"
    )
    for name, label in (("v1", "v1, a request per event"), ("v2", "v2 stream, 100 events a request")):
        side = drain["sides"][name]
        add(
            f"     {label:<32} {side['events_per_second']:>6.0f} events/s {side['units_per_second']:>8.0f}"
            f" units/s (send alone {side['send_events_per_second']:.0f} events/s; per event"
            f" {side['ms_per_event']:.2f} ms, drain CPU {side['cpu_ms_per_event']:.2f} ms,"
            f" {side['stripe_requests_per_event']:.2f} Stripe requests)"
        )
    add(
        f"     ratio v2/v1: {drain['ratio_v2_v1_events_per_second']:.2f}x end to end, "
        f"{drain['ratio_v2_v1_send_events_per_second']:.2f}x the send alone -> "
        f"{'PASS' if drain_passed(drain) else 'FAIL'} (target: the send alone >= {V2_MIN_SEND_SPEEDUP:g}x,"
        " every unit received once)"
    )
    v1 = drain["sides"]["v1"]
    per_event = ", ".join(f"{step} {count:g}" for step, count in v1["send_requests_per_event"].items())
    per_release = ", ".join(f"{step} {count:g}" for step, count in v1["release_requests_per_account"].items())
    add(f"     DynamoDB requests per event sent: {v1['send_dynamodb_requests_per_event']:g} ({per_event})")
    add(
        f"     the next run, releasing each: {v1['release_dynamodb_requests_per_account']:g} an account"
        f" ({per_release}); a run with nothing owed: {drain['empty_run']['dynamodb_requests']} requests"
    )
    projected = {
        name: 1000 / (side["ms_per_event"] + side["stripe_requests_per_event"] * STRIPE_REQUEST_MS)
        for name, side in drain["sides"].items()
    }
    add(
        f"     with {STRIPE_REQUEST_MS:.0f} ms a Stripe request (assumed) instead of loopback's: v1"
        f" {projected['v1']:.0f} events/s, v2 {projected['v2']:.0f} events/s"
        f" ({projected['v2'] / projected['v1']:.1f}x): a run's 50 s fit {50 * projected['v1']:.0f} v1 events,"
        " hence the stream from 100 events a run"
    )
    for problem in drain["problems"]:
        add(f"     PROBLEM: {problem}")
    cost = figures["cost"]
    assumed = cost["assumptions"]
    add(
        f"   cost per 1,000,000 overage units a month (us-east-1; {assumed['memory_gb']:g} GB drain,"
        f" Stripe request {assumed['stripe_request_ms']:.0f} ms assumed, items < 1 KB):"
    )
    add(
        f"     per event ${cost['per_event_usd'] * 1e6:.2f} per million ({assumed['event_writes']:g} writes,"
        f" {assumed['event_reads']:g} read, {assumed['event_seconds'] * 1000:.0f} ms of Lambda);"
        f" per burst after an idle spell (release + re-mark) ${cost['per_burst_usd'] * 1e6:.2f} per million;"
        f" the minute schedule ${cost['fixed_month_usd']:.2f} a month (43,200 runs: invocations, index"
        f" queries, a trace and {assumed['log_bytes_per_run']} B of logs each)"
    )
    worst, aggregated = cost["worst_case"], cost["aggregated"]
    add(
        f"     1 unit per event ({worst['events']:,} events): ${worst['usd']:.2f} (sending: DynamoDB"
        f" ${worst['dynamodb_usd']:.2f}, Lambda ${worst['lambda_usd']:.2f}; release and re-mark after each"
        f" ${worst['release_and_remark_usd']:.2f}; schedule ${cost['fixed_month_usd']:.2f});"
        f" ${worst['without_releases_usd']:.2f} while each account keeps owing from run to run"
    )
    add(
        f"     aggregated, 1,000 accounts x 1,000 units, one event each ({aggregated['events']:,} events):"
        f" ${aggregated['usd']:.2f} (mostly the schedule)"
    )
    return lines


def table_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """make bench's table: each figure beside the reference it was measured against in the same run."""
    scenarios = {scenario["key"]: scenario for scenario in figures["scenarios"]}
    warm, drain, cost = figures["warm"], figures["drain"], figures["cost"]
    v1, v2 = drain["sides"]["v1"], drain["sides"]["v2"]
    rows = [
        {
            "figure": f"DynamoDB requests: usage check past an overage quota{label}",
            "value": str(scenarios[key]["requests"]),
            "reference": "counted on the wire",
        }
        for key, label in (
            ("overage_plain", ""),
            ("overage_keyed", ", new idempotency key"),
            ("overage_first", ", first of the period (the drain's list)"),
        )
    ]
    rows += [
        {
            "figure": "warm usage check: past an overage quota / deny mode",
            "value": f"{warm['ratio_median']:.2f}x",
            "reference": f"{warm['overage']['median_ms']:.2f} ms vs {warm['deny']['median_ms']:.2f} ms"
            " (medians)",
        },
        {
            "figure": "overage drain: meter events sent, v2 stream / v1",
            "value": f"{drain['ratio_v2_v1_events_per_second']:.2f}x",
            "reference": f"v1 {v1['events_per_second']:.0f} events/s ({v1['units_per_second']:.0f} units/s),"
            f" v2 {v2['events_per_second']:.0f} events/s ({v2['units_per_second']:.0f} units/s) end to end"
            f" on loopback; the send alone {drain['ratio_v2_v1_send_events_per_second']:.1f}x",
        },
        {
            "figure": "overage drain: DynamoDB requests per event sent",
            "value": f"{v1['send_dynamodb_requests_per_event']:g}",
            "reference": "pin + settle, and the run's index queries and batch reads shared",
        },
        {
            "figure": "estimated AWS cost per 1,000,000 overage units a month",
            "value": f"${cost['worst_case']['usd']:.2f}",
            "reference": f"1 unit per event, worst case; aggregated (1,000 accounts x 1,000 units)"
            f" ${cost['aggregated']['usd']:.2f} (Stripe request {STRIPE_REQUEST_MS:.0f} ms assumed)",
        },
    ]
    return rows


def main() -> int:
    figures = measure()
    if "--json" in sys.argv:
        print(json.dumps(figures, default=str))
    else:
        print("\n".join(render(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
