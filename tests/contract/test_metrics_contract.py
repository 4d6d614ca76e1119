"""Alarms and dashboards in template.yaml may only use metrics and dimension sets the code emits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billwatch.metrics import METRICS, Metric

EMITTED = {metric.value: {frozenset(s) for s in METRICS[metric].dimension_sets()} for metric in Metric}


def metric_references(template: dict[str, Any]) -> list[tuple[str, str, frozenset[str]]]:
    """(where, metric name, dimension names) for every metric an alarm or dashboard reads."""
    found = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::CloudWatch::Alarm":
            queries = (
                [{"MetricStat": {"Metric": props}}] if props.get("MetricName") else props.get("Metrics", [])
            )
            for query in queries:
                metric = (query.get("MetricStat") or {}).get("Metric")
                if metric and metric.get("MetricName"):
                    dims = frozenset(d["Name"] for d in metric.get("Dimensions", []))
                    found.append((logical_id, metric["MetricName"], dims))
        if resource.get("Type") == "AWS::CloudWatch::Dashboard":
            body = props.get("DashboardBody")
            if isinstance(body, str):
                for widget in json.loads(body).get("widgets", []):
                    for row in (widget.get("properties") or {}).get("metrics", []):
                        names = [item for item in row if isinstance(item, str)]
                        if len(names) >= 2 and not names[0].startswith("."):
                            found.append((logical_id, names[1], frozenset(names[2::2])))
    return found


def mismatches(template: dict[str, Any], namespace_metrics: dict[str, set[frozenset[str]]]) -> list[str]:
    return [
        f"{where}: {name} with dimensions {sorted(dims)} is not emitted by billwatch.metrics"
        for where, name, dims in metric_references(template)
        if dims not in namespace_metrics.get(name, set())
    ]


def test_template_alarms_and_dashboards_read_what_the_code_emits(template) -> None:
    assert mismatches(template, EMITTED) == []


@pytest.mark.parametrize(
    ("metric", "dimensions", "ok"),
    [
        ("WebhookReceived", [{"Name": "service", "Value": "billwatch"}], True),
        (
            "WebhookReceived",
            [{"Name": "service", "Value": "billwatch"}, {"Name": "EventType", "Value": "x"}],
            True,
        ),
        ("WebhookReceived", [{"Name": "EventType", "Value": "x"}], False),
        ("WebhookRecieved", [{"Name": "service", "Value": "billwatch"}], False),
    ],
)
def test_the_check_catches_a_wrong_alarm(metric: str, dimensions: list, ok: bool) -> None:
    alarm = {"Type": "AWS::CloudWatch::Alarm", "Properties": {"MetricName": metric, "Dimensions": dimensions}}
    assert (mismatches({"Resources": {"Probe": alarm}}, EMITTED) == []) is ok
