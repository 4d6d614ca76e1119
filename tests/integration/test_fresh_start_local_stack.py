"""A fresh start of the local stack, on a clock that runs hours in seconds, with Slack and PagerDuty set.

While nothing is wrong nobody may be told anything: not by the dead-man's switch of a probe that
has not had its first run yet, nor by the quota reset's before its hourly rate first fires (an
hour after the stack started, at :47 here). A job that ran and then stopped is still paged.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator

import pytest

from devtools.emulator import LocalEmulator
from devtools.local_alarms import AlarmEvent
from devtools.local_schedules import ManualClock
from tests.alert_receivers import AlertReceivers, alert_receivers

# The stack starts at 15:47 UTC, so the quota reset's rate(1 hour) fires at 16:47, 17:47, ...
START = calendar.timegm((2026, 12, 1, 15, 47, 0))
MINUTE = 60


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlertReceivers]:
    with alert_receivers() as recording:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", recording.url("/slack"))
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R0UT1NGKEY")
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", recording.url("/pagerduty"))
        yield recording


def fresh_stack() -> LocalEmulator:
    """Started inside the test, not in a fixture: pytest puts its own stdout back between the two,
    and the stack reads the functions' metrics off stdout."""
    return LocalEmulator(autorun=False, clock=ManualClock(START)).start(port=0)


def run_minutes(stack: LocalEmulator, first: int, last: int) -> list[AlarmEvent]:
    """Each local minute as `make run` lives it: what fell due runs, then the alarms are judged."""
    assert isinstance(stack.clock, ManualClock)
    changes = []
    for minute in range(first, last + 1):
        stack.clock.advance_to(START + minute * MINUTE)
        changes += stack.step()
    return changes


def test_nobody_is_told_anything_in_the_first_two_hours_of_a_fresh_start(receivers: AlertReceivers) -> None:
    with fresh_stack() as stack:
        changes = run_minutes(stack, 1, 135)
        states = stack.alarms.states

    resets = [f.at for f in stack.fired if f.schedule.function == "QuotaResetFunction"]
    assert resets == [START + 3600, START + 2 * 3600]  # its real phase: :47
    assert all(f.succeeded for f in stack.fired)
    alarmed = {change.alarm for change in changes if change.new_state == "ALARM"}
    assert alarmed.isdisjoint({"HealthProbeMissing", "QuotaResetMissed", "QuotaResetFailure"})
    # Watching, not blind: both switches saw their job run.
    assert states["HealthProbeMissing"] == "OK" and states["QuotaResetMissed"] == "OK"
    assert list(stack.alerts_sent) == []
    assert receivers.requests() == []


def test_a_probe_that_ran_and_then_stopped_is_paged(
    receivers: AlertReceivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crashing(event: object) -> None:
        raise RuntimeError("the probe crashes before it counts its run")

    with fresh_stack() as stack:
        run_minutes(stack, 1, 20)
        assert receivers.requests() == []
        monkeypatch.setattr(stack.functions["HealthProbeFunction"], "invoke", crashing)
        changes = run_minutes(stack, 21, 40)

    stopped = [c for c in changes if c.alarm == "HealthProbeMissing" and c.new_state == "ALARM"]
    assert [c.at for c in stopped] == [START + 31 * MINUTE]  # 600 s after the last run, at minute 20
    pages = [request.json for request in receivers.requests("/pagerduty")]
    assert [(page["event_action"], "HealthProbeMissing" in page["payload"]["summary"]) for page in pages] == [
        ("trigger", True)
    ]
