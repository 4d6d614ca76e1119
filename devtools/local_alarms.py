"""The template's alarms, evaluated locally the way CloudWatch would, every minute of the local clock.

Each ``AWS::CloudWatch::Alarm`` and ``AWS::CloudWatch::CompositeAlarm`` of the template is judged
by :class:`~devtools.alarm_evaluator.AlarmStates` over the metrics the functions emitted (and the
``AWS/Lambda`` and ``AWS/ApiGateway`` ones the local stack emits for them). moto's CloudWatch
holds a stand-in alarm of the same name and description whose state follows, so that
DescribeAlarms and the alarm history (the dispatcher's sweep, the billing report) see what the
evaluator decided. A change of state is published, as CloudWatch's alarm notification, to the SNS
topics the alarm's ``AlarmActions`` / ``OKActions`` / ``InsufficientDataActions`` name.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from devtools.alarm_evaluator import AlarmStates, StateChange
from devtools.local_metrics import LocalMetrics
from devtools.local_schedules import ACCOUNT_ID, REGION, BackgroundLoop, LocalClock, ManualClock
from devtools.template import ALARM_TYPE, COMPOSITE_ALARM_TYPE, deployed_resources, resolved_properties

log = logging.getLogger("devtools.local_alarms")

EVALUATION_INTERVAL_SECONDS = 60  # CloudWatch evaluates alarms every minute
_ACTIONS = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}
_TRIGGER_KEYS = (
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Unit",
    "Dimensions",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "ComparisonOperator",
    "Threshold",
    "TreatMissingData",
    "Metrics",
    "ThresholdMetricId",
)


def cloudwatch_time(moment: float) -> str:
    """CloudWatch's own time format in alarm notifications, e.g. 2026-12-01T15:00:00.000+0000."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass(frozen=True)
class AlarmDefinition:
    logical_id: str
    name: str  # AlarmName, e.g. billwatch-dev-HighWebhookFailureRate
    description: str
    properties: Mapping[str, Any]  # resolved: Refs to resources read as their logical ids
    composite: bool

    @property
    def arn(self) -> str:
        return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{self.name}"

    def notification(self, change: StateChange) -> dict[str, Any]:
        """The Message of CloudWatch's SNS notification for ``change``."""
        message: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "AWSAccountId": ACCOUNT_ID,
            "NewStateValue": change.new_state,
            "NewStateReason": change.reason,
            "StateChangeTime": cloudwatch_time(change.at),
            "Region": "US East (N. Virginia)",
            "AlarmArn": self.arn,
            "OldStateValue": change.old_state,
            **{key: list(self.properties.get(key) or []) for key in _ACTIONS.values()},
        }
        if self.composite:
            message["AlarmRule"] = self.properties.get("AlarmRule")
        else:
            message["Trigger"] = {
                key: self.properties[key] for key in _TRIGGER_KEYS if key in self.properties
            }
        return message


def alarm_definitions(
    template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None
) -> dict[str, AlarmDefinition]:
    """Logical id -> definition of every alarm the template deploys with these parameters (their
    defaults unless overridden): an alarm whose Condition is false does not exist."""
    deployed = deployed_resources(template, parameters)
    definitions = {}
    for resource_type, composite in ((ALARM_TYPE, False), (COMPOSITE_ALARM_TYPE, True)):
        for logical_id, props in resolved_properties(template, resource_type, parameters).items():
            if logical_id not in deployed:
                continue
            name = str(props.get("AlarmName") or logical_id)
            definitions[logical_id] = AlarmDefinition(
                logical_id, name, str(props.get("AlarmDescription") or ""), props, composite
            )
    return definitions


@dataclass(frozen=True)
class AlarmEvent:
    alarm: str  # logical id
    name: str
    old_state: str
    new_state: str
    reason: str
    at: float  # local clock
    topics: tuple[str, ...]  # logical ids of the topics it was published to


class AlarmWatcher(BackgroundLoop):
    """Evaluates every alarm each local minute in a thread of its own, between start() and stop()."""

    thread_name = "local-stack-alarms"

    def __init__(
        self,
        template: Mapping[str, Any],
        metrics: LocalMetrics,
        clock: LocalClock | ManualClock,
        cloudwatch_client: Any,
        publish: Callable[[str, dict[str, Any]], object],
        on_change: Callable[[AlarmEvent], None] = lambda event: None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.definitions = alarm_definitions(template, parameters)
        self._metrics = metrics
        self._clock = clock
        self._cloudwatch = cloudwatch_client
        self._publish = publish
        self._on_change = on_change
        metric_alarms = {key: d.properties for key, d in self.definitions.items() if not d.composite}
        composites = {key: d.properties["AlarmRule"] for key, d in self.definitions.items() if d.composite}
        self._states = AlarmStates(metric_alarms, composites, metrics.store)
        self.evaluations = 0
        super().__init__()
        self._lock = threading.Lock()

    @property
    def states(self) -> dict[str, str]:
        return dict(self._states.states)

    def create_stand_ins(self, topic_arns: Mapping[str, str]) -> None:
        """moto alarms of the same names, descriptions and actions, so that DescribeAlarms knows them."""
        for definition in self.definitions.values():
            actions = {
                key: [
                    topic_arns.get(str(topic), str(topic)) for topic in definition.properties.get(key) or []
                ]
                for key in _ACTIONS.values()
            }
            self._cloudwatch.put_metric_alarm(
                AlarmName=definition.name,
                AlarmDescription=definition.description,
                **actions,
                Namespace="BillwatchLocal",
                MetricName=definition.logical_id,
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=0,
                ComparisonOperator="GreaterThanThreshold",
            )

    def evaluate(self, now: float | None = None) -> list[AlarmEvent]:
        """One evaluation round (at ``now`` on the local clock, default the clock's now)."""
        moment = self._clock.now() if now is None else now
        with self._lock:
            with self._metrics.lock:
                changes = self._states.evaluate(moment)
            self.evaluations += 1
            return [self._announce(change) for change in changes]

    def _announce(self, change: StateChange) -> AlarmEvent:
        definition = self.definitions[change.alarm]
        self._cloudwatch.set_alarm_state(
            AlarmName=definition.name, StateValue=change.new_state, StateReason=change.reason[:1023]
        )
        topics = tuple(str(topic) for topic in definition.properties.get(_ACTIONS[change.new_state]) or [])
        message = definition.notification(change)
        for topic in topics:
            try:
                self._publish(topic, message)
            except Exception:
                log.exception("could not publish %s's change to %s", definition.name, topic)
        log.info("alarm %s: %s -> %s", definition.name, change.old_state, change.new_state)
        event = AlarmEvent(
            change.alarm,
            definition.name,
            change.old_state,
            change.new_state,
            change.reason,
            change.at,
            topics,
        )
        self._on_change(event)
        return event

    def _run(self) -> None:
        while not self._stopping.wait(self._clock.real_seconds(EVALUATION_INTERVAL_SECONDS)):
            try:
                self.evaluate()
            except Exception:
                log.exception("the alarm evaluation failed; trying again in a minute")
