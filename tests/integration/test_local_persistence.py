"""BILLWATCH_DATA_DIR: the local stack's tables and metrics survive a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.alarm_evaluator import MetricKey
from devtools.emulator import LocalEmulator
from tests.integration.test_local_stack import call, post_signed, subscription_created


def test_the_tables_and_metrics_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    event = subscription_created("acct_kept", "evt_kept_1")
    new_subscriptions = MetricKey.of("Billwatch", "SubscriptionsNew", service="billwatch")

    with LocalEmulator(autorun=False, data_dir=tmp_path).start(port=0) as first:
        status, body = post_signed(first.url + "/webhooks/stripe", event, list(first.webhook_secrets))
        assert (status, body["outcome"]) == (200, "applied")
        assert first.metrics.store.points(new_subscriptions)
        kept_points = first.metrics.store.points(new_subscriptions)

    assert json.loads((tmp_path / "tables" / "BillingStateTable.json").read_text())
    with LocalEmulator(autorun=False, data_dir=tmp_path).start(port=0) as second:
        assert second.restored["BillingStateTable"] >= 1 and second.restored["datapoints"] >= 1
        _, _, body = call(second.url + "/_local/api/accounts", method="GET")
        assert [a["tier"] for a in json.loads(body) if a["account"] == "acct_kept"] == ["PRO"]
        # The idempotency records came back too: the same event again is a duplicate.
        status, body = post_signed(second.url + "/webhooks/stripe", event, list(second.webhook_secrets))
        assert (status, body["outcome"]) == (200, "duplicate")
        assert second.metrics.store.points(new_subscriptions)[: len(kept_points)] == kept_points


def test_without_a_data_dir_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLWATCH_DATA_DIR", raising=False)
    with LocalEmulator(autorun=False).start(port=0) as stack:
        assert stack.data_dir is None and stack.restored == {}
