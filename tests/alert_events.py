"""What the alert dispatcher receives, in the shapes AWS delivers it.

Alarm notifications through SNS (the Message is CloudWatch's JSON, as a string) and CloudWatch's
direct alarm-to-Lambda invocation, following the examples in the CloudWatch user guide ("Invoke
a Lambda function from an alarm", "Using Amazon SNS notifications"); business events through SNS.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from billwatch.alerting.config import SHIPPED_ROUTES
from billwatch.core.severities import DEFAULT_SEVERITIES, usage_alert
from tests.alert_receivers import AlertReceivers
from tests.scenarios import ADMIN_ROLE

REGION = "us-east-1"
SENDER = "alerts@billwatch.test"
HOOK_SECRET = "hook-signing-secret-for-tests"
ACCOUNT = "123456789012"
RUNBOOKS = "https://github.com/billwatch/billwatch/blob/main/docs/runbooks"
DASHBOARDS = f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#dashboards/dashboard"
BILLING_DASHBOARD = f"{DASHBOARDS}/billwatch-dev-billing"
LICENSING_DASHBOARD = f"{DASHBOARDS}/billwatch-dev-licensing"


def cloudwatch_time(moment: float) -> str:
    """CloudWatch's own time format, e.g. 2026-12-01T15:00:00.000+0000."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def alarm_arn(name: str) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:billwatch-dev-{name}"


def description(severity: str, summary: str, runbook: str) -> str:
    return f"[{severity}] {summary} Runbook: {RUNBOOKS}/{runbook}.md"


def alarm_message(
    name: str,
    state: str,
    at: float,
    *,
    severity: str = "critical",
    runbook: str = "webhook-failures",
    value: float = 7.5,
    threshold: float = 5.0,
    old_state: str | None = None,
) -> dict[str, Any]:
    comparison = "greater than" if state == "ALARM" else "not greater than"
    return {
        "AlarmName": f"billwatch-dev-{name}",
        "AlarmDescription": description(severity, f"{name} is in trouble.", runbook),
        "AWSAccountId": ACCOUNT,
        "AlarmConfigurationUpdatedTimestamp": cloudwatch_time(at - 86400),
        "NewStateValue": state,
        "NewStateReason": f"Threshold Crossed: 1 out of the last 1 datapoints [{value} "
        f"({dt.datetime.fromtimestamp(at, dt.UTC):%d/%m/%y %H:%M:%S})] was {comparison} the threshold "
        f"({threshold}) (minimum 1 datapoint for OK -> ALARM transition).",
        "StateChangeTime": cloudwatch_time(at),
        "Region": "US East (N. Virginia)",
        "AlarmArn": alarm_arn(name),
        "OldStateValue": old_state or ("OK" if state == "ALARM" else "ALARM"),
        "OKActions": [],
        "AlarmActions": [],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "WebhookFailed",
            "Namespace": "Billwatch",
            "StatisticType": "Statistic",
            "Statistic": "SUM",
            "Unit": None,
            "Dimensions": [{"value": "billwatch", "name": "service"}],
            "Period": 600,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": threshold,
            "TreatMissingData": "notBreaching",
            "EvaluateLowSampleCountPercentile": "",
        },
    }


def sns_event(
    *messages: dict[str, Any] | str, topic: str = "billwatch-dev-alarms-critical"
) -> dict[str, Any]:
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{topic}:{uuid.uuid4()}",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": str(uuid.uuid4()),
                    "TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{topic}",
                    "Subject": "ALARM",
                    "Message": message if isinstance(message, str) else json.dumps(message),
                    "Timestamp": "2026-12-01T15:00:00.000Z",
                    "SignatureVersion": "1",
                    "MessageAttributes": {},
                },
            }
            for message in messages
        ]
    }


def direct_alarm_event(name: str, state: str, at: float, *, severity: str = "critical") -> dict[str, Any]:
    reason_data = {
        "version": "1.0",
        "statistic": "Sum",
        "period": 600,
        "recentDatapoints": [7.5],
        "threshold": 5.0,
    }
    return {
        "source": "aws.cloudwatch",
        "alarmArn": alarm_arn(name),
        "accountId": ACCOUNT,
        "time": cloudwatch_time(at),
        "region": REGION,
        "alarmData": {
            "alarmName": f"billwatch-dev-{name}",
            "state": {
                "value": state,
                "reason": "Threshold Crossed: 1 out of the last 1 datapoints [7.5] was greater than 5.0.",
                "reasonData": json.dumps(reason_data),
                "timestamp": cloudwatch_time(at),
            },
            "previousState": {"value": "OK", "reason": "", "timestamp": cloudwatch_time(at - 600)},
            "configuration": {
                "description": description(severity, f"{name} is in trouble.", "webhook-failures"),
                "metrics": [],
            },
        },
    }


def usage_event(account_id: str, threshold: int, at: float, feature: str = "api_calls") -> dict[str, Any]:
    return {
        "type": "usage.threshold_crossed",
        "account_id": account_id,
        "feature": feature,
        "threshold": threshold,
        "severity": DEFAULT_SEVERITIES[usage_alert(threshold)].value,
        "used": threshold * 10,
        "limit": 1000,
        "period": {"since": "2026-12-01T00:00:00Z", "resets_at": "2027-01-01T00:00:00Z"},
        "occurred_at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z"),
    }


def routes_to(receivers: AlertReceivers) -> dict[str, Any]:
    hook = {"type": "webhook", "signing_secret": "hook"}
    return {
        "repeat_interval_seconds": {"critical": 7200, "warning": 14400, "info": 43200},
        "stale_after_seconds": 3600,
        "route": {
            "receiver": "team",
            "routes": [
                {
                    "matchers": ["alertname=PaymentFailureRateCritical"],
                    "receiver": "billing",
                    "continue": True,
                },
                {"matchers": ["source=~licensing|billing"], "receiver": "customers"},
                {"matchers": ["severity=critical"], "receiver": "oncall"},
                {"matchers": ["severity=warning"], "receiver": "team", "send_resolved": False},
            ],
        },
        "receivers": {
            "oncall": {
                "channels": [
                    {
                        "type": "pagerduty",
                        "routing_key_secret": "pd",
                        "events_url": receivers.url("/pagerduty"),
                    },
                    {"type": "email", "to": ["oncall@billwatch.test"]},
                    {"type": "slack", "webhook_url_secret": "slack"},
                ],
                "fallback": {**hook, "url": receivers.url("/fallback")},
            },
            "team": {"channels": [{"type": "slack", "webhook_url_secret": "slack"}]},
            "billing": {"channels": [{**hook, "url": receivers.url("/billing")}]},
            "customers": {"channels": [{"type": "slack", "webhook_url_secret": "slack_customers"}]},
        },
        # The shipped inhibitions, so that the tests hold the rules operators get.
        "inhibit_rules": json.loads(SHIPPED_ROUTES.read_text())["inhibit_rules"],
    }


def dispatcher_environment(
    monkeypatch: pytest.MonkeyPatch, tables: dict[str, str], receivers: AlertReceivers, tmp_path: Path
) -> str:
    """What the AlertDispatch function needs, pointed at the receivers and moto; returns the DLQ's URL."""
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes_to(receivers)))
    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    dlq = boto3.client("sqs").create_queue(QueueName="alert-dlq")["QueueUrl"]
    secrets = {"pd": "R0UT1NGKEY", "slack": receivers.url("/slack"), "hook": HOOK_SECRET}
    secrets["slack_customers"] = receivers.url("/customers")
    for name, value in {
        "ALERT_STATE_TABLE_NAME": tables["AlertStateTable"],
        "ALERT_ROUTES_PATH": str(path),
        "ALERT_SECRETS": json.dumps(secrets),
        "ALERT_EMAIL_SENDER": SENDER,
        "ALERT_DLQ_URL": dlq,
        "ADMIN_ROLE_ARNS": ADMIN_ROLE,
        "BILLING_DASHBOARD_NAME": "billwatch-dev-billing",
        "LICENSING_DASHBOARD_NAME": "billwatch-dev-licensing",
        "RUNBOOK_BASE_URL": RUNBOOKS,
    }.items():
        monkeypatch.setenv(name, value)
    return dlq
