"""What `sam local invoke` / `sam local start-api` are given, checked without Docker.

env.json against template.yaml, the trigger samples in events/ against the triggers that send them
(schedules, routes, the alarm topic), and the handlers run in-process on moto with env.json's
values (see docs/sam-local.md).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billwatch.alerting.inputs import read_records
from billwatch.core.access import is_admin
from billwatch.core.models import BillingAccount
from billwatch.licensing.quota_reset import SegmentDispatcher
from devtools.emulator.settings import SAM_LOCAL_WEBHOOK_SECRET
from devtools.make_sample_events import SCHEDULER_TIME_PLACEHOLDER, function_events, route_key
from devtools.signing import LOCAL_DEV_SECRET
from devtools.template import (
    FUNCTION_TYPE,
    REPO_ROOT,
    TABLE_TYPE,
    create_tables,
    function_environment,
    function_properties,
    load_template,
    resolved_properties,
    resources_of_type,
)
from tests.support import LambdaContext, load_handler

TEMPLATE = load_template(REPO_ROOT / "template.yaml")
FUNCTIONS = list(resources_of_type(TEMPLATE, FUNCTION_TYPE))
ENV_FILE = json.loads((REPO_ROOT / "env.json").read_text())
EVENTS = REPO_ROOT / "events"
# What `make run` is started with for sam local (docs/sam-local.md), and so what it names the
# template's tables, queues and topics on moto.
MOTO_PORT = 5005
LOCAL_PREFIX = "billwatch-local-"
QUEUE_TYPE = "AWS::SQS::Queue"
TOPIC_TYPE = "AWS::SNS::Topic"
LOCAL_NAMES = {
    TABLE_TYPE: lambda logical_id: f"{LOCAL_PREFIX}{logical_id}",
    QUEUE_TYPE: lambda logical_id: (
        f"https://sqs.us-east-1.amazonaws.com/123456789012/{LOCAL_PREFIX}{logical_id}"
    ),
    TOPIC_TYPE: lambda logical_id: f"arn:aws:sns:us-east-1:123456789012:{LOCAL_PREFIX}{logical_id}",
}
SHARED = "Parameters"  # sam local's key for values every function gets
SCHEDULE_TYPES = ("Schedule", "ScheduleV2")
SCHEDULED_EVENT_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PATH_PARAMETER = re.compile(r"\{([^}/]+)\}")
WEBHOOK_FUNCTION = "WebhookIntakeFunction"
PAST_PERIOD_START = int(dt.datetime(2025, 9, 1, tzinfo=dt.UTC).timestamp())  # long ended by now


def local_env(function: str) -> dict[str, str]:
    """What env.json gives a function: the shared values, then its own (sam local's precedence)."""
    return {**ENV_FILE.get(SHARED, {}), **ENV_FILE[function]}


def template_variables(function: str) -> dict[str, Any]:
    """The function's Environment.Variables with Globals merged, intrinsics as written."""
    return (function_properties(TEMPLATE, function).get("Environment") or {}).get("Variables") or {}


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            yield node["Ref"]
        for value in node.values():
            yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def sample(relative: str) -> Any:
    return json.loads((EVENTS / relative).read_text())


def trigger_of(path: Path) -> tuple[str, dict[str, Any]]:
    """(function, its event in the template) of a ``<Function>.<Event>.json`` sample."""
    function, event_name = path.stem.split(".")
    return function, TEMPLATE["Resources"][function]["Properties"]["Events"][event_name]


# ---------------------------------------------------------------------------------------- env.json


def test_env_json_has_an_entry_for_every_function() -> None:
    assert set(ENV_FILE) - {SHARED} == set(FUNCTIONS)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_variable_the_template_sets_has_a_local_value(function: str) -> None:
    missing = set(function_environment(TEMPLATE, function)) - set(local_env(function))
    assert not missing, f"env.json gives {function} no value for {sorted(missing)}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_resources_are_the_ones_the_local_stack_makes(function: str) -> None:
    """A table, queue or topic is the stack's on moto; anything else (a secret, the HTTP API) it does
    not make, and the code reads the empty value as "not configured"."""
    env = local_env(function)
    for variable, value in template_variables(function).items():
        for ref in refs_in(value):
            resource = TEMPLATE["Resources"].get(ref)
            if resource is not None:  # else a parameter
                local_name = LOCAL_NAMES.get(resource["Type"])
                expected = local_name(ref) if local_name else ""
                if ref == "WebhookSecret":  # the local stack keeps the signing secret in moto
                    expected = SAM_LOCAL_WEBHOOK_SECRET
                assert env[variable] == expected, variable


@pytest.mark.parametrize("function", FUNCTIONS)
def test_aws_calls_go_to_the_moto_server(function: str) -> None:
    endpoint = urllib.parse.urlsplit(local_env(function)["AWS_ENDPOINT_URL"])
    # The host depends on how the container reaches the machine's loopback (docs/sam-local.md).
    assert (endpoint.scheme, endpoint.port, endpoint.path) == ("http", MOTO_PORT, "")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_nothing_else_is_read_from_secrets_manager_or_ssm(function: str) -> None:
    """The signing secret comes from the local stack's moto; the plan catalog and alert routes from
    the layer, and no Stripe key or channel secret is set."""
    for variable, value in local_env(function).items():
        if variable == "WEBHOOK_SECRET_ID":
            assert value == SAM_LOCAL_WEBHOOK_SECRET
        elif variable.endswith(("_SECRET_ID", "_SECRETS_ID", "_PARAMETER")):
            assert value == "", variable


def test_the_local_stack_keeps_its_signing_secret_where_env_json_looks() -> None:
    import boto3

    from devtools.emulator import LocalEmulator

    with LocalEmulator(autorun=False).start(port=0) as stack:
        secrets = boto3.client(
            "secretsmanager",
            endpoint_url=stack.moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        stored = secrets.get_secret_value(SecretId=local_env(WEBHOOK_FUNCTION)["WEBHOOK_SECRET_ID"])
        assert stored["SecretString"] == LOCAL_DEV_SECRET


def test_sam_local_passes_every_local_value_on() -> None:
    """sam local sets only the variables template.yaml declares for a function; env.json sets no other."""
    dropped = {
        function: sorted(set(local_env(function)) - set(function_environment(TEMPLATE, function)))
        for function in FUNCTIONS
    }
    assert not {function: names for function, names in dropped.items() if names}


# ------------------------------------------------------------------------------- trigger samples


def test_every_schedule_has_its_sample_and_every_sample_its_schedule() -> None:
    schedules = {
        f"{function}.{name}.json" for function, name, _ in function_events(TEMPLATE, *SCHEDULE_TYPES)
    }
    assert {path.name for path in (EVENTS / "schedules").glob("*.json")} == schedules


@pytest.mark.parametrize("path", sorted((EVENTS / "schedules").glob("*.json")), ids=lambda path: path.stem)
def test_a_schedule_sample_is_what_its_schedule_sends(path: Path) -> None:
    _, event = trigger_of(path)
    sent = json.loads(path.read_text())
    if event["Type"] == "Schedule":
        assert set(sent) == SCHEDULED_EVENT_KEYS | {"detail"} and sent["detail"] == {}
        assert (sent["source"], sent["detail-type"]) == ("aws.events", "Scheduled Event")
        assert (sent["account"], sent["region"]) == ("123456789012", "us-east-1")
        assert ISO_UTC.match(sent["time"])
        (rule,) = sent["resources"]
        assert rule.startswith("arn:aws:events:us-east-1:123456789012:rule/")
    else:  # EventBridge Scheduler sends the schedule's Input with its context attributes filled in
        expected = json.loads(event["Properties"]["Input"])
        assert set(sent) == set(expected)
        for key, value in expected.items():
            if value == SCHEDULER_TIME_PLACEHOLDER:
                assert ISO_UTC.match(sent[key]), key
            else:
                assert sent[key] == value, key


def test_every_route_has_a_sample_with_its_route_key() -> None:
    routes = {route_key(props) for _, _, props in function_events(TEMPLATE, "HttpApi")}
    samples = {json.loads(path.read_text())["routeKey"] for path in (EVENTS / "apigw").glob("*.json")}
    assert routes <= samples


# The Stripe webhook wrappers in apigw/ are named after their Stripe event, not a trigger.
ROUTE_SAMPLES = sorted(
    path for path in (EVENTS / "apigw").glob("*.json") if path.stem.split(".")[0] in FUNCTIONS
)


@pytest.mark.parametrize("path", ROUTE_SAMPLES, ids=lambda path: path.stem)
def test_a_route_sample_is_what_api_gateway_sends(path: Path) -> None:
    function, event = trigger_of(path)
    assert event["Type"] == "HttpApi"
    sent = json.loads(path.read_text())
    method, route_path = route_key(event["Properties"]).split(" ", 1)
    assert sent["version"] == "2.0"
    assert sent["routeKey"] == sent["requestContext"]["routeKey"] == f"{method} {route_path}"
    assert sent["requestContext"]["http"]["method"] == method
    parameters = sent.get("pathParameters", {})
    assert sent["rawPath"] == PATH_PARAMETER.sub(lambda found: parameters[found[1]], route_path)
    if (event["Properties"].get("Auth") or {}).get("Authorizer") != "AWS_IAM":
        assert "authorizer" not in sent["requestContext"]
        return
    caller = sent["requestContext"]["authorizer"]["iam"]["userArn"]
    if route_path.startswith("/admin/"):
        admins = local_env(function)["ADMIN_ROLE_ARNS"].split(",")
        assert is_admin(caller, admins), f"{caller} is not in {function}'s ADMIN_ROLE_ARNS"


@pytest.mark.parametrize("path", sorted((EVENTS / "sns").glob("*.json")), ids=lambda path: path.stem)
def test_the_sns_sample_is_an_alarm_notification_from_a_topic_the_function_subscribes_to(path: Path) -> None:
    _, event = trigger_of(path)
    assert event["Type"] == "SNS"
    topic = event["Properties"]["Topic"]["Ref"]
    topic_name = resolved_properties(TEMPLATE, "AWS::SNS::Topic")[topic]["TopicName"]
    delivery = json.loads(path.read_text())
    (record,) = delivery["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["Sns"]["TopicArn"] == f"arn:aws:sns:us-east-1:123456789012:{topic_name}"
    alarm_name = json.loads(record["Sns"]["Message"])["AlarmName"]
    alarms = resolved_properties(TEMPLATE, "AWS::CloudWatch::Alarm").values()
    (alarm,) = [props for props in alarms if props["AlarmName"] == alarm_name]
    assert topic in alarm["AlarmActions"]
    (read,) = read_records(delivery)
    assert read.problem is None and read.alert is not None
    assert alarm_name.endswith(f"-{read.alert.name}")


# -------------------------------------------------------------------------- in-process, on moto


@pytest.fixture
def local_stack_resources(aws_credentials: None) -> Iterator[None]:
    """moto in-process with what the local stack makes for sam local: the tables, queues and topics."""
    with mock_aws():
        create_tables(boto3.client("dynamodb"), TEMPLATE, prefix=LOCAL_PREFIX)
        for queue in resources_of_type(TEMPLATE, QUEUE_TYPE):
            boto3.client("sqs").create_queue(QueueName=f"{LOCAL_PREFIX}{queue}")
        for topic in resources_of_type(TEMPLATE, TOPIC_TYPE):
            boto3.client("sns").create_topic(Name=f"{LOCAL_PREFIX}{topic}")
        yield


def cold_start(function: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The function's handler, imported with env.json's values; mock_aws stands in for the endpoint."""
    for variable, value in local_env(function).items():
        if variable != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(variable, value)
    code_dir = Path(function_properties(TEMPLATE, function)["CodeUri"]).name
    return load_handler(code_dir)


@pytest.mark.usefixtures("local_stack_resources")
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_starts_with_its_env_json_values(function: str, monkeypatch) -> None:
    assert callable(cold_start(function, monkeypatch).lambda_handler)


@pytest.mark.usefixtures("local_stack_resources")
def test_the_scheduled_health_probe_runs_and_get_health_reports_it(monkeypatch) -> None:
    handler = cold_start("HealthProbeFunction", monkeypatch)
    report = handler.lambda_handler(sample("schedules/HealthProbeFunction.Probe.json"), LambdaContext())
    assert report["checks"]["dynamodb"]["status"] == report["checks"]["dead_letter_queues"]["status"] == "ok"
    answer = handler.lambda_handler(sample("apigw/HealthProbeFunction.Health.json"), LambdaContext())
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["checks"]["probe"]["status"] == "ok"


@pytest.mark.usefixtures("local_stack_resources")
def test_the_scheduled_quota_reset_starts_every_segment_and_the_segments_reset(monkeypatch) -> None:
    handler = cold_start("QuotaResetFunction", monkeypatch)
    BillingAccount("acct_demo", usage_since=PAST_PERIOD_START).save()
    # The fan-out is an asynchronous Lambda invocation of the function itself: recorded, not sent.
    started: list[tuple[str, int, int]] = []
    monkeypatch.setattr(SegmentDispatcher, "start", lambda _self, *segment: started.append(segment))
    event = sample("schedules/QuotaResetFunction.Hourly.json")
    segments = int(local_env("QuotaResetFunction")["QUOTA_RESET_SEGMENTS"])
    run_id = dt.datetime.fromisoformat(event["time"]).strftime("%Y-%m-%dT%H")
    assert handler.lambda_handler(event, LambdaContext()) == {"run_id": run_id, "segments": segments}
    assert started == [(run_id, segment, segments) for segment in range(segments)]
    results = [
        handler.lambda_handler({"run_id": run, "segment": segment, "total_segments": total}, LambdaContext())
        for run, segment, total in started
    ]
    assert all(result["finished"] for result in results)
    assert sum(result["reset"] for result in results) == 1
