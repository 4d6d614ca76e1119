"""Alarms and dashboards may only read metrics the functions really emit.

The functions run over events that take every path that emits a metric (moto behind them, a
Stripe stand-in on 127.0.0.1), and their EMF output is the list of what exists: namespace,
metric name and exact dimension set, with the dimension values. Every metric an alarm or a
dashboard widget names must be in it; AWS's own metrics must name resources of the right kind.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from billwatch.core.metrics import METRICS, SERVICE_DIMENSION
from billwatch.core.models import BillingAccount, overage_shard
from billwatch.licensing.plans import shipped_catalog_text
from billwatch.licensing.service import Licensing
from devtools import stripe_events as se
from devtools.moto_patches import install_alarm_history
from devtools.template import (
    ALARM_TYPE,
    DASHBOARD_TYPE,
    parameter_values,
    resolved_properties,
    resources_of_type,
)
from tests.alert_events import alarm_message, dispatcher_environment, sns_event
from tests.alert_receivers import AlertReceivers, Answer, alert_receivers
from tests.scenarios import OUTSIDER, DynamoDBOutage, Scenario, throughput_exceeded
from tests.support import ROOT, WEBHOOK_SECRET, fake_aws_credentials, fake_stripe_api, moto_with_tables

Dimensions = frozenset[tuple[str, str | None]]  # None: any value (a SEARCH over that dimension)

# AWS's metrics that alarms may read, and the resource type each dimension must name.
AWS_METRICS: dict[str, tuple[set[str], dict[str, str]]] = {
    "AWS/Lambda": ({"Errors", "Throttles"}, {"FunctionName": "AWS::Serverless::Function"}),
    "AWS/ApiGateway": ({"5xx", "4xx", "Count", "Latency"}, {"ApiId": "AWS::Serverless::HttpApi"}),
    "AWS/DynamoDB": ({"ReadThrottleEvents", "WriteThrottleEvents"}, {"TableName": "AWS::DynamoDB::Table"}),
    "AWS/SQS": ({"ApproximateNumberOfMessagesVisible"}, {"QueueName": "AWS::SQS::Queue"}),
    "AWS/SNS": ({"NumberOfNotificationsFailed"}, {"TopicName": "AWS::SNS::Topic"}),
}


@dataclass(frozen=True)
class Emitted:
    namespace: str
    name: str
    dimensions: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Reference:
    where: str
    namespace: str
    name: str
    dimensions: Dimensions


# ------------------------------------------------------------------- what the code emits


def _emitted(documents: list[dict[str, Any]]) -> set[Emitted]:
    found = set()
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                for dimension_set in directive["Dimensions"]:
                    dims = frozenset((name, str(document[name])) for name in dimension_set)
                    found.add(Emitted(directive["Namespace"], metric["Name"], dims))
    return found


def exercise_every_metric_path(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch, stripe: Any, receivers: AlertReceivers
) -> None:
    """Events down every path that emits a metric; what they emit lands in ``scenario``."""
    samples = sorted((ROOT / "events").glob("*.json")) + sorted((ROOT / "events" / "legacy").glob("*.json"))
    for path in samples:
        assert scenario.webhook(json.loads(path.read_text())) == 200, path.name
    assert scenario.webhook(json.loads(samples[0].read_text())) == 200  # a duplicate
    live = se.subscription(id="sub_live", customer="cus_live", metadata={"account_id": "acct_live"})
    assert scenario.webhook(se.event("customer.subscription.created", live)) == 200  # MRR for the probe
    free = se.subscription(
        id="sub_up", customer="cus_up", metadata={"account_id": "acct_up"}, lookup_key=None
    )
    assert (
        scenario.webhook(se.event("customer.subscription.created", free, created=int(time.time()) - 20))
        == 200
    )
    upgraded = se.subscription(id="sub_up", customer="cus_up", metadata={"account_id": "acct_up"})
    assert (
        scenario.webhook(se.event("customer.subscription.updated", upgraded, created=int(time.time()) - 10))
        == 200
    )
    live_account = {"account_id": "acct_live"}
    reason = "subscription_create"
    first = se.invoice(customer="cus_live", subscription_metadata=live_account, billing_reason=reason)
    assert scenario.webhook(se.event("invoice.paid", first)) == 200  # the funnel's first payment
    for number in range(11):  # one buyer's eleventh checkout session in a minute
        burst = se.checkout_session(id=f"cs_burst_{number}", customer="cus_burst", subscription=None)
        assert scenario.webhook(se.event("checkout.session.completed", burst)) == 200
    stale = se.subscription(id="sub_demo", customer="cus_demo", metadata={"account_id": "acct_demo"})
    assert scenario.webhook(se.event("customer.subscription.updated", stale, created=1_600_000_000)) == 200
    assert scenario.webhook(se.event("customer.updated", se.customer(id="cus_demo"))) == 200  # unhandled
    meter_error = se.thin_event("v1.billing.meter.no_meter_found", "mtr_demo", "billing.meter")
    assert scenario.webhook(meter_error) == 200
    # A thin event of a handled type Stripe's API does not know: unresolved, and Stripe retries.
    assert scenario.webhook(se.thin_event("v1.invoice.paid", "in_demo", "invoice")) == 503
    hostile = se.checkout_session(customer="cus_buyer", client_reference_id="health#last-probe")
    assert scenario.webhook(se.event("checkout.session.completed", hostile)) == 200  # id refused
    assert scenario.webhook_with_bad_signature() == 400
    assert scenario.malformed_webhook() == 400
    outage = DynamoDBOutage(monkeypatch, {"UpdateItem", "Scan"})
    with outage.during():
        assert scenario.webhook(se.event("invoice.paid", se.invoice(customer="cus_demo"))) == 503

    overage_check(scenario)
    for quantity, status in ((8, 200), (1, 200), (1, 200), (1, 429)):  # 80, 90, 95 + 100 %, denied
        assert scenario.usage("acct_quota", "exports", quantity) == status
    assert scenario.usage("acct_quota", "sso") == 403
    with pytest.MonkeyPatch.context() as concurrent:
        original_read = Licensing._read_with_receipt

        def read_while_another_request_counts(self: Licensing, account_id: str, receipt_id: str) -> Any:
            read = original_read(self, account_id, receipt_id)
            if receipt_id.endswith("#contended"):
                self.use(account_id, "api_calls", 1)
            return read

        concurrent.setattr(Licensing, "_read_with_receipt", read_while_another_request_counts)
        assert scenario.usage("acct_busy", "api_calls", 1, key="contended") in (200, 503)
    assert scenario.licensing("POST", "/admin/accounts/acct_quota/usage-reset", caller=OUTSIDER) == 403
    assert (
        scenario.licensing("POST", "/admin/accounts/acct_quota/grants", {"feature": "exports", "quantity": 5})
        == 200
    )

    BillingAccount("acct_due", usage_since=1_700_000_000).save()
    assert scenario.quota_reset_segment("2026-11-02T00")["reset"] == 1
    with outage.during(), pytest.raises(Exception, match="Rate exceeded"):
        scenario.quota_reset_segment("2026-11-02T01")

    for failure in (None, (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Slow"})):
        stripe.failure = failure
        scenario.scheduled("health_probe")

    stripe.failure = None
    assert scenario.deployment()["deployed"] is True
    drifted = se.subscription(id="sub_demo", customer="cus_demo", status="past_due")
    stripe.subscriptions["sub_demo"] = {**drifted, "metadata": {"account_id": "acct_demo"}}
    missed = se.event(
        "invoice.paid", se.invoice(id="in_missed", customer="cus_demo"), created=int(scenario.now) - 60
    )
    stripe.add_event(missed, delivered=False)
    assert scenario.scheduled("reconcile")["drift"] >= 2
    stripe.failure = (500, {"type": "api_error", "message": "Stripe is down"})
    with pytest.raises(Exception, match="api_error"):
        scenario.at(scenario.now + 86400).scheduled("reconcile")
    stripe.failure = None
    overage_drain(scenario, stripe)

    # The daily report's revenue reconciliation: Stripe took 1,000 USD, billwatch recorded 900.
    monkeypatch.setenv("STAGE", "test")
    stripe.balance_transactions.append(
        se.balance_transaction(amount=100_000, created=int(scenario.now) - 3600)
    )
    scenario.recorded_day({"USD": 900.0})
    undo_alarm_history = install_alarm_history()
    try:
        scenario.billing_report()
    finally:
        undo_alarm_history()

    critical = alarm_message("StripeWebhookDown", "ALARM", scenario.now)
    assert scenario.alert_input(sns_event(critical))["dispatched"] == 1
    scenario.alert_input(sns_event(critical))  # a duplicate
    stalled = alarm_message("StripeWebhooksStalled", "ALARM", scenario.now, severity="info")
    scenario.alert_input(sns_event(stalled))  # inhibited by the critical alarm of its group
    dispatcher = scenario.handler("alert_dispatch").dispatcher
    dispatcher.store.create_silence(
        ["alertname=HighQuotaDenialRate"],
        int(scenario.now),
        int(scenario.now) + 600,
        "test",
        "me",
        int(scenario.now),
    )
    denials = alarm_message(
        "HighQuotaDenialRate", "ALARM", scenario.now, severity="warning", runbook="licensing"
    )
    scenario.alert_input(sns_event(denials))  # silenced
    receivers.respond("/slack", [Answer(404)])
    errors = alarm_message(
        "StripeAPIErrorRate", "ALARM", scenario.now, severity="warning", runbook="stripe-api"
    )
    scenario.alert_input(sns_event(errors))  # Slack answers 404
    assert scenario.alert_input(sns_event("{not json"))["rejected"] == 1


def overage_drain(scenario: Scenario, stripe: Any) -> None:
    """A run of the overage drain: units Stripe accepts, a balance with no customer to bill, and a range
    Stripe refuses (no meter has its event name), on a catalog that bills both FREE features' overage."""
    document = json.loads(shipped_catalog_text())
    for feature in ("exports", "api_calls"):
        document["tiers"][0]["features"][feature].update(
            over_quota="overage", event_name=f"{feature}_overage"
        )
    stripe.meters.add_meter("exports_overage")
    since = str(int(time.time()) - 3600)
    for account, customer, counters in (
        ("acct_overage", "cus_overage", {"used_exports": "13", "used_api_calls": "1002"}),
        ("acct_overage_nocus", None, {"used_exports": "12"}),
    ):
        item = {
            "pk": {"S": account},
            "usage_since": {"N": since},
            "overage_due": {"S": overage_shard(account)},
            **{name: {"N": value} for name, value in counters.items()},
        }
        if customer:
            item["stripe_customer_id"] = {"S": customer}
        boto3.client("dynamodb").put_item(TableName=BillingAccount.Meta.table_name, Item=item)
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as catalog:
        path = Path(scratch) / "plans.json"
        path.write_text(json.dumps(document))
        catalog.setenv("PLAN_CATALOG_PATH", str(path))
        scenario.handler("overage_drain")  # reads the catalog as it starts
        catalog.setenv("STAGE", "test")
        scenario.handler("billing_report")  # so does the report's overage reconciliation
    result = scenario.scheduled("overage_drain")
    assert (result["units_sent"], result["unsent"], result["failed"]) == (
        3,
        {"no_customer": 1},
        {"permanent": 1},
    )
    # Stripe counts one more exports unit than was sent: the report's reconciliation finds the drift.
    (sent,) = [event for event in stripe.meters.accepted if event.event_name == "exports_overage"]
    stripe.meters.accepted.append(dataclasses.replace(sent, identifier="from_elsewhere", value=1))


def overage_check(scenario: Scenario) -> None:
    """The licensing API on a catalog that bills FREE's api_calls past the quota (exports still denies):
    a check past it whose write putting the account on the overage drain's list DynamoDB throttles is
    answered all the same, and the failure counted."""
    document = json.loads(shipped_catalog_text())
    document["tiers"][0]["features"]["api_calls"].update(over_quota="overage", event_name="api_calls_overage")
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as patch:
        path = Path(scratch) / "plans.json"
        path.write_text(json.dumps(document))
        patch.setenv("PLAN_CATALOG_PATH", str(path))
        scenario.handler("licensing_api")  # reads the catalog as it starts
        original = BaseClient._make_api_call

        def marker_throttled(client: BaseClient, operation: str, params: dict) -> Any:
            names = params.get("ExpressionAttributeNames", {}).values()
            if operation == "UpdateItem" and "overage_due" in names:
                raise throughput_exceeded(operation)
            return original(client, operation, params)

        patch.setattr(BaseClient, "_make_api_call", marker_throttled)
        assert scenario.usage("acct_overage_check", "api_calls", 1001) == 200


@pytest.fixture(scope="module")
def emitted(template: dict[str, Any]) -> Iterator[set[Emitted]]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        fake_stripe_api() as stripe,
        alert_receivers() as receivers,
        tempfile.TemporaryDirectory() as scratch,
    ):
        fake_aws_credentials(monkeypatch)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        monkeypatch.setenv("STRIPE_API_KEY", "rk_test_probe")
        monkeypatch.setenv("STRIPE_API_BASE", stripe.url)
        with moto_with_tables(template, monkeypatch) as tables:
            sqs = boto3.client("sqs")
            for variable, name in (
                ("WEBHOOK_DLQ_URL", "webhook-dlq"),
                ("QUOTA_RESET_DLQ_URL", "reset-dlq"),
                ("OVERAGE_DRAIN_DLQ_URL", "overage-drain-dlq"),
            ):
                monkeypatch.setenv(variable, sqs.create_queue(QueueName=name)["QueueUrl"])
            dispatcher_environment(monkeypatch, tables, receivers, Path(scratch))
            scenario = Scenario(monkeypatch, start=time.time())
            exercise_every_metric_path(scenario, monkeypatch, stripe, receivers)
            yield _emitted([document for _, document in scenario.documents])


# ------------------------------------------------------------- what the template reads


def _dimensions(entries: list[dict[str, str]]) -> Dimensions:
    return frozenset((entry["Name"], entry["Value"]) for entry in entries)


def _alarm_references(logical_id: str, props: dict[str, Any]) -> list[Reference]:
    if props.get("MetricName"):
        return [
            Reference(
                logical_id, props["Namespace"], props["MetricName"], _dimensions(props.get("Dimensions", []))
            )
        ]
    found = []
    for query in props.get("Metrics", []):
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric:
            found.append(
                Reference(
                    f"{logical_id}.{query['Id']}",
                    metric["Namespace"],
                    metric["MetricName"],
                    _dimensions(metric.get("Dimensions", [])),
                )
            )
    return found


_SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)'")
_TERM = re.compile(r'(\w+)="([^"]*)"')
_SELECT = re.compile(
    r'SELECT \w+\((?P<metric>\w+)\) FROM SCHEMA\("(?P<namespace>[^"]+)", (?P<dims>[\w, ]+)\)'
)


def _expression_references(where: str, expression: str) -> list[Reference]:
    if match := _SEARCH.search(expression):
        namespace, *names = [part.strip() for part in match["schema"].split(",")]
        terms = dict(_TERM.findall(match["terms"]))
        metric = terms.pop("MetricName")
        assert set(terms) <= set(names), f"{where}: SEARCH filters on a dimension outside its schema"
        return [Reference(where, namespace, metric, frozenset((n, terms.get(n)) for n in names))]
    if match := _SELECT.search(expression):
        names = [part.strip() for part in match["dims"].split(",")]
        return [Reference(where, match["namespace"], match["metric"], frozenset((n, None) for n in names))]
    assert "SEARCH" not in expression and "SELECT" not in expression, f"{where}: cannot read {expression}"
    return []  # metric math over the widget's own rows


def _dashboard_references(logical_id: str, body: str) -> list[Reference]:
    found = []
    for index, widget in enumerate(json.loads(body)["widgets"]):
        where = f"{logical_id}.widgets[{index}]"
        for row in (widget.get("properties") or {}).get("metrics", []):
            names = [item for item in row if not isinstance(item, dict)]
            options = next((item for item in row if isinstance(item, dict)), {})
            if not names:
                found += _expression_references(where, options["expression"])
                continue
            assert "." not in names and "..." not in names, f"{where}: spell rows out in full"
            namespace, metric, *pairs = names
            found.append(
                Reference(where, namespace, metric, frozenset(zip(pairs[::2], pairs[1::2], strict=True)))
            )
    return found


def template_references(template: dict[str, Any]) -> list[Reference]:
    references = []
    for logical_id, props in resolved_properties(template, ALARM_TYPE).items():
        references += _alarm_references(logical_id, props)
    for logical_id, props in resolved_properties(template, DASHBOARD_TYPE).items():
        references += _dashboard_references(logical_id, props["DashboardBody"])
    return references


def _matches(reference: Reference, emitted: Emitted) -> bool:
    return (
        emitted.namespace == reference.namespace
        and emitted.name == reference.name
        and {name for name, _ in emitted.dimensions} == {name for name, _ in reference.dimensions}
        and all(value is None or (name, value) in emitted.dimensions for name, value in reference.dimensions)
    )


def _http_api_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every HttpApi route: what API Gateway's per-route metrics are named by."""
    return {
        (event["Properties"]["Method"], event["Properties"]["Path"])
        for function in resources_of_type(template, "AWS::Serverless::Function").values()
        for event in (function["Properties"].get("Events") or {}).values()
        if event["Type"] == "HttpApi"
    }


def _route_dimension_problems(ref: Reference, routes: set[tuple[str, str]]) -> list[str]:
    """A per-route reference (ApiId, Stage, Method, Resource) must name the $default stage and a route."""
    dimensions = dict(ref.dimensions)
    if not {"Stage", "Method", "Resource"} & dimensions.keys():
        return []
    route = (dimensions.get("Method"), dimensions.get("Resource"))
    if dimensions.get("Stage") != "$default" or route not in routes:
        stage = dimensions.get("Stage")
        return [f"{ref.where}: {ref.name} of {route} on stage {stage} is no route of the API"]
    return []


def mismatches(template: dict[str, Any], emitted: set[Emitted]) -> list[str]:
    own_namespace = parameter_values(template)["MetricsNamespace"]
    resources = template["Resources"]
    routes = _http_api_routes(template)
    problems = []
    for ref in template_references(template):
        if ref.namespace in AWS_METRICS:
            names, dimension_types = AWS_METRICS[ref.namespace]
            if ref.name not in names:
                problems.append(f"{ref.where}: {ref.namespace} has no metric {ref.name} we alarm on")
            if ref.namespace == "AWS/ApiGateway":
                problems += _route_dimension_problems(ref, routes)
            for name, value in ref.dimensions:
                if ref.namespace == "AWS/ApiGateway" and name in ("Stage", "Method", "Resource"):
                    continue
                wanted = dimension_types.get(name)
                target = resources.get((value or "").split(".")[0], {}).get("Type")
                if wanted is None or target != wanted:
                    problems.append(f"{ref.where}: dimension {name}={value} does not name a {wanted}")
        elif ref.namespace != own_namespace:
            problems.append(f"{ref.where}: namespace {ref.namespace} is neither billwatch's nor AWS's")
        elif not any(_matches(ref, item) for item in emitted):
            dims = ", ".join(f"{n}={v or '*'}" for n, v in sorted(ref.dimensions, key=lambda pair: pair[0]))
            problems.append(f"{ref.where}: nothing emits {ref.name} with exactly [{dims}]")
    return problems


# ------------------------------------------------------------------------------ tests


def test_every_metric_the_template_reads_is_emitted(template: dict[str, Any], emitted: set[Emitted]) -> None:
    references = template_references(template)
    assert len(references) > 60  # the parsers found the alarms' and the widgets' metrics
    assert mismatches(template, emitted) == []


def test_every_declared_dimension_set_is_really_emitted(emitted: set[Emitted]) -> None:
    """The catalog in billwatch.core.metrics promises no set that no code path writes."""
    missing = []
    for metric, definition in METRICS.items():
        for dimension_set in definition.dimension_sets():
            if not any(
                e.name == metric.value and {n for n, _ in e.dimensions} == set(dimension_set) for e in emitted
            ):
                missing.append(f"{metric.value} {list(dimension_set)}")
    assert missing == []
    assert all(e.namespace == "Billwatch" for e in emitted)
    assert all((SERVICE_DIMENSION, "billwatch") in e.dimensions for e in emitted)


def _mutated(template: dict[str, Any], logical_id: str, change: Any) -> dict[str, Any]:
    copied = copy.deepcopy(template)
    change(copied["Resources"][logical_id]["Properties"])
    return copied


def _rename_first_metric(props: dict[str, Any], name: str) -> None:
    next(q for q in props["Metrics"] if "MetricStat" in q)["MetricStat"]["Metric"]["MetricName"] = name


def _set_dimension(props: dict[str, Any], value: str) -> None:
    props["Dimensions"][1]["Value"] = value


def _replace_in_body(old: str, new: str) -> Any:
    def change(props: dict[str, Any]) -> None:
        sub = props["DashboardBody"]["Fn::Sub"]
        body = sub[0] if isinstance(sub, list) else sub  # Fn::Sub [body, variables] or Fn::Sub body
        assert old in body
        changed = body.replace(old, new)
        props["DashboardBody"]["Fn::Sub"] = [changed, sub[1]] if isinstance(sub, list) else changed

    return change


@pytest.mark.parametrize(
    ("logical_id", "change", "problem"),
    [
        ("HighWebhookFailureRate", lambda p: _rename_first_metric(p, "WebhookFailures"), "nothing emits"),
        ("StripeApiHealthCheckFailing", lambda p: _set_dimension(p, "stripe"), "Check=stripe"),
        ("StripeApiHealthCheckFailing", lambda p: p["Dimensions"].pop(0), "nothing emits HealthCheck"),
        (
            "WebhookSignatureFailuresSpike",
            lambda p: p["Dimensions"].append({"Name": "EventType", "Value": "x"}),
            "nothing emits",
        ),
        ("WebhookSignatureFailuresSpike", lambda p: p.update(Namespace="Billing"), "neither"),
        ("HttpApi5xx", lambda p: p["Dimensions"][0].update(Value={"Ref": "BillingStateTable"}), "ApiId"),
        ("BillingDashboard", _replace_in_body('"UpgradeLatency"', '"UpgradeLatence"'), "UpgradeLatence"),
        ("BillingDashboard", _replace_in_body("service,EventType}", "service,Type}"), "Type=*"),
        ("LicensingDashboard", _replace_in_body('"Result", "denied"', '"Result", "deny"'), "Result=deny"),
        ("LicensingDashboard", _replace_in_body("service, Feature)", "Feature)"), "UsageCounted"),
    ],
)
def test_a_typo_or_a_dimension_mismatch_fails_the_check(
    template: dict[str, Any], emitted: set[Emitted], logical_id: str, change: Any, problem: str
) -> None:
    assert mismatches(template, emitted) == []
    problems = mismatches(_mutated(template, logical_id, change), emitted)
    assert len(problems) >= 1 and any(problem in line for line in problems), problems
