"""`make send` dates the sample event at the moment it is sent, as Stripe would have created it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from devtools import send_event
from tests.unit.test_signing_helper import receiver  # noqa: F401 # the fixture

EVENTS = Path(__file__).resolve().parents[2] / "events"
NOW = 1_800_000_000


def timestamps(node: Any, path: str = "") -> dict[str, int]:
    """Every timestamp field of a Stripe event, by its path."""
    found: dict[str, int] = {}
    if isinstance(node, dict):
        for name, value in node.items():
            if send_event._is_timestamp(value, name):
                found[f"{path}.{name}"] = value
            else:
                found.update(timestamps(value, f"{path}.{name}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.update(timestamps(item, f"{path}[{index}]"))
    return found


def test_a_subscription_is_created_now_with_its_period_starting_now() -> None:
    raw = (EVENTS / "customer.subscription.created.json").read_bytes()
    original = json.loads(raw)

    sent = json.loads(send_event.dated(raw, NOW))

    item, original_item = (
        sent["data"]["object"]["items"]["data"][0],
        original["data"]["object"]["items"]["data"][0],
    )
    shift = NOW - original["created"]
    assert sent["created"] == NOW
    assert item["current_period_start"] == original_item["current_period_start"] + shift
    assert item["current_period_end"] - item["current_period_start"] == (
        original_item["current_period_end"] - original_item["current_period_start"]
    )
    assert item["current_period_end"] > NOW
    assert sent["data"]["object"]["start_date"] == original["data"]["object"]["start_date"] + shift


def test_every_timestamp_moves_by_the_same_and_nothing_else_changes() -> None:
    for path in sorted(EVENTS.glob("*.json")):
        original = json.loads(path.read_bytes())
        sent = json.loads(send_event.dated(path.read_bytes(), NOW))
        shift = NOW - original["created"]

        before, after = timestamps(original), timestamps(sent)
        assert set(after) == set(before), path.name
        assert {field: after[field] - before[field] for field in before} == dict.fromkeys(before, shift)
        # Amounts, flags and the rest are untouched: only the timestamps were moved.
        assert _without_timestamps(sent) == _without_timestamps(original), path.name


def _without_timestamps(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            name: _without_timestamps(value)
            for name, value in node.items()
            if not send_event._is_timestamp(value, name)
        }
    if isinstance(node, list):
        return [_without_timestamps(item) for item in node]
    return node


def test_booleans_and_amounts_are_not_timestamps() -> None:
    event = {
        "created": 100,
        "data": {"object": {"cancel_at_period_end": True, "amount_due": 2000, "paid_at": 150}},
    }

    sent = json.loads(send_event.dated(json.dumps(event).encode(), 1000))

    assert sent == {
        "created": 1000,
        "data": {"object": {"cancel_at_period_end": True, "amount_due": 2000, "paid_at": 1050}},
    }


def test_what_has_no_created_is_sent_as_it_is() -> None:
    for payload in (b"not json", b"[1, 2]", b'{"object": "event", "created": "yesterday"}'):
        assert send_event.dated(payload, NOW) is payload


def test_make_send_posts_the_event_created_at_the_moment_it_sends(receiver) -> None:  # noqa: F811
    url, received = receiver
    before = int(time.time())

    assert (
        send_event.main([str(EVENTS / "invoice.paid.json"), "--url", url, "--secret", "whsec_receiver"]) == 0
    )

    (request,) = received
    assert request["status"] == 200  # signed over the re-dated bytes
    assert before <= json.loads(request["body"])["created"] <= int(time.time())
