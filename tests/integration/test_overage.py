"""Overage on moto's DynamoDB: a tier that bills its overage allows uses past the quota, up to the
hard cap, in the one conditional write a check always was (plus, once until the drain takes it off,
the write that puts the account on the drain's list), and says how many units were overage."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from billwatch.core.audit import AuditTrail
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import bind_billing_table, bind_idempotency_table
from billwatch.licensing.plans import parse_catalog, shipped_catalog_text
from billwatch.licensing.service import Licensing
from tests.support import Clock

NOV_15 = int(dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC).timestamp())


def overage_catalog():
    document = json.loads(shipped_catalog_text())
    features = document["tiers"][0]["features"]  # FREE: exports 10, api_calls 1000
    features["exports"].update(over_quota="overage", event_name="exports_overage", hard_cap=15)
    features["api_calls"].update(over_quota="overage", event_name="api_calls_overage")
    return parse_catalog(document)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOV_15)


@pytest.fixture
def licensing(aws, clock) -> Licensing:
    bind_billing_table(aws["BillingStateTable"])
    bind_idempotency_table(aws["IdempotencyTable"])
    recorder = MetricsRecorder("Billwatch", "billwatch")
    return Licensing(
        overage_catalog(), recorder, clock, audit=AuditTrail(aws["AuditTable"], 400, recorder, clock)
    )


def test_past_the_quota_a_use_is_allowed_up_to_the_hard_cap_in_one_write(licensing, aws_calls) -> None:
    licensing.use("acct_o", "exports", 10)  # the quota, used up (its thresholds announced)
    aws_calls.clear()
    crossing = licensing.use("acct_o", "exports", 3)
    assert crossing.as_dict() == {
        "allowed": True,
        "feature": "exports",
        "used": 13,
        "limit": 10,
        "remaining": 0,
        "resets_at": "2026-12-01T00:00:00Z",
        "overage": 3,
    }
    past = licensing.use("acct_o", "exports", 2)
    assert (past.allowed, past.used, past.overage) == (True, 15, 2)
    capped = licensing.use("acct_o", "exports", 1)
    assert (capped.allowed, capped.reason, capped.used, capped.overage) == (False, "quota_exceeded", 15, None)
    # The crossing use also puts the account on the overage drain's list, once (test_overage_ledger.py).
    assert aws_calls == ["UpdateItem", "UpdateItem", "UpdateItem", "UpdateItem"]


def test_a_use_that_crosses_the_quota_counts_only_its_units_past_it(licensing) -> None:
    licensing.use("acct_x", "exports", 8)
    crossing = licensing.use("acct_x", "exports", 4)
    assert (crossing.used, crossing.overage) == (12, 2)
    within = licensing.use("acct_y", "exports", 4)
    assert within.overage == 0 and within.as_dict()["overage"] == 0


def test_without_a_hard_cap_nothing_past_the_quota_is_refused(licensing) -> None:
    answer = licensing.use("acct_u", "api_calls", 1_000_000)
    assert (answer.allowed, answer.used, answer.limit, answer.overage) == (True, 1_000_000, 1000, 999_000)


def test_a_grant_lifts_the_quota_and_the_cap_alike(licensing) -> None:
    licensing.grant("acct_g", "exports", 5)
    assert licensing.use("acct_g", "exports", 15).overage == 0
    assert licensing.use("acct_g", "exports", 5).overage == 5
    assert not licensing.use("acct_g", "exports", 1).allowed
    exports = licensing.entitlements("acct_g")["features"]["exports"]
    assert (exports["used"], exports["limit"], exports["overage"], exports["hard_cap"]) == (20, 15, 5, 20)


def test_a_keyed_use_in_overage_is_two_requests_and_the_marker_and_replays(licensing, aws_calls) -> None:
    licensing.use("acct_k", "exports", 10)
    aws_calls.clear()
    first = licensing.use_idempotently("acct_k", "exports", 2, "job-1")
    assert (first.allowed, first.overage) == (True, 2)
    assert aws_calls == ["BatchGetItem", "TransactWriteItems"]  # the drain's marker in the transaction
    replay = licensing.use_idempotently("acct_k", "exports", 2, "job-1")
    assert replay == first and replay.as_dict()["overage"] == 2
    assert licensing.entitlements("acct_k")["features"]["exports"]["used"] == 12


def test_entitlements_show_overage_only_where_it_is_billed(licensing) -> None:
    licensing.use("acct_e", "api_calls", 1200)
    features = licensing.entitlements("acct_e")["features"]
    assert (features["api_calls"]["overage"], features["api_calls"]["hard_cap"]) == (200, None)
    assert (features["exports"]["overage"], features["exports"]["hard_cap"]) == (0, 15)
    # A deny feature's answers keep today's shape: the fields are only added where overage is billed.
    deny = Licensing(parse_catalog(json.loads(shipped_catalog_text())), MetricsRecorder("B", "b"))
    assert "overage" not in deny.entitlements("acct_e")["features"]["exports"]
    assert "overage" not in deny.use("acct_d", "exports", 1).as_dict()


def test_the_use_that_starts_a_new_period_may_be_overage_too(licensing, clock) -> None:
    licensing.use("acct_p", "exports", 15)
    clock.now = int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp())
    started = licensing.use("acct_p", "exports", 12)
    assert (started.allowed, started.used, started.overage) == (True, 12, 2)
    assert licensing.entitlements("acct_p")["features"]["exports"]["overage"] == 2
