"""The local stack's alerts reach real Slack and PagerDuty endpoints when their settings are given."""

from __future__ import annotations

import pytest

from devtools.emulator import LocalEmulator
from tests.alert_receivers import alert_receivers


def test_slack_and_pagerduty_get_the_alerts_of_a_firing_alarm(monkeypatch: pytest.MonkeyPatch) -> None:
    with alert_receivers() as receivers:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", receivers.url("/slack"))
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R0UT1NGKEY")
        monkeypatch.setenv("PAGERDUTY_EVENTS_URL", receivers.url("/pagerduty"))
        with LocalEmulator(autorun=False).start(port=0) as stack:
            # The probe ran once and then stopped: its dead-man's switch fires (critical) once a
            # whole window passes without it. (A stack where it never ran pages nobody.)
            started = stack.clock.now()
            stack.invoke("HealthProbeFunction", {"source": "aws.events", "detail-type": "Scheduled Event"})
            early = stack.alarms.evaluate(started + 60)
            assert [event.alarm for event in early if event.new_state == "ALARM" and event.topics] == []
            fired = stack.alarms.evaluate(started + 1260)
            stack.topics.drain()

        assert "HealthProbeMissing" in {event.alarm for event in fired if event.new_state == "ALARM"}
        slack = [request.json["text"] for request in receivers.requests("/slack")]
        assert any("HealthProbeMissing" in text for text in slack), slack
        paged = [request.json for request in receivers.requests("/pagerduty")]
        assert [(page["routing_key"], page["event_action"]) for page in paged] == [("R0UT1NGKEY", "trigger")]
        assert "HealthProbeMissing" in paged[0]["payload"]["summary"]
