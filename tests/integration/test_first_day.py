"""devtools.first_day: the seed's first-day checklist against the local stack and a stack on moto.

Each local test starts its stack in its own body, not in a fixture: pytest puts its own sys.stdout
back between a test's setup and call, which would take the EMF sink of a fixture's stack away.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devtools import first_day
from devtools import stripe_events as se
from devtools.emulator import LocalEmulator
from devtools.moto_patches import install_alarm_history, install_percentiles
from tests.integration.test_local_stack import NOW, post_signed, subscription_created

REGION = "us-east-1"


def checked(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, str]]:
    """The exit code, and each check's printed line by its check name."""
    capsys.readouterr()
    code = first_day.main(argv)
    lines = capsys.readouterr().out.splitlines()
    rows = {}
    for _, _, check, _ in first_day.CHECKLIST:
        (row,) = [line for line in lines if f" / {check}: " in line]
        rows[check] = row.split()[0]
    return code, rows


def with_traffic(stack: LocalEmulator) -> None:
    """A scheduled probe run, and a first customer who subscribed and paid."""
    stack.invoke("HealthProbeFunction", {"source": "aws.events", "detail-type": "Scheduled Event"})
    webhook, secrets = stack.url + "/webhooks/stripe", list(stack.webhook_secrets)
    paid = se.invoice(id="in_first", customer="cus_acct_first", status="paid")
    for stripe_event in (
        subscription_created("acct_first", "evt_first_1"),
        se.event("invoice.paid", paid, id="evt_first_2", created=NOW + 1),
    ):
        status, body = post_signed(webhook, stripe_event, secrets)
        assert (status, body["outcome"]) == (200, "applied")


def local_argv(stack: LocalEmulator) -> list[str]:
    return ["--local", stack.url, "--moto", stack.moto_endpoint]


def test_a_healthy_first_hour_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with LocalEmulator(autorun=False).start(port=0) as stack:
        with_traffic(stack)
        code, rows = checked(capsys, local_argv(stack))

    assert code == 0, rows
    assert "fail" not in rows.values()
    for check in (
        "GET /health",
        "GET /health?deep=1",
        "alarms in ALARM",
        "dead-letter queues empty",
        "WebhookReceived vs WebhookFailed",
        "API error rate",
        "API availability",
        "PaymentSucceeded vs PaymentFailed",
        "health probe running",
        "DynamoDB (probe)",
    ):
        assert rows[check] == "ok", (check, rows)
    # Without a Stripe key the probe cannot ask Stripe; billwatch has no pods, ledger or memory to watch.
    assert rows["Stripe's webhook endpoint (probe)"] == "skipped"
    assert rows["reconciliation drift"] == "skipped"  # no Stripe key: no ReconcileFunction either
    assert rows["ledger SQL"] == rows["memory"] == rows["table backups"] == "skipped"


def test_failed_webhooks_a_firing_critical_alarm_and_a_full_dlq_fail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LocalEmulator(autorun=False).start(port=0) as stack:
        with_traffic(stack)
        now = dt.datetime.fromtimestamp(stack.clock.now(), dt.UTC)
        cloudwatch = stack.client("cloudwatch")
        cloudwatch.put_metric_data(
            Namespace="Billwatch",
            MetricData=[
                {
                    "MetricName": "WebhookFailed",
                    "Dimensions": [{"Name": "service", "Value": "billwatch"}],
                    "Value": 5.0,
                    "Timestamp": now,
                }
            ],
        )
        cloudwatch.set_alarm_state(
            AlarmName=f"billwatch-{stack.stage}-StripeWebhookDown", StateValue="ALARM", StateReason="test"
        )
        stack.client("sqs").send_message(QueueUrl=stack.queue_urls["WebhookDLQ"], MessageBody="{}")
        code, rows = checked(capsys, local_argv(stack))

    assert code == 1
    assert rows["WebhookReceived vs WebhookFailed"] == "fail"
    assert rows["alarms in ALARM"] == "fail"
    assert rows["dead-letter queues empty"] == "fail"
    assert rows["GET /health?deep=1"] == "warn"  # degraded: one check failed, DynamoDB answers
    assert rows["PaymentSucceeded vs PaymentFailed"] == "ok"


def test_the_local_stack_must_answer_and_moto_be_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as without_moto:
        first_day.main(["--local", "http://127.0.0.1:3000"])
    assert without_moto.value.code == 2
    assert "--local needs --moto" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:
        first_day.main(["--local", "http://127.0.0.1:3000", "--stack", "x"])
    assert both.value.code == 2

    code = first_day.main(["--local", "http://127.0.0.1:9", "--moto", "http://127.0.0.1:9"])
    assert code == 2
    assert "no local stack answers" in capsys.readouterr().err


STACK_TEMPLATE = {
    "Parameters": {
        "Stage": {"Type": "String"},
        "MetricsNamespace": {"Type": "String", "Default": "Billwatch"},
    },
    "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
    "Outputs": {
        "HttpApiUrl": {"Value": "https://abc123.execute-api.us-east-1.amazonaws.com"},
        "BillingStateTableName": {"Value": "billing-state"},
        "IdempotencyTableName": {"Value": "idempotency"},
    },
}


def table(dynamodb: Any, name: str) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def moto_report_shims() -> Iterator[None]:
    """What moto's CloudWatch lacks for the report's reading: percentiles and the alarm history."""
    undo_percentiles, undo_history = install_percentiles(), install_alarm_history()
    try:
        yield
    finally:
        undo_history()
        undo_percentiles()


def test_a_deployed_stack_is_read_from_its_outputs(
    aws_credentials: None, moto_report_shims: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("cloudformation").create_stack(
            StackName="billwatch-test",
            TemplateBody=json.dumps(STACK_TEMPLATE),
            Parameters=[{"ParameterKey": "Stage", "ParameterValue": "test"}],
        )
        dynamodb = session.client("dynamodb")
        table(dynamodb, "billing-state")
        table(dynamodb, "idempotency")
        dynamodb.update_continuous_backups(
            TableName="billing-state", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
        target = first_day.deployed_target("billwatch-test", session)
        now = target.now.replace(microsecond=0)
        session.client("cloudwatch").put_metric_data(
            Namespace="AWS/ApiGateway",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "ApiId", "Value": "abc123"}],
                    "Value": value,
                    "Timestamp": now - dt.timedelta(minutes=5),
                }
                for name, value in (("Count", 1000.0), ("5xx", 30.0), ("4xx", 0.0))
            ],
        )
        # Nothing answers HTTP here: the API's health is a failed check, not a crash.
        results = first_day.run_checks(
            first_day.observe(dataclasses.replace(target, base_url="http://127.0.0.1:9"), 60)
        )

        assert first_day.main(["--stack", "no-such-stack"], session=session) == 2

    assert (target.stage, target.namespace, target.http_api_id) == ("test", "Billwatch", "abc123")
    assert target.tables == ("billing-state", "idempotency")
    outcomes = {result.check: result.outcome for result in results}
    assert outcomes["GET /health"].status is first_day.Status.FAIL
    assert outcomes["GET /health"].detail.startswith("no answer from http://127.0.0.1:9/health")
    assert outcomes["API availability"].status is first_day.Status.FAIL
    assert outcomes["API availability"].detail.startswith("97.000 %")
    assert outcomes["API error rate"].status is first_day.Status.FAIL  # 3 %: over the seed's 1 %
    assert outcomes["table backups"] == first_day.Outcome(
        first_day.Status.FAIL, "point-in-time recovery off: idempotency"
    )
    assert "cannot read the stack 'no-such-stack'" in capsys.readouterr().err
