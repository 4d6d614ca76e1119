"""Alert dispatch: route each alert to its receivers, once, again while it fires, and when it clears.

For each alert: record its state (an older or repeated state changes nothing and tells nobody);
hold it when a silence matches or a firing alert inhibits it; otherwise walk the route tree
(Alertmanager's: children in order, the first match wins unless it says ``continue``) and tell
each receiver on all its channels. A critical alert that a channel could not take goes to the
receiver's fallback; whatever reached nobody is dead-lettered, never dropped.

The scheduled sweep repeats firing alerts after their repeat interval, resolves alarm alerts
whose alarm is OK again (a missed OK notice), and resolves business alerts that had no news for
``stale_after_seconds``; an alert an admin acknowledged is not repeated until it changes.

Admins list what fires, acknowledge an alert, and resolve a business alert by hand (an alarm's
alert resolves when CloudWatch says the alarm is OK: nobody else owns its state).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pynamodb.exceptions import PynamoDBException

from billwatch.alerting.channels.base import Channel, DeliveryFailed
from billwatch.alerting.channels.factory import build_channel
from billwatch.alerting.channels.notification import NotificationContent
from billwatch.alerting.channels.retry import RetryStage
from billwatch.alerting.channels.webhook import alert_document
from billwatch.alerting.config import (
    ChannelConfig,
    Matcher,
    RouteConfig,
    RoutingConfig,
    channel_name,
    load_shipped_routing,
    matches_all,
    parse_routing_config,
)
from billwatch.alerting.inputs import Alert, AlertStatus, Notification, NotificationKind
from billwatch.alerting.links import AlertLinks
from billwatch.alerting.store import (
    AdminAction,
    AlertStore,
    Recorded,
    Silence,
    StoredAlert,
    alert_id,
    fingerprint_of,
)
from billwatch.core.access import record_refusal
from billwatch.core.audit import AuditedRoute, AuditTrail, Target
from billwatch.core.config import AlertSettings, Settings
from billwatch.core.dynamo import StoreUnavailable, store_failure
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import bind_alert_table
from billwatch.core.observability import logger
from billwatch.core.severities import Severity


class AlertInProgress(Exception):
    """Another dispatcher holds the claim on this notice: the input should come back later."""


MAX_REASON_LENGTH = 500


def handling_reason(text: str) -> str:
    """Why an admin acknowledges or resolves an alert, as it is kept: said, and short enough to read."""
    reason = text.strip()
    if any(unicodedata.category(character) == "Cc" and character != "\n" for character in reason):
        raise ValueError("control characters are not allowed (a reason goes into notices and logs)")
    if not reason or all(unicodedata.category(character) in ("Cf", "Zs", "Cc") for character in reason):
        raise ValueError("say why (an incident, a customer contacted, ...)")
    if len(reason) > MAX_REASON_LENGTH:
        raise ValueError(f"at most {MAX_REASON_LENGTH} characters, got {len(reason)}")
    return reason


# The admin routes (functions/alert_dispatch), as refused attempts are recorded.
AUDITED_ROUTES = (
    AuditedRoute("GET /admin/alerts", "alerts_list"),
    AuditedRoute("POST /admin/alerts/{alert_id}/ack", "alert_ack"),
    AuditedRoute("POST /admin/alerts/{alert_id}/resolve", "alert_resolve"),
    AuditedRoute("GET /admin/silences", "silences_list"),
    AuditedRoute("POST /admin/silences", "silence_create"),
    AuditedRoute("DELETE /admin/silences/{silence_id}", "silence_remove"),
    AuditedRoute("GET /admin/alert-channels", "alert_channels_list"),
)

ALERTS_PAGE_SIZE = 100
MAX_ALERTS_PAGE_SIZE = 500


class AlertNotFound(LookupError):
    """No alert has this id (it never fired, or its record expired)."""


class AlertActionRefused(Exception):
    """What an admin asked cannot be done to this alert as it is; ``code`` says why, for callers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Outcome(StrEnum):
    NOTIFIED = "notified"
    DEDUP = "dedup"
    INHIBITED = "inhibited"
    SILENCED = "silenced"
    ACKNOWLEDGED = "acknowledged"  # a repeat an admin's acknowledgement holds
    NOTHING_TO_SEND = "nothing_to_send"  # e.g. a resolve for a receiver that never heard it fire


@dataclass(frozen=True)
class RouteMatch:
    receiver: str
    repeat_interval_seconds: int | None
    send_resolved: bool


def match_routes(
    route: RouteConfig, labels: Mapping[str, str], inherited: RouteMatch | None = None
) -> list[RouteMatch]:
    """The receivers of an alert: the deepest matching routes, children in order, ``continue`` honoured."""
    here = RouteMatch(
        receiver=route.receiver or (inherited.receiver if inherited else ""),
        repeat_interval_seconds=route.repeat_interval_seconds
        or (inherited.repeat_interval_seconds if inherited else None),
        send_resolved=route.send_resolved
        if route.send_resolved is not None
        else (inherited.send_resolved if inherited else True),
    )
    matched: list[RouteMatch] = []
    for child in route.routes:
        if matches_all(tuple(Matcher.parse(m) for m in child.matchers), labels):
            matched += match_routes(child, labels, here)
            if not child.continue_matching:
                break
    return matched or [here]


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _resolved(alert: Alert, now: float, reason: str) -> Alert:
    """The resolved state that replaces the firing ``alert``: it must sort after it (a redelivery
    of the firing state is then older, not news), even when the firing state is stamped later
    than this clock reads (an event's ``occurred_at`` ahead of it) or in the same millisecond."""
    fired_at = dt.datetime.fromisoformat(alert.since.replace("Z", "+00:00")).timestamp()
    since = _iso(max(now, fired_at + 0.001))
    return dataclasses.replace(
        alert,
        status=AlertStatus.RESOLVED,
        reason=reason,
        since=since,
        version=f"{since}|resolved",
        value=None,
    )


def _action_view(action: AdminAction | None) -> dict[str, str] | None:
    return None if action is None else {"by": action.by, "at": _iso(action.at), "reason": action.reason}


def _state_view(alert: Alert) -> dict[str, str]:
    """An alert's state as its audit record keeps it."""
    return {"alert": alert.name, "status": alert.status.value, "version": alert.version}


class AlertDispatcher:
    def __init__(
        self,
        config: RoutingConfig,
        store: AlertStore,
        channel_for: Callable[[ChannelConfig], Channel[Any]],
        retry: RetryStage,
        metrics: MetricsRecorder,
        dead_letter: Callable[[dict[str, Any]], None],
        clock: Callable[[], float],
        alarm_states: Callable[[list[str]], Mapping[str, str]] | None = None,
        links: AlertLinks | None = None,
    ) -> None:
        self._config = config
        self._links = links or AlertLinks()
        self.store = store
        self._channel_for = channel_for
        self._retry = retry
        self._metrics = metrics
        self._dead_letter = dead_letter
        self.clock = clock
        self._alarm_states = alarm_states
        self._broken: set[tuple[str, int]] | None = None  # (receiver, channel index), read once
        # fingerprint -> version of the alerts sent while the store could not record them.
        self._sent_unrecorded: dict[str, str] = {}
        self._inhibit_rules = [
            (
                tuple(Matcher.parse(m) for m in rule.source_matchers),
                tuple(Matcher.parse(m) for m in rule.target_matchers),
                rule.equal,
            )
            for rule in config.inhibit_rules
        ]

    def flush_metrics(self) -> None:
        self._metrics.flush()

    def reject_input(self, record: Any, problem: str) -> None:
        """An unreadable record: logged with its problem, counted, and kept in the DLQ."""
        self._metrics.add(Metric.ALERT_INPUT_REJECTED)
        logger.error("Rejected an alert input record that cannot be read", extra={"problem": problem})
        self._dead_letter({"reason": "unreadable", "problem": problem, "record": record})

    def refuse_admin(self, caller_arn: str | None, operation: str) -> None:
        record_refusal(self._metrics, caller_arn, operation)
        self.store.audit.refuse(operation, AUDITED_ROUTES, "not in the admin roles", caller_arn)

    # ------------------------------------------------------------------ input

    def dispatch(self, alert: Alert) -> Outcome:
        """One alert state change, as it arrived (perhaps again)."""
        now = int(self.clock())
        try:
            recorded = self.store.record(alert, now)
        except PynamoDBException as failure:
            if not isinstance(store_failure(failure), StoreUnavailable):
                raise
            self._announce_unrecorded(alert)
            raise  # the input's retry records the state once the store answers again
        if recorded is Recorded.OLDER:
            self._suppressed(alert, Outcome.DEDUP)
            return Outcome.DEDUP
        return self._announce(alert, now)

    def _announce_unrecorded(self, alert: Alert) -> None:
        """A firing alert the store cannot take (DynamoDB throttled or down: perhaps the very outage
        the alert is about) still reaches its receivers, without deduplication, silences or
        inhibitions, which all live in the store: a page twice rather than none. Once per container:
        the input's retries in this container find it sent (``_notify``)."""
        if (
            alert.status is not AlertStatus.FIRING
            or self._sent_unrecorded.get(alert.fingerprint) == alert.version
        ):
            return
        logger.warning(
            "The alert store is unavailable: sending the alert without deduplication",
            extra={"alert": alert.name, "fingerprint": alert.fingerprint},
        )
        for match in self._routes(alert):
            self._deliver(Notification(alert, NotificationKind.FIRING, match.receiver), channel_state=False)
        self._sent_unrecorded[alert.fingerprint] = alert.version

    def _announce(self, alert: Alert, now: int) -> Outcome:
        """Tells the alert's receivers about its recorded state, unless a silence or inhibition holds it."""
        held = self._held(alert, now, self.store.silences(), self._firing_others)
        if held is not None:
            self._suppressed(alert, held)
            return held
        kind = NotificationKind.FIRING if alert.status is AlertStatus.FIRING else NotificationKind.RESOLVED
        outcomes = [self._notify(alert, match, kind, None, now) for match in self._routes(alert)]
        return Outcome.NOTIFIED if Outcome.NOTIFIED in outcomes else outcomes[0]

    def _routes(self, alert: Alert) -> list[RouteMatch]:
        unique: dict[str, RouteMatch] = {}
        for match in match_routes(self._config.route, alert.matches_labels()):
            unique.setdefault(match.receiver, match)
        return list(unique.values())

    def _firing_others(self) -> list[Alert]:
        return [stored.alert for stored in self.store.firing()]

    def _held(
        self, alert: Alert, now: float, silences: list[Silence], firing: Callable[[], list[Alert]]
    ) -> Outcome | None:
        """``firing`` is asked only when an inhibit rule could hold the alert."""
        if any(silence.silences(alert, now) for silence in silences):
            return Outcome.SILENCED
        if alert.status is AlertStatus.FIRING and self._inhibited(alert, firing):
            return Outcome.INHIBITED
        return None

    def _inhibited(self, alert: Alert, firing: Callable[[], list[Alert]]) -> bool:
        labels = alert.matches_labels()
        rules = [rule for rule in self._inhibit_rules if matches_all(rule[1], labels)]
        if not rules:
            return False
        others = [other for other in firing() if other.fingerprint != alert.fingerprint]
        for source_matchers, _, equal in rules:
            for other in others:
                other_labels = other.matches_labels()
                if matches_all(source_matchers, other_labels) and all(
                    other_labels.get(label) == labels.get(label) for label in equal
                ):
                    return True
        return False

    def _suppressed(self, alert: Alert, outcome: Outcome) -> None:
        self._metrics.add(Metric.ALERT_SUPPRESSED, Reason=outcome.value)
        logger.info(
            "Alert not sent",
            extra={
                "alert": alert.name,
                "fingerprint": alert.fingerprint,
                "status": alert.status,
                "why": outcome,
            },
        )

    # --------------------------------------------------------------- notices

    def _notify(
        self, alert: Alert, match: RouteMatch, kind: NotificationKind, repeat_after: int | None, now: int
    ) -> Outcome:
        if alert.status is AlertStatus.RESOLVED and not (
            match.send_resolved
            and (
                self.store.told_firing(alert.fingerprint, match.receiver)
                # Paged while the store was down, so nothing recorded the page; this container knows.
                or alert.fingerprint in self._sent_unrecorded
            )
        ):
            return Outcome.NOTHING_TO_SEND
        if not self.store.claim(alert.fingerprint, match.receiver, alert.version, now, repeat_after):
            if self.store.being_sent(alert.fingerprint, match.receiver, alert.version, now):
                raise AlertInProgress(f"{alert.name} is being sent to {match.receiver}; retry later")
            if repeat_after is None:  # a repeat that is not due yet is no duplicate
                self._suppressed(alert, Outcome.DEDUP)
            return Outcome.DEDUP
        if self._sent_unrecorded.get(alert.fingerprint) != alert.version:
            try:
                self._deliver(Notification(alert, kind, match.receiver))
            except Exception:
                self.store.release(alert.fingerprint, match.receiver)  # the input's retry may try again
                raise
        self.store.sent(alert.fingerprint, match.receiver, alert.version, alert.status, now)
        return Outcome.NOTIFIED

    def _deliver(self, notification: Notification, channel_state: bool = True) -> None:
        """All the receiver's channels; a critical alert's failures go to its fallback, the rest to DLQ.

        ``channel_state``: whether to read and keep which channels are broken (in the store)."""
        notification = dataclasses.replace(notification, alert=self._links.added_to(notification.alert))
        receiver = self._config.receivers[notification.receiver]
        failures: list[DeliveryFailed] = []
        for index, channel_config in enumerate(receiver.channels):
            failure = self._send(notification, channel_config, index if channel_state else None)
            if failure is not None:
                failures.append(failure)
        if not failures:
            return
        covered = False
        if notification.alert.severity is Severity.CRITICAL and receiver.fallback is not None:
            covered = self._send(notification, receiver.fallback, None) is None
        if not covered:
            self._dead_letter(
                {
                    "reason": "undelivered",
                    "receiver": notification.receiver,
                    "kind": notification.kind.value,
                    "failed_channels": [failure.channel for failure in failures],
                    "alert": dataclasses.asdict(notification.alert),
                }
            )

    def _send(
        self, notification: Notification, config: ChannelConfig, index: int | None
    ) -> DeliveryFailed | None:
        channel_name = config.type
        try:
            self._retry.deliver(self._channel_for(config), NotificationContent(notification))
        except DeliveryFailed as failure:
            self._metrics.add(Metric.ALERT_DELIVERY_FAILED, Channel=channel_name)
            logger.warning(
                "Alert delivery failed",
                extra={
                    "receiver": notification.receiver,
                    "channel": channel_name,
                    "permanent": failure.permanent,
                    "status": failure.status,
                    "detail": str(failure),
                    "alert": notification.alert.name,
                },
            )
            if failure.permanent and index is not None:
                self.store.flag_broken(
                    notification.receiver,
                    index,
                    channel_name,
                    failure.status,
                    str(failure),
                    int(self.clock()),
                )
                self._broken_channels().add((notification.receiver, index))
            return failure
        self._metrics.add(Metric.ALERT_DELIVERED, Channel=channel_name)
        if index is not None and (notification.receiver, index) in self._broken_channels():
            self.store.clear_broken(notification.receiver, index)  # it works again
            self._broken_channels().discard((notification.receiver, index))
        return None

    def _broken_channels(self) -> set[tuple[str, int]]:
        if self._broken is None:
            self._broken = {(entry["receiver"], entry["channel_index"]) for entry in self.store.broken()}
        return self._broken

    # ----------------------------------------------------------------- sweep

    def sweep(self) -> dict[str, int]:
        """Repeats what still fires, resolves what cleared unnoticed or went stale. Counts by outcome."""
        now = int(self.clock())
        firing = self.store.firing()
        alarm_names = [stored.alert.labels["alarm"] for stored in firing if stored.alert.from_alarm]
        states = self._alarm_states(alarm_names) if self._alarm_states and alarm_names else {}
        # Read once for the whole sweep; what the sweep resolves stops inhibiting at once.
        silences = self.store.silences()
        still_firing = [stored.alert for stored in firing]
        counts: dict[str, int] = {}
        for stored in firing:
            outcome = self._sweep_one(stored, states, now, silences, still_firing)
            counts[outcome.value] = counts.get(outcome.value, 0) + 1
        return counts

    def _sweep_one(
        self,
        stored: StoredAlert,
        states: Mapping[str, str],
        now: int,
        silences: list[Silence],
        still_firing: list[Alert],
    ) -> Outcome:
        alert, last_seen = stored.alert, stored.last_seen_at
        alarm = alert.labels.get("alarm")
        if alarm is not None and self._alarm_states is not None:
            state = states.get(alarm)
            if state != "ALARM":
                why = "the alarm is OK again" if state == "OK" else f"the alarm is {state or 'gone'}"
                still_firing.remove(alert)
                return self.dispatch(_resolved(alert, now, f"{why} (no OK notice arrived)"))
        elif now - last_seen >= self._config.stale_after_seconds:
            still_firing.remove(alert)
            return self.dispatch(
                _resolved(alert, now, f"resolved as stale: no news for {self._config.stale_after_seconds} s")
            )
        held = self._held(alert, now, silences, lambda: still_firing)
        if held is not None:
            return held
        if stored.acknowledged is not None:
            return Outcome.ACKNOWLEDGED
        outcomes = []
        for match in self._routes(alert):
            repeat_after = (
                match.repeat_interval_seconds or self._config.repeat_interval_seconds[alert.severity]
            )
            outcomes.append(self._notify(alert, match, NotificationKind.REPEAT, repeat_after, now))
        return Outcome.NOTIFIED if Outcome.NOTIFIED in outcomes else outcomes[0]

    # ---------------------------------------------------------- by an admin

    def active_alerts(self, limit: int = ALERTS_PAGE_SIZE, offset: int = 0) -> dict[str, Any]:
        """What fires now, the most severe first, then the oldest: who was told, and the runbook.

        A page at a time: each alert's notices are one read, so a page bounds the reads (and the
        answer) however many usage alerts fire.
        """
        severity_rank = {severity: rank for rank, severity in enumerate(Severity)}
        firing = sorted(
            self.store.firing(), key=lambda stored: (severity_rank[stored.alert.severity], stored.alert.since)
        )
        page = firing[offset : offset + limit]
        following = offset + limit if offset + limit < len(firing) else None
        return {
            "alerts": [self._alert_view(stored) for stored in page],
            "total": len(firing),
            "next_offset": following,
        }

    def acknowledge(self, id_: str, by: str, reason: str) -> dict[str, Any]:
        """Holds the alert's repeats until it changes (resolves, fires again, another severity)."""
        stored = self._firing_alert(id_, "acknowledge")
        action = AdminAction(by, int(self.clock()), handling_reason(reason))
        record = self.store.audit.entry(
            "alert_ack",
            Target("alert", id_),
            {"acknowledged": _action_view(stored.acknowledged), **_state_view(stored.alert)},
            {"acknowledged": _action_view(action), **_state_view(stored.alert)},
            reason=action.reason,
            caller=by,
        )
        if not self.store.acknowledge(stored.alert.fingerprint, stored.alert.version, action, record):
            raise self._changed(id_)
        self._audit("Alert acknowledged", "acknowledge", id_, stored.alert, action)
        return self._alert_view(dataclasses.replace(stored, acknowledged=action))

    def resolve_by_hand(self, id_: str, by: str, reason: str) -> dict[str, Any]:
        """Resolves a business alert and tells whoever heard it fire, as a resolve that arrived would."""
        stored = self._firing_alert(id_, "resolve")
        if stored.alert.from_alarm:
            raise AlertActionRefused(
                "state_owned_by_cloudwatch",
                f"alert {id_} is the CloudWatch alarm {stored.alert.labels['alarm']}: CloudWatch owns its "
                "state and it resolves when the alarm is OK again; acknowledge it to stop the repeats",
            )
        now = int(self.clock())
        action = AdminAction(by, now, handling_reason(reason))
        resolved = _resolved(stored.alert, now, f"resolved by hand by {by}: {action.reason}")
        record = self.store.audit.entry(
            "alert_resolve",
            Target("alert", id_),
            _state_view(stored.alert),
            _state_view(resolved),
            reason=action.reason,
            caller=by,
        )
        if not self.store.resolve_by_hand(resolved, stored.alert.version, action, record):
            raise self._changed(id_)
        self._audit("Alert resolved by hand", "resolve", id_, stored.alert, action)
        view = self._alert_view(StoredAlert(resolved, now, None, action))
        try:
            self._announce(resolved, now)
        except Exception:
            # The resolve is stored: a retry would only meet "not firing". Say so, do not ask for one.
            logger.exception(
                "Resolved an alert by hand but could not tell its receivers", extra={"alert_id": id_}
            )
            return {**view, "receivers_told": False}
        return {**view, "receivers_told": True}

    def _firing_alert(self, id_: str, operation: str) -> StoredAlert:
        stored = self.store.alert(fingerprint_of(id_))
        if stored is None:
            raise AlertNotFound(f"no alert {id_}")
        if stored.alert.status is not AlertStatus.FIRING:
            raise AlertActionRefused(
                "not_firing", f"alert {id_} is {stored.alert.status.value}: there is nothing to {operation}"
            )
        return stored

    @staticmethod
    def _changed(id_: str) -> AlertActionRefused:
        return AlertActionRefused(
            "alert_changed", f"alert {id_} changed meanwhile; list the alerts again and decide anew"
        )

    @staticmethod
    def _audit(message: str, operation: str, id_: str, alert: Alert, action: AdminAction) -> None:
        logger.info(
            message,
            extra={
                "caller_arn": action.by,
                "operation": operation,
                "alert_id": id_,
                "alert": alert.name,
                "fingerprint": alert.fingerprint,
                "version": alert.version,
                "reason": action.reason,
            },
        )

    def _alert_view(self, stored: StoredAlert) -> dict[str, Any]:
        alert = self._links.added_to(stored.alert)
        receivers = self._config.receivers
        return {
            "id": alert_id(alert.fingerprint),
            **alert_document(alert),
            "resolvable_by_hand": not alert.from_alarm,
            "last_seen_at": _iso(stored.last_seen_at),
            "notified": [
                {
                    "receiver": told.receiver,
                    "channels": [channel_name(channel) for channel in receivers[told.receiver].channels]
                    if told.receiver in receivers
                    else [],
                    "told": told.status.value,
                    "about_this_state": told.version == alert.version,
                    "at": _iso(told.at),
                }
                for told in self.store.notified(alert.fingerprint)
            ],
            "acknowledged": _action_view(stored.acknowledged),
            "resolved_by_hand": _action_view(stored.resolved_by_hand),
        }

    # ----------------------------------------------------------- test alerts

    def send_test_alerts(self, requested_by: str) -> list[dict[str, Any]]:
        """One test alert of each severity through the configured routes: what every receiver would get."""
        now = self.clock()
        report = []
        for severity in Severity:
            since = _iso(now)
            alert = Alert(
                fingerprint=f"test#{severity.value}#{uuid.uuid4().hex}",
                name="BillwatchTestAlert",
                severity=severity,
                status=AlertStatus.FIRING,
                summary=f"Test alert ({severity.value}) requested by {requested_by}: no action needed",
                reason="a test of the alert routes",
                since=since,
                version=f"{since}|firing",
                labels={"source": "test", "group": "test"},
            )
            for match in self._routes(alert):
                self._deliver(Notification(alert, NotificationKind.TEST, match.receiver))
                report.append({"severity": severity.value, "receiver": match.receiver})
        return report


# ------------------------------------------------------------------ wiring


class AlertSecrets:
    """The channels' secrets: one JSON object in Secrets Manager (cached), or ALERT_SECRETS locally."""

    def __init__(self, settings: AlertSettings) -> None:
        self._settings = settings

    def __call__(self, key: str) -> str:
        secrets_id = self._settings.secrets_id
        if secrets_id is None:
            secrets: object = self._settings.local_secrets
        else:
            from billwatch.core import parameters

            secrets = parameters.secret_json(secrets_id, self._settings.secrets_max_age_seconds)
        value = secrets.get(key) if isinstance(secrets, Mapping) else None
        if not isinstance(value, str) or not value:
            raise KeyError(key)
        return value


def load_routing(settings: AlertSettings) -> RoutingConfig:
    if settings.routes_path:
        from pathlib import Path

        return parse_routing_config(
            Path(settings.routes_path).read_text(encoding="utf-8"), "ALERT_ROUTES_PATH"
        )
    if settings.routes_parameter:
        from billwatch.core import parameters

        routes = parameters.parameter_text(settings.routes_parameter)
        return parse_routing_config(routes, "ALERT_ROUTES_PARAMETER")
    return load_shipped_routing()


class SqsDeadLetters:
    """Undeliverable notices and unreadable input, kept for a person to replay."""

    def __init__(self, queue_url: str | None) -> None:
        self._queue_url = queue_url
        self._sqs: Any = None

    def __call__(self, document: dict[str, Any]) -> None:
        if self._queue_url is None:
            logger.error(
                "Alert dead-lettered, and no ALERT_DLQ_URL is set to keep it", extra={"dead_letter": document}
            )
            return
        if self._sqs is None:
            from billwatch.core import aws

            self._sqs = aws.client("sqs")
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(document, default=str))
        logger.warning("Alert dead-lettered", extra={"reason": document.get("reason")})


def cloudwatch_alarm_states(names: list[str]) -> dict[str, str]:
    """Alarm name -> state, for the alarms that still exist."""
    from billwatch.core import aws

    client = aws.client("cloudwatch")
    states: dict[str, str] = {}
    for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
        response = client.describe_alarms(
            AlarmNames=names[start : start + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        for alarm in response.get("MetricAlarms", []) + response.get("CompositeAlarms", []):
            states[alarm["AlarmName"]] = alarm["StateValue"]
    return states


def build_alert_dispatcher(
    settings: Settings, alert_settings: AlertSettings, deadline: Callable[[], float] | None = None
) -> AlertDispatcher:
    if alert_settings.alert_table is None:
        raise ValueError("the alert dispatcher keeps its state in ALERT_STATE_TABLE_NAME, which is not set")
    bind_alert_table(alert_settings.alert_table)
    config = load_routing(alert_settings)
    secrets = AlertSecrets(alert_settings)
    channels: dict[ChannelConfig, Channel[Any]] = {}

    def channel_for(channel_config: ChannelConfig) -> Channel[Any]:
        if channel_config not in channels:
            channels[channel_config] = build_channel(
                channel_config, secrets, email_sender=alert_settings.email_sender
            )
        return channels[channel_config]

    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)
    return AlertDispatcher(
        config=config,
        store=AlertStore(AuditTrail(settings.audit_table, settings.audit_retention_days, metrics)),
        channel_for=channel_for,
        retry=RetryStage(deadline=deadline),
        metrics=metrics,
        dead_letter=SqsDeadLetters(alert_settings.dlq_url),
        clock=time.time,
        alarm_states=cloudwatch_alarm_states,
        links=AlertLinks(alert_settings.dashboards, alert_settings.runbook_base_url),
    )
