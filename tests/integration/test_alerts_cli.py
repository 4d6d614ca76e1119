"""devtools.alerts: test alerts through the routes, silences, and firing alerts from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devtools import alerts
from tests.alert_events import alarm_message, dispatcher_environment, sns_event, usage_event
from tests.alert_receivers import AlertReceivers, alert_receivers
from tests.support import LambdaContext, load_handler

T0 = 1_796_137_200  # Tuesday 2026-12-01 15:00 UTC
OPERATOR = "arn:aws:sts::123456789012:user/moto"  # what moto's STS GetCallerIdentity answers
# What the AlertDispatch function's environment holds (template.yaml and its Globals).
FUNCTION_ENVIRONMENT = (
    "BILLING_TABLE_NAME",
    "IDEMPOTENCY_TABLE_NAME",
    "ALERT_STATE_TABLE_NAME",
    "ALERT_ROUTES_PATH",
    "ALERT_SECRETS",
    "ALERT_EMAIL_SENDER",
    "ALERT_DLQ_URL",
    "AUDIT_TABLE_NAME",
)


def test_make_alert_test_sends_one_alert_of_each_severity_through_the_routes(
    aws_credentials, monkeypatch, capsys, metrics
) -> None:
    for name in (
        "ALERT_ROUTES_PATH",
        "BILLING_TABLE_NAME",
        "IDEMPOTENCY_TABLE_NAME",
        "ALERT_STATE_TABLE_NAME",
    ):
        monkeypatch.setenv(name, "")  # restored after the test; the command sets what it needs
    monkeypatch.delenv("ALERT_ROUTES_PATH")
    assert alerts.main(["test"]) == 0
    notices = [log for log in metrics.logs() if log["message"] == "Alert notification"]
    report = json.loads(next(line for line in metrics.lines if line.startswith('{"sent"')))
    assert sorted((r["severity"], r["receiver"]) for r in report["sent"]) == [
        ("critical", "oncall-critical"),
        ("info", "team-info"),
        ("warning", "oncall-warning"),
    ]
    assert sorted(n["alert"]["severity"] for n in notices) == ["critical", "info", "warning"]
    assert {n["kind"] for n in notices} == {"test"}


def test_silences_from_the_command_line(aws, capsys) -> None:
    table = ["--table", aws["AlertStateTable"]]
    window = ["--ends", "2999-01-01T00:00Z", "--comment", "pricing migration", "--by", "ops"]
    assert alerts.main(["silence", "add", "--matcher", "alertname=HighQuotaDenialRate", *window, *table]) == 0
    silence = printed(capsys, '{"id"')
    # Created by the operator's real identity: --by is what they typed, and only a note beside it.
    assert silence["matchers"] == ["alertname=HighQuotaDenialRate"] and silence["created_by"] == OPERATOR
    assert alerts.main(["silence", "list", *table]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == silence["id"] and listed["active"] is True
    assert alerts.main(["silence", "remove", silence["id"], *table]) == 0
    assert alerts.main(["silence", "remove", silence["id"], "--by", "ops", *table]) == 1
    # Both recorded in the audit trail with who did them, as the admin API records them.
    assert audit_records(aws) == [
        ("silence_create", OPERATOR, "ops", silence["id"]),
        ("silence_remove", OPERATOR, None, silence["id"]),
    ]
    assert alerts.main(["silence", "add", "--matcher", "alertname", *window, *table]) == 1
    assert "matchers.0" in capsys.readouterr().err


def test_an_operator_whose_identity_sts_cannot_tell_does_nothing(aws, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")  # nothing listens: STS unreachable
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    table = ["--table", aws["AlertStateTable"]]
    window = ["--ends", "2999-01-01T00:00Z", "--comment", "c", "--by", "ops"]
    with pytest.raises(SystemExit) as exit_:
        alerts.main(["silence", "add", "--matcher", "alertname=X", *window, *table])
    assert "STS" in str(exit_.value.code) and "nothing was done" in str(exit_.value.code)
    assert boto3.client("dynamodb").scan(TableName=aws["AlertStateTable"])["Items"] == []
    assert audit_records(aws) == []


def test_a_time_without_a_zone_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        alerts.main(["silence", "add", "--matcher", "a=b", "--ends", "2026-12-01T18:00", "--comment", "c"])
    assert exit_.value.code == 2 and "time zone" in capsys.readouterr().err


def audit_records(aws: dict[str, str]) -> list[tuple[str, str, str | None, str]]:
    """(action, caller, on_behalf_of, target) of every audit record, sorted."""
    records = boto3.client("dynamodb").scan(TableName=aws["AuditTable"])["Items"]
    return sorted(
        (r["action"]["S"], r["caller"]["S"], r.get("on_behalf_of", {}).get("S"), r["target"]["S"])
        for r in records
    )


def printed(capsys: pytest.CaptureFixture[str], start: str) -> Any:
    """The command's answer among the log lines the dispatcher prints beside it."""
    return json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith(start)))


@pytest.fixture
def firing(aws, monkeypatch, tmp_path) -> Iterator[AlertReceivers]:
    """A critical alarm and a usage alert fire, told to their receivers on 127.0.0.1."""
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        dispatch = load_handler("alert_dispatch")
        dispatch.lambda_handler(
            sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)), LambdaContext()
        )
        dispatch.lambda_handler(
            sns_event(usage_event("acct_1", 95, T0), topic="usage-events"), LambdaContext()
        )
        yield receivers


def test_alerts_listed_acknowledged_and_resolved_from_the_command_line(aws, firing, capsys) -> None:
    assert alerts.main(["alerts", "list"]) == 0
    ids = {alert["name"]: alert["id"] for alert in printed(capsys, "[")}
    alarm, usage = ids["HighWebhookFailureRate"], ids["UsageThresholdCrossed"]

    assert alerts.main(["alerts", "ack", alarm, "--reason", "INC-7"]) == 0
    acknowledged = printed(capsys, '{"id"')["acknowledged"]
    assert acknowledged["by"] == OPERATOR and acknowledged["reason"] == "INC-7"
    assert alerts.main(["alerts", "resolve", alarm, "--reason", "fixed"]) == 1
    assert "CloudWatch owns its state" in capsys.readouterr().err

    assert alerts.main(["alerts", "resolve", usage, "--reason", "paid by wire", "--by", "ops"]) == 0
    assert printed(capsys, '{"id"')["resolved_by_hand"]["by"] == OPERATOR  # never whom --by names
    assert audit_records(aws) == [
        ("alert_ack", OPERATOR, None, alarm),
        ("alert_resolve", OPERATOR, "ops", usage),
    ]
    assert "paid by wire" in json.dumps(firing.requests("/customers")[-1].json)
    assert alerts.main(["alerts", "resolve", usage, "--reason", "again"]) == 1
    assert "nothing to resolve" in capsys.readouterr().err
    assert alerts.main(["alerts", "list"]) == 0
    (left,) = printed(capsys, "[")
    assert left["id"] == alarm and left["acknowledged"]["reason"] == "INC-7"


@pytest.mark.parametrize(
    ("argv", "code", "problem"),
    [
        (["resolve", "{usage}", "--reason", "  "], 2, "--reason"),
        (["ack", "dXNhZ2Ujbm9ib2R5", "--reason", "r"], 1, "no alert"),
        (["ack", "not-an-id", "--reason", "r"], 1, "not an alert id"),
    ],
)
def test_a_refused_alert_command_says_why_and_changes_nothing(firing, capsys, argv, code, problem) -> None:
    assert alerts.main(["alerts", "list"]) == 0
    before = printed(capsys, "[")
    usage = next(alert["id"] for alert in before if alert["name"] == "UsageThresholdCrossed")
    assert alerts.main(["alerts", *[part.format(usage=usage) for part in argv]]) == code
    assert problem in capsys.readouterr().err
    assert alerts.main(["alerts", "list"]) == 0
    assert printed(capsys, "[") == before


def test_the_alert_commands_take_their_settings_from_the_deployed_function(
    firing, monkeypatch, capsys
) -> None:
    import io
    import os
    import zipfile

    import boto3

    environment = {name: os.environ[name] for name in FUNCTION_ENVIRONMENT}
    role = boto3.client("iam").create_role(RoleName="alert-dispatch", AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context): pass\n")
    boto3.client("lambda").create_function(
        FunctionName="billwatch-dev-AlertDispatch",
        Runtime="python3.13",
        Role=role["Role"]["Arn"],
        Handler="app.lambda_handler",
        Code={"ZipFile": code.getvalue()},
        Environment={"Variables": environment},
    )
    for name in FUNCTION_ENVIRONMENT:
        monkeypatch.delenv(name)
    assert alerts.main(["alerts", "list", "--function", "billwatch-dev-AlertDispatch"]) == 0
    listed = printed(capsys, "[")
    assert sorted(alert["name"] for alert in listed) == ["HighWebhookFailureRate", "UsageThresholdCrossed"]
    oncall = next(alert for alert in listed if alert["severity"] == "critical")["notified"]
    assert [(told["receiver"], told["channels"]) for told in oncall] == [
        ("oncall", ["pagerduty", "email", "slack"])  # the test routes, read from the function's settings
    ]


def test_the_alert_commands_without_settings_say_what_to_set(monkeypatch, capsys) -> None:
    for name in ("BILLING_TABLE_NAME", "ALERT_STATE_TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert alerts.main(["alerts", "list"]) == 2
    message = capsys.readouterr().err
    assert "is required" in message and "--function" in message and "Traceback" not in message
