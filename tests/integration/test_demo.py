"""`make demo HOURS=4`: the day's story told in four hours (the traffic, the DynamoDB outage at
13:00 with Stripe's retries, an account through its quota), a human summary on the console and the
functions' logs in a file."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devtools import demo
from tests.support import ROOT


@dataclass(frozen=True)
class Run:
    stdout: str
    stderr: str
    log: str


@pytest.fixture(scope="module")
def four_hours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    log_file = tmp_path_factory.mktemp("demo") / "demo.log"
    done = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--hours", "4", "--log-file", str(log_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    yield Run(done.stdout, done.stderr, log_file.read_text(encoding="utf-8"))


def counts(summary: str, heading: str) -> dict[str, int]:
    """The ``  name: count`` lines under ``heading: total`` in the summary."""
    section = re.search(rf"^{heading}: \d+\n((?:  .+: \d+\n)+)", summary, re.M)
    assert section, summary
    return {name: int(count) for name, count in re.findall(r"^  (.+): (\d+)$", section[1], re.M)}


def test_four_hours_hold_the_traffic_the_outage_and_the_quota_running_out(four_hours: Run) -> None:
    summary = four_hours.stdout
    deliveries = counts(summary, "Webhook deliveries")
    usage = counts(summary, "Usage checks")

    assert deliveries["applied"] > 100 and deliveries["duplicate"] > 0
    assert deliveries["failed (5xx), sent again later"] > 0  # the outage, and Stripe's retries
    assert not [outcome for outcome in deliveries if outcome.startswith("rejected")]
    assert usage["allowed"] == 10 and usage["denied"] > 0  # 100 calls at a time against a quota of 1,000
    assert re.search(r"^  HighWebhookFailureRate: 13:\d\d to 1\d:\d\d \(cleared\)$", summary, re.M), summary
    for kind in ("firing", "resolved"):
        alert = rf"^  to \S+: (HighWebhookFailureRate|StripeWebhookFailureRateHigh) \({kind}\) x\d+$"
        assert re.search(alert, summary, re.M), summary
    assert "SLOs\n  Availability:" in summary and "Business\n  Checkouts completed: 30" in summary
    assert "Health score\n  Score:" in summary


def test_the_console_gets_a_summary_and_the_logs_go_to_the_file_it_names(four_hours: Run) -> None:
    console = four_hours.stdout + four_hours.stderr
    log_path = re.search(r"the functions' logs go to (\S+)$", four_hours.stdout.splitlines()[0])

    assert log_path and four_hours.stdout.rstrip().endswith(f"The functions' logs: {log_path[1]}")
    assert four_hours.stderr == ""
    assert len(console.splitlines()) < 80
    assert "Traceback" not in console and not re.search(r"^\s*\{", console, re.M)
    # What the console was spared: the functions' JSON lines, the outage's tracebacks among them.
    json_lines = [line for line in four_hours.log.splitlines() if line.startswith("{")]
    assert len(json_lines) > 500
    assert any(
        "ProvisionedThroughputExceededException" in line and "Traceback" in line for line in json_lines
    )


def test_bad_options_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--hours", "25"], ["--hours", "0"], ["--step-minutes", "61"]):
        with pytest.raises(SystemExit) as refused:
            demo.main(argv)
        assert refused.value.code == 2
        assert "--hours 1-24, --step-minutes 1-60" in capsys.readouterr().err


def test_a_shorter_replay_keeps_the_days_story_in_proportion() -> None:
    day, four_hours = demo.StripeTraffic(7), demo.StripeTraffic(7, 4 * 60)
    day_deliveries, short_deliveries = day.build(), four_hours.build()

    assert day.outage == (13 * 60, 13 * 60 + 20) and four_hours.outage == (130, 150)
    assert len(short_deliveries) == len(day_deliveries)
    assert {d.payload.get("id") for d in short_deliveries} == {d.payload.get("id") for d in day_deliveries}
    assert max(d.minute for d in short_deliveries) < 4 * 60
    busy = [
        d for d in short_deliveries if str(d.payload.get("object", {}).get("id", "")).startswith("in_busy")
    ]
    assert busy and all(150 > d.minute >= 130 for d in busy)
