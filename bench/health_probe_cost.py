"""What one scheduled health probe run costs, and what the active-subscriptions gauge reads.

Seeds a billing table like a live one on moto's server (loopback): accounts on the free tier that
never subscribed, paying accounts, ended subscriptions and customer -> account redirects. Then
runs the real HealthProbe's scheduled run, counting the AWS requests it sends, and compares the
items its gauge reads on the sparse ActiveSubscriptionsByTier index with what a Scan of the table,
the alternative, reads. Run as ``python -m bench.health_probe_cost``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from bench.environment import moto_on_loopback, print_figures

ROOT = Path(__file__).resolve().parent.parent
# Of every 20 items: 10 free accounts that never subscribed, 4 paying (PRO), 2 ended subscriptions,
# 4 redirects left by customer -> account merges.
MIX = (("free", 10), ("pro", 4), ("ended", 2), ("redirect", 4))


def _item(kind: str, n: int) -> dict[str, Any]:
    key = {"pk": {"S": f"{kind}_{n:07d}"}}
    if kind == "pro":
        live = {"subscription_status": {"S": "active"}, "active_tier": {"S": "PRO"}}
        return {**key, "tier": {"S": "PRO"}, **live}
    if kind == "ended":
        return {**key, "tier": {"S": "FREE"}, "subscription_status": {"S": "canceled"}}
    if kind == "redirect":
        return {**key, "merged_into": {"S": f"pro_{n:07d}"}}
    return {**key, "usage_since": {"N": "1790000000"}, "used_api_calls": {"N": "12"}}


def _seed(client: Any, table: str, items: int) -> Counter:
    kinds = [kind for kind, share in MIX for _ in range(share)]
    seeded: Counter = Counter()
    batch: list[dict[str, Any]] = []
    for n in range(items):
        kind = kinds[n % len(kinds)]
        seeded[kind] += 1
        batch.append({"PutRequest": {"Item": _item(kind, n)}})
        if len(batch) == 25:
            client.batch_write_item(RequestItems={table: batch})
            batch = []
    if batch:
        client.batch_write_item(RequestItems={table: batch})
    return seeded


def _scan_reads(client: Any, table: str) -> int:
    scanned, start = 0, None
    while True:
        page = client.scan(TableName=table, Select="COUNT", **({"ExclusiveStartKey": start} if start else {}))
        scanned += page["ScannedCount"]
        start = page.get("LastEvaluatedKey")
        if start is None:
            return scanned


def measure(items: int = 4000) -> dict[str, Any]:
    with moto_on_loopback(ROOT):
        import boto3
        from botocore.client import BaseClient

        from devtools.template import create_tables, load_template

        client = boto3.client("dynamodb")
        tables = create_tables(client, load_template(ROOT / "template.yaml"))
        sqs = boto3.client("sqs")
        os.environ.update(
            BILLING_TABLE_NAME=tables["BillingStateTable"],
            IDEMPOTENCY_TABLE_NAME=tables["IdempotencyTable"],
            WEBHOOK_DLQ_URL=sqs.create_queue(QueueName="webhook-dlq")["QueueUrl"],
            QUOTA_RESET_DLQ_URL=sqs.create_queue(QueueName="quota-reset-dlq")["QueueUrl"],
        )
        seeded = _seed(client, tables["BillingStateTable"], items)

        from billwatch.core.config import load_settings
        from billwatch.health.probe import build_health_probe

        probe = build_health_probe(load_settings(webhook_secret=False))
        probe._metrics.flush = lambda metadata=None: None  # the EMF lines would swamp the report

        # The steady state, which runs every minute: the very first run also records, once, when
        # the stack began to be watched (billwatch.health.probe.WATCHING_SINCE).
        probe.run_scheduled()
        requests: list[tuple[str, dict]] = []
        original = BaseClient._make_api_call

        def counting(self: BaseClient, operation: str, params: dict) -> Any:
            requests.append((operation, params))
            return original(self, operation, params)

        BaseClient._make_api_call = counting
        try:
            probe.run_scheduled()
            per_run = list(requests)
        finally:
            BaseClient._make_api_call = original
        scanned = _scan_reads(client, tables["BillingStateTable"])
        gauge_reads = 0
        for operation, params in per_run:
            if operation == "Query":
                response = client.query(**{**params, "Select": "COUNT"})
                gauge_reads += response["ScannedCount"]

    operations = Counter(operation for operation, _ in per_run)
    return {
        "items": items,
        "seeded": dict(seeded),
        "requests_per_run": dict(operations),
        "requests_total": sum(operations.values()),
        "gauge_items_read": gauge_reads,
        "scan_items_read": scanned,
        "read_ratio": round(gauge_reads / scanned, 3),
        "gauge_reads_only_live_subscriptions": gauge_reads == seeded["pro"],
    }


def render(figures: dict[str, Any]) -> list[str]:
    per_operation = sorted(figures["requests_per_run"].items())
    requests = ", ".join(f"{count} {operation}" for operation, count in per_operation)
    return [
        "7. Health probe: one scheduled run (real HealthProbe on moto's server, loopback; no Stripe key)",
        f"   requests per run: {figures['requests_total']} ({requests})",
        f"   active-subscriptions gauge on {figures['items']} items {figures['seeded']}:"
        f" reads {figures['gauge_items_read']} index keys, a Scan reads {figures['scan_items_read']}"
        f" items ({figures['read_ratio']:.0%} of a scan; only live subscriptions:"
        f" {'yes' if figures['gauge_reads_only_live_subscriptions'] else 'NO'})",
        "   (moto answers an index query no faster than a scan, so only the items read are compared;"
        " on DynamoDB they are what a read costs)",
    ]


if __name__ == "__main__":
    print_figures(measure, render)
