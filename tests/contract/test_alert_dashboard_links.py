"""The dashboard every notice links is one the template deploys, and it shows the alarm.

The AlertDispatch function learns the dashboards' names and the runbooks' base URL from its
environment; the notice of each alarm links the dashboard that its runbook page maps to
(billwatch.alerting.links), and that dashboard must list the alarm or show what it reads.
"""

from __future__ import annotations

from typing import Any

from billwatch.alerting.inputs import from_sns_alarm
from billwatch.alerting.links import AlertLinks
from billwatch.core.config import load_alert_settings
from devtools.template import DASHBOARD_TYPE, parameter_values, resolve, resolved_properties
from tests.alert_events import alarm_message
from tests.contract.test_alarm_runbooks import (
    CONDITIONAL_ALARMS_OFF_DASHBOARDS,
    alarms,  # noqa: F401 (a fixture)
    dashboard_problem,
    dashboard_views,
    runbook_link,
)

T0 = 1_796_137_200


LINK_VARIABLES = ("BILLING_DASHBOARD_NAME", "LICENSING_DASHBOARD_NAME", "RUNBOOK_BASE_URL")


def dispatcher_links(template: dict[str, Any]) -> AlertLinks:
    """The links as the deployed function configures them (Lambda sets AWS_REGION itself)."""
    variables = template["Resources"]["AlertDispatchFunction"]["Properties"]["Environment"]["Variables"]
    env = resolve({name: variables[name] for name in LINK_VARIABLES}, parameter_values(template))
    settings = load_alert_settings({**env, "ALERT_STATE_TABLE_NAME": "alerts", "AWS_REGION": "us-east-1"})
    return AlertLinks(settings.dashboards, settings.runbook_base_url)


def test_the_dispatcher_links_the_deployed_dashboards_and_runbooks(template: dict[str, Any]) -> None:
    links = dispatcher_links(template)
    names = {props["DashboardName"] for props in resolved_properties(template, DASHBOARD_TYPE).values()}
    assert links.dashboards is not None
    assert {links.dashboards.billing, links.dashboards.licensing} <= names
    assert links.runbook_base_url == parameter_values(template)["RunbookBaseUrl"]


def only_dashboard(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The template with one dashboard: what its reader sees."""
    resources = {
        key: resource
        for key, resource in template["Resources"].items()
        if resource["Type"] != DASHBOARD_TYPE or key == logical_id
    }
    return {**template, "Resources": resources}


def test_every_alarm_is_on_the_dashboard_its_notices_link(
    template: dict[str, Any],
    alarms: dict[str, dict[str, Any]],  # noqa: F811
) -> None:
    links = dispatcher_links(template)
    dashboards = {
        props["DashboardName"]: logical_id
        for logical_id, props in resolved_properties(template, DASHBOARD_TYPE).items()
    }
    views = {name: dashboard_views(only_dashboard(template, id_)) for name, id_ in dashboards.items()}
    problems = []
    for logical_id, props in alarms.items():
        if logical_id in CONDITIONAL_ALARMS_OFF_DASHBOARDS:
            continue
        page, _ = runbook_link(template, props)
        alert = from_sns_alarm(alarm_message(logical_id, "ALARM", T0, runbook=page.removesuffix(".md")))
        assert alert is not None
        name = (links.added_to(alert).dashboard_url or "").rsplit("/", 1)[-1]
        if problem := dashboard_problem(logical_id, alarms, *views[name]):
            problems.append(f"{logical_id} ({page} -> {name}): {problem}")
    assert not problems, "alarms whose notices link a dashboard that does not show them:\n" + "\n".join(
        problems
    )
