"""Reading a thin event notification at the door, before anything is fetched for it."""

from __future__ import annotations

import pytest

from billwatch.billing.stripe_events import MalformedEvent
from billwatch.billing.thin_events import is_thin_notification, read_notification, snapshot_event_matches
from devtools import stripe_events as se


def test_only_a_v2_core_event_is_a_thin_notification() -> None:
    assert is_thin_notification(se.thin_event("v1.invoice.paid", "in_1", "invoice"))
    assert not is_thin_notification(se.event("invoice.paid", se.invoice()))
    assert not is_thin_notification(["v2.core.event"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "in_1"), ("id", None), ("id", "evt_../x"), ("type", "V1.Invoice.Paid"), ("type", 7)],
)
def test_an_id_or_type_of_the_wrong_shape_is_refused_by_name(field: str, value: object) -> None:
    notification = {**se.thin_event("v1.invoice.paid", "in_1", "invoice"), field: value}
    with pytest.raises(MalformedEvent, match=field):
        read_notification(notification)


@pytest.mark.parametrize(
    ("event_type", "handled"),
    [
        ("v1.invoice.paid", True),
        ("v1.customer.subscription.updated", True),
        ("v1.customer.updated", False),  # a v1 type billwatch does not handle
        ("invoice.paid", False),  # a snapshot type is never a thin one
        ("v2.core.event_destination.ping", False),
    ],
)
def test_handled_means_v1_and_a_handled_snapshot_type(event_type: str, handled: bool) -> None:
    assert read_notification(se.thin_event(event_type, "in_1", "invoice")).handled is handled


def test_a_related_object_id_of_another_shape_is_left_out() -> None:
    notification = se.thin_event("v1.billing.meter.no_meter_found", "mtr\n forged log line", "billing.meter")
    assert read_notification(notification).related_object_id is None


def test_the_v1_event_must_be_of_the_type_announced() -> None:
    thin = read_notification(se.thin_event("v1.invoice.paid", "in_1", "invoice"))
    assert snapshot_event_matches(thin, se.event("invoice.paid", se.invoice()))
    assert not snapshot_event_matches(thin, se.event("invoice.payment_failed", se.invoice()))
    assert not snapshot_event_matches(thin, {"id": "not-an-event", "type": "invoice.paid"})
