"""The scheduled quota reset: exactly once per account and period, resumable, never losing usage."""

from __future__ import annotations

import datetime as dt

import pytest

from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, bind_billing_table
from billwatch.licensing import quota_reset as quota_reset_module
from billwatch.licensing import usage_history as usage_history_module
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_reset import QuotaReset
from billwatch.licensing.service import Licensing
from tests.support import Clock

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")
OCT_20 = int(dt.datetime(2026, 10, 20, tzinfo=dt.UTC).timestamp())
NOV_1 = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())
NOV_2 = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def world(aws, metrics):
    bind_billing_table(aws["BillingStateTable"])
    clock = Clock(OCT_20)
    licensing = Licensing(CATALOG, MetricsRecorder("Billwatch", "billwatch"), clock)
    for n in range(45):
        licensing.use(f"acct_{n:02d}", "api_calls", 5)
        licensing.use(f"acct_{n:02d}", "exports", 9)  # announces 80 %
    clock.now = NOV_2
    return licensing, clock, QuotaReset(licensing, MetricsRecorder("Billwatch", "billwatch"), clock)


def usage_of(licensing, account_id: str) -> tuple[int, int]:
    features = licensing.entitlements(account_id)["features"]
    return features["api_calls"]["used"], features["exports"]["used"]


def raw_item(licensing, account_id: str) -> dict:
    return licensing.load(account_id).raw


def sweep(job: QuotaReset, run_id: str, segments: int = 3) -> int:
    return sum(job.run_segment(run_id, s, segments).reset for s in range(segments))


def test_every_ended_period_is_reset_once(world, metrics) -> None:
    licensing, _, job = world
    assert sweep(job, "2026-11-02T00") == 45
    item = raw_item(licensing, "acct_07")
    assert int(item["usage_since"]["N"]) == NOV_1
    assert not {name for name in item if name.startswith(("used_", "granted_", "announced_", "alerted_"))}
    assert usage_of(licensing, "acct_07") == (0, 0)
    assert metrics.total("QuotaResetAccounts") == 45 and metrics.total("QuotaResetSucceeded") == 3
    # The same run again (a schedule that fired twice) and a later run reset nothing.
    assert sweep(job, "2026-11-02T00") == 45  # its finished segments report their totals, untouched
    assert sweep(job, "2026-11-02T01") == 0
    assert metrics.total("QuotaResetAccounts") == 45


def test_usage_recorded_after_a_reset_survives_a_rerun(world) -> None:
    licensing, clock, job = world
    sweep(job, "2026-11-02T00")
    licensing.use("acct_03", "exports", 2)
    sweep(job, "2026-11-02T01")
    assert usage_of(licensing, "acct_03") == (0, 2)
    # A check in the new period before the sweep reaches it keeps its usage too.
    licensing.use("acct_99", "exports", 1)
    clock.now = int(dt.datetime(2026, 12, 1, 0, 1, tzinfo=dt.UTC).timestamp())
    licensing.use("acct_99", "exports", 3)
    sweep(job, "2026-12-01T00")
    assert usage_of(licensing, "acct_99") == (0, 3)


def test_a_crash_half_way_is_finished_by_the_rerun_without_double_resets(world, monkeypatch, metrics) -> None:
    licensing, _, job = world
    original = usage_history_module.write_with
    writes = []

    def crash_on_the_twentieth(*args, **kwargs):
        writes.append(args[0])
        if len(writes) == 20:
            raise RuntimeError("the Lambda was killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(usage_history_module, "write_with", crash_on_the_twentieth)
    with pytest.raises(RuntimeError):
        job.run_segment("2026-11-02T00", 0, 1)
    assert metrics.total("QuotaResetFailed") == 1
    failures = [log for log in metrics.logs() if log["message"] == "Quota reset failed"]
    assert failures and failures[0]["level"] == "ERROR"
    monkeypatch.setattr(usage_history_module, "write_with", original)
    result = job.run_segment("2026-11-02T00", 0, 1)
    assert result.finished
    assert all(usage_of(licensing, f"acct_{n:02d}") == (0, 0) for n in range(45))
    # 19 were reset before the crash; the rerun resets the other 26 and skips the 19.
    assert result.reset == 26 and metrics.total("QuotaResetAccounts") == 45


def test_a_segment_short_of_time_hands_over_and_continues(world, monkeypatch) -> None:
    _, _, job = world
    monkeypatch.setattr(quota_reset_module, "PAGE_SIZE", 10)
    first = job.run_segment("2026-11-02T00", 0, 1, time_left=lambda: 5.0, reserve_seconds=30)
    assert not first.finished and first.cursor is not None and first.scanned <= 10
    rest = job.run_segment("2026-11-02T00", 0, 1)
    assert rest.finished and rest.reset == 45


def test_paid_accounts_reset_at_their_billing_period(world) -> None:
    licensing, clock, job = world
    BillingAccount(
        "acct_paid", tier="PRO", current_period_start=OCT_20 - 5 * 86400, current_period_end=NOV_2 + 86400
    ).save()
    clock.now = OCT_20
    licensing.use("acct_paid", "exports", 400)
    clock.now = NOV_2
    sweep(job, "2026-11-02T00")
    assert usage_of(licensing, "acct_paid") == (0, 400)  # its period has not ended
    BillingAccount("acct_paid").update(
        actions=[
            BillingAccount.current_period_start.set(NOV_2 + 86400),
            BillingAccount.current_period_end.set(NOV_2 + 31 * 86400),
        ]
    )
    clock.now = NOV_2 + 86400 + 60
    assert sweep(job, "2026-11-03T00") == 1
    assert usage_of(licensing, "acct_paid") == (0, 0)
