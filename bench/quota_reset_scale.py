"""Quota reset throughput on the local emulation, and its projection to 1,000,000 accounts.

Seeds accounts whose counters belong to last month on moto's server (loopback), sweeps them with
the real QuotaReset, once with a single segment and once with several in parallel threads, and
extrapolates from the measured cost per account. Run as ``python -m bench.quota_reset_scale``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from bench.environment import moto_on_loopback, print_figures

ROOT = Path(__file__).resolve().parent.parent
PROJECTED_ACCOUNTS = 1_000_000
SCHEDULE_SECONDS = 3600  # the sweep runs hourly
DEPLOYED_SEGMENTS = 8  # QUOTA_RESET_SEGMENTS in template.yaml


def _seed(client: Any, table: str, count: int, prefix: str, since: int) -> None:
    for start in range(0, count, 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": f"{prefix}{n:07d}"},
                        "usage_since": {"N": str(since)},
                        "used_api_calls": {"N": "17"},
                        "used_exports": {"N": "3"},
                    }
                }
            }
            for n in range(start, min(start + 25, count))
        ]
        client.batch_write_item(RequestItems={table: requests})


def measure(accounts: int = 2000, segments: int = 4) -> dict[str, Any]:
    with moto_on_loopback(ROOT):
        import boto3

        from billwatch.core.metrics import MetricsRecorder
        from billwatch.core.models import bind_billing_table, bind_usage_history_table
        from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
        from billwatch.licensing.quota_reset import QuotaReset
        from billwatch.licensing.service import Licensing
        from devtools.template import create_tables, load_template

        client = boto3.client("dynamodb")
        tables = create_tables(client, load_template(ROOT / "template.yaml"))
        table = tables["BillingStateTable"]
        bind_billing_table(table)
        bind_usage_history_table(tables["UsageHistoryTable"])
        now = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp())
        october = now - 20 * 86400
        catalog = load_catalog_text(shipped_catalog_text(), "plans.json")
        quiet = MetricsRecorder("Bench", "bench")
        quiet.flush = lambda metadata=None: None  # the EMF lines would swamp the report
        job = QuotaReset(Licensing(catalog, quiet, lambda: now), quiet, lambda: now)

        _seed(client, table, accounts, "acct_single_", october)
        started = time.perf_counter()
        single = job.run_segment("bench-single", 0, 1)
        single_seconds = time.perf_counter() - started

        _seed(client, table, accounts, "acct_parallel_", october)
        results: list[Any] = []
        threads = [
            threading.Thread(
                target=lambda s=s: results.append(job.run_segment("bench-parallel", s, segments))
            )
            for s in range(segments)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        parallel_seconds = time.perf_counter() - started

    per_account_ms = single_seconds / max(single.reset, 1) * 1000
    single_rate = single.reset / single_seconds
    parallel_reset = sum(r.reset for r in results)
    # DynamoDB serves parallel scan segments independently; the local server is one process, so
    # the projection scales the single-segment cost by the deployed segment count.
    projected_seconds = PROJECTED_ACCOUNTS / (single_rate * DEPLOYED_SEGMENTS)
    return {
        "accounts": accounts,
        "single_segment": {
            "reset": single.reset,
            "seconds": round(single_seconds, 2),
            "per_second": round(single_rate),
        },
        "parallel": {
            "segments": segments,
            "reset": parallel_reset,
            "seconds": round(parallel_seconds, 2),
            "per_second": round(parallel_reset / parallel_seconds),
        },
        "per_account_ms": round(per_account_ms, 3),
        "projection": {
            "accounts": PROJECTED_ACCOUNTS,
            "segments": DEPLOYED_SEGMENTS,
            "seconds": round(projected_seconds),
            "fits_schedule": projected_seconds < SCHEDULE_SECONDS,
        },
    }


def render(figures: dict[str, Any]) -> list[str]:
    single, parallel, projection = figures["single_segment"], figures["parallel"], figures["projection"]
    return [
        "6. Quota reset sweep throughput (real QuotaReset on moto's server, loopback)",
        f"   one segment:   {single['reset']} accounts reset in {single['seconds']} s"
        f" = {single['per_second']} accounts/s"
        f" ({figures['per_account_ms']} ms per account: its share of a scan page + 1 TransactWriteItems,"
        " the reset and the period it keeps)",
        f"   {parallel['segments']} segments in threads: {parallel['reset']} accounts"
        f" in {parallel['seconds']} s = {parallel['per_second']} accounts/s"
        " (one local server process: no real parallel speed-up here)",
        f"   projection: {projection['accounts']:,} accounts over {projection['segments']} segments"
        f" ≈ {projection['seconds'] / 60:.1f} min at the measured per-account cost ->"
        f" {'fits' if projection['fits_schedule'] else 'does NOT fit'} the hourly schedule",
        "   (each segment hands over to a new invocation before Lambda's 15-minute limit; and because"
        " counters are keyed by period, quotas are right even before the sweep reaches an account)",
    ]


if __name__ == "__main__":
    print_figures(measure, render)
