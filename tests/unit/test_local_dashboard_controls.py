"""What the business dashboard asks of the local renderer: SORT over a SEARCH, setPeriodToTimeRange
over SEARCHes, dashboard variables at their default values, and colour thresholds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.alarm_evaluator import MetricStore
from devtools.local_dashboards import dashboard_series
from devtools.template import load_template
from tests.unit.test_local_dashboards import END, START, metric_widget, only_widget, put, template_with

DECLINES = "SEARCH('{Billwatch,service,DeclineReason} MetricName=\"PaymentDeclined\"', 'Sum', 60)"


def declines(store: MetricStore) -> None:
    put(store, "PaymentDeclined", [(0, 1), (70, 1)], service="billwatch", DeclineReason="card_declined")
    put(store, "PaymentDeclined", [(0, 5)], service="billwatch", DeclineReason="insufficient_funds")
    put(store, "PaymentDeclined", [(130, 1)], service="billwatch", DeclineReason="expired_card")
    put(store, "PaymentDeclined", [(0, 1)], service="billwatch", DeclineReason="fraudulent")


def labels(shown: dict[str, Any]) -> list[str]:
    return [line["label"].removeprefix("billwatch ") for line in shown["series"]]


def test_sort_orders_a_searchs_lines_by_the_function_of_their_values_and_keeps_the_first_ones() -> None:
    store = MetricStore()
    declines(store)
    top = f"SORT({DECLINES}, SUM, DESC, 3)"

    shown = only_widget(store, metric_widget([[{"expression": top, "id": "top", "label": ""}]]))

    # Equal sums (expired_card and fraudulent have 1 each) keep the labels' order.
    assert labels(shown) == ["insufficient_funds", "card_declined", "expired_card"]
    assert shown["series"][1]["points"] == [[START, 1], [START + 60, 1]]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("MAX, ASC", ["card_declined", "expired_card", "fraudulent", "insufficient_funds"]),
        ("AVG, DESC, 2", ["insufficient_funds", "card_declined"]),
        ("min, desc, 1", ["insufficient_funds"]),
    ],
)
def test_sort_takes_each_function_and_order(sort: str, expected: list[str]) -> None:
    store = MetricStore()
    declines(store)

    shown = only_widget(store, metric_widget([[{"expression": f"SORT({DECLINES}, {sort})", "id": "s"}]]))

    assert labels(shown) == expected


def test_sort_over_anything_but_one_search_gives_a_note() -> None:
    shown = only_widget(
        MetricStore(), metric_widget([[{"expression": "SORT(METRICS(), SUM, DESC)", "id": "s"}]])
    )

    assert "series" not in shown
    assert "only SORT over one SEARCH" in shown["note"]


def test_a_whole_range_view_gives_a_search_one_value_of_the_range_whatever_its_own_period() -> None:
    store = MetricStore()
    declines(store)
    top = f"SORT({DECLINES}, SUM, DESC, 10)"

    shown = only_widget(
        store,
        metric_widget(
            [[{"expression": top, "id": "top", "label": ""}]], view="bar", setPeriodToTimeRange=True
        ),
    )

    assert [(label, line["points"]) for label, line in zip(labels(shown), shown["series"], strict=True)] == [
        ("insufficient_funds", [[START, 5]]),
        ("card_declined", [[START, 2]]),
        ("expired_card", [[START, 1]]),
        ("fraudulent", [[START, 1]]),
    ]


def dashboard_with_variables(variables: list[dict[str, Any]], rows: list[list[Any]]) -> dict[str, Any]:
    template = template_with(metric_widget(rows, stat="Sum"))
    body = json.loads(template["Resources"]["OpsDashboard"]["Properties"]["DashboardBody"])
    body["variables"] = variables
    template["Resources"]["OpsDashboard"]["Properties"]["DashboardBody"] = json.dumps(body)
    return template


PLAN = {"type": "property", "property": "Tier", "inputType": "select", "id": "plan", "label": "Plan"}
PLAN_ROW = ["Billwatch", "SubscriptionCreated", "service", "billwatch", "Tier", "PRO", {"label": "Created"}]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ({"defaultValue": "FREE", "values": [{"value": "PRO"}, {"value": "FREE"}]}, "FREE"),
        (
            {"defaultValue": "__FIRST", "values": [{"label": "Free", "value": "FREE"}, {"value": "PRO"}]},
            "FREE",
        ),
        # Searched values come sorted: FREE is the first the store holds.
        (
            {"search": '{Billwatch,service,Tier} MetricName="SubscriptionCreated"', "populateFrom": "Tier"},
            "FREE",
        ),
    ],
)
def test_a_property_variable_puts_its_default_value_in_every_row_with_its_dimension(
    variable: dict[str, Any], value: str
) -> None:
    store = MetricStore()
    put(store, "SubscriptionCreated", [(0, 3)], service="billwatch", Tier="FREE")
    put(store, "SubscriptionCreated", [(0, 7)], service="billwatch", Tier="PRO")
    other = ["Billwatch", "SubscriptionCreated", "service", "billwatch", {"label": "All plans"}]

    (dashboard,) = dashboard_series(
        dashboard_with_variables([{**PLAN, **variable}], [PLAN_ROW, other]), store, START, END
    )

    assert dashboard["variables"] == [
        {"id": "plan", "label": "Plan", "type": "property", "property": "Tier", "value": value}
    ]
    (widget,) = dashboard["widgets"]
    assert [(line["label"], line["points"]) for line in widget["series"]] == [
        ("Created", [[START, 3 if value == "FREE" else 7]]),
        ("All plans", []),  # no datapoint with the service dimension alone
    ]


def test_a_variable_without_a_value_leaves_the_rows_as_written() -> None:
    store = MetricStore()
    put(store, "SubscriptionCreated", [(0, 7)], service="billwatch", Tier="PRO")
    search = {"search": '{Billwatch,service,Tier} MetricName="Nothing"', "populateFrom": "Tier"}

    (dashboard,) = dashboard_series(
        dashboard_with_variables([{**PLAN, **search}], [PLAN_ROW]), store, START, END
    )

    assert dashboard["variables"][0]["value"] is None
    assert dashboard["widgets"][0]["series"][0]["points"] == [[START, 7]]


def test_a_pattern_variable_is_listed_and_not_applied() -> None:
    pattern = {"type": "pattern", "pattern": "PRO", "inputType": "input", "id": "p", "defaultValue": "FREE"}
    store = MetricStore()
    put(store, "SubscriptionCreated", [(0, 7)], service="billwatch", Tier="PRO")

    (dashboard,) = dashboard_series(dashboard_with_variables([pattern], [PLAN_ROW]), store, START, END)

    ((listed),) = dashboard["variables"]
    assert (listed["value"], listed["note"]) == (None, "pattern variables are not applied locally")
    assert dashboard["widgets"][0]["series"][0]["points"] == [[START, 7]]


def test_annotations_keep_their_colour_and_fill_and_drop_what_is_not_a_colour_or_a_side() -> None:
    lines = [
        {"label": "KPI", "value": 95, "color": "#2ca02c", "fill": "above"},
        {"label": "Under", "value": 95, "color": "#d62728", "fill": "below", "yAxis": "right"},
        {"label": "odd", "value": 1, "color": "red; background: url(x)", "fill": "between"},
    ]
    shown = only_widget(MetricStore(), metric_widget([], annotations={"horizontal": lines}))

    assert shown["annotations"] == [
        {"label": "KPI", "value": 95.0, "yAxis": "left", "color": "#2ca02c", "fill": "above"},
        {"label": "Under", "value": 95.0, "yAxis": "right", "color": "#d62728", "fill": "below"},
        {"label": "odd", "value": 1.0, "yAxis": "left", "color": None, "fill": None},
    ]


def test_the_business_dashboard_is_drawn_locally_with_its_variables_and_every_widget() -> None:
    store = MetricStore()
    declines(store)
    put(store, "Deployed", [(0, 1)])
    put(store, "PaymentSucceeded", [(0, 19)])
    put(store, "PaymentFailed", [(0, 1)])

    (business,) = [
        d
        for d in dashboard_series(load_template("template.yaml"), store, START, END)
        if d["name"].endswith("-business")
    ]

    assert [(v["id"], v["value"]) for v in business["variables"]] == [("plan", "PRO"), ("currency", "USD")]
    widgets = {w["title"]: w for w in business["widgets"] if w["type"] == "metric"}
    assert not [title for title, widget in widgets.items() if "note" in widget]
    kpi = {line["label"]: line["points"] for line in widgets["Payment success rate (KPI ≥ 95 %)"]["series"]}
    assert kpi == {
        "Payments succeeded (%)": [[START - START % 900, 95.0]],
        "Deployments": [[START - START % 900, 1]],
    }
    top = widgets["Failed payments by decline reason (top 10)"]
    assert labels(top) == ["insufficient_funds", "card_declined", "expired_card", "fraudulent"]
