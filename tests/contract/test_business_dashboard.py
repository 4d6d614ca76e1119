"""The business dashboard (issue 18.3): its panels, controls and KPI colours, and the deployment
marker's rule. That every widget reads a published dimension set is test_metrics_contract's."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from billwatch.core.metrics import METRICS, SERVICE_DIMENSION, Metric
from devtools.local_deployment import CREATED, event_matches, stack_status_change
from devtools.template import DASHBOARD_TYPE, PSEUDO_PARAMETERS, parameter_values, resolved_properties

PAYMENT_SUCCESS = "Payment success rate (KPI ≥ 95 %)"
CONVERSION = "Funnel conversion (%, checkout KPI > 15 %)"
CANCELLATION = "Cancellation rate (% of creations)"
KPI_WIDGETS = (PAYMENT_SUCCESS, CONVERSION, CANCELLATION)
GREEN, RED = "#2ca02c", "#d62728"


@pytest.fixture(scope="module")
def body(template: dict[str, Any]) -> dict[str, Any]:
    return json.loads(resolved_properties(template, DASHBOARD_TYPE)["BusinessDashboard"]["DashboardBody"])


def _widgets(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["properties"]["title"]: w["properties"] for w in body["widgets"] if w["type"] == "metric"}


def _rows(properties: dict[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    return [
        ([i for i in row if not isinstance(i, dict)], (row[-1] if isinstance(row[-1], dict) else {}))
        for row in properties["metrics"]
    ]


def test_the_dashboard_is_named_after_the_stage(template: dict[str, Any]) -> None:
    props = resolved_properties(template, DASHBOARD_TYPE, {"Stage": "prod"})["BusinessDashboard"]
    assert props["DashboardName"] == "billwatch-prod-business"


def test_it_draws_every_panel_the_seeds_ask_for(body: dict[str, Any]) -> None:
    titles = "\n".join(_widgets(body))
    for needed in (
        "Subscriptions created by plan and status",
        "Active subscriptions by plan",
        CANCELLATION,
        PAYMENT_SUCCESS,
        "Paid, refunded and failed amounts",
        "Revenue by plan",
        "MRR by plan and currency",
        "Payment duration p95 by payment method",
        "Failed payments by decline reason (top 10)",
        "Usage by plan",
        "Credits: granted against consumed",
        "Funnel: sessions ended → completed → first invoice paid → upgraded",
        "Suspicious activity and revenue drift",
    ):
        assert needed in titles, needed
    declines = _widgets(body)["Failed payments by decline reason (top 10)"]
    ((expression,),) = [[o["expression"]] for _, o in _rows(declines)]
    assert re.fullmatch(
        r"SORT\(SEARCH\('\{Billwatch,service,DeclineReason\} [^']+', 'Sum', \d+\), SUM, DESC, 10\)",
        expression,
    )


def test_the_funnel_has_every_stage_stripe_reports_and_says_what_it_cannot(body: dict[str, Any]) -> None:
    funnel = next(p for t, p in _widgets(body).items() if t.startswith("Funnel: "))
    shown = [
        (names[1] if names else o["expression"], o.get("label"))
        for names, o in _rows(funnel)
        if o.get("visible", True)
    ]
    assert [label.split(".")[0] for _, label in shown] == ["1", "2", "3", "4"]
    assert [metric for metric, _ in shown[1:]] == [
        "CheckoutCompleted",
        "FirstInvoicePaid",
        "SubscriptionsUpgraded",
    ]
    assert shown[0][0] == "FILL(done, 0) + FILL(gone, 0)"  # completed + expired: the sessions that ended
    header = body["widgets"][0]["properties"]["markdown"]
    assert "Stripe sends no event when a checkout session is created" in header


def test_the_variables_switch_a_published_dimension_and_name_its_values(body: dict[str, Any]) -> None:
    variables = {v["id"]: v for v in body["variables"]}
    assert {(v["property"], v["label"]) for v in variables.values()} == {
        ("Tier", "Plan"),
        ("Currency", "Currency"),
    }
    for variable in variables.values():
        assert variable["type"] == "property" and variable["inputType"] == "select"
        assert variable["populateFrom"] == variable["property"]
        schema, metric = re.fullmatch(r'\{([^}]+)\} MetricName="(\w+)"', variable["search"]).groups()
        namespace, *dimensions = schema.split(",")
        assert namespace == "Billwatch" and variable["property"] in dimensions
        assert tuple(dimensions) in METRICS[Metric(metric)].dimension_sets(), variable["search"]
        # Every row the variable switches holds its default: the dashboard opens on it.
        values = {
            names[names.index(variable["property"]) + 1]
            for properties in _widgets(body).values()
            for names, _ in _rows(properties)
            if variable["property"] in names[2:]
        }
        assert values == {variable["defaultValue"]}, variable["id"]


def test_the_rows_a_variable_switches_read_a_published_set(body: dict[str, Any]) -> None:
    switched = 0
    for properties in _widgets(body).values():
        for names, _ in _rows(properties):
            if {"Tier", "Currency"} & set(names[2:]):
                dimensions = tuple(names[2::2])
                assert dimensions[0] == SERVICE_DIMENSION
                assert set(dimensions) in [set(s) for s in METRICS[Metric(names[1])].dimension_sets()], names
                switched += 1
    assert switched >= 8


@pytest.mark.parametrize(
    ("title", "target", "good_side"),
    [(PAYMENT_SUCCESS, 95.0, "above"), (CONVERSION, 15.0, "above"), (CANCELLATION, None, "below")],
)
def test_the_kpi_widgets_colour_their_targets(
    template: dict[str, Any], body: dict[str, Any], title: str, target: float | None, good_side: str
) -> None:
    expected = target if target is not None else float(parameter_values(template)["CancellationRatePercent"])
    lines = _widgets(body)[title]["annotations"]["horizontal"]
    bad_side = {"above": "below", "below": "above"}[good_side]
    assert {(float(line["value"]), line["color"], line["fill"]) for line in lines} == {
        (expected, GREEN, good_side),
        (expected, RED, bad_side),
    }


@pytest.mark.parametrize("title", KPI_WIDGETS)
def test_the_kpi_widgets_mark_each_deployment(body: dict[str, Any], title: str) -> None:
    deployed = [o for names, o in _rows(_widgets(body)[title]) if names[1:2] == ["Deployed"]]
    assert deployed == [{"id": "deployed", "stat": "Sum", "label": "Deployments", "yAxis": "right"}]


def test_the_deployed_rule_passes_this_stacks_finished_deployments_to_the_probe(
    template: dict[str, Any],
) -> None:
    rule = resolved_properties(template, "AWS::Events::Rule")["DeployedRule"]
    assert rule.get("EventBusName") is None  # the default bus, where CloudFormation's events go
    assert [target["Arn"] for target in rule["Targets"]] == ["HealthProbeFunction.Arn"]
    pattern = rule["EventPattern"]
    this_stack = PSEUDO_PARAMETERS["AWS::StackId"]
    assert pattern["detail"]["stack-id"] == [this_stack]
    for status in (CREATED, "UPDATE_COMPLETE"):
        assert event_matches(pattern, stack_status_change(status, 0))
    for status in ("UPDATE_ROLLBACK_COMPLETE", "DELETE_COMPLETE", "UPDATE_IN_PROGRESS", "CREATE_FAILED"):
        assert not event_matches(pattern, stack_status_change(status, 0)), status
    another_stack = this_stack.replace("stack/billwatch/", "stack/someone-else/")
    assert not event_matches(pattern, stack_status_change("UPDATE_COMPLETE", 0, another_stack))


def test_only_the_deployed_rule_may_invoke_the_probe_through_it(template: dict[str, Any]) -> None:
    permission = resolved_properties(template, "AWS::Lambda::Permission")["DeployedRulePermission"]
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": "HealthProbeFunction.Arn",
        "Principal": "events.amazonaws.com",
        "SourceArn": "DeployedRule.Arn",
    }
