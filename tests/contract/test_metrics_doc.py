"""docs/metrics.md, the one description of the metrics, agrees with the code and the template.

The doc's catalogue is one Markdown table with fixed columns. Every metric of
``billwatch.core.metrics.METRICS`` has one row, with its unit and every dimension set it is
published with, and nothing else does; the alarms and dashboards a row names are exactly the
template's that read that metric (in billwatch's namespace).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from billwatch.core.metrics import METRICS
from devtools.template import ALARM_TYPE, DASHBOARD_TYPE, parameter_values, resolved_properties
from tests.support import ROOT

DOC = ROOT / "docs" / "metrics.md"
COLUMNS = ("metric", "unit", "dimension sets", "meaning", "alarms", "dashboards")
NONE = "-"


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    dimension_sets: frozenset[tuple[str, ...]]
    alarms: frozenset[str]
    dashboards: frozenset[str]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _names(cell: str) -> frozenset[str]:
    return frozenset() if cell == NONE else frozenset(name.strip().strip("`") for name in cell.split(","))


def catalogue(text: str) -> list[Row]:
    """The rows of the one table whose header is ``COLUMNS``."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("|") and tuple(_cells(line)) == COLUMNS]
    assert len(headers) == 1, f"docs/metrics.md must hold one table headed {' | '.join(COLUMNS)}"
    rows = []
    for line in lines[headers[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(COLUMNS), f"{len(cells)} cells, not {len(COLUMNS)}: {line}"
        metric, unit, sets, _meaning, alarms, dashboards = cells
        rows.append(
            Row(
                metric.strip("`"),
                unit.strip("`"),
                frozenset(
                    tuple(name.strip() for name in found.split(","))
                    for found in re.findall(r"\[([^\]]*)\]", sets)
                ),
                _names(alarms),
                _names(dashboards),
            )
        )
    return rows


# ------------------------------------------------------------- what the template reads

_SEARCH_METRIC = re.compile(r'MetricName="(\w+)"')
_SELECT_METRIC = re.compile(r'SELECT \w+\((\w+)\) FROM SCHEMA\("([^"]+)"')


def _alarm_metrics(props: Mapping[str, Any], namespace: str) -> set[str]:
    if props.get("MetricName"):
        return {props["MetricName"]} if props["Namespace"] == namespace else set()
    found = set()
    for query in props.get("Metrics", []):
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric and metric["Namespace"] == namespace:
            found.add(metric["MetricName"])
    return found


def _dashboard_metrics(body: str, namespace: str) -> set[str]:
    found = set()
    for widget in json.loads(body)["widgets"]:
        for row in (widget.get("properties") or {}).get("metrics", []):
            names = [item for item in row if not isinstance(item, dict)]
            if names:
                if names[0] == namespace:
                    found.add(names[1])
                continue
            expression = next(item for item in row if isinstance(item, dict))["expression"]
            if f"{{{namespace}," in expression:
                found.update(_SEARCH_METRIC.findall(expression))
            found.update(name for name, space in _SELECT_METRIC.findall(expression) if space == namespace)
    return found


def template_readers(template: Mapping[str, Any]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Metric name -> the alarms (logical ids) and the dashboards (name suffixes) that read it."""
    namespace = parameter_values(template)["MetricsNamespace"]
    alarms: dict[str, set[str]] = defaultdict(set)
    for logical_id, props in resolved_properties(template, ALARM_TYPE).items():
        for metric in _alarm_metrics(props, namespace):
            alarms[metric].add(logical_id)
    dashboards: dict[str, set[str]] = defaultdict(set)
    for props in resolved_properties(template, DASHBOARD_TYPE).values():
        name = props["DashboardName"].rsplit("-", 1)[-1]  # billwatch-<stage>-billing -> billing
        for metric in _dashboard_metrics(props["DashboardBody"], namespace):
            dashboards[metric].add(name)
    return alarms, dashboards


# ------------------------------------------------------------------------- the check


def problems(text: str, template: Mapping[str, Any]) -> list[str]:
    rows = catalogue(text)
    found = []
    by_name: dict[str, Row] = {}
    for row in rows:
        if row.metric in by_name:
            found.append(f"{row.metric}: documented twice")
        by_name[row.metric] = row
    declared = {metric.value: definition for metric, definition in METRICS.items()}
    found += [f"{name}: not documented" for name in sorted(declared.keys() - by_name.keys())]
    found += [f"{name}: documented but not in METRICS" for name in sorted(by_name.keys() - declared.keys())]
    alarms, dashboards = template_readers(template)
    for name in sorted(declared.keys() & by_name.keys()):
        row, definition = by_name[name], declared[name]
        if row.unit != definition.unit.value:
            found.append(f"{name}: unit {row.unit}, metrics.py says {definition.unit.value}")
        if row.dimension_sets != set(definition.dimension_sets()):
            found.append(
                f"{name}: dimension sets {sorted(row.dimension_sets)}, "
                f"metrics.py publishes {sorted(definition.dimension_sets())}"
            )
        if row.alarms != alarms.get(name, set()):
            found.append(
                f"{name}: alarms {sorted(row.alarms)}, "
                f"the template's reading it: {sorted(alarms.get(name, []))}"
            )
        if row.dashboards != dashboards.get(name, set()):
            found.append(
                f"{name}: dashboards {sorted(row.dashboards)}, "
                f"the template's reading it: {sorted(dashboards.get(name, []))}"
            )
    return found


def test_the_metrics_doc_agrees_with_metrics_py_and_the_template(template: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert len(catalogue(text)) == len(METRICS)
    assert problems(text, template) == []


def test_the_template_reader_finds_the_alarms_and_both_dashboards(template: dict[str, Any]) -> None:
    alarms, dashboards = template_readers(template)
    assert {"HighWebhookFailureRate", "StripeWebhookFailureRateHigh"} <= alarms["WebhookFailed"]
    assert dashboards["QuotaCheck"] == {"licensing"} and dashboards["MRR"] == {"billing"}
    assert sum(len(names) for names in alarms.values()) > 25


def _row_of(text: str, metric: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{metric}` |"))


def _drop_row(metric: str) -> Any:
    return lambda text: text.replace(_row_of(text, metric) + "\n", "")


def _add_renamed_row(metric: str, old: str, new: str) -> Any:
    def change(text: str) -> str:
        row = _row_of(text, metric)
        return text.replace(row, row + "\n" + row.replace(old, new))

    return change


def _replace_row(metric: str, old: str, new: str) -> Any:
    def change(text: str) -> str:
        row = _row_of(text, metric)
        assert old in row, row
        return text.replace(row, row.replace(old, new, 1))

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_drop_row("QuotaConflict"), "QuotaConflict: not documented"),
        (_add_renamed_row("QuotaConflict", "Conflict", "Clash"), "QuotaClash: documented but not in METRICS"),
        (_replace_row("UpgradeLatency", "| Milliseconds |", "| Seconds |"), "UpgradeLatency: unit Seconds"),
        (_replace_row("WebhookFailed", "; [service, EventType]", ""), "WebhookFailed: dimension sets"),
        (_replace_row("QuotaCheck", "[service, Feature, Result]", "[service, Result, Tier]"), "QuotaCheck:"),
        (_replace_row("HealthProbeRun", "`HealthProbeMissing`", "`ProbeGone`"), "HealthProbeRun: alarms"),
        (_replace_row("PaymentFailed", "`PaymentFailureAnomaly`, ", ""), "PaymentFailed: alarms"),
        (_replace_row("LimitHit", "`licensing`", "`billing`"), "LimitHit: dashboards"),
    ],
)
def test_a_doc_that_disagrees_fails(template: dict[str, Any], change: Any, problem: str) -> None:
    found = problems(change(DOC.read_text(encoding="utf-8")), template)
    assert any(line.startswith(problem) for line in found), found
