"""What the local stack keeps across restarts when ``BILLWATCH_DATA_DIR`` is set.

On stop, the items of every table of the template and every metric datapoint are written to the
folder (``tables/<LogicalId>.json`` in DynamoDB's own JSON, ``metrics.json``); on start they are put
back, into tables of the new names and into moto's CloudWatch and the alarm evaluator's store.
Each file is written to a temporary name first and renamed, so an interrupted save leaves the
previous snapshot whole. Queues, topics and alarm states start afresh: they are derived again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.alarm_evaluator import MetricKey, MetricStore

log = logging.getLogger("devtools.local_persistence")

_BATCH = 25  # BatchWriteItem's limit
_METRIC_BATCH = 500


def _write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, path)


def save(data_dir: Path, dynamodb: Any, table_names: Mapping[str, str], store: MetricStore) -> dict[str, int]:
    """Write the snapshot; returns how many items each table had, and how many datapoints."""
    counts = {}
    for logical_id, table in table_names.items():
        items = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
        _write(data_dir / "tables" / f"{logical_id}.json", items)
        counts[logical_id] = len(items)
    metrics = [
        {
            "namespace": key.namespace,
            "name": key.name,
            "dimensions": dict(sorted(key.dimensions)),
            "points": store.points(key),
        }
        for key in sorted(store.keys(), key=lambda key: (key.namespace, key.name, sorted(key.dimensions)))
    ]
    _write(data_dir / "metrics.json", metrics)
    counts["datapoints"] = sum(len(metric["points"]) for metric in metrics)
    return counts


def restore(
    data_dir: Path, dynamodb: Any, table_names: Mapping[str, str], cloudwatch: Any, store: MetricStore
) -> dict[str, int]:
    """Put a snapshot back; returns what it restored (nothing when the folder holds none)."""
    counts = {}
    for logical_id, table in table_names.items():
        path = data_dir / "tables" / f"{logical_id}.json"
        if not path.is_file():
            continue
        items = json.loads(path.read_text(encoding="utf-8"))
        for first in range(0, len(items), _BATCH):
            requests = [{"PutRequest": {"Item": item}} for item in items[first : first + _BATCH]]
            pending = {table: requests}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        counts[logical_id] = len(items)
    path = data_dir / "metrics.json"
    if path.is_file():
        restored = 0
        for metric in json.loads(path.read_text(encoding="utf-8")):
            key = MetricKey.of(metric["namespace"], metric["name"], **metric["dimensions"])
            dimensions = [{"Name": name, "Value": value} for name, value in metric["dimensions"].items()]
            points = metric["points"]
            for moment, value in points:
                store.put(key, moment, value)
            for first in range(0, len(points), _METRIC_BATCH):
                data = [
                    {
                        "MetricName": key.name,
                        "Dimensions": dimensions,
                        "Timestamp": datetime.fromtimestamp(moment, UTC),
                        "Value": value,
                    }
                    for moment, value in points[first : first + _METRIC_BATCH]
                ]
                cloudwatch.put_metric_data(Namespace=key.namespace, MetricData=data)
            restored += len(points)
        counts["datapoints"] = restored
    return counts
