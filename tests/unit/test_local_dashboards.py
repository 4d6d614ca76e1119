"""The local dashboards: each CloudWatch dashboard widget of a template, with its series computed from
the metrics in a MetricStore."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.alarm_evaluator import MetricKey, MetricStore
from devtools.local_dashboards import dashboard_series
from devtools.template import DASHBOARD_TYPE, load_template, resolved_properties

START = 1_700_000_100  # a multiple of 60 and 300, so the periods are easy to read
END = START + 3 * 60
SERVICE = {"service": "billwatch"}


def template_with(*widgets: dict[str, Any]) -> dict[str, Any]:
    body = {"widgets": [{"x": 0, "y": 0, "width": 12, "height": 6, **widget} for widget in widgets]}
    dashboard = {
        "Type": DASHBOARD_TYPE,
        "Properties": {"DashboardName": "ops", "DashboardBody": json.dumps(body)},
    }
    return {"Resources": {"OpsDashboard": dashboard}}


def metric_widget(metrics: list[list[Any]], **properties: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {"title": "chart", "period": 60, "metrics": metrics, **properties},
    }


def only_widget(store: MetricStore, widget: dict[str, Any]) -> dict[str, Any]:
    (dashboard,) = dashboard_series(template_with(widget), store, START, END)
    assert dashboard["name"] == "ops"
    (shown,) = dashboard["widgets"]
    return shown


def put(
    store: MetricStore, name: str, offsets_and_values: list[tuple[float, float]], **dimensions: str
) -> None:
    key = MetricKey.of("Billwatch", name, **(dimensions or SERVICE))
    for offset, value in offsets_and_values:
        store.put(key, START + offset, value)


def test_explicit_metrics_give_a_series_per_row_at_the_widgets_period_and_statistic() -> None:
    store = MetricStore()
    put(store, "WebhookProcessingTime", [(0, 100), (10, 300), (20, 200), (70, 50), (190, 999)])
    # Another dimension set is another metric, as in CloudWatch.
    put(store, "WebhookProcessingTime", [(0, 10_000)], service="billwatch", EventType="invoice.paid")

    shown = only_widget(
        store,
        metric_widget(
            [
                [
                    "Billwatch",
                    "WebhookProcessingTime",
                    "service",
                    "billwatch",
                    {"stat": "p50", "label": "p50"},
                ],
                ["Billwatch", "WebhookProcessingTime", "service", "billwatch", {"yAxis": "right"}],
                ["Billwatch", "WebhookProcessingTime", "service", "billwatch", {"stat": "SampleCount"}],
            ],
            stat="Maximum",
        ),
    )

    assert {key: shown[key] for key in ("type", "x", "y", "width", "height", "title")} == {
        "type": "metric",
        "x": 0,
        "y": 0,
        "width": 12,
        "height": 6,
        "title": "chart",
    }
    assert shown["series"] == [
        {"label": "p50", "points": [[START, 200], [START + 60, 50]], "yAxis": "left"},
        {"label": "WebhookProcessingTime", "points": [[START, 300], [START + 60, 50]], "yAxis": "right"},
        {"label": "WebhookProcessingTime", "points": [[START, 3], [START + 60, 1]], "yAxis": "left"},
    ]


def test_the_dot_shorthands_repeat_the_row_above() -> None:
    store = MetricStore()
    put(store, "QuotaCheck", [(0, 1), (1, 1)], service="billwatch", Result="allowed")
    put(store, "QuotaCheck", [(0, 1)], service="billwatch", Result="denied")

    shown = only_widget(
        store,
        metric_widget(
            [
                [
                    "Billwatch",
                    "QuotaCheck",
                    "service",
                    "billwatch",
                    "Result",
                    "allowed",
                    {"label": "allowed"},
                ],
                ["...", "denied", {"label": "denied"}],
                [".", ".", ".", ".", ".", "allowed", {"stat": "SampleCount", "label": "checks"}],
            ],
            stat="Sum",
        ),
    )

    assert [(s["label"], s["points"]) for s in shown["series"]] == [
        ("allowed", [[START, 2]]),
        ("denied", [[START, 1]]),
        ("checks", [[START, 2]]),
    ]


def test_an_expression_with_fill_is_computed_over_hidden_metrics_which_are_not_returned() -> None:
    store = MetricStore()
    put(store, "WebhookReceived", [(0, 1), (1, 1), (2, 1), (3, 1), (60, 1), (61, 1)])
    put(store, "WebhookFailed", [(0, 1)])

    shown = only_widget(
        store,
        metric_widget(
            [
                [{"expression": "100 * (1 - FILL(f, 0) / r)", "id": "rate", "label": "Success rate (%)"}],
                [
                    "Billwatch",
                    "WebhookFailed",
                    "service",
                    "billwatch",
                    {"id": "f", "stat": "Sum", "visible": False},
                ],
                [
                    "Billwatch",
                    "WebhookReceived",
                    "service",
                    "billwatch",
                    {"id": "r", "stat": "Sum", "visible": False},
                ],
            ]
        ),
    )

    # FILL gives the failures 0 in the second minute; the third has no webhooks, hence no rate.
    assert shown["series"] == [
        {"label": "Success rate (%)", "points": [[START, 75.0], [START + 60, 100.0]], "yAxis": "left"}
    ]


def test_a_search_gives_a_series_per_metric_with_exactly_its_dimensions_labelled_by_their_values() -> None:
    store = MetricStore()
    put(store, "QuotaCheck", [(0, 2)], service="billwatch", Feature="exports", Result="denied")
    put(store, "QuotaCheck", [(0, 1), (70, 4)], service="billwatch", Feature="api_calls", Result="denied")
    put(store, "QuotaCheck", [(0, 9)], service="billwatch", Feature="exports", Result="allowed")
    put(store, "QuotaCheck", [(0, 9)], service="billwatch", Result="denied")  # other dimensions
    put(store, "LimitHit", [(0, 9)], service="billwatch", Feature="exports", Result="denied")  # other name
    search = (
        "SEARCH('{Billwatch,service,Feature,Result} MetricName=\"QuotaCheck\" Result=\"denied\"', 'Sum', 60)"
    )

    shown = only_widget(store, metric_widget([[{"expression": search, "id": "denied", "label": ""}]]))

    assert shown["series"] == [
        {"label": "billwatch api_calls denied", "points": [[START, 1], [START + 60, 4]], "yAxis": "left"},
        {"label": "billwatch exports denied", "points": [[START, 2]], "yAxis": "left"},
    ]


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ('SELECT SUM(UsageCounted) FROM SCHEMA("Billwatch", service, Feature)', "Metrics Insights"),
        ("SEARCH('{Billwatch,service} Quota', 'Sum', 60)", 'only exact Name="value" terms'),
        (
            "SEARCH('{Billwatch,service} MetricName=\"QuotaCheck\"', 'tm99', 60)",
            "unsupported statistic 'tm99'",
        ),
        ("SUM(METRICS())", "unknown or unsupported function 'METRICS'"),
    ],
)
def test_what_is_not_computed_locally_gives_a_note_instead_of_series(expression: str, why: str) -> None:
    shown = only_widget(MetricStore(), metric_widget([[{"expression": expression, "id": "e1"}]]))

    assert "series" not in shown
    assert shown["note"].startswith("not shown locally: ")
    assert why in shown["note"]


def test_text_and_alarm_widgets_give_their_markdown_and_alarm_names() -> None:
    template = template_with(
        {"type": "text", "properties": {"markdown": "## Runbooks"}},
        {
            "type": "alarm",
            "properties": {"title": "Alarms", "alarms": ["Errors.Arn", "arn:aws:cloudwatch:r:1:alarm:x"]},
        },
    )
    template["Resources"]["Errors"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {"AlarmName": "ops-errors"},
    }

    (dashboard,) = dashboard_series(template, MetricStore(), START, END)

    text, alarms = dashboard["widgets"]
    assert text["markdown"] == "## Runbooks"
    assert (alarms["title"], alarms["alarms"]) == ("Alarms", ["ops-errors", "x"])


def test_the_templates_dashboards_give_a_widget_for_each_of_theirs() -> None:
    template = load_template("template.yaml")
    store = MetricStore()
    put(store, "WebhookReceived", [(0, 1)], service="billwatch", EventType="invoice.paid")

    dashboards = dashboard_series(template, store, START, END)

    bodies = [json.loads(p["DashboardBody"]) for p in resolved_properties(template, DASHBOARD_TYPE).values()]
    assert [len(d["widgets"]) for d in dashboards] == [len(body["widgets"]) for body in bodies]
    for dashboard, body in zip(dashboards, bodies, strict=True):
        for shown, widget in zip(dashboard["widgets"], body["widgets"], strict=True):
            assert (shown["type"], shown["x"], shown["y"]) == (widget["type"], widget["x"], widget["y"])
            if shown["type"] == "metric":
                assert ("series" in shown) != ("note" in shown)
    notes = [w["note"] for d in dashboards for w in d["widgets"] if "note" in w]
    # The audit trail's log widget reads Logs Insights, which the local stack does not run.
    assert notes and all("Metrics Insights" in note or "log widgets" in note for note in notes)
    received = next(w for d in dashboards for w in d["widgets"] if w["title"] == "Webhooks received by type")
    assert [s["label"] for s in received["series"]] == ["billwatch invoice.paid"]
