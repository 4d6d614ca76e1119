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
from devtools.alarm_evaluator import MetricKey, MetricStore
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


def test_the_summary_names_the_business_dashboards_figures_of_the_day(four_hours: Run) -> None:
    summary = four_hours.stdout
    section = summary.split("The business dashboard over the replay (its panels' figures):\n", 1)[1]
    figures = dict(re.findall(r"^  ([^:\n]+): (.*)$", section.split("\n\n", 1)[0], re.M))

    assert counts(summary, "Quota grants") == {"granted": 3}
    funnel = dict(stage.rsplit(" ", 1) for stage in figures["Funnel"].split(", "))
    assert (funnel["checkout sessions ended"], funnel["completed"], funnel["first invoices paid"]) == (
        str(30 + 6 + demo.VELOCITY_SESSIONS),  # completed, abandoned, the card tester's
        "30",
        "30",
    )
    assert int(funnel["upgraded to PRO"]) >= 6
    created = figures["Subscriptions created by plan and status"]
    for plan_and_status in ("PRO active", "FREE active", "PRO trialing 3", "PRO incomplete 2"):
        assert plan_and_status in created, created
    assert re.fullmatch(r"\d+\.\d % \(KPI 95 %\)", figures["Payment success"])
    declines = dict(re.findall(r"(\w+) (\d+)", figures["Payments by decline reason"]))
    assert declines == {
        "insufficient_funds": "2",
        "card_declined": "2",
        "expired_card": "1",
        "authentication_required": "1",
    }
    # A charge refunded in full (20.00), another in part (5.00) and then the rest (15.00).
    money = r"^    USD: paid [\d,]+\.\d\d, refunded 40\.00, failed invoices 80\.00$"
    assert re.search(money, section, re.M), section
    assert figures["Revenue by plan"].startswith("USD PRO ")
    assert re.search(r"us_bank_account \d+\.\d d", figures["Payment duration p95 by payment method"])
    assert re.search(r"card \d+ s", figures["Payment duration p95 by payment method"])
    assert figures["Credits"] == "granted 300, consumed 1,000"
    suspicious = dict(count.rsplit(" ", 1) for count in figures["Suspicious activity"].split(", "))
    assert (suspicious["early fraud warnings"], suspicious["disputes opened"]) == ("1", "1")
    assert int(suspicious["checkout sessions over the velocity limit"]) >= 1
    assert figures["Deployments"] == "1"  # the stack's start is its deployment


def test_the_business_figures_say_none_where_nothing_happened() -> None:
    store = MetricStore()
    store.put(MetricKey.of("Billwatch", "PaymentSucceeded", service="billwatch"), 100, 3)
    store.put(MetricKey.of("Billwatch", "PaymentFailed", service="billwatch"), 100, 1)
    declined = MetricKey.of("Billwatch", "PaymentDeclined", service="billwatch", DeclineReason="expired_card")
    store.put(declined, 100, 1)
    store.put(declined, 5000, 1)  # after the range

    figures = demo.business_figures(store, "Billwatch", 0, 1000)

    assert "  Payment success: 75.0 % (KPI 95 %)" in figures
    assert "  Payments by decline reason: expired_card 1" in figures
    assert "  Subscriptions created by plan and status: none" in figures
    assert figures[figures.index("  Paid, refunded and failed amounts:") + 1] == "    none"
    assert "  Deployments: 0" in figures


def test_the_console_gets_a_summary_and_the_logs_go_to_the_file_it_names(four_hours: Run) -> None:
    console = four_hours.stdout + four_hours.stderr
    log_path = re.search(r"the functions' logs go to (\S+)$", four_hours.stdout.splitlines()[0])

    assert log_path and four_hours.stdout.rstrip().endswith(f"The functions' logs: {log_path[1]}")
    assert four_hours.stderr == ""
    assert len(console.splitlines()) < 100  # a summary: the alerts, the business figures, the KPIs
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


def test_the_day_holds_what_feeds_the_business_dashboard() -> None:
    deliveries = demo.StripeTraffic(7).build()
    webhooks = [d.payload for d in deliveries if d.kind == "webhook"]
    types = {payload["type"] for payload in webhooks}

    assert {
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "radar.early_fraud_warning.created",
    } <= types
    statuses = {p["object"]["status"] for p in webhooks if p["type"] == "customer.subscription.created"}
    assert statuses == {"active", "trialing", "incomplete"}
    first = [p["object"] for p in webhooks if p["object"].get("billing_reason") == "subscription_create"]
    assert len(first) == 30
    assert {i["payment_settings"]["payment_method_types"][0] for i in first} == {"card", "us_bank_account"}
    refunds = [p.get("previous_attributes") for p in webhooks if p["type"] == "charge.refunded"]
    assert refunds == [{"amount_refunded": before} for _, _, before in demo.REFUNDS]
    assert len([d for d in deliveries if d.kind == "grant"]) == 3


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
