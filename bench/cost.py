"""What 1,000,000 webhooks and 1,000,000 usage checks cost in AWS, from what this run measured.

``log_bytes()`` (run as ``python -m bench.cost``) measures the CloudWatch Logs bytes one webhook and
one usage check write: the real handlers on moto's server, their stdout (Powertools logs and EMF
metrics) counted, plus the lines Lambda itself writes per invocation. ``estimate()`` turns the
run's request counts, warm durations and those bytes into dollars with the unit prices below.

Unit prices: AWS list prices for us-east-1 (arm64 Lambda, DynamoDB on-demand, HTTP API, CloudWatch
Logs standard ingestion, X-Ray) as published at the time of writing, free tiers left out. Check
them against https://aws.amazon.com/pricing/ before relying on a figure; the request counts and
bytes are what this run measured. Durations are the warm handler medians on moto over loopback, so
they stand in for DynamoDB's own latency (single-digit milliseconds): the same order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.environment import moto_on_loopback, print_figures

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 50

UNIT_PRICES_USD = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,
    "http_api_request": 1.00 / 1e6,
    "dynamodb_write_request_unit": 0.625 / 1e6,
    "dynamodb_read_request_unit": 0.125 / 1e6,
    "logs_ingested_gb": 0.50,
    "xray_trace_recorded": 5.00 / 1e6,
}
MEMORY_GB = 0.5  # Globals.Function.MemorySize: 512
# X-Ray's default sampling rule records the first request each second and 5 % of the rest.
XRAY_SAMPLED_SHARE = 0.05
# START, END and REPORT, which Lambda writes for every invocation (JSON log format).
LAMBDA_PLATFORM_LOG_BYTES = 450


class _Context:
    def __init__(self, name: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


class _CurrentStdout:
    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _load(function_dir: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"bench_{function_dir}", ROOT / "functions" / function_dir / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_bytes() -> dict[str, Any]:
    import boto3

    from devtools import stripe_events as se
    from devtools.signing import stripe_signature_header
    from devtools.template import create_tables, load_template

    secret = "whsec_bench_cost"
    with moto_on_loopback(ROOT):
        tables = create_tables(
            boto3.client("dynamodb"), load_template(ROOT / "template.yaml"), prefix="cost-"
        )
        os.environ.update(
            BILLING_TABLE_NAME=tables["BillingStateTable"],
            IDEMPOTENCY_TABLE_NAME=tables["IdempotencyTable"],
            USAGE_HISTORY_TABLE_NAME=tables["UsageHistoryTable"],
            STRIPE_WEBHOOK_SECRET=secret,
            POWERTOOLS_LOG_LEVEL="INFO",  # what the template deploys
        )
        intake, licensing = _load("webhook_intake"), _load("licensing_api")
        from billwatch.core.observability import logger

        # The logger keeps the stream it was made with: point it at whatever stdout is now.
        logger.registered_handler.stream = _CurrentStdout()
        written = io.StringIO()
        with contextlib.redirect_stdout(written):
            for n in range(SAMPLES):
                sub = se.subscription(
                    id=f"sub_{n}", customer=f"cus_{n}", metadata={"account_id": f"acct_{n}"}
                )
                body = json.dumps(
                    se.event("customer.subscription.updated", sub, created=int(time.time()) + n)
                )
                headers = {"Stripe-Signature": stripe_signature_header(body.encode(), [secret])}
                intake.lambda_handler(
                    se.api_gateway_event(body, headers=headers), _Context("WebhookIntakeFunction")
                )
        webhook = len(written.getvalue().encode())
        written = io.StringIO()
        with contextlib.redirect_stdout(written):
            for n in range(SAMPLES):
                event = _usage_event(f"acct_{n}")
                licensing.lambda_handler(event, _Context("LicensingApiFunction"))
        usage = len(written.getvalue().encode())
    return {
        "samples": SAMPLES,
        "webhook_bytes": round(webhook / SAMPLES) + LAMBDA_PLATFORM_LOG_BYTES,
        "usage_check_bytes": round(usage / SAMPLES) + LAMBDA_PLATFORM_LOG_BYTES,
        "lambda_platform_bytes": LAMBDA_PLATFORM_LOG_BYTES,
    }


def _usage_event(account: str) -> dict[str, Any]:
    from devtools.emulator.http_front import http_api_event, iam_authorizer
    from devtools.emulator.settings import DEFAULT_CALLER_ARN

    return http_api_event(
        method="POST",
        target=f"/v1/accounts/{account}/usage",
        headers=[("content-type", "application/json")],
        body=json.dumps({"feature": "api_calls", "quantity": 1}).encode(),
        route_key="POST /v1/accounts/{account_id}/usage",
        path_parameters={"account_id": account},
        source_ip="10.0.0.1",
        protocol="HTTP/1.1",
        request_id="bench",
        authorizer=iam_authorizer(DEFAULT_CALLER_ARN),
    )


def _per_million(
    requests: int, writes: int, reads: int, duration_ms: float, log_bytes_each: int, through_api: bool = True
) -> dict[str, float]:
    prices = UNIT_PRICES_USD
    billed_ms = max(1, round(duration_ms + 0.5))  # Lambda bills each invocation in whole milliseconds
    parts = {
        "lambda_requests": requests * 1e6 * prices["lambda_request"],
        "lambda_duration": 1e6 * MEMORY_GB * billed_ms / 1000 * prices["lambda_gb_second_arm64"],
        "http_api": 1e6 * prices["http_api_request"] if through_api else 0.0,
        "dynamodb": 1e6
        * (writes * prices["dynamodb_write_request_unit"] + reads * prices["dynamodb_read_request_unit"]),
        "cloudwatch_logs": 1e6 * log_bytes_each / 1e9 * prices["logs_ingested_gb"],
        "xray": 1e6 * XRAY_SAMPLED_SHARE * prices["xray_trace_recorded"],
    }
    parts = {name: round(value, 2) for name, value in parts.items()}
    parts["total"] = round(sum(parts.values()), 2)
    return parts


def estimate(webhook: dict[str, Any], usage: dict[str, Any], logs: dict[str, Any]) -> dict[str, Any]:
    """Dollars per 1,000,000 of each, from the measured requests (each item under 1 KB: one request
    unit per request), the warm handler medians and the log bytes."""
    return {
        "unit_prices_usd": UNIT_PRICES_USD,
        "memory_gb": MEMORY_GB,
        "webhooks": {
            "assumptions": f"{webhook['writes']} writes, {webhook['reads']} reads,"
            f" {webhook['duration_ms']:.2f} ms, {logs['webhook_bytes']} B of logs each",
            **_per_million(
                1, webhook["writes"], webhook["reads"], webhook["duration_ms"], logs["webhook_bytes"]
            ),
        },
        "usage_checks": {
            "assumptions": f"{usage['writes']} write, {usage['reads']} reads, {usage['duration_ms']:.2f} ms,"
            f" {logs['usage_check_bytes']} B of logs each",
            **_per_million(
                1, usage["writes"], usage["reads"], usage["duration_ms"], logs["usage_check_bytes"]
            ),
        },
        "not_per_event": "custom metrics ($0.30 per metric and dimension set a month, first 10,000),"
        " alarms ($0.10 per standard metric a month, anomaly alarms 3x), Secrets Manager ($0.40 a secret"
        " a month; reads are cached), the health probe every minute (about 43,800 invocations a month)",
    }


def render(figures: dict[str, Any]) -> list[str]:
    return [
        f"log bytes per webhook {figures['webhook_bytes']} B, per usage check"
        f" {figures['usage_check_bytes']} B (incl. {figures['lambda_platform_bytes']} B of Lambda's lines)"
    ]


if __name__ == "__main__":
    print_figures(log_bytes, render)
