"""The alert routing config (validated at load, errors that name the entry) and the route tree."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from billwatch.alerting.config import SHIPPED_ROUTES, Matcher, load_shipped_routing, parse_routing_config
from billwatch.alerting.dispatcher import match_routes
from billwatch.alerting.inputs import (
    AlertStatus,
    MalformedAlertInput,
    from_sns_alarm,
    read_records,
    short_alarm_name,
)
from billwatch.core.config import ConfigError
from billwatch.core.severities import Severity
from tests.alert_events import alarm_message, sns_event, usage_event

SHIPPED: dict[str, Any] = json.loads(SHIPPED_ROUTES.read_text())
T0 = 1_796_137_200


def receivers_for(labels: dict[str, str], config: Any = None) -> list[str]:
    config = config or load_shipped_routing()
    return [match.receiver for match in match_routes(config.route, labels)]


def test_the_shipped_routes_follow_the_monitoring_plans() -> None:
    config = load_shipped_routing()
    assert config.repeat_interval_seconds == {
        Severity.CRITICAL: 7200,
        Severity.WARNING: 14400,
        Severity.INFO: 43200,
    }
    channels = {name: [c.type for c in r.channels] for name, r in config.receivers.items()}
    assert channels["oncall-critical"] == ["pagerduty", "email", "slack"]
    assert channels["oncall-warning"] == ["slack", "email"]
    assert channels["team-info"] == ["slack", "email"]
    (info_email,) = [c for c in config.receivers["team-info"].channels if c.type == "email"]
    assert info_email.to == ("alerts@example.com",)
    assert config.receivers["oncall-critical"].fallback is not None
    assert receivers_for({"severity": "critical", "source": "cloudwatch"}) == ["oncall-critical"]
    assert receivers_for({"severity": "warning", "source": "cloudwatch"}) == ["oncall-warning"]
    assert receivers_for({"severity": "info", "source": "cloudwatch"}) == ["team-info"]
    assert receivers_for({"severity": "warning", "source": "licensing"}) == ["billing-team"]


def test_routes_take_the_first_match_unless_it_continues_and_inherit_from_parents() -> None:
    raw = copy.deepcopy(SHIPPED)
    raw["route"]["routes"].insert(
        0,
        {
            "matchers": ["alertname=~Payment.*"],
            "receiver": "billing-team",
            "continue": True,
            "repeat_interval_seconds": 600,
        },
    )
    config = parse_routing_config(json.dumps(raw), "test")
    matches = match_routes(config.route, {"alertname": "PaymentFailureRateCritical", "severity": "critical"})
    assert [(m.receiver, m.repeat_interval_seconds, m.send_resolved) for m in matches] == [
        ("billing-team", 600, True),
        ("oncall-critical", None, True),
    ]
    assert receivers_for({"alertname": "Unknown", "severity": "none"}, config) == ["team-info"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["route"].update(receiver="nobody"), "route.receiver: no receiver named 'nobody'"),
        (lambda c: c["route"]["routes"][1].update(receiver="ghost"), "route.routes.1.receiver"),
        (lambda c: c["route"]["routes"][0].update(matchers=["source"]), "route.routes.0.matchers"),
        (lambda c: c["route"]["routes"][0].update(matchers=["a=~(x"]), "invalid regex"),
        (lambda c: c["route"].pop("receiver"), "the root route needs a receiver"),
        (lambda c: c["repeat_interval_seconds"].pop("info"), "missing ['info']"),
        (lambda c: c["receivers"]["team-info"]["channels"][0].update(type="carrier-pigeon"), "team-info"),
        (lambda c: c["receivers"]["oncall-warning"]["channels"][1].update(to=["not-an-address"]), "to.0"),
        (lambda c: c["receivers"]["team-info"]["channels"][0].update(url="x"), "Extra inputs"),
        (lambda c: c["receivers"]["team-info"].update(channels=[]), "receivers.team-info.channels"),
        (lambda c: c.update(stale_after_seconds=5), "stale_after_seconds"),
        (lambda c: c["inhibit_rules"][0].update(target_matchers=[]), "inhibit_rules.0.target_matchers"),
    ],
)
def test_a_bad_entry_is_refused_at_load_with_an_error_naming_it(change: Any, problem: str) -> None:
    raw = copy.deepcopy(SHIPPED)
    change(raw)
    with pytest.raises(ConfigError, match="alert_routes") as error:
        parse_routing_config(json.dumps(raw), "alert_routes.json")
    assert problem in str(error.value)


def test_a_routes_file_that_is_not_json_names_itself() -> None:
    with pytest.raises(ConfigError, match="ALERT_ROUTES_PATH is not valid JSON"):
        parse_routing_config("{", "ALERT_ROUTES_PATH")


@pytest.mark.parametrize(
    ("matcher", "labels", "matches"),
    [
        ("severity=critical", {"severity": "critical"}, True),
        ("severity!=critical", {"severity": "critical"}, False),
        ("alertname=~Stripe.*", {"alertname": "StripeWebhookDown"}, True),
        ("alertname=~Stripe", {"alertname": "StripeWebhookDown"}, False),  # the whole value, as Alertmanager
        ("alertname!~Stripe.*", {"alertname": "HighQuotaDenialRate"}, True),
        ('group="webhook-failures"', {"group": "webhook-failures"}, True),
        ("account_id=", {}, True),  # a missing label is the empty string
    ],
)
def test_matchers(matcher: str, labels: dict[str, str], matches: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is matches


def test_an_alarm_notification_becomes_an_alert_with_what_routing_and_messages_need() -> None:
    alert = from_sns_alarm(alarm_message("HighWebhookFailureRate", "ALARM", T0))
    assert alert.name == "HighWebhookFailureRate" and alert.severity is Severity.CRITICAL
    assert alert.status is AlertStatus.FIRING and (alert.value, alert.threshold) == (7.5, 5.0)
    assert alert.labels == {
        "source": "cloudwatch",
        "group": "webhook-failures",
        "alarm": "billwatch-dev-HighWebhookFailureRate",
    }
    assert alert.since == "2026-12-01T15:00:00.000Z" and alert.version == "2026-12-01T15:00:00.000Z|firing"
    assert alert.runbook.endswith("/webhook-failures.md")
    assert "alarmsV2:alarm/billwatch-dev-HighWebhookFailureRate" in alert.console_url
    assert from_sns_alarm(alarm_message("HighWebhookFailureRate", "INSUFFICIENT_DATA", T0)) is None


def test_stage_prefixes_come_off_alarm_names() -> None:
    assert short_alarm_name("billwatch-prod-eu-StripeWebhookDown") == "StripeWebhookDown"
    assert short_alarm_name("SomeoneElsesAlarm") == "SomeoneElsesAlarm"


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({**alarm_message("X", "ALARM", T0), "AlarmDescription": "no severity here"}, "must read"),
        ({**alarm_message("X", "ALARM", T0), "StateChangeTime": "yesterday"}, "StateChangeTime"),
        ({**alarm_message("X", "ALARM", T0), "AlarmArn": "not-an-arn"}, "AlarmArn"),
        ({**usage_event("acct_1", 95, T0), "threshold": 42}, "threshold must be one of"),
        ({"type": "something.else"}, "neither an alarm notification"),
    ],
)
def test_unreadable_records_are_named_not_raised(message: dict, problem: str) -> None:
    (record,) = read_records(sns_event(message))
    assert record.alert is None and problem in record.problem


def test_a_record_that_is_not_sns_is_named() -> None:
    (record,) = read_records({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]})
    assert "neither an SNS record" in record.problem
    with pytest.raises(MalformedAlertInput):
        from_sns_alarm({"AlarmName": "x"})
