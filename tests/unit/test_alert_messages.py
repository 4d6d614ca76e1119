from __future__ import annotations

import html

import pytest

from billwatch.alerting.channels.email import email_message, email_subject
from billwatch.alerting.channels.facts import evaluation_text
from billwatch.alerting.channels.pagerduty import (
    PAGERDUTY_SUMMARY_LIMIT,
    pagerduty_dedup_key,
    pagerduty_event,
)
from billwatch.alerting.channels.slack import slack_message
from billwatch.alerting.channels.webhook import notification_id, webhook_payload
from billwatch.alerting.inputs import AlertStatus, Notification, NotificationKind
from billwatch.core.severities import Severity
from tests.alert_receivers import ALARM_ARN, BILLING_DASHBOARD_URL, alarm_alert, usage_alert

FIRING, REPEAT, RESOLVED, TEST = (
    NotificationKind.FIRING,
    NotificationKind.REPEAT,
    NotificationKind.RESOLVED,
    NotificationKind.TEST,
)


def notify(
    kind: NotificationKind = FIRING, receiver: str = "oncall-critical", **changes: object
) -> Notification:
    return Notification(alarm_alert(**changes), kind, receiver)


def resolved(**changes: object) -> Notification:
    return notify(RESOLVED, status=AlertStatus.RESOLVED, since="2025-03-01T10:20:00.000Z", **changes)


# --- value against threshold


@pytest.mark.parametrize(
    ("value", "threshold", "comparison", "text"),
    [
        (7.5, 5.0, "GreaterThanThreshold", "7.5 > 5 (threshold)"),
        (950.0, 950.0, "GreaterThanOrEqualToThreshold", "950 >= 950 (threshold)"),
        (0.25, 1.0, "LessThanThreshold", "0.25 < 1 (threshold)"),
        (1.0, 1.0, "LessThanOrEqualToThreshold", "1 <= 1 (threshold)"),
        (1234567.0, 0.1 + 0.2, "GreaterThanThreshold", "1234567 > 0.3 (threshold)"),
        (3.0, 2.0, None, "3 vs 2 (threshold)"),
        (7.5, None, None, "value 7.5"),
        (None, 5.0, "GreaterThanThreshold", "threshold > 5"),
        (None, None, None, None),
    ],
)
def test_the_value_is_shown_against_its_threshold(
    value: float | None, threshold: float | None, comparison: str | None, text: str | None
) -> None:
    alert = alarm_alert(value=value, threshold=threshold, comparison=comparison)
    assert evaluation_text(alert) == text


# --- Slack


def _fields(message: dict) -> list[str]:
    return [field["text"] for field in message["blocks"][1]["fields"]]


def _context(message: dict) -> list[str]:
    return [element["text"] for element in message["blocks"][-1]["elements"]]


def test_a_firing_slack_message_has_header_fields_reason_links_and_a_text_fallback() -> None:
    message = slack_message(notify())
    blocks = message["blocks"]
    assert [block["type"] for block in blocks] == ["header", "section", "section", "context"]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": ":rotating_light: CRITICAL: HighWebhookFailureRate",
    }
    assert blocks[1]["text"]["text"] == "More than 5% of Stripe webhooks failed over the last 600 s."
    assert _fields(message) == [
        "*Severity*\n:rotating_light: critical",
        "*State*\nFiring",
        "*Since*\n<!date^1740823200^{date_short_pretty} {time}|2025-03-01T10:00:00.000Z>",
        "*Value*\n7.5 &gt; 5 (threshold)",
    ]
    assert blocks[2]["text"]["text"].startswith("*Reason*\nThreshold Crossed: 1 datapoint [7.5")
    links, labels, receiver = _context(message)
    assert links == (
        "<https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        "#alarmsV2:alarm/billwatch-prod-HighWebhookFailureRate|CloudWatch alarm>"
        f" · <{BILLING_DASHBOARD_URL}|Dashboard>"
        " · <https://example.com/runbooks/webhook-failures.md|Runbook>"
    )
    assert labels == "group=webhook-failures, source=cloudwatch"
    assert receiver == "receiver oncall-critical"
    assert message["text"] == (
        ":rotating_light: CRITICAL: HighWebhookFailureRate — "
        "More than 5% of Stripe webhooks failed over the last 600 s."
    )


@pytest.mark.parametrize(
    ("notification", "header", "state"),
    [
        (notify(REPEAT), ":rotating_light: CRITICAL (still firing): HighWebhookFailureRate", "Still firing"),
        (resolved(), ":white_check_mark: RESOLVED: HighWebhookFailureRate (was critical)", "Resolved"),
        (notify(TEST), ":test_tube: TEST CRITICAL: HighWebhookFailureRate", "Test notification"),
        (notify(severity=Severity.WARNING), ":warning: WARNING: HighWebhookFailureRate", "Firing"),
        (notify(severity=Severity.INFO), ":information_source: INFO: HighWebhookFailureRate", "Firing"),
    ],
)
def test_slack_headers_show_severity_and_state(notification: Notification, header: str, state: str) -> None:
    message = slack_message(notification)
    assert message["blocks"][0]["text"]["text"] == header
    assert message["text"].startswith(header)
    assert f"*State*\n{state}" in _fields(message)


def test_a_resolved_slack_message_says_when_it_resolved() -> None:
    fields = _fields(slack_message(resolved()))
    assert "*Resolved at*\n<!date^1740824400^{date_short_pretty} {time}|2025-03-01T10:20:00.000Z>" in fields


def test_a_business_alert_in_slack_shows_its_account_and_no_links_when_none_are_known() -> None:
    message = slack_message(Notification(usage_alert(), FIRING, "billing-team"))
    assert "*Value*\n950 &gt;= 950 (threshold)" in _fields(message)
    assert _context(message) == [
        "account_id=acct_42, feature=api_calls, group=usage, source=licensing",
        "receiver billing-team",
    ]


def test_slack_text_escapes_mrkdwn_control_characters() -> None:
    message = slack_message(notify(summary="p95 <2s> & rising", reason="<!channel> wake up"))
    assert message["blocks"][1]["text"]["text"] == "p95 &lt;2s&gt; &amp; rising"
    assert message["blocks"][2]["text"]["text"] == "*Reason*\n&lt;!channel&gt; wake up"
    assert message["text"].endswith("— p95 &lt;2s&gt; &amp; rising")


def test_a_link_cannot_break_out_of_slack_link_syntax() -> None:
    links = _context(slack_message(notify(runbook="https://example.com/a|b>c")))[0]
    assert links.endswith("<https://example.com/a%7Cb%3Ec|Runbook>")


def test_long_slack_texts_are_cut_to_slacks_limits_without_breaking_an_entity() -> None:
    message = slack_message(notify(summary="a" * 2998 + "&&&", name="N" * 200))
    header = message["blocks"][0]["text"]["text"]
    section = message["blocks"][1]["text"]["text"]
    assert len(header) == 150
    assert header.endswith("…")
    assert len(section) <= 3000
    assert section == "a" * 2998 + "…"
    assert len(message["text"]) <= 3000


# --- email


@pytest.mark.parametrize(
    ("severity", "kind", "subject"),
    [
        (Severity.CRITICAL, FIRING, "CRITICAL BILLING ALERT: HighWebhookFailureRate"),
        (Severity.WARNING, FIRING, "BILLING WARNING: HighWebhookFailureRate"),
        (Severity.INFO, FIRING, "Billing Info: HighWebhookFailureRate"),
        (Severity.CRITICAL, REPEAT, "CRITICAL BILLING ALERT: HighWebhookFailureRate (still firing)"),
        (Severity.CRITICAL, RESOLVED, "RESOLVED: CRITICAL BILLING ALERT: HighWebhookFailureRate"),
        (Severity.WARNING, RESOLVED, "RESOLVED: BILLING WARNING: HighWebhookFailureRate"),
        (Severity.INFO, TEST, "TEST: Billing Info: HighWebhookFailureRate"),
    ],
)
def test_email_subjects_follow_the_monitoring_plans(
    severity: Severity, kind: NotificationKind, subject: str
) -> None:
    assert email_subject(notify(kind, severity=severity)) == subject


def test_an_email_subject_stays_on_one_line() -> None:
    assert email_subject(notify(name="Broken\r\nBcc: someone@example.com")) == (
        "CRITICAL BILLING ALERT: Broken Bcc: someone@example.com"
    )


def test_the_email_text_body_lists_every_known_fact_and_link() -> None:
    text = email_message(notify()).text
    assert text.splitlines() == [
        "CRITICAL BILLING ALERT: HighWebhookFailureRate",
        "",
        "More than 5% of Stripe webhooks failed over the last 600 s.",
        "",
        "State:            Firing since 2025-03-01T10:00:00.000Z",
        "Severity:         critical",
        "Value:            7.5 > 5 (threshold)",
        "Reason:           Threshold Crossed: 1 datapoint [7.5 (01/03/25 10:00:00)] was greater than 5.0",
        "Labels:           group=webhook-failures, source=cloudwatch",
        "Receiver:         oncall-critical",
        "CloudWatch alarm: https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        "#alarmsV2:alarm/billwatch-prod-HighWebhookFailureRate",
        f"Dashboard:        {BILLING_DASHBOARD_URL}",
        "Runbook:          https://example.com/runbooks/webhook-failures.md",
        "",
        "-- billwatch alert dispatch",
    ]


def test_a_business_alert_email_shows_its_account_and_leaves_unknown_rows_out() -> None:
    text = email_message(Notification(usage_alert(value=None, threshold=None), FIRING, "billing-team")).text
    assert "Labels:   account_id=acct_42, feature=api_calls, group=usage, source=licensing" in text
    assert "Value:" not in text
    assert "Runbook:" not in text


def test_the_email_html_body_escapes_everything_it_quotes() -> None:
    message = email_message(
        notify(summary="<script>alert(1)</script>", reason="a & b", labels={"account_id": '"><img>'})
    )
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.html
    assert "<td>a &amp; b</td>" in message.html
    assert "account_id=&quot;&gt;&lt;img&gt;" in message.html
    assert '<a href="https://example.com/runbooks/webhook-failures.md">Runbook</a>' in message.html
    assert f'<a href="{html.escape(BILLING_DASHBOARD_URL)}">Dashboard</a>' in message.html
    assert "<script>alert(1)</script>" in message.text


def test_only_web_links_become_links() -> None:
    message = email_message(notify(runbook="javascript:alert(1)", dashboard_url="javascript:alert(2)"))
    assert "javascript:" not in message.html
    assert "javascript:" not in message.text


# --- PagerDuty


def test_a_pagerduty_trigger_carries_the_whole_alert_and_its_links() -> None:
    # The payload's fields and the routing key are pinned where PagerDuty receives them: the
    # integration tests.
    event = pagerduty_event(notify())
    assert {key: value for key, value in event.items() if key != "payload"} == {
        "event_action": "trigger",
        "dedup_key": pagerduty_dedup_key(notify()),
        "client": "billwatch",
        "client_url": alarm_alert().console_url,
        "links": [
            {"href": alarm_alert().console_url, "text": "CloudWatch alarm"},
            {"href": BILLING_DASHBOARD_URL, "text": "Dashboard"},
            {"href": "https://example.com/runbooks/webhook-failures.md", "text": "Runbook"},
        ],
    }
    assert set(event["payload"]) == {
        "summary",
        "source",
        "severity",
        "timestamp",
        "component",
        "group",
        "class",
        "custom_details",
    }


def test_a_pagerduty_resolve_names_only_the_incident() -> None:
    assert pagerduty_event(resolved()) == {
        "event_action": "resolve",
        "dedup_key": pagerduty_dedup_key(notify()),
    }


def test_one_alert_is_one_incident_and_a_test_is_another() -> None:
    key = pagerduty_dedup_key(notify())
    assert key.startswith("billwatch-")
    assert len(key) <= 255
    assert (
        key == pagerduty_dedup_key(notify(REPEAT, version="later|firing")) == pagerduty_dedup_key(resolved())
    )
    assert pagerduty_dedup_key(notify(fingerprint=ALARM_ARN + "2")) != key
    assert pagerduty_dedup_key(notify(TEST)) not in (key, "")


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(Severity.CRITICAL, "critical"), (Severity.WARNING, "warning"), (Severity.INFO, "info")],
)
def test_pagerduty_severities(severity: Severity, expected: str) -> None:
    assert pagerduty_event(notify(severity=severity))["payload"]["severity"] == expected


def test_a_long_pagerduty_summary_is_cut_to_1024_characters() -> None:
    summary = pagerduty_event(notify(summary="x" * 2000))["payload"]["summary"]
    assert len(summary) == PAGERDUTY_SUMMARY_LIMIT
    assert summary == "HighWebhookFailureRate: " + "x" * (1024 - 25) + "…"


def test_a_pagerduty_test_says_so_and_an_alert_without_links_has_none() -> None:
    assert pagerduty_event(notify(TEST))["payload"]["summary"].startswith("TEST: HighWebhookFailureRate")
    event = pagerduty_event(Notification(usage_alert(), FIRING, "billing-team"))
    assert event["links"] == []
    assert "client_url" not in event
    assert event["payload"]["custom_details"]["labels"]["account_id"] == "acct_42"


# --- generic webhook


LICENSING_DASHBOARD_URL = BILLING_DASHBOARD_URL.replace("-billing", "-licensing")


def test_the_webhook_payload_follows_schema_version_1() -> None:
    alert = usage_alert(
        runbook="https://example.com/runbooks/licensing.md", dashboard_url=LICENSING_DASHBOARD_URL
    )
    notification = Notification(alert, REPEAT, "billing-team")
    assert webhook_payload(notification) == {
        "version": "1",
        "id": notification_id(notification),
        "kind": "repeat",
        "receiver": "billing-team",
        "alert": {
            "fingerprint": "usage#acct_42#api_calls#95#2025-03-01",
            "name": "UsageThresholdCrossed",
            "severity": "warning",
            "status": "firing",
            "summary": "Account acct_42 has used 95% of its api_calls quota (950 of 1000)",
            "reason": "usage of api_calls crossed 95% of the quota",
            "since": "2025-03-02T08:30:00.000Z",
            "version": "2025-03-02T08:30:00.000Z|firing",
            "labels": {
                "source": "licensing",
                "group": "usage",
                "account_id": "acct_42",
                "feature": "api_calls",
            },
            "value": 950.0,
            "threshold": 950.0,
            "comparison": "GreaterThanOrEqualToThreshold",
            "evaluation": "950 >= 950 (threshold)",
            "runbook": "https://example.com/runbooks/licensing.md",
            "console_url": None,
            "dashboard_url": LICENSING_DASHBOARD_URL,
        },
    }


def test_a_notification_id_is_stable_per_notification_and_differs_between_notifications() -> None:
    first = notification_id(notify())
    assert first == notification_id(notify())
    assert first.startswith("bwn_")
    others = {
        notification_id(notify(REPEAT)),
        notification_id(notify(receiver="team-info")),
        notification_id(notify(version="2025-03-01T12:00:00.000Z|firing")),
        notification_id(notify(fingerprint="other")),
    }
    assert len(others) == 4
    assert first not in others
