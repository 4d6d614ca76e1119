"""The counts README.md and docs/ state of template.yaml's parts, checked against the template.

Each entry is (doc, pattern, count): every match of the pattern in the doc must state the number
that ``count`` finds, so adding an alarm, a route or a parameter fails here until the docs say so.
A pattern that no longer matches fails too (the sentence was reworded: update the entry). In a
pattern, ``{n}`` is the number (digits or a word); the rest is a regular expression. cost.md's
prices are stated once, in PRICES, and checked against the page like the counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from billwatch.alerting.alarm_text import parse_alarm_description
from billwatch.core.metrics import METRICS
from devtools.template import (
    ALARM_TYPE,
    COMPOSITE_ALARM_TYPE,
    DASHBOARD_TYPE,
    FUNCTION_TYPE,
    QUERY_DEFINITION_TYPE,
    REPO_ROOT,
    TABLE_TYPE,
    deployed_resources,
    http_routes,
    load_template,
    resolve,
    resolved_properties,
    resources_of_type,
)

Template = Mapping[str, Any]
Count = Callable[[Template], int | Decimal]

WORDS = {
    word: value
    for value, word in enumerate(
        (
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        )
    )
}
NUMBER = r"(?P<n>\d+(?:\.\d+)?|" + "|".join(WORDS) + ")"

# cost.md's list prices (USD): per custom metric-month, standard alarm metric-month, composite alarm-month.
METRIC_MONTH = Decimal("0.30")
ALARM_METRIC_MONTH = Decimal("0.10")
COMPOSITE_ALARM_MONTH = Decimal("0.50")
# cost.md's estimate of the metric series: the shipped catalog's values of these labels, one of any other.
CATALOG_LABEL_VALUES = {"Tier": 2, "Feature": 3, "EventType": 12}
# The HTTP API's detailed metrics per route: Count, 4xx, 5xx, Latency, IntegrationLatency.
ROUTE_METRICS = 5


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {**resources_of_type(template, ALARM_TYPE), **resources_of_type(template, COMPOSITE_ALARM_TYPE)}


def _without_stripe_key(template: Template, ids: Mapping[str, Any]) -> list[str]:
    """The ones deployed at the parameters' defaults, which leave StripeApiKeySecretArn empty."""
    return sorted(set(ids) & deployed_resources(template))


def _notifying(topic: str) -> Callable[[Template], dict[str, dict[str, Any]]]:
    def alarms(template: Template) -> dict[str, dict[str, Any]]:
        return {
            logical_id: alarm
            for logical_id, alarm in _alarms(template).items()
            if alarm["Properties"].get("AlarmActions") == [{"Ref": topic}]
        }

    return alarms


def _linking_runbook(page: str) -> Count:
    def count(template: Template) -> int:
        descriptions = [
            props["AlarmDescription"]
            for resource_type in (ALARM_TYPE, COMPOSITE_ALARM_TYPE)
            for props in resolved_properties(template, resource_type).values()
        ]
        return sum(parse_alarm_description(text).runbook.endswith(f"/{page}.md") for text in descriptions)

    return count


def _alarm_metrics(alarm: Mapping[str, Any]) -> int:
    """What CloudWatch bills an alarm as: an anomaly band 3 metrics, metric math each metric it reads."""
    queries = alarm["Properties"].get("Metrics")
    if queries is None:
        return 1
    if any("ANOMALY_DETECTION_BAND" in str(query.get("Expression", "")) for query in queries):
        return 3
    return sum("MetricStat" in query for query in queries)


def _alarm_metric_total(template: Template, deployed_only: bool = False) -> int:
    alarms = resources_of_type(template, ALARM_TYPE)
    ids = _without_stripe_key(template, alarms) if deployed_only else alarms
    return sum(_alarm_metrics(alarms[logical_id]) for logical_id in ids)


def _alarm_cost(template: Template) -> Decimal:
    composites = len(resources_of_type(template, COMPOSITE_ALARM_TYPE))
    return _alarm_metric_total(template) * ALARM_METRIC_MONTH + composites * COMPOSITE_ALARM_MONTH


def _metric_series(template: Template) -> int:
    return sum(
        math.prod(CATALOG_LABEL_VALUES.get(label, 1) for label in dimension_set)
        for definition in METRICS.values()
        for dimension_set in definition.dimension_sets()
    )


def _alarm_parameters(template: Template) -> list[str]:
    """The Alarms parameter group's thresholds, windows and volumes (all but the runbook link)."""
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    (alarms,) = [group for group in groups if group["Label"]["default"] == "Alarms"]
    return [name for name in alarms["Parameters"] if name != "RunbookBaseUrl"]


def _of(resource_type: str) -> Count:
    return lambda template: len(resources_of_type(template, resource_type))


metric_alarms = _of(ALARM_TYPE)
composite_alarms = _of(COMPOSITE_ALARM_TYPE)
dashboards = _of(DASHBOARD_TYPE)
functions = _of(FUNCTION_TYPE)
tables = _of(TABLE_TYPE)


def alarms(template: Template) -> int:
    return len(_alarms(template))


def alarms_without_stripe_key(template: Template) -> int:
    return len(_without_stripe_key(template, _alarms(template)))


def alarms_only_with_stripe_key(template: Template) -> int:
    return alarms(template) - alarms_without_stripe_key(template)


def warning_alarms_only_with_stripe_key(template: Template) -> int:
    warning = _notifying("WarningAlarmTopic")(template)
    return len(warning) - len(_without_stripe_key(template, warning))


def routes(template: Template) -> int:
    return len(http_routes(template))


# deploy.md's table of the alarms by runbook has a row for each page.
RUNBOOK_PAGES = sorted(
    page.stem for page in (REPO_ROOT / "docs" / "runbooks").glob("*.md") if page.stem != "README"
)

COUNTS: list[tuple[str, str, Count]] = [
    ("README.md", r"{n} CloudWatch alarms", alarms),
    ("README.md", r"CloudWatch alarms \({n} metric, \d+ composite\)", metric_alarms),
    ("README.md", r"CloudWatch alarms \(\d+ metric, {n} composite\)", composite_alarms),
    ("README.md", r"{n} dashboards", dashboards),
    ("README.md", r"{n} functions", functions),
    ("docs/architecture.md", r"{n} functions", functions),
    ("docs/architecture.md", r"\"{n} alarms<br/>", alarms),
    ("docs/architecture.md", r"{n} CloudWatch alarms", alarms),
    (
        "docs/architecture.md",
        r"\"{n} alert-delivery alarms\"",
        lambda t: len(_notifying("DispatcherAlarmTopic")(t)),
    ),
    ("docs/metrics.md", r"The {n} dashboards are", dashboards),
    ("docs/local-development.md", r"the template's {n} dashboards", dashboards),
    (
        "docs/local-development.md",
        r"the \*\*{n} alarms\*\* deployed without a Stripe key",
        alarms_without_stripe_key,
    ),
    ("docs/alarms.md", r"alarms-critical` \| {n}:", lambda t: len(_notifying("CriticalAlarmTopic")(t))),
    ("docs/alarms.md", r"alarms-warning` \| {n} \(", lambda t: len(_notifying("WarningAlarmTopic")(t))),
    (
        "docs/alarms.md",
        r"alarms-warning` \| \d+ \({n} of them only with",
        warning_alarms_only_with_stripe_key,
    ),
    ("docs/alarms.md", r"alarms-info` \| {n}:", lambda t: len(_notifying("InfoAlarmTopic")(t))),
    (
        "docs/alarms.md",
        r"never through the dispatcher\) \| {n}, critical",
        lambda t: len(_notifying("DispatcherAlarmTopic")(t)),
    ),
    (
        "docs/alarms.md",
        r"nobody \(building blocks\) \| {n}:",
        lambda t: sum("AlarmActions" not in alarm["Properties"] for alarm in _alarms(t).values()),
    ),
    ("docs/alarms.md", r"That is {n} metric alarms", metric_alarms),
    ("docs/alarms.md", r"metric alarms and {n} composite alarms", composite_alarms),
    ("docs/alarms.md", r"\({n} alarms in all without `StripeApiKeySecretArn`\)", alarms_without_stripe_key),
    ("docs/deploy.md", r"payload 2\.0, {n} routes", routes),
    ("docs/deploy.md", r"log group and {n} alarms", alarms_only_with_stripe_key),
    ("docs/deploy.md", r"\*\*Tables\*\* \({n};", tables),
    ("docs/deploy.md", r"\*\*Topics\*\* \({n}\)", _of("AWS::SNS::Topic")),
    ("docs/deploy.md", r"\*\*Dead-letter queues\*\* \({n},", _of("AWS::SQS::Queue")),
    ("docs/deploy.md", r"\*\*Alarms\*\* \({n} metric alarms", metric_alarms),
    ("docs/deploy.md", r"\*\*Alarms\*\* \(\d+ metric alarms and {n} composite alarms\)", composite_alarms),
    ("docs/deploy.md", r"\*\*Dashboards\*\* \({n}\)", dashboards),
    ("docs/deploy.md", r"and {n} saved Logs\s+Insights queries", _of(QUERY_DEFINITION_TYPE)),
    ("docs/deploy.md", r"\*\*Parameters\*\* \({n}, all with defaults\)", lambda t: len(t["Parameters"])),
    ("docs/deploy.md", r"and {n} thresholds, windows", lambda t: len(_alarm_parameters(t))),
    ("docs/deploy.md", r"The {n} alarm parameters", lambda t: len(_alarm_parameters(t))),
    *(
        ("docs/deploy.md", rf"\(\[{page}\.md\]\(runbooks/{page}\.md\)\) \| {{n}}", _linking_runbook(page))
        for page in RUNBOOK_PAGES
    ),
    ("docs/cost.md", r"\${n} per custom metric-month", lambda t: METRIC_MONTH),
    ("docs/cost.md", r"\${n} per standard alarm metric-month", lambda t: ALARM_METRIC_MONTH),
    ("docs/cost.md", r"\${n} per composite alarm-month", lambda t: COMPOSITE_ALARM_MONTH),
    ("docs/cost.md", r"custom metrics\*\*: {n} metrics", lambda t: len(METRICS)),
    (
        "docs/cost.md",
        r"their {n} dimension sets",
        lambda t: sum(len(definition.dimension_sets()) for definition in METRICS.values()),
    ),
    ("docs/cost.md", r"roughly {n} metric \u00d7 dimension-value", _metric_series),
    ("docs/cost.md", r"all ~{n} series", _metric_series),
    ("docs/cost.md", r"up to about \${n} a month when all", lambda t: _metric_series(t) * METRIC_MONTH),
    ("docs/cost.md", r"for each of the {n} routes", routes),
    ("docs/cost.md", r"routes, {n} more", lambda t: ROUTE_METRICS * routes(t)),
    ("docs/cost.md", r"the routes' {n}\)", lambda t: ROUTE_METRICS * routes(t)),
    ("docs/cost.md", r"plus \${n} for the routes'", lambda t: ROUTE_METRICS * routes(t) * METRIC_MONTH),
    ("docs/cost.md", r"\*\*CloudWatch alarms\*\*: {n} \(", alarms),
    ("docs/cost.md", r"\*\*CloudWatch alarms\*\*: \d+ \({n} metric", metric_alarms),
    ("docs/cost.md", r"\*\*CloudWatch alarms\*\*: \d+ \(\d+ metric, {n} composite", composite_alarms),
    ("docs/cost.md", r"composite; {n} without the Stripe key", alarms_without_stripe_key),
    (
        "docs/cost.md",
        r"`DynamoDBThrottles` {n}: ",
        lambda t: _alarm_metrics(resources_of_type(t, ALARM_TYPE)["DynamoDBThrottles"]),
    ),
    (
        "docs/cost.md",
        r"`DynamoDBThrottles` \d+: {n} per table",
        lambda t: _alarm_metrics(resources_of_type(t, ALARM_TYPE)["DynamoDBThrottles"]) // tables(t),
    ),
    ("docs/cost.md", r"{n} alarm metrics in all", _alarm_metric_total),
    (
        "docs/cost.md",
        r"alarm metrics in all \({n} without the Stripe key\)",
        lambda t: _alarm_metric_total(t, True),
    ),
    ("docs/cost.md", r"\({n} alarm metrics at", _alarm_metric_total),
    ("docs/cost.md", r"\$0\.10 and {n}\s+composites at", composite_alarms),
    ("docs/cost.md", r"about \${n} a month\) and no dashboard", _alarm_cost),
    ("docs/cost.md", r"Plus {n} dashboards", dashboards),
    ("docs/cost.md", r"no dashboard charge \({n} dashboards\)", dashboards),
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _sentence(text: str, start: int, end: int) -> str:
    """The line(s) around a match, as the failure message quotes them."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    quoted = " ".join(text[line_start : line_end if line_end >= 0 else len(text)].split())
    return quoted if len(quoted) <= 200 else quoted[:197] + "..."


def _value(stated: str) -> Decimal:
    return Decimal(WORDS[stated.lower()]) if stated.lower() in WORDS else Decimal(stated)


@pytest.mark.parametrize(
    ("doc", "pattern", "count"),
    COUNTS,
    ids=[f"{doc}:{pattern}" for doc, pattern, _ in COUNTS],
)
def test_the_docs_state_the_templates_counts(
    template: dict[str, Any], doc: str, pattern: str, count: Count
) -> None:
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    matches = list(re.finditer(pattern.replace("{n}", NUMBER), text, re.IGNORECASE))
    assert matches, f"{doc}: no sentence matches {pattern!r} any more; update the entry in {__name__}"
    actual = Decimal(count(template))
    wrong = [
        f"{doc}: {_sentence(text, match.start(), match.end())!r} says {match['n']}, "
        f"counted from template.yaml (and core/metrics.py): {actual}"
        for match in matches
        if _value(match["n"]) != actual
    ]
    assert not wrong, "\n".join(wrong)


def test_deploy_md_lists_every_alarm_parameter(template: dict[str, Any]) -> None:
    text = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    table = re.search(r"<summary>The \d+ alarm parameters.*?</details>", text, re.DOTALL)
    assert table, "docs/deploy.md has no <details> table of the alarm parameters"
    listed = re.findall(r"`(\w+)` \(", table.group())
    expected = _alarm_parameters(template)
    assert sorted(listed) == sorted(expected), (
        f"docs/deploy.md's alarm parameters table: missing {sorted(set(expected) - set(listed))}, "
        f"not in the template's Alarms group {sorted(set(listed) - set(expected))}"
    )
    defaults = {name: str(template["Parameters"][name].get("Default")) for name in expected}
    stated = dict(re.findall(r"`(\w+)` \(([^)]*)\)", table.group()))
    assert {name: stated[name] for name in expected} == defaults


def test_metrics_md_names_the_dashboards(template: dict[str, Any]) -> None:
    text = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    sentence = re.search(r"The \w+ dashboards are(.*?)\(", text, re.DOTALL)
    assert sentence, "docs/metrics.md no longer names the dashboards in 'The ... dashboards are ...'"
    named = set(re.findall(r"`billwatch-<stage>-([\w-]+)`", sentence.group(1)))
    deployed = {
        str(resolve(dashboard["Properties"]["DashboardName"], {"Stage": "<stage>"})).removeprefix(
            "billwatch-<stage>-"
        )
        for dashboard in resources_of_type(template, DASHBOARD_TYPE).values()
    }
    assert named == deployed, (
        f"docs/metrics.md names the dashboards {sorted(named)}, template.yaml has {sorted(deployed)}"
    )
