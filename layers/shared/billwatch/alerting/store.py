"""The alert dispatcher's memory in DynamoDB: alert states, what each receiver was told, silences,
and what admins did by hand (acknowledged an alert, resolved a business alert).

What an admin does (a silence created or removed, an alert acknowledged or resolved by hand) is
written in one transaction with its audit record (billwatch.core.audit): both or neither.

Input arrives at least once (SNS retries, a state published twice), so every decision to notify
is a conditional write: a receiver is told about a state version once. The claim is a lease, so
a dispatcher that dies while sending lets the next delivery of the same input try again, and a
failed send gives the claim back at once.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from billwatch.alerting.config import Matcher, matches_all
from billwatch.alerting.inputs import Alert, AlertStatus
from billwatch.core.audit import AuditTrail, Target
from billwatch.core.dynamo import CONDITION_FAILED, error_code
from billwatch.core.models import AlertRecord, AuditRecord, BrokenChannel, NotificationRecord, SilenceRecord
from billwatch.core.severities import Severity

RETENTION_SECONDS = 30 * 86400  # resolved alerts and notification records are kept this long
LEASE_SECONDS = 120  # longer than a delivery with its retries takes


def alert_to_json(alert: Alert) -> str:
    return json.dumps(dataclasses.asdict(alert), sort_keys=True)


def alert_from_json(text: str) -> Alert:
    raw = json.loads(text)
    return Alert(**{**raw, "severity": Severity(raw["severity"]), "status": AlertStatus(raw["status"])})


_ALERT_ID = re.compile(r"[A-Za-z0-9_-]+")


class MalformedAlertId(ValueError):
    """An alert id that no fingerprint encodes to."""


def alert_id(fingerprint: str) -> str:
    """The alert's id in the admin API: its fingerprint (an ARN, ``usage#...``) made safe for a path,
    and reversible, so that finding the alert is one GetItem."""
    return base64.urlsafe_b64encode(fingerprint.encode()).decode().rstrip("=")


def fingerprint_of(id_: str) -> str:
    """The fingerprint whose ``alert_id`` this is."""
    fingerprint = None
    if _ALERT_ID.fullmatch(id_):
        try:
            fingerprint = base64.urlsafe_b64decode(id_ + "=" * (-len(id_) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            fingerprint = None
    # Another spelling of the same bytes (other trailing bits) is no id that was given out.
    if fingerprint is None or alert_id(fingerprint) != id_:
        raise MalformedAlertId(f"{id_!r} is not an alert id (ids come from GET /admin/alerts)")
    return fingerprint


class Recorded(StrEnum):
    NEW = "new"
    SAME = "same"  # delivered again: notify whoever was not told yet (a crash may have cut it short)
    OLDER = "older"  # a late delivery of a state already replaced: tells nobody anything


@dataclass(frozen=True)
class AdminAction:
    """What an admin did to an alert by hand: who (caller ARN), when (epoch second), why."""

    by: str
    at: int
    reason: str


@dataclass(frozen=True)
class StoredAlert:
    alert: Alert
    last_seen_at: int  # epoch second of the last input about it
    acknowledged: AdminAction | None  # of this state; a later state is news again
    resolved_by_hand: AdminAction | None


@dataclass(frozen=True)
class Notified:
    """What a receiver was last told about an alert: which state (version, status), when."""

    receiver: str
    version: str
    status: AlertStatus
    at: int


def _stored(record: AlertRecord) -> StoredAlert:
    acknowledged = None
    if record.acked_version == record.version and record.acked_by is not None:
        acknowledged = AdminAction(record.acked_by, int(record.acked_at or 0), record.acked_reason or "")
    resolved_by_hand = None
    if record.resolved_by is not None:
        resolved_by_hand = AdminAction(
            record.resolved_by, int(record.resolved_at or 0), record.resolved_reason or ""
        )
    return StoredAlert(
        alert_from_json(record.alert), int(record.last_seen_at), acknowledged, resolved_by_hand
    )


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[str, ...]
    starts_at: int
    ends_at: int
    comment: str
    created_by: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def silences(self, alert: Alert, now: float) -> bool:
        parsed = tuple(Matcher.parse(text) for text in self.matchers)
        return self.active(now) and matches_all(parsed, alert.matches_labels())

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"matchers": list(self.matchers)}


def _silence(record: SilenceRecord) -> Silence:
    return Silence(
        record.sk,
        tuple(cast(list[str], record.matchers)),
        int(record.starts_at),
        int(record.ends_at),
        record.comment,
        record.created_by,
    )


class SilenceError(ValueError):
    """A silence that cannot be created as asked; the message names the field."""


def _conditional(error: Exception) -> bool:
    return isinstance(error, PutError | UpdateError | DeleteError) and error_code(error) == CONDITION_FAILED


class AlertStore:
    def __init__(self, audit: AuditTrail) -> None:
        self.audit = audit

    # ---------------------------------------------------------------- alerts

    @staticmethod
    def _state(alert: Alert, now: int) -> AlertRecord:
        """The item of a new state: whatever was done by hand to the state before goes with it."""
        return AlertRecord(
            "alert",
            alert.fingerprint,
            status=alert.status.value,
            since=alert.since,
            version=alert.version,
            last_seen_at=now,
            alert=alert_to_json(alert),
            expiration=now + RETENTION_SECONDS,
        )

    def record(self, alert: Alert, now: int) -> Recorded:
        """Stores the alert's new state, unless this state or a newer one is stored already."""
        item = self._state(alert, now)
        try:
            item.save(
                condition=AlertRecord.sk.does_not_exist()
                | (AlertRecord.since < alert.since)
                | ((AlertRecord.since == alert.since) & (AlertRecord.version != alert.version))
            )
            return Recorded.NEW
        except PutError as error:
            if not _conditional(error):
                raise
        stored = AlertRecord.get("alert", alert.fingerprint, consistent_read=True)
        return Recorded.SAME if stored.version == alert.version else Recorded.OLDER

    def firing(self) -> list[StoredAlert]:
        return [
            _stored(record)
            for record in AlertRecord.query(
                "alert", filter_condition=AlertRecord.status == AlertStatus.FIRING.value
            )
        ]

    def alert(self, fingerprint: str) -> StoredAlert | None:
        try:
            return _stored(AlertRecord.get("alert", fingerprint, consistent_read=True))
        except AlertRecord.DoesNotExist:
            return None

    def acknowledge(self, fingerprint: str, version: str, action: AdminAction, record: AuditRecord) -> bool:
        """Holds the repeats of ``version``, recorded; False when the alert is no longer firing in that
        version (nothing is written)."""
        actions: list[Action] = [
            AlertRecord.acked_version.set(version),
            AlertRecord.acked_by.set(action.by),
            AlertRecord.acked_at.set(action.at),
            AlertRecord.acked_reason.set(action.reason),
        ]

        def change(transaction: TransactWrite) -> None:
            transaction.update(
                AlertRecord("alert", fingerprint), actions=actions, condition=self._still_firing(version)
            )

        return self.audit.commit(record, change)

    def resolve_by_hand(
        self, resolved: Alert, replaces: str, action: AdminAction, record: AuditRecord
    ) -> bool:
        """Stores the resolved state in place of the firing ``replaces``, recorded; False when that
        changed (nothing is written)."""
        item = self._state(resolved, action.at)
        item.resolved_by, item.resolved_at, item.resolved_reason = action.by, action.at, action.reason
        return self.audit.commit(
            record, lambda transaction: transaction.save(item, condition=self._still_firing(replaces))
        )

    @staticmethod
    def _still_firing(version: str) -> Any:
        return (AlertRecord.version == version) & (AlertRecord.status == AlertStatus.FIRING.value)

    # --------------------------------------------------------- notifications

    def claim(
        self, fingerprint: str, receiver: str, version: str, now: int, repeat_after: int | None
    ) -> bool:
        """Whether this dispatcher is the one to tell ``receiver`` about ``version`` now.

        A version not sent yet may be claimed; with ``repeat_after``, so may the version already
        sent, once that many seconds have passed since it was.
        """
        record = NotificationRecord("notify", f"{fingerprint}|{receiver}")
        unsent = NotificationRecord.sent_version.does_not_exist() | (
            NotificationRecord.sent_version != version
        )
        if repeat_after is not None:
            unsent = unsent | (NotificationRecord.sent_at <= now - repeat_after)
        free = NotificationRecord.lease_until.does_not_exist() | (NotificationRecord.lease_until < now)
        try:
            record.update(
                actions=[
                    NotificationRecord.lease_until.set(now + LEASE_SECONDS),
                    NotificationRecord.expiration.set(now + RETENTION_SECONDS),
                ],
                condition=(NotificationRecord.sk.does_not_exist() | unsent) & free,
            )
            return True
        except UpdateError as error:
            if _conditional(error):
                return False
            raise

    def sent(self, fingerprint: str, receiver: str, version: str, status: AlertStatus, now: int) -> None:
        NotificationRecord("notify", f"{fingerprint}|{receiver}").update(
            actions=[
                NotificationRecord.sent_version.set(version),
                NotificationRecord.sent_status.set(status.value),
                NotificationRecord.sent_at.set(now),
                NotificationRecord.lease_until.remove(),
            ]
        )

    def being_sent(self, fingerprint: str, receiver: str, version: str, now: int) -> bool:
        """After a refused claim: whether another dispatcher holds the lease on an unsent version."""
        record = NotificationRecord.get("notify", f"{fingerprint}|{receiver}", consistent_read=True)
        return record.sent_version != version and record.lease_until is not None and record.lease_until >= now

    def release(self, fingerprint: str, receiver: str) -> None:
        NotificationRecord("notify", f"{fingerprint}|{receiver}").update(
            actions=[NotificationRecord.lease_until.remove()]
        )

    def notified(self, fingerprint: str) -> list[Notified]:
        """Every receiver told about the alert, with what it was last told."""
        return [
            Notified(
                record.sk.removeprefix(f"{fingerprint}|"),
                record.sent_version,
                AlertStatus(record.sent_status),
                int(record.sent_at),
            )
            for record in NotificationRecord.query(
                "notify", NotificationRecord.sk.startswith(f"{fingerprint}|")
            )
            if record.sent_version is not None
            and record.sent_status is not None
            and record.sent_at is not None
        ]

    def told_firing(self, fingerprint: str, receiver: str) -> bool:
        """Whether the receiver's last notice about the alert said it fires (so a resolve is news)."""
        try:
            record = NotificationRecord.get("notify", f"{fingerprint}|{receiver}", consistent_read=True)
        except NotificationRecord.DoesNotExist:
            return False
        return record.sent_status == AlertStatus.FIRING.value

    # -------------------------------------------------------------- silences

    def create_silence(
        self, matchers: list[str], starts_at: int, ends_at: int, comment: str, created_by: str, now: int
    ) -> Silence:
        if not matchers:
            raise SilenceError("matchers: a silence needs at least one matcher")
        for index, text in enumerate(matchers):
            try:
                Matcher.parse(text)
            except ValueError as error:
                raise SilenceError(f"matchers.{index}: {error}") from None
        if ends_at <= starts_at:
            raise SilenceError("ends_at: a silence must end after it starts")
        if ends_at <= now:
            raise SilenceError("ends_at: the silence would already be over")
        if not comment.strip():
            raise SilenceError("comment: say why (a maintenance window, an incident, ...)")
        silence = Silence(uuid.uuid4().hex, tuple(matchers), starts_at, ends_at, comment.strip(), created_by)
        item = SilenceRecord(
            "silence",
            silence.id,
            matchers=list(silence.matchers),
            starts_at=starts_at,
            ends_at=ends_at,
            comment=silence.comment,
            created_by=created_by,
            expiration=ends_at + RETENTION_SECONDS,
        )
        record = self.audit.entry(
            "silence_create", Target("silence", silence.id), None, silence.as_dict(), caller=created_by
        )
        # The id is new (128 random bits): only a failure of the store keeps this from being written.
        self.audit.commit(
            record, lambda transaction: transaction.save(item, condition=SilenceRecord.sk.does_not_exist())
        )
        return silence

    def silences(self) -> list[Silence]:
        return [_silence(r) for r in SilenceRecord.query("silence")]

    def remove_silence(self, silence_id: str, by: str) -> bool:
        """Removes the silence, recorded with what it was; False when there is no such silence."""
        try:
            before = _silence(SilenceRecord.get("silence", silence_id, consistent_read=True))
        except SilenceRecord.DoesNotExist:
            return False
        record = self.audit.entry(
            "silence_remove", Target("silence", silence_id), before.as_dict(), None, caller=by
        )
        return self.audit.commit(
            record,
            lambda transaction: transaction.delete(
                SilenceRecord("silence", silence_id), condition=SilenceRecord.sk.exists()
            ),
        )

    # ------------------------------------------------------- broken channels

    def flag_broken(
        self, receiver: str, index: int, channel: str, status: int | None, detail: str, now: int
    ) -> None:
        BrokenChannel(
            "broken",
            f"{receiver}|{index}",
            channel=channel,
            status=status,
            detail=detail,
            since=now,
            expiration=now + RETENTION_SECONDS,
        ).save()

    def clear_broken(self, receiver: str, index: int) -> None:
        BrokenChannel("broken", f"{receiver}|{index}").delete()

    def broken(self) -> Iterator[Mapping[str, Any]]:
        for record in BrokenChannel.query("broken"):
            receiver, _, index = record.sk.partition("|")
            yield {
                "receiver": receiver,
                "channel_index": int(index),
                "channel": record.channel,
                "status": record.status,
                "detail": record.detail,
                "since": int(record.since),
            }
