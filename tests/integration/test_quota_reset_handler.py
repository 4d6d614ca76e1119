"""The QuotaReset handler: the schedule fans out segments; a segment short of time hands over."""

from __future__ import annotations

import pytest

from billwatch.core.models import BillingAccount
from billwatch.licensing.quota_reset import SegmentDispatcher
from tests.support import LambdaContext, load_handler

SCHEDULED = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-02T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/billwatch-quota-reset"],
    "detail": {},
}


class ShortOfTime(LambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 1_000


class FifteenMinutes(LambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def reset_function(aws, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("QUOTA_RESET_SEGMENTS", "3")
    module = load_handler("quota_reset")
    october = 1_792_000_000  # 2026-10-14
    for n in range(30):
        BillingAccount(f"acct_{n}", usage_since=october).save()
    return module


def test_the_schedule_fans_out_and_every_segment_resets(reset_function, monkeypatch) -> None:
    invocations = []
    monkeypatch.setattr(SegmentDispatcher, "start", lambda self, *args: invocations.append(args))
    assert reset_function.lambda_handler(SCHEDULED, LambdaContext()) == {
        "run_id": "2026-11-02T00",
        "segments": 3,
    }
    assert invocations == [("2026-11-02T00", s, 3) for s in range(3)]
    results = [
        reset_function.lambda_handler({"run_id": run, "segment": s, "total_segments": n}, FifteenMinutes())
        for run, s, n in invocations
    ]
    assert all(r["finished"] for r in results) and sum(r["reset"] for r in results) == 30


def test_a_segment_short_of_time_hands_over_to_a_new_invocation(reset_function, monkeypatch) -> None:
    monkeypatch.setattr("billwatch.licensing.quota_reset.PAGE_SIZE", 5)
    handed_over = []
    monkeypatch.setattr(SegmentDispatcher, "start", lambda self, *args: handed_over.append(args))
    first = reset_function.lambda_handler({"run_id": "r1", "segment": 0, "total_segments": 1}, ShortOfTime())
    assert not first["finished"] and handed_over == [("r1", 0, 1)]
    rest = reset_function.lambda_handler(
        {"run_id": "r1", "segment": 0, "total_segments": 1}, FifteenMinutes()
    )
    assert rest["finished"] and rest["reset"] == 30
