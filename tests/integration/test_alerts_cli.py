"""devtools.alerts: test alerts through the routes, and silences from the command line."""

from __future__ import annotations

import json

import pytest

from devtools import alerts


def test_make_alert_test_sends_one_alert_of_each_severity_through_the_routes(
    aws_credentials, monkeypatch, capsys, metrics
) -> None:
    for name in (
        "ALERT_ROUTES_PATH",
        "BILLING_TABLE_NAME",
        "IDEMPOTENCY_TABLE_NAME",
        "ALERT_STATE_TABLE_NAME",
    ):
        monkeypatch.setenv(name, "")  # restored after the test; the command sets what it needs
    monkeypatch.delenv("ALERT_ROUTES_PATH")
    assert alerts.main(["test"]) == 0
    notices = [log for log in metrics.logs() if log["message"] == "Alert notification"]
    report = json.loads(next(line for line in metrics.lines if line.startswith('{"sent"')))
    assert sorted((r["severity"], r["receiver"]) for r in report["sent"]) == [
        ("critical", "oncall-critical"),
        ("info", "team-info"),
        ("warning", "oncall-warning"),
    ]
    assert sorted(n["alert"]["severity"] for n in notices) == ["critical", "info", "warning"]
    assert {n["kind"] for n in notices} == {"test"}


def test_silences_from_the_command_line(aws, capsys) -> None:
    table = ["--table", aws["AlertStateTable"]]
    window = ["--ends", "2999-01-01T00:00Z", "--comment", "pricing migration", "--by", "ops"]
    assert alerts.main(["silence", "add", "--matcher", "alertname=HighQuotaDenialRate", *window, *table]) == 0
    silence = json.loads(capsys.readouterr().out)
    assert silence["matchers"] == ["alertname=HighQuotaDenialRate"] and silence["created_by"] == "ops"
    assert alerts.main(["silence", "list", *table]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == silence["id"] and listed["active"] is True
    assert alerts.main(["silence", "remove", silence["id"], *table]) == 0
    assert alerts.main(["silence", "remove", silence["id"], *table]) == 1
    assert alerts.main(["silence", "add", "--matcher", "alertname", *window, *table]) == 1
    assert "matchers.0" in capsys.readouterr().err


def test_a_time_without_a_zone_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        alerts.main(["silence", "add", "--matcher", "a=b", "--ends", "2026-12-01T18:00", "--comment", "c"])
    assert exit_.value.code == 2 and "time zone" in capsys.readouterr().err
