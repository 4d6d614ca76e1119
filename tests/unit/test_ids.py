"""Ids from outside and the stack's own keys live in separate key spaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billwatch.billing.webhook_marker import MARKER_KEY
from billwatch.core.ids import is_account_id, is_customer_id
from billwatch.core.models import JobCheckpoint
from billwatch.core.outbox import usage_key
from billwatch.health.probe import REACHABILITY_KEY, SNAPSHOT_KEY

INTERNAL_KEYS = [
    SNAPSHOT_KEY,
    REACHABILITY_KEY,
    MARKER_KEY,
    JobCheckpoint.key("quota-reset#2026-12-07T00#0"),
    JobCheckpoint.key("reconcile#last-run"),
    "usage#acct_1#key",
]


@pytest.mark.parametrize("key", INTERNAL_KEYS)
def test_no_internal_key_is_a_valid_account_or_customer_id(key: str) -> None:
    assert not is_account_id(key)
    assert not is_customer_id(key)


@given(st.text(max_size=200))
def test_an_accepted_account_id_never_holds_the_internal_separator_or_a_customer_prefix(value: str) -> None:
    if is_account_id(value):
        assert "#" not in value and not value.startswith("cus_") and 1 <= len(value) <= 128


def test_usage_entries_are_keyed_apart_from_stripe_events() -> None:
    key = usage_key("acct_1", "exports|x#y", 80, 1_700_000_000)
    assert key.startswith("usage_") and "|" not in key and "#" not in key
