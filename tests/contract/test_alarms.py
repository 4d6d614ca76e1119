"""The alarms, topics, dashboards and saved log searches in template.yaml, held to what they promise.

Every alarm says how urgent it is, what happened and where its runbook is; notifies the topic of
its severity (and is told when it clears); and takes its thresholds and periods from parameters
whose defaults are the monitoring plans' values. The platform alarms cover every function,
table, queue and alarm topic the template defines, so a new one cannot go unwatched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from billwatch.alerting.alarm_text import parse_alarm_description
from billwatch.core.severities import Severity
from devtools.template import (
    ALARM_TYPE,
    COMPOSITE_ALARM_TYPE,
    DASHBOARD_TYPE,
    FUNCTION_TYPE,
    QUERY_DEFINITION_TYPE,
    REPO_ROOT,
    TABLE_TYPE,
    parameter_values,
    resolved_properties,
    resources_of_type,
)


@dataclass(frozen=True)
class SeedRule:
    """One alert rule of a monitoring plan (../shared/seeds), as the plan wrote it.

    ``threshold`` is in the alarm's own unit (%, ms, count), None where the plan gave none or the
    alarm cannot hold one as a number (a composite, an anomaly band, a probe's 0/1 verdict);
    ``window`` is how long the condition must hold, in seconds (period x periods).
    """

    seed: str
    rule: str
    alarm: str
    threshold: float | None
    window: int | None
    severity: Severity


H, M = 3600, 60
# The plans' "high" pages, so it is critical here (billwatch.core.severities).
SEED_RULES = [
    # 000: Phase 1 monitoring plan
    SeedRule("000", "StripeWebhookDown", "StripeWebhookDown", None, 5 * M, Severity.CRITICAL),
    SeedRule("000", "HighWebhookFailureRate", "HighWebhookFailureRate", 5, 10 * M, Severity.CRITICAL),
    # No connection pool here: the tables answering at all is what the probe checks.
    SeedRule("000", "DatabaseConnectionPoolExhausted", "BillingDatabaseDown", None, 1 * M, Severity.CRITICAL),
    SeedRule("000", "QuotaResetFailure", "QuotaResetFailure", None, None, Severity.WARNING),
    SeedRule("000", "HighQuotaDenialRate", "HighQuotaDenialRate", 20, 15 * M, Severity.WARNING),
    SeedRule("000", "StripeAPIErrorRate", "StripeAPIErrorRate", 5, 1 * H, Severity.WARNING),
    SeedRule("000", "Unauthorized Admin Access", "UnauthorizedAdminAccess", 0, 5 * M, Severity.WARNING),
    # Stripe sends no buyer's IP: one customer or email over CheckoutVelocityLimit sessions a minute
    # (docs/suspicious-activity.md); the limit is the function's, the alarm fires on any such buyer.
    SeedRule("000", "Suspicious Activity", "CheckoutVelocityHigh", 0, 5 * M, Severity.WARNING),
    # 001 and 002: RSOLV's Prometheus rules, after its consolidation review
    SeedRule("001", "BillingPaymentFailureRateHigh", "PaymentFailureRateHigh", 10, 15 * M, Severity.WARNING),
    SeedRule(
        "001",
        "BillingPaymentFailureRateCritical",
        "PaymentFailureRateCritical",
        25,
        10 * M,
        Severity.CRITICAL,
    ),
    SeedRule(
        "001", "StripeWebhookFailureRateHigh", "StripeWebhookFailureRateHigh", 10, 15 * M, Severity.WARNING
    ),
    SeedRule(
        "001",
        "StripeWebhookProcessingDurationHigh",
        "StripeWebhookProcessingDurationHigh",
        1000,
        20 * M,
        Severity.WARNING,
    ),
    SeedRule("001", "StripeWebhooksStalled", "StripeWebhooksStalled", None, None, Severity.INFO),
    SeedRule(
        "001",
        "SubscriptionCancellationRateHigh",
        "SubscriptionCancellationRateHigh",
        10,
        1 * H,
        Severity.WARNING,
    ),
    SeedRule("001", "BillingCreditGrantAnomalyDetected", "LargeQuotaGrant", 1000, 5 * M, Severity.INFO),
    SeedRule("001", "API p95 < 200 ms (baseline)", "LicensingApiLatencyHigh", 200, 15 * M, Severity.WARNING),
    # 003: ScholarLink's first 24 hours
    SeedRule("003", "BillingHighErrorRate", "BillingHighErrorRate", 1, 5 * M, Severity.CRITICAL),
    SeedRule("003", "StripeWebhookFailures", "StripeWebhookFailures", 5, 5 * M, Severity.CRITICAL),
    SeedRule("003", "BillingDatabaseDown", "BillingDatabaseDown", None, 1 * M, Severity.CRITICAL),
    SeedRule("003", "BillingHighLatency", "BillingHighLatency", 1000, 5 * M, Severity.WARNING),
    SeedRule(
        "003",
        "Webhook latency > 3 seconds consistently",
        "StripeWebhookLatencyHigh",
        3000,
        15 * M,
        Severity.WARNING,
    ),
    # An increase above a fixed number of credits an hour: here, usage above its anomaly band.
    SeedRule("003", "UnusualCreditActivity", "QuotaUsageSpike", None, None, Severity.WARNING),
    # 004: Thorbis
    SeedRule(
        "004", "Stripe connectivity lost", "StripeApiHealthCheckFailing", None, 5 * M, Severity.CRITICAL
    ),
    SeedRule(
        "004", "Cost Spike: 150 % of the previous period", "QuotaUsageSpike", None, None, Severity.WARNING
    ),
]

# The plans' numbers, as the parameters' defaults.
SEED_DEFAULTS = {
    "CheckoutVelocityLimit": 10,
    "HighWebhookFailureRatePercent": 5,
    "HighWebhookFailureRateWindowSeconds": 600,
    "WebhookFailureRateHighPercent": 10,
    "WebhookProcessingP95Milliseconds": 1000,
    "WebhookStallSeconds": 6 * 3600,
    "WebhooksAbsentSeconds": 300,
    "PaymentFailureRateHighPercent": 10,
    "PaymentFailureRateHighWindowSeconds": 900,
    "PaymentFailureRateCriticalPercent": 25,
    "PaymentFailureRateCriticalWindowSeconds": 600,
    "CancellationRatePercent": 10,
    "CancellationRateWindowSeconds": 3600,
    "QuotaDenialRatePercent": 20,
    "StripeApiErrorThreshold": 5,
    "StripeApiErrorWindowSeconds": 3600,
    "UnauthorizedAdminThreshold": 0,
}
# "for 15 min" and "for 20 min": consecutive periods that all breach.
SUSTAINED = {
    "StripeWebhookFailureRateHigh": (
        "WebhookFailureRateHighPeriodSeconds",
        "WebhookFailureRateHighPeriods",
        900,
    ),
    "StripeWebhookProcessingDurationHigh": (
        "WebhookProcessingPeriodSeconds",
        "WebhookProcessingPeriods",
        1200,
    ),
}

TOPIC_OF_SEVERITY = {
    Severity.CRITICAL: "CriticalAlarmTopic",
    Severity.WARNING: "WarningAlarmTopic",
    Severity.INFO: "InfoAlarmTopic",
}


@pytest.fixture(scope="module")
def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        **resolved_properties(template, ALARM_TYPE),
        **resolved_properties(template, COMPOSITE_ALARM_TYPE),
    }


@pytest.fixture(scope="module")
def composites(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resolved_properties(template, COMPOSITE_ALARM_TYPE)


def _severity(props: dict[str, Any]) -> Severity:
    return parse_alarm_description(props["AlarmDescription"]).severity


def _children(composites: dict[str, dict[str, Any]]) -> set[str]:
    return {
        name for rule in composites.values() for name in re.findall(r'ALARM\("([^"]+)"\)', rule["AlarmRule"])
    }


# ------------------------------------------------------------------ every alarm


def _window(props: dict[str, Any], composites: dict[str, dict[str, Any]], alarms: dict[str, Any]) -> int:
    """How long the alarm's condition must hold; a composite's, its shortest child's."""
    if "AlarmRule" in props:
        return min(_window(alarms[child], composites, alarms) for child in _children({"": props}))
    stats = _metric_stats(props)
    period = stats[0]["Period"] if stats else props["Period"]
    return int(period) * int(props.get("DatapointsToAlarm", props["EvaluationPeriods"]))


@pytest.mark.parametrize("rule", SEED_RULES, ids=[f"{r.seed}-{r.rule}" for r in SEED_RULES])
def test_every_seed_rule_is_an_alarm_with_its_threshold_window_and_severity(
    alarms: dict[str, dict[str, Any]], composites: dict[str, dict[str, Any]], rule: SeedRule
) -> None:
    props = alarms[rule.alarm]
    assert _severity(props) is rule.severity
    if rule.threshold is not None:
        assert float(props["Threshold"]) == rule.threshold
    if rule.window is not None:
        assert _window(props, composites, alarms) == rule.window


def test_every_alarm_is_named_for_its_stage_and_says_severity_summary_and_runbook(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    base = parameter_values(template)["RunbookBaseUrl"]
    for logical_id, props in alarms.items():
        assert props["AlarmName"] == f"billwatch-dev-{logical_id}"
        text = parse_alarm_description(props["AlarmDescription"])
        assert len(text.summary) <= 250, logical_id
        assert text.runbook.startswith(f"{base}/"), logical_id
        runbook = REPO_ROOT / "docs" / "runbooks" / text.runbook.removeprefix(f"{base}/")
        assert runbook.is_file(), f"{logical_id}: {runbook} is missing"
        assert logical_id in runbook.read_text(encoding="utf-8"), (
            f"{runbook.name} does not cover {logical_id}"
        )


# Alarms about alert delivery itself: they must reach people without the dispatcher.
DISPATCHER_ALARMS = {
    "AlertTopicDeliveryFailures",
    "AlertDeliveryFailures",
    "AlertInputRejected",
    "AlertDLQNotEmpty",
    "AlertDispatchLambdaErrors",
    "AlertDispatchLambdaThrottles",
}


def test_every_alarm_notifies_its_severity_topic_and_says_when_it_clears(
    alarms: dict[str, dict[str, Any]], composites: dict[str, dict[str, Any]]
) -> None:
    building_blocks = _children(composites)
    for logical_id, props in alarms.items():
        severity = _severity(props)
        if logical_id in building_blocks and not props.get("AlarmActions"):
            # A building block notifies nobody: its composite speaks for it.
            assert severity is Severity.INFO and "OKActions" not in props, logical_id
            continue
        topic = "DispatcherAlarmTopic" if logical_id in DISPATCHER_ALARMS else TOPIC_OF_SEVERITY[severity]
        assert props["AlarmActions"] == [topic], logical_id
        assert props["OKActions"] == props["AlarmActions"], logical_id
        assert "InsufficientDataActions" not in props, logical_id


def test_the_dispatchers_own_alarms_reach_people_straight_from_sns(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    assert set(alarms) >= DISPATCHER_ALARMS
    assert {name: _severity(alarms[name]) for name in DISPATCHER_ALARMS} == dict.fromkeys(
        DISPATCHER_ALARMS, Severity.CRITICAL
    )
    subscriptions = resources_of_type(template, "AWS::SNS::Subscription").values()
    protocols = [
        s["Properties"]["Protocol"]
        for s in subscriptions
        if s["Properties"]["TopicArn"] == {"Ref": "DispatcherAlarmTopic"}
    ]
    assert protocols == ["email"]
    events = template["Resources"]["AlertDispatchFunction"]["Properties"]["Events"].values()
    dispatched = {e["Properties"]["Topic"]["Ref"] for e in events if e["Type"] == "SNS"}
    assert "DispatcherAlarmTopic" not in dispatched
    assert dispatched >= set(TOPIC_OF_SEVERITY.values())


def test_composite_rules_name_alarms_of_this_template(
    alarms: dict[str, dict[str, Any]], composites: dict[str, dict[str, Any]]
) -> None:
    assert _children(composites) <= set(alarms)
    assert _children(composites) >= {"WebhooksAbsent", "StripeWebhookDeliveryFailing"}


def _metric_stats(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [query["MetricStat"] for query in props.get("Metrics", []) if "MetricStat" in query]


def test_thresholds_and_periods_are_parameters(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    for logical_id, resource in resources_of_type(template, ALARM_TYPE).items():
        props = resource["Properties"]
        periods = [props["Period"]] if "Period" in props else [s["Period"] for s in _metric_stats(props)]
        for period in periods:
            assert period.get("Ref") in parameters, f"{logical_id}: Period {period} is not a parameter"
        if "ThresholdMetricId" in props:
            # An anomaly detection alarm's threshold is the width of its band.
            (band,) = [q for q in props["Metrics"] if q["Id"] == props["ThresholdMetricId"]]
            width = re.fullmatch(r"ANOMALY_DETECTION_BAND\(\w+, \$\{(\w+)\}\)", band["Expression"]["Fn::Sub"])
            assert width and width[1] in parameters, f"{logical_id}: band {band['Expression']}"
            continue
        threshold = props["Threshold"]
        # 0 and 1 are not tunings: "any at all" and "none at all" of a count or a 0/1 health metric.
        assert threshold in (0, 1) or threshold.get("Ref") in parameters, (
            f"{logical_id}: Threshold {threshold}"
        )
    for name, spec in parameters.items():
        assert spec.get("Description"), f"parameter {name} explains nothing"


def test_parameter_defaults_are_the_monitoring_plans_values(template: dict[str, Any]) -> None:
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    assert {name: defaults.get(name) for name in SEED_DEFAULTS} == SEED_DEFAULTS
    for period, periods, seconds in SUSTAINED.values():
        assert defaults[period] * defaults[periods] == seconds


def test_sustained_alarms_need_every_period_to_breach(alarms: dict[str, dict[str, Any]]) -> None:
    for logical_id in SUSTAINED:
        props = alarms[logical_id]
        assert props["DatapointsToAlarm"] == props["EvaluationPeriods"], logical_id


# --------------------------------------------------------------- platform cover


def test_every_function_has_an_errors_and_a_throttles_alarm(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    watched = {
        (props["MetricName"], props["Dimensions"][0]["Value"])
        for props in alarms.values()
        if props.get("Namespace") == "AWS/Lambda"
    }
    for function in resources_of_type(template, FUNCTION_TYPE):
        assert {("Errors", function), ("Throttles", function)} <= watched, function


def _dimension_values(props: dict[str, Any], namespace: str, name: str | None = None) -> set[str]:
    """The values of the alarm's dimensions in the namespace (only those called ``name``, if given)."""
    stats = [s["Metric"] for s in _metric_stats(props)] or [props]
    return {
        d["Value"]
        for m in stats
        if m.get("Namespace") == namespace
        for d in m.get("Dimensions", [])
        if name is None or d["Name"] == name
    }


def test_every_table_queue_topic_and_the_api_are_watched(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    def watched(namespace: str) -> set[str]:
        return {value for props in alarms.values() for value in _dimension_values(props, namespace)}

    assert watched("AWS/DynamoDB") == set(resources_of_type(template, TABLE_TYPE))
    assert watched("AWS/SQS") == {f"{q}.QueueName" for q in resources_of_type(template, "AWS::SQS::Queue")}
    assert watched("AWS/SNS") == {f"{t}.TopicName" for t in TOPIC_OF_SEVERITY.values()}
    assert {
        value for props in alarms.values() for value in _dimension_values(props, "AWS/ApiGateway", "ApiId")
    } == {"HttpApi"}


def test_the_dead_mans_switch_pages_on_two_missed_runs(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    """How silence is judged (a probe that stopped, not one that never ran) is
    test_fresh_start_switches' business; here, who is woken and after how long."""
    props = alarms["HealthProbeMissing"]
    (stat,) = _metric_stats(props)
    assert stat["Metric"]["MetricName"] == "HealthProbeRun"
    assert _severity(props) is Severity.CRITICAL
    longest_interval = max(template["Parameters"]["HealthProbeIntervalMinutes"]["AllowedValues"]) * 60
    # Two missed runs at the slowest schedule, so one late run alone never pages anybody.
    assert min(template["Parameters"]["HealthProbeMissingSeconds"]["AllowedValues"]) >= 2 * longest_interval


# ------------------------------------------------------------------ topics


def test_one_encrypted_topic_per_severity_that_cloudwatch_may_publish_to(template: dict[str, Any]) -> None:
    topics = resources_of_type(template, "AWS::SNS::Topic")
    for topic in TOPIC_OF_SEVERITY.values():
        # The AWS-managed SNS key cannot be used by CloudWatch alarms.
        assert topics[topic]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key_policy = template["Resources"]["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = next(s for s in key_policy if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"})
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    policy = template["Resources"]["AlarmTopicsPolicy"]["Properties"]
    assert {t["Ref"] for t in policy["Topics"]} == set(TOPIC_OF_SEVERITY.values())
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert (
        statement["Action"] == "sns:Publish" and "aws:SourceAccount" in statement["Condition"]["StringEquals"]
    )


# --------------------------------------------------------------- dashboards


def _widgets(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    return json.loads(resolved_properties(template, DASHBOARD_TYPE)[logical_id]["DashboardBody"])["widgets"]


def _titles(widgets: list[dict[str, Any]]) -> str:
    return "\n".join(w["properties"].get("title", "") for w in widgets)


@pytest.mark.parametrize("dashboard", ["BillingDashboard", "LicensingDashboard", "BusinessDashboard"])
def test_no_widget_hides_another(template: dict[str, Any], dashboard: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for widget in _widgets(template, dashboard):
        name = widget["properties"].get("title") or widget["type"]
        for x in range(widget["x"], widget["x"] + widget["width"]):
            for y in range(widget["y"], widget["y"] + widget["height"]):
                assert (x, y) not in cells, f"{dashboard}: {name!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = name
        assert widget["x"] + widget["width"] <= 24, f"{dashboard}: {name!r} is wider than the grid"


@pytest.mark.parametrize(("stripe_key", "unseen"), [("", True), ("arn:aws:secretsmanager:x", False)])
def test_the_billing_dashboard_says_what_goes_unseen_without_a_stripe_key(
    template: dict[str, Any], stripe_key: str, unseen: bool
) -> None:
    body = resolved_properties(template, DASHBOARD_TYPE, {"StripeApiKeySecretArn": stripe_key})
    text = json.loads(body["BillingDashboard"]["DashboardBody"])["widgets"][0]["properties"]["markdown"]
    assert ("StripeWebhookDown" in text and "cannot fire" in text) is unseen


def test_the_billing_dashboard_shows_what_operators_watch(template: dict[str, Any]) -> None:
    widgets = _widgets(template, "BillingDashboard")
    titles = _titles(widgets)
    for needed in (
        "Webhooks received by type",
        "Webhooks failed by type",
        "Webhook success rate (KPI > 99.9 %)",
        "Webhook processing time",
        "Duplicates and stale events ignored",
        "Checkout funnel and conversion (KPI > 15 %)",
        "Upgrade latency p95 (KPI < 5 s)",
        "Subscriptions created, renewed and canceled",
        "Payments: success and failure rate",
        "Active subscriptions by tier",
        "Stripe API errors",
        "Health checks",
    ):
        assert needed in titles, needed
    by_title = {w["properties"].get("title"): w for w in widgets}
    assert by_title["Active subscriptions by tier"]["properties"]["view"] == "pie"
    stats = {row[-1].get("stat") for row in by_title["Webhook processing time (ms)"]["properties"]["metrics"]}
    assert stats == {"p50", "p95", "p99"}
    kpis = {
        title: [a["value"] for a in w["properties"].get("annotations", {}).get("horizontal", [])]
        for title, w in by_title.items()
    }
    assert kpis["Webhook success rate (KPI > 99.9 %)"] == [99.9]
    assert kpis["Checkout funnel and conversion (KPI > 15 %)"] == [15]
    assert kpis["Upgrade latency p95 (KPI < 5 s)"] == [5000]


def test_the_licensing_dashboard_shows_what_operators_watch(template: dict[str, Any]) -> None:
    widgets = _widgets(template, "LicensingDashboard")
    titles = _titles(widgets)
    for needed in (
        "allowed and denied",
        "denial rate (KPI < 5 %)",
        "Top features by usage",
        "80, 90 and 100 %",
    ):
        assert needed in titles, needed
    assert "Quota conflicts" in titles and "Quota resets" in titles
    limit_hits = next(w for w in widgets if "80, 90 and 100" in w["properties"].get("title", ""))
    assert [row[5] for row in limit_hits["properties"]["metrics"]] == ["80", "90", "100"]


def test_alarm_widgets_list_alarms_that_exist(template: dict[str, Any]) -> None:
    alarm_ids = set(resources_of_type(template, ALARM_TYPE)) | set(
        resources_of_type(template, COMPOSITE_ALARM_TYPE)
    )
    for dashboard in ("BillingDashboard", "LicensingDashboard"):
        listed = [
            a
            for w in _widgets(template, dashboard)
            if w["type"] == "alarm"
            for a in w["properties"]["alarms"]
        ]
        assert listed and {a.removesuffix(".Arn") for a in listed} <= alarm_ids


def test_every_seed_log_search_is_a_saved_query(template: dict[str, Any]) -> None:
    queries = resolved_properties(template, QUERY_DEFINITION_TYPE)
    queries.pop("AdminActionsQuery")  # the audit trail's (tests/integration/test_audit_trail.py)
    messages = {re.search(r'message = "([^"]+)"', q["QueryString"])[1] for q in queries.values()}
    assert messages == {
        "Webhook signature verification failed",
        "Failed to process subscription update",
        "User upgraded to PRO",
    }
    for query in queries.values():
        assert query["LogGroupNames"] == ["WebhookIntakeLogGroup"]
