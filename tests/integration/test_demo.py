"""`make demo`, over the early afternoon of its day: the DynamoDB outage at 13:00 and Stripe's retries."""

from __future__ import annotations

import re

import pytest

from devtools import demo


def test_the_demo_replays_traffic_fires_and_clears_alarms_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.main(["--start-hour", "12", "--hours", "2"]) == 0
    summary = capsys.readouterr().out

    deliveries = dict(
        re.findall(
            r"^  (applied|duplicate|failed \(5xx\), sent again later|rejected \(\d+\)): (\d+)$", summary, re.M
        )
    )
    assert int(deliveries["failed (5xx), sent again later"]) > 0  # the outage
    assert "rejected" not in " ".join(deliveries)  # every delivery was a real Stripe event
    assert re.search(r"^  HighWebhookFailureRate: 13:\d\d to 1\d:\d\d \(cleared\)$", summary, re.M), summary
    assert re.search(r"^  to oncall-critical: HighWebhookFailureRate \(firing\) x\d+$", summary, re.M), (
        summary
    )
    assert re.search(r"^  to oncall-critical: HighWebhookFailureRate \(resolved\) x\d+$", summary, re.M), (
        summary
    )
    assert "SLOs\n  Availability:" in summary and "Business\n  Checkouts completed:" in summary
    assert "Health score\n  Score:" in summary


def test_bad_options_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        demo.main(["--start-hour", "20", "--hours", "6"])
    assert refused.value.code == 2
    assert "--hours 1-24 within the day" in capsys.readouterr().err
