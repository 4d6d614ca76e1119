"""Stripe's thin events: the event notifications (``"object": "v2.core.event"``) an event destination
sends when it is set to the thin payload (https://docs.stripe.com/event-destinations#thin-payload).

A notification carries no data: its id, its type and a reference to the changed object. For a v1
resource, Stripe's v2 event names the snapshot event it stands for (``snapshot_event``, the
``evt_...`` a snapshot destination delivers). billwatch fetches that v1 event and applies it through
the snapshot path, so the v1 event id is the one identity of a change: delivered both ways during a
migration, it is applied once, in the order the snapshot path keeps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from billwatch.billing.stripe_events import HANDLED_EVENT_TYPES, MalformedEvent, is_event_type
from billwatch.core.ids import is_event_id

NOTIFICATION_OBJECT = "v2.core.event"
V1_TYPE_PREFIX = "v1."
# Stripe's meter errors exist only as thin events; the value is the MeterErrorReported Type.
METER_ERROR_TYPES = {
    "v1.billing.meter.error_report_triggered": "error_report_triggered",
    "v1.billing.meter.no_meter_found": "no_meter_found",
}
# Only logged, so the runbook can open the meter: anything else is left out of the log.
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_]{1,255}$")


class UnresolvedReason(StrEnum):
    """Why a notification of a handled type could not be turned into its v1 event."""

    NO_RESTRICTED_KEY = "NoRestrictedKey"  # temporary: answered 5xx until the key is configured
    STRIPE_FAILED = "StripeFailed"  # temporary: Stripe's retry fetches again
    NO_SNAPSHOT_EVENT = "NoSnapshotEvent"  # permanent: Stripe names no v1 event to apply


@dataclass(frozen=True)
class ThinNotification:
    id: str
    type: str
    related_object_id: str | None

    @property
    def snapshot_type(self) -> str:
        """The type its v1 snapshot event has: ``v1.invoice.paid`` stands for ``invoice.paid``."""
        return self.type.removeprefix(V1_TYPE_PREFIX)

    @property
    def handled(self) -> bool:
        return self.type.startswith(V1_TYPE_PREFIX) and self.snapshot_type in HANDLED_EVENT_TYPES


def is_thin_notification(event: Any) -> bool:
    return isinstance(event, Mapping) and event.get("object") == NOTIFICATION_OBJECT


def read_notification(event: Mapping[str, Any]) -> ThinNotification:
    """The fields billwatch acts on, checked at the door; stripe's own class reads it again to fetch."""
    event_id, event_type = event.get("id"), event.get("type")
    if not is_event_id(event_id):
        raise MalformedEvent("the thin event's id is missing or not an evt_ id")
    if not is_event_type(event_type):
        raise MalformedEvent("the thin event's type is missing or not an event type")
    related = event.get("related_object")
    related_id = related.get("id") if isinstance(related, Mapping) else None
    return ThinNotification(
        event_id,
        event_type,
        related_id if isinstance(related_id, str) and _OBJECT_ID.fullmatch(related_id) else None,
    )


def snapshot_event_matches(notification: ThinNotification, snapshot: Mapping[str, Any]) -> bool:
    """Whether the v1 event Stripe named is the change the notification announced."""
    return is_event_id(snapshot.get("id")) and snapshot.get("type") == notification.snapshot_type
