"""Alerts: what alarm state changes and business events become before they are routed and sent.

An Alert is one thing that fires and later resolves, identified by a fingerprint (the alarm's
ARN, or the business event's subject); each state change it goes through carries a version, so
that a change delivered twice is recognised as the same change.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

from aws_lambda_powertools.utilities.data_classes import CloudWatchAlarmEvent
from aws_lambda_powertools.utilities.data_classes.common import DictWrapper
from aws_lambda_powertools.utilities.data_classes.sns_event import SNSEventRecord

from billwatch.alerting.alarm_text import AlarmText, parse_alarm_description
from billwatch.core.severities import (
    DEFAULT_SEVERITIES,
    USAGE_THRESHOLDS,
    BusinessAlert,
    Severity,
    usage_alert,
)
from billwatch.licensing.usage_events import PAYMENT_FAILED_EVENT_TYPE, USAGE_EVENT_TYPE


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class NotificationKind(StrEnum):
    FIRING = "firing"  # first notice of this state
    REPEAT = "repeat"  # still firing after the repeat interval
    RESOLVED = "resolved"
    TEST = "test"


@dataclass(frozen=True)
class Alert:
    fingerprint: str  # stable across the alert's state changes
    name: str  # the alarm's name without the billwatch-<stage>- prefix, or the business event's
    severity: Severity
    status: AlertStatus
    summary: str
    reason: str
    since: str  # ISO 8601 UTC: when the current state began
    version: str  # identifies this state change: the same change delivered twice has one version
    labels: Mapping[str, str] = field(default_factory=dict)  # what routes, silences and inhibitions match
    value: float | None = None  # the metric's value that caused the state, when known
    threshold: float | None = None
    comparison: str | None = None
    runbook: str | None = None
    console_url: str | None = None
    dashboard_url: str | None = None  # set as it is sent (links.py), from the configuration

    @property
    def from_alarm(self) -> bool:
        """A CloudWatch alarm's: CloudWatch owns its state (a business event's state is ours)."""
        return "alarm" in self.labels

    def matches_labels(self) -> dict[str, str]:
        """The alert's labels with its name and severity, as matchers see them."""
        return {**self.labels, "alertname": self.name, "severity": self.severity.value}


@dataclass(frozen=True)
class Notification:
    alert: Alert
    kind: NotificationKind
    receiver: str


class MalformedAlertInput(ValueError):
    """A record that is not an alarm state change or business event we can read; names the problem."""


_STAGE_PREFIX = re.compile(r"^billwatch-[a-z][a-z0-9-]*?-(?=[A-Z])")
_REASON_VALUE = re.compile(r"\[(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_ALARM_STATUS = {"ALARM": AlertStatus.FIRING, "OK": AlertStatus.RESOLVED}
Wrapper = TypeVar("Wrapper", bound=DictWrapper)


def short_alarm_name(alarm_name: str) -> str:
    return _STAGE_PREFIX.sub("", alarm_name)


def cloudwatch_console_url(region: str, page: str, name: str) -> str:
    """A page of the CloudWatch console (``alarmsV2:alarm``, ``dashboards/dashboard``) for a name."""
    console = f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
    return f"{console}#{page}/{quote(name, safe='')}"


def console_url(region: str, alarm_name: str) -> str:
    return cloudwatch_console_url(region, "alarmsV2:alarm", alarm_name)


def _region_of(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or not parts[3]:
        raise MalformedAlertInput(f"AlarmArn {arn!r} is not an alarm ARN")
    return parts[3]


def _iso(timestamp: str, where: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except (AttributeError, ValueError):
        raise MalformedAlertInput(f"{where} {timestamp!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(source: Mapping[str, Any], key: str, where: str) -> str:
    value = source.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedAlertInput(f"{where}{key} is missing or not a string")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _alarm_text(description: Any, alarm_name: str) -> AlarmText:
    if not isinstance(description, str):
        raise MalformedAlertInput(f"alarm {alarm_name} has no description to read its severity from")
    try:
        return parse_alarm_description(description)
    except ValueError as error:
        raise MalformedAlertInput(f"alarm {alarm_name}: {error}") from None


def _value_from_reason(reason: str, reason_data: Any) -> float | None:
    if isinstance(reason_data, str):
        try:
            reason_data = json.loads(reason_data)
        except json.JSONDecodeError:
            reason_data = None
    if isinstance(reason_data, Mapping):
        recent = reason_data.get("recentDatapoints")
        if isinstance(recent, list) and recent:
            return _number(recent[-1])
    match = _REASON_VALUE.search(reason)
    return float(match[1]) if match else None


def _alarm_alert(
    *,
    alarm_name: str,
    alarm_arn: str,
    state: str,
    reason: str,
    since: str,
    description: Any,
    reason_data: Any,
    threshold: Any,
    comparison: Any,
    severities: Mapping[str, Severity],
) -> Alert | None:
    status = _ALARM_STATUS.get(state)
    if status is None:
        return None  # INSUFFICIENT_DATA is not news for anybody; the alarm's actions leave it out
    text = _alarm_text(description, alarm_name)
    name = short_alarm_name(alarm_name)
    runbook_page = text.runbook.rsplit("/", 1)[-1].removesuffix(".md")
    return Alert(
        fingerprint=alarm_arn,
        name=name,
        severity=severities.get(name, text.severity),  # ALERT_SEVERITIES may name the alarm
        status=status,
        summary=text.summary,
        reason=reason,
        since=since,
        version=f"{since}|{status.value}",
        labels={"source": "cloudwatch", "group": runbook_page, "alarm": alarm_name},
        value=_value_from_reason(reason, reason_data),
        threshold=_number(threshold),
        comparison=comparison if isinstance(comparison, str) else None,
        runbook=text.runbook,
        console_url=console_url(_region_of(alarm_arn), alarm_name),
    )


def from_sns_alarm(
    message: Mapping[str, Any], severities: Mapping[str, Severity] = DEFAULT_SEVERITIES
) -> Alert | None:
    """A CloudWatch alarm notification as SNS delivers it (the Message, parsed)."""
    alarm_name = _text(message, "AlarmName", "")
    trigger = _mapping(message.get("Trigger"))
    return _alarm_alert(
        alarm_name=alarm_name,
        alarm_arn=_text(message, "AlarmArn", ""),
        state=_text(message, "NewStateValue", ""),
        reason=_text(message, "NewStateReason", ""),
        since=_iso(_text(message, "StateChangeTime", ""), "StateChangeTime"),
        description=message.get("AlarmDescription"),
        reason_data=message.get("NewStateReasonData"),
        threshold=trigger.get("Threshold"),
        comparison=trigger.get("ComparisonOperator"),
        severities=severities,
    )


def _object(read: Callable[[], Wrapper], where: str) -> Wrapper:
    try:
        wrapper = read()
    except KeyError:
        raise MalformedAlertInput(f"{where} is missing or not an object") from None
    if not isinstance(wrapper.raw_event, Mapping):
        raise MalformedAlertInput(f"{where} is missing or not an object")
    return wrapper


def _read_text(read: Callable[[], Any], where: str) -> str:
    try:
        value = read()
    except KeyError:
        value = None
    if not isinstance(value, str) or not value:
        raise MalformedAlertInput(f"{where} is missing or not a string")
    return value


def _optional(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except (KeyError, AttributeError, TypeError):
        return None


def from_alarm_event(
    event: Mapping[str, Any], severities: Mapping[str, Severity] = DEFAULT_SEVERITIES
) -> Alert | None:
    """CloudWatch's direct alarm-to-Lambda invocation (``source: aws.cloudwatch``)."""
    alarm = CloudWatchAlarmEvent(dict(event))
    data = _object(lambda: alarm.alarm_data, "alarmData")
    state = _object(lambda: data.state, "alarmData.state")
    alarm_name = _read_text(lambda: data.alarm_name, "alarmData.alarmName")
    alarm_arn = _read_text(lambda: alarm.alarm_arn, "alarmArn")
    state_value = _read_text(lambda: state.value, "alarmData.state.value")
    reason = _read_text(lambda: state.reason, "alarmData.state.reason")
    changed_at = _read_text(lambda: state.timestamp, "alarmData.state.timestamp")
    return _alarm_alert(
        alarm_name=alarm_name,
        alarm_arn=alarm_arn,
        state=state_value,
        reason=reason,
        since=_iso(changed_at, "alarmData.state.timestamp"),
        description=_optional(lambda: data.configuration.description),
        reason_data=_optional(lambda: state.reason_data),
        threshold=None,
        comparison=None,
        severities=severities,
    )


def _severity(event: Mapping[str, Any], alert: BusinessAlert, severities: Mapping[str, Severity]) -> Severity:
    """The severity the producer stamped on the event from the same configuration
    (billwatch.core.severities), or, on an event without one, the configured one."""
    stamped = event.get("severity")
    return Severity(stamped) if stamped in set(Severity) else severities[alert]


def from_usage_event(
    event: Mapping[str, Any], severities: Mapping[str, Severity] = DEFAULT_SEVERITIES
) -> Alert:
    """A usage threshold event from licensing (billwatch.licensing.usage_events)."""
    account = _text(event, "account_id", "")
    feature = _text(event, "feature", "")
    threshold = event.get("threshold")
    if threshold not in USAGE_THRESHOLDS:
        raise MalformedAlertInput(f"threshold must be one of {list(USAGE_THRESHOLDS)}, got {threshold!r}")
    period = _mapping(event.get("period"))
    since = _iso(_text(event, "occurred_at", ""), "occurred_at")
    used, limit = _number(event.get("used")), _number(event.get("limit"))
    return Alert(
        fingerprint=f"usage#{account}#{feature}#{threshold}#{period.get('since', '')}",
        name="UsageThresholdCrossed",
        severity=_severity(event, usage_alert(threshold), severities),
        status=AlertStatus.FIRING,
        summary=f"Account {account} has used {threshold}% of its {feature} quota"
        + (f" ({used:g} of {limit:g})" if used is not None and limit is not None else ""),
        reason=f"usage of {feature} crossed {threshold}% of the quota",
        since=since,
        version=f"{since}|firing",
        labels={"source": "licensing", "group": "usage", "account_id": account, "feature": feature},
        value=used,
        threshold=limit * threshold / 100 if limit is not None else None,
        comparison="GreaterThanOrEqualToThreshold",
    )


def from_payment_event(
    event: Mapping[str, Any], severities: Mapping[str, Severity] = DEFAULT_SEVERITIES
) -> Alert:
    """A failed payment for an account, from the webhook intake (billwatch.licensing.usage_events)."""
    account = _text(event, "account_id", "")
    invoice = _text(event, "invoice_id", "")
    since = _iso(_text(event, "occurred_at", ""), "occurred_at")
    amount = _number(event.get("amount_due"))
    currency = event.get("currency")
    code = currency.upper() if isinstance(currency, str) else ""
    due = f" ({amount / 100:.2f} {code})" if amount is not None else ""
    return Alert(
        fingerprint=f"payment#{account}#{invoice}",
        name="PaymentFailed",
        severity=_severity(event, BusinessAlert.PAYMENT_FAILED, severities),
        status=AlertStatus.FIRING,
        summary=f"A payment of account {account} failed: invoice {invoice}{due}",
        reason=str(event.get("reason") or "the invoice payment failed"),
        since=since,
        version=f"{since}|firing",
        labels={"source": "billing", "group": "payments", "account_id": account},
    )


def _from_sns_record(record: SNSEventRecord, severities: Mapping[str, Severity]) -> Alert | None:
    text = _optional(lambda: record.sns.message)
    if not isinstance(text, str):
        raise MalformedAlertInput("Sns.Message is missing or not a string")
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        raise MalformedAlertInput("Sns.Message is not JSON") from None
    if not isinstance(message, Mapping):
        raise MalformedAlertInput("Sns.Message is not a JSON object")
    if "AlarmName" in message:
        return from_sns_alarm(message, severities)
    if message.get("type") == USAGE_EVENT_TYPE:
        return from_usage_event(message, severities)
    if message.get("type") == PAYMENT_FAILED_EVENT_TYPE:
        return from_payment_event(message, severities)
    raise MalformedAlertInput(
        "Sns.Message is neither an alarm notification nor a "
        f"{USAGE_EVENT_TYPE} or {PAYMENT_FAILED_EVENT_TYPE} event"
    )


@dataclass(frozen=True)
class ReadRecord:
    """One record of an invocation: the alert it holds, None (nothing to tell), or why it is unreadable."""

    raw: Any
    alert: Alert | None = None
    problem: str | None = None


def read_records(
    event: Mapping[str, Any], severities: Mapping[str, Severity] = DEFAULT_SEVERITIES
) -> list[ReadRecord]:
    """Every record of an SNS delivery, or the one alarm of a direct alarm invocation; business
    events get the configured severities."""
    if event.get("source") == "aws.cloudwatch":
        records: list[Any] = [event]
    else:
        delivered = event.get("Records")
        records = delivered if isinstance(delivered, list) else [event]
    read = []
    for record in records:
        try:
            if isinstance(record, Mapping) and record.get("source") == "aws.cloudwatch":
                alert = from_alarm_event(record, severities)
            elif isinstance(record, Mapping) and isinstance(record.get("Sns"), Mapping):
                alert = _from_sns_record(SNSEventRecord(dict(record)), severities)
            else:
                raise MalformedAlertInput("the record is neither an SNS record nor a CloudWatch alarm event")
        except MalformedAlertInput as problem:
            read.append(ReadRecord(record, problem=str(problem)))
            continue
        read.append(ReadRecord(record, alert))
    return read
