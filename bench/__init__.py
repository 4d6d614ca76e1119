"""Performance budget: the webhook intake (cold start, DynamoDB requests, warm time, layer size)
and the licensing API's usage check (DynamoDB requests, warm time).

``make bench`` (``python -m bench``) prints the report and writes ``.bench/results.json``.
Every time figure is a ratio against a baseline measured in the same run, because absolute
times on a shared machine are noise. See bench/README.md for the method.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from devtools.percentiles import nearest_rank

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / ".bench"
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
CONSTRAINTS_PATH = REPO_ROOT / "requirements" / "constraints.txt"

# The Lambda functions the benchmark exercises (matched on their CodeUri in template.yaml).
FUNCTION_DIR = REPO_ROOT / "functions" / "webhook_intake"
LICENSING_FUNCTION_DIR = REPO_ROOT / "functions" / "licensing_api"

# Targets. Ratios compare figures measured in the same run.
COLD_START_MAX_RATIO = 1.3  # handler import / `import boto3`
NEW_EVENT_MAX_REQUESTS = 3
DUPLICATE_MAX_REQUESTS = 1
UNHANDLED_MAX_REQUESTS = 0
WARM_MAX_RATIO = 1.3  # handler time per event / the same DynamoDB calls made directly
LAYER_MAX_MB = 50.0
USAGE_CHECK_REQUESTS = 1  # exactly: a plain usage check that crosses no threshold
USAGE_CHECK_KEYED_MAX_REQUESTS = 2  # the first check with an idempotency key
USAGE_CHECK_REPLAY_MAX_REQUESTS = 1  # the same idempotency key again
USAGE_CHECK_WARM_MAX_RATIO = 1.3  # handler time per plain check / the same UpdateItem made directly
# 2 table reads, the webhook marker, 1 batch of reset checkpoints, 2 DLQs, 1 gauge query per tier
# (2 shipped), the snapshot write: the probe runs every minute, so its cost is counted.
HEALTH_PROBE_MAX_REQUESTS = 9


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """Median / mean / min / p90 / max of durations given in seconds, in milliseconds."""
    ms = [value * 1000 for value in seconds]
    return {
        "n": len(ms),
        "median_ms": round(median(ms), 3),
        "mean_ms": round(mean(ms), 3),
        "min_ms": round(min(ms), 3) if ms else math.nan,
        "p90_ms": round(nearest_rank(ms, 90), 3) if ms else math.nan,
        "max_ms": round(max(ms), 3) if ms else math.nan,
    }
