"""The AlertDispatch handler end to end: SNS and alarm events in; Slack, PagerDuty and webhook
receivers on 127.0.0.1, SES and SQS on moto out; dedup, repeat, resolve, inhibition, silences and
stale alerts on a clock the tests set.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends

from tests.alert_events import (
    BILLING_DASHBOARD,
    LICENSING_DASHBOARD,
    RUNBOOKS,
    SENDER,
    alarm_message,
    direct_alarm_event,
    dispatcher_environment,
    routes_to,
    sns_event,
    usage_event,
)
from tests.alert_receivers import AlertReceivers, Answer, alert_receivers
from tests.scenarios import ADMIN_CALLER, OUTSIDER, DynamoDBOutage, iam_api_event
from tests.support import Clock, LambdaContext, load_handler

T0 = 1_796_137_200  # Tuesday 2026-12-01 15:00 UTC


@dataclass
class Dispatch:
    module: Any
    clock: Clock
    receivers: AlertReceivers
    dlq_url: str

    def __call__(self, event: dict[str, Any]) -> Any:
        return self.module.lambda_handler(event, LambdaContext())

    def at(self, moment: float) -> Dispatch:
        self.clock.now = moment
        return self

    def sweep(self) -> dict[str, int]:
        return self({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})

    def paths(self) -> list[str]:
        return [request.path for request in self.receivers.requests()]

    def dead_letters(self) -> list[dict[str, Any]]:
        messages = boto3.client("sqs").receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def sent_emails() -> list[Any]:
    return ses_backends["123456789012"]["us-east-1"].sent_messages


@pytest.fixture
def dispatch(aws, monkeypatch, tmp_path, metrics) -> Any:
    with alert_receivers() as receivers:
        dlq = dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        module = load_handler("alert_dispatch")
        clock = Clock(T0)
        module.dispatcher.clock = clock
        yield Dispatch(module, clock, receivers, dlq)


def alarm_in_cloudwatch(name: str, state: str) -> None:
    """The alarm as CloudWatch holds it, which the sweep asks before repeating."""
    client = boto3.client("cloudwatch")
    client.put_metric_alarm(
        AlarmName=f"billwatch-dev-{name}",
        MetricName="WebhookFailed",
        Namespace="Billwatch",
        Statistic="Sum",
        Period=600,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    client.set_alarm_state(AlarmName=f"billwatch-dev-{name}", StateValue=state, StateReason="test")


# ------------------------------------------------------------------ routing and messages


def test_a_critical_alarm_pages_emails_and_posts_once_with_what_people_need(dispatch, metrics) -> None:
    assert dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))["dispatched"] == 1
    (page,) = dispatch.receivers.requests("/pagerduty")
    body = page.json
    assert body["event_action"] == "trigger" and body["routing_key"] == "R0UT1NGKEY"
    assert body["payload"]["severity"] == "critical"
    assert "HighWebhookFailureRate" in body["payload"]["summary"]
    links = {link["href"] for link in body["links"]}
    assert any("console.aws.amazon.com/cloudwatch" in href for href in links)
    assert any(href.endswith("/webhook-failures.md") for href in links)
    (slack,) = dispatch.receivers.requests("/slack")
    text = json.dumps(slack.json)
    assert "HighWebhookFailureRate" in text and "7.5" in text and "5" in text
    (email,) = sent_emails()
    assert email.subject.startswith("CRITICAL BILLING ALERT: HighWebhookFailureRate")
    assert email.source == SENDER and email.destinations["ToAddresses"] == ["oncall@billwatch.test"]
    for channel in ("pagerduty", "email", "slack"):
        assert metrics.total("AlertDelivered", Channel=channel) == 1
    assert dispatch.paths().count("/fallback") == 0


def test_the_same_state_delivered_twice_is_sent_once(dispatch, metrics) -> None:
    message = alarm_message("HighWebhookFailureRate", "ALARM", T0)
    dispatch(sns_event(message))
    dispatch.at(T0 + 5)(sns_event(message))  # SNS retried, or the state was published twice
    dispatch(direct_alarm_event("HighWebhookFailureRate", "ALARM", T0))  # and again, the other way
    assert dispatch.paths().count("/pagerduty") == 1 and dispatch.paths().count("/slack") == 1
    assert metrics.total("AlertSuppressed", Reason="dedup") == 2


def delivered_or_retried(dispatch: Dispatch, event: dict[str, Any]) -> str:
    """What Lambda sees: the invocation succeeded, or it raised and will be retried."""
    try:
        dispatch(event)
    except RuntimeError as error:
        assert "will be retried" in str(error)
        return "retried"
    return "done"


def test_copies_arriving_at_once_are_sent_once(dispatch) -> None:
    message = alarm_message("HighWebhookFailureRate", "ALARM", T0)
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda _: delivered_or_retried(dispatch, sns_event(message)), range(6)))
    assert "done" in outcomes
    for _ in range(outcomes.count("retried")):  # Lambda's retries, after the first copy was sent
        assert delivered_or_retried(dispatch, sns_event(message)) == "done"
    assert dispatch.paths().count("/pagerduty") == 1 and dispatch.paths().count("/slack") == 1
    assert len(sent_emails()) == 1


def test_an_invocation_that_dies_while_sending_is_retried_and_the_notice_still_goes(
    dispatch, monkeypatch
) -> None:
    from billwatch.alerting.channels.pagerduty import PagerDutyChannel

    original, crashes = PagerDutyChannel.send, []

    def crash_once(self: Any, message: Any, timeout: float) -> Any:
        if not crashes:
            crashes.append(message)
            raise RuntimeError("the invocation died here")
        return original(self, message, timeout)

    monkeypatch.setattr(PagerDutyChannel, "send", crash_once)
    event = sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0))
    assert delivered_or_retried(dispatch, event) == "retried"
    assert dispatch.paths() == []
    assert delivered_or_retried(dispatch.at(T0 + 60), event) == "done"  # Lambda's retry of the same input
    assert dispatch.paths().count("/pagerduty") == 1 and dispatch.paths().count("/slack") == 1


def test_continue_sends_to_several_receivers(dispatch) -> None:
    message = alarm_message("PaymentFailureRateCritical", "ALARM", T0, runbook="payment-failures")
    dispatch(sns_event(message))
    assert sorted(set(dispatch.paths())) == ["/billing", "/pagerduty", "/slack"]
    (hook,) = dispatch.receivers.requests("/billing")
    assert hook.headers["billwatch-signature"].startswith("t=")
    assert hook.json["alert"]["name"] == "PaymentFailureRateCritical"


def test_every_channel_links_the_dashboard_and_the_runbook(dispatch) -> None:
    dispatch(sns_event(alarm_message("PaymentFailureRateCritical", "ALARM", T0, runbook="payment-failures")))
    runbook = f"{RUNBOOKS}/payment-failures.md"
    (page,) = dispatch.receivers.requests("/pagerduty")
    assert {"href": BILLING_DASHBOARD, "text": "Dashboard"} in page.json["links"]
    assert {"href": runbook, "text": "Runbook"} in page.json["links"]
    (slack,) = dispatch.receivers.requests("/slack")
    links = slack.json["blocks"][-1]["elements"][0]["text"]
    assert f"<{BILLING_DASHBOARD}|Dashboard>" in links and f"<{runbook}|Runbook>" in links
    (email,) = sent_emails()
    assert f'<a href="{BILLING_DASHBOARD}">Dashboard</a>' in email.body
    assert f'<a href="{runbook}">Runbook</a>' in email.body
    (hook,) = dispatch.receivers.requests("/billing")
    assert (hook.json["alert"]["dashboard_url"], hook.json["alert"]["runbook"]) == (
        BILLING_DASHBOARD,
        runbook,
    )


def test_a_business_alert_links_its_dashboard_and_runbook_too(dispatch) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (slack,) = dispatch.receivers.requests("/customers")
    links = slack.json["blocks"][-1]["elements"][0]["text"]
    assert f"<{LICENSING_DASHBOARD}|Dashboard>" in links
    assert f"<{RUNBOOKS}/licensing.md|Runbook>" in links


def test_with_the_shipped_routes_an_info_alert_reaches_the_info_email_list_every_12_hours(
    aws, monkeypatch, tmp_path
) -> None:
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        monkeypatch.delenv("ALERT_ROUTES_PATH")
        monkeypatch.setenv("ALERT_SECRETS", json.dumps({"slack_webhook_url": receivers.url("/slack")}))
        dispatch = Dispatch(load_handler("alert_dispatch"), Clock(T0), receivers, "")
        dispatch.module.dispatcher.clock = dispatch.clock
        alarm_in_cloudwatch("StripeWebhooksStalled", "ALARM")
        stalled = alarm_message("StripeWebhooksStalled", "ALARM", T0, severity="info")
        dispatch(sns_event(stalled, topic="alarms-info"))
        dispatch.at(T0 + 43200 - 60).sweep()
        assert dispatch.paths() == ["/slack"] and len(sent_emails()) == 1
        dispatch.at(T0 + 43200 + 60).sweep()
    assert dispatch.paths() == ["/slack", "/slack"]
    first, repeat = sent_emails()
    assert first.destinations["ToAddresses"] == repeat.destinations["ToAddresses"] == ["alerts@example.com"]
    assert first.subject == "Billing Info: StripeWebhooksStalled"
    assert repeat.subject == "Billing Info: StripeWebhooksStalled (still firing)"
    assert f'<a href="{BILLING_DASHBOARD}">Dashboard</a>' in first.body


def test_a_direct_alarm_invocation_is_read_like_the_sns_one(dispatch) -> None:
    dispatch(direct_alarm_event("StripeWebhookDown", "ALARM", T0))
    (page,) = dispatch.receivers.requests("/pagerduty")
    assert "StripeWebhookDown" in page.json["payload"]["summary"]


# ------------------------------------------------------------------ repeat and resolve


def test_a_firing_alarm_is_repeated_after_its_interval_and_resolved_when_ok(dispatch, metrics) -> None:
    alarm_in_cloudwatch("HighWebhookFailureRate", "ALARM")
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    dispatch.at(T0 + 3600).sweep()  # within the 2 h repeat interval of critical alerts
    assert dispatch.paths().count("/pagerduty") == 1
    assert metrics.total("AlertSuppressed", Reason="dedup") == 0  # not due is not a duplicate
    dispatch.at(T0 + 7200 + 60).sweep()
    first, again = dispatch.receivers.requests("/pagerduty")
    assert again.json["event_action"] == "trigger" and again.json["dedup_key"] == first.json["dedup_key"]
    dispatch.at(T0 + 7200 + 120).sweep()
    assert dispatch.paths().count("/pagerduty") == 2

    dispatch.at(T0 + 8000)(sns_event(alarm_message("HighWebhookFailureRate", "OK", T0 + 8000)))
    resolve = dispatch.receivers.requests("/pagerduty")[-1].json
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == first.json["dedup_key"]
    assert sent_emails()[-1].subject.startswith("RESOLVED: CRITICAL BILLING ALERT")
    dispatch.at(T0 + 20000).sweep()
    assert dispatch.paths().count("/pagerduty") == 3  # resolved alerts are not repeated


def test_send_resolved_false_keeps_the_route_quiet_when_it_clears(dispatch) -> None:
    dispatch(
        sns_event(alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing"))
    )
    dispatch.at(T0 + 600)(sns_event(alarm_message("HighQuotaDenialRate", "OK", T0 + 600, severity="warning")))
    assert dispatch.paths() == ["/slack"]


def test_a_missed_ok_is_noticed_by_the_sweep(dispatch) -> None:
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    alarm_in_cloudwatch("HighWebhookFailureRate", "OK")
    dispatch.at(T0 + 300).sweep()
    assert dispatch.receivers.requests("/pagerduty")[-1].json["event_action"] == "resolve"


def test_business_alerts_resolve_themselves_when_stale(dispatch) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (notice,) = dispatch.receivers.requests("/customers")
    assert "acct_1" in json.dumps(notice.json)
    dispatch.at(T0 + 1800).sweep()
    assert len(dispatch.receivers.requests("/customers")) == 1
    dispatch.at(T0 + 3700).sweep()
    stale = dispatch.receivers.requests("/customers")[-1]
    assert "resolved" in json.dumps(stale.json).lower()
    dispatch.at(T0 + 90000).sweep()
    assert len(dispatch.receivers.requests("/customers")) == 2


# ------------------------------------------------------------------ inhibition and silences


def test_a_critical_alarm_holds_the_warnings_and_infos_of_its_group(dispatch, metrics) -> None:
    alarm_in_cloudwatch("StripeWebhookDown", "ALARM")
    alarm_in_cloudwatch("StripeWebhooksStalled", "ALARM")
    dispatch(sns_event(alarm_message("StripeWebhookDown", "ALARM", T0)))
    stalled = alarm_message("StripeWebhooksStalled", "ALARM", T0 + 60, severity="info")
    dispatch.at(T0 + 60)(sns_event(stalled, topic="alarms-info"))
    other_group = alarm_message(
        "HighQuotaDenialRate", "ALARM", T0 + 60, severity="warning", runbook="licensing"
    )
    dispatch(sns_event(other_group, topic="alarms-warning"))
    slack = [json.dumps(r.json) for r in dispatch.receivers.requests("/slack")]
    assert any("StripeWebhookDown" in text for text in slack)
    assert any("HighQuotaDenialRate" in text for text in slack)
    assert not any("StripeWebhooksStalled" in text for text in slack)
    assert metrics.total("AlertSuppressed", Reason="inhibited") == 1

    dispatch.at(T0 + 600)(sns_event(alarm_message("StripeWebhookDown", "OK", T0 + 600)))
    alarm_in_cloudwatch("StripeWebhookDown", "OK")
    dispatch.at(T0 + 660).sweep()  # the inhibition is over: the stalled alarm is news now
    assert any("StripeWebhooksStalled" in json.dumps(r.json) for r in dispatch.receivers.requests("/slack"))


def test_scholarlinks_5_minute_webhook_rule_holds_seed_000s_10_minute_page(dispatch, metrics) -> None:
    """Both rules page on the same failures; whoever was paged by the first is not paged again."""
    alarm_in_cloudwatch("StripeWebhookFailures", "ALARM")
    dispatch(sns_event(alarm_message("StripeWebhookFailures", "ALARM", T0)))
    dispatch.at(T0 + 300)(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0 + 300)))
    paged = [json.dumps(r.json) for r in dispatch.receivers.requests("/pagerduty")]
    assert len(paged) == 1 and "StripeWebhookFailures" in paged[0]
    assert metrics.total("AlertSuppressed", Reason="inhibited") == 1


def test_an_outage_of_the_alert_store_pages_once_and_records_the_alert_when_it_is_back(
    dispatch, monkeypatch
) -> None:
    """DynamoDB down is also when the alarms about it fire: the page goes out without the store."""
    outage = DynamoDBOutage(monkeypatch, {"PutItem", "UpdateItem"})
    firing = sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0))
    with outage.during():
        for _attempt in range(2):  # Lambda retries a failed SNS invocation
            with pytest.raises(RuntimeError, match="could not be dispatched"):
                dispatch(firing)
    assert len(dispatch.receivers.requests("/pagerduty")) == 1
    dispatch(firing)  # the retry once DynamoDB answers again: recorded, not sent twice
    assert len(dispatch.receivers.requests("/pagerduty")) == 1
    status, listed = admin(dispatch, "GET", "/admin/alerts")
    assert status == 200 and [alert["name"] for alert in listed["alerts"]] == ["HighWebhookFailureRate"]
    assert listed["alerts"][0]["notified"][0]["receiver"] == "oncall"
    dispatch.at(T0 + 600)(sns_event(alarm_message("HighWebhookFailureRate", "OK", T0 + 600)))
    resolved = [r.json for r in dispatch.receivers.requests("/pagerduty")][1]
    assert resolved["event_action"] == "resolve"


def test_an_alert_paged_while_the_store_was_down_is_resolved_though_never_recorded(
    dispatch, monkeypatch
) -> None:
    """Every retry of the firing fell in the outage (the input went to the DLQ): the OK that comes
    after it still tells whoever was paged."""
    outage = DynamoDBOutage(monkeypatch, {"PutItem", "UpdateItem"})
    with outage.during(), pytest.raises(RuntimeError):
        dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    dispatch.at(T0 + 600)(sns_event(alarm_message("HighWebhookFailureRate", "OK", T0 + 600)))
    actions = [r.json["event_action"] for r in dispatch.receivers.requests("/pagerduty")]
    assert actions == ["trigger", "resolve"]


def admin(dispatch: Dispatch, method: str, path: str, body: Any = None, caller: str = ADMIN_CALLER) -> Any:
    result = dispatch(iam_api_event(method, path, body, caller))
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else None


def test_a_silence_records_matching_alerts_without_sending_them(dispatch, metrics) -> None:
    window = {
        "matchers": ["alertname=HighQuotaDenialRate"],
        "ends_at": "2026-12-01T16:00:00Z",
        "comment": "pricing migration",
    }
    status, silence = admin(dispatch, "POST", "/admin/silences", window)
    assert status == 201 and silence["created_by"] == ADMIN_CALLER
    dispatch(
        sns_event(alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing"))
    )
    assert dispatch.paths() == [] and metrics.total("AlertSuppressed", Reason="silenced") == 1
    status, listed = admin(dispatch, "GET", "/admin/silences")
    assert [s["id"] for s in listed["silences"]] == [silence["id"]] and listed["silences"][0]["active"]
    assert admin(dispatch, "DELETE", f"/admin/silences/{silence['id']}")[0] == 204
    assert admin(dispatch, "DELETE", f"/admin/silences/{silence['id']}")[0] == 404


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"matchers": ["alertname"], "ends_at": "2026-12-01T16:00:00Z", "comment": "c"}, "matchers.0"),
        (
            {"matchers": ["alertname=~(unclosed"], "ends_at": "2026-12-01T16:00:00Z", "comment": "c"},
            "matchers.0",
        ),
        ({"matchers": ["alertname=x"], "ends_at": "2026-11-01T16:00:00Z", "comment": "c"}, "ends_at"),
        ({"matchers": [], "ends_at": "2026-12-01T16:00:00Z", "comment": "c"}, "matchers"),
        ({"matchers": ["alertname=x"], "ends_at": "tomorrow", "comment": "c"}, "ends_at"),
        ({"matchers": ["alertname=x"], "ends_at": "2026-12-01T16:00:00Z"}, "comment"),
    ],
)
def test_a_bad_silence_gets_400_naming_the_field(dispatch, body: dict, problem: str) -> None:
    status, answer = admin(dispatch, "POST", "/admin/silences", body)
    assert status == 400 and problem in answer["message"]
    assert admin(dispatch, "GET", "/admin/silences")[1] == {"silences": []}


def test_silences_are_for_admins_only(dispatch, metrics) -> None:
    status, _ = admin(dispatch, "GET", "/admin/silences", caller=OUTSIDER)
    assert status == 403 and metrics.total("UnauthorizedAdminAccess") == 1


# ------------------------------------------------------------------ alerts by hand


def alert_ids(dispatch: Dispatch) -> dict[str, str]:
    """Name -> id of what fires, as GET /admin/alerts lists it."""
    status, listed = admin(dispatch, "GET", "/admin/alerts")
    assert status == 200
    return {alert["name"]: alert["id"] for alert in listed["alerts"]}


def test_the_alert_list_shows_what_fires_its_severity_since_who_was_told_and_its_links(dispatch) -> None:
    dispatch(sns_event(alarm_message("StripeAPIErrorRate", "ALARM", T0 - 600, runbook="stripe-api")))
    dispatch(sns_event(alarm_message("StripeAPIErrorRate", "OK", T0 - 300, runbook="stripe-api")))
    dispatch(sns_event(usage_event("acct_1", 80, T0 - 60), topic="usage-events"))
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    status, listed = admin(dispatch, "GET", "/admin/alerts")
    assert status == 200
    critical, usage = listed["alerts"]  # the resolved StripeAPIErrorRate is not listed; critical first
    assert (critical["name"], critical["severity"], critical["status"]) == (
        "HighWebhookFailureRate",
        "critical",
        "firing",
    )
    assert critical["since"] == "2026-12-01T15:00:00.000Z"
    assert critical["runbook"].endswith("/webhook-failures.md") and "cloudwatch" in critical["console_url"]
    assert critical["dashboard_url"] == BILLING_DASHBOARD
    assert critical["notified"] == [
        {
            "receiver": "oncall",
            "channels": ["pagerduty", "email", "slack"],
            "told": "firing",
            "about_this_state": True,
            "at": "2026-12-01T15:00:00.000Z",
        }
    ]
    assert critical["resolvable_by_hand"] is False and critical["acknowledged"] is None
    assert (usage["name"], usage["severity"], usage["since"]) == (
        "UsageThresholdCrossed",
        "warning",
        "2026-12-01T14:59:00.000Z",
    )
    assert [told["receiver"] for told in usage["notified"]] == ["customers"]
    assert usage["resolvable_by_hand"] is True
    assert (usage["runbook"], usage["dashboard_url"]) == (f"{RUNBOOKS}/licensing.md", LICENSING_DASHBOARD)


def test_an_acknowledged_alert_is_not_repeated_until_it_changes(dispatch, metrics) -> None:
    alarm_in_cloudwatch("HighWebhookFailureRate", "ALARM")
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    (alert_id,) = alert_ids(dispatch).values()
    status, acked = admin(
        dispatch.at(T0 + 60), "POST", f"/admin/alerts/{alert_id}/ack", {"reason": " INC-42 "}
    )
    assert status == 200
    assert acked["acknowledged"] == {"by": ADMIN_CALLER, "at": "2026-12-01T15:01:00.000Z", "reason": "INC-42"}
    (audit,) = [log for log in metrics.logs() if log["message"] == "Alert acknowledged"]
    assert (audit["caller_arn"], audit["operation"], audit["alert_id"], audit["reason"]) == (
        ADMIN_CALLER,
        "acknowledge",
        alert_id,
        "INC-42",
    )
    assert dispatch.at(T0 + 7200 + 60).sweep() == {"acknowledged": 1}  # the repeat was due
    assert dispatch.paths().count("/pagerduty") == 1
    assert admin(dispatch, "GET", "/admin/alerts")[1]["alerts"][0]["acknowledged"]["reason"] == "INC-42"

    dispatch.at(T0 + 8000)(sns_event(alarm_message("HighWebhookFailureRate", "OK", T0 + 8000)))
    dispatch.at(T0 + 9000)(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0 + 9000)))
    assert dispatch.paths().count("/pagerduty") == 3  # the resolve, and the new firing: both news
    (again,) = admin(dispatch, "GET", "/admin/alerts")[1]["alerts"]
    assert again["id"] == alert_id and again["acknowledged"] is None
    dispatch.at(T0 + 9000 + 7200 + 60).sweep()
    assert dispatch.paths().count("/pagerduty") == 4  # the new state repeats again


def test_a_business_alert_resolved_by_hand_tells_who_heard_it_fire_and_keeps_who_and_why(
    dispatch, metrics
) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    reason = {"reason": "the customer upgraded by phone"}
    status, resolved = admin(dispatch.at(T0 + 120), "POST", f"/admin/alerts/{alert_id}/resolve", reason)
    assert status == 200 and resolved["status"] == "resolved"
    assert resolved["resolved_by_hand"] == {
        "by": ADMIN_CALLER,
        "at": "2026-12-01T15:02:00.000Z",
        "reason": "the customer upgraded by phone",
    }
    _, notice = dispatch.receivers.requests("/customers")
    assert "Resolved" in json.dumps(notice.json) and "upgraded by phone" in json.dumps(notice.json)
    assert admin(dispatch, "GET", "/admin/alerts")[1]["alerts"] == []
    stored = dispatch.module.dispatcher.store.alert(resolved["fingerprint"])
    assert stored.resolved_by_hand.by == ADMIN_CALLER and stored.alert.status == "resolved"
    (audit,) = [log for log in metrics.logs() if log["message"] == "Alert resolved by hand"]
    assert (audit["caller_arn"], audit["operation"], audit["alert_id"]) == (ADMIN_CALLER, "resolve", alert_id)

    status, answer = admin(dispatch, "POST", f"/admin/alerts/{alert_id}/resolve", reason)
    assert status == 409 and answer["error"] == "not_firing"
    dispatch.at(T0 + 90000).sweep()
    assert len(dispatch.receivers.requests("/customers")) == 2


@pytest.mark.parametrize("stamped_ahead", [0, 30], ids=["same-second", "event-clock-ahead"])
def test_a_redelivery_of_a_state_resolved_by_hand_is_a_duplicate(dispatch, stamped_ahead: int) -> None:
    """The resolved state sorts after the firing one it replaces, even when that one is stamped later
    than the dispatcher's clock reads."""
    firing = sns_event(usage_event("acct_1", 95, T0 + stamped_ahead), topic="usage-events")
    dispatch.at(T0)(firing)
    (alert_id,) = alert_ids(dispatch).values()
    assert (
        admin(dispatch.at(T0 + 5), "POST", f"/admin/alerts/{alert_id}/resolve", {"reason": "paid"})[0] == 200
    )
    dispatch.at(T0 + 10)(firing)
    assert admin(dispatch, "GET", "/admin/alerts")[1]["alerts"] == []
    assert len(dispatch.receivers.requests("/customers")) == 2  # fired, resolved: not fired again


def test_a_resolve_stored_but_not_told_answers_200_and_says_so(dispatch, monkeypatch) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    outage = DynamoDBOutage(monkeypatch, {"UpdateItem"})  # the notices' claims, after the state is put
    with outage.during():
        status, answer = admin(
            dispatch.at(T0 + 60), "POST", f"/admin/alerts/{alert_id}/resolve", {"reason": "paid"}
        )
    assert (status, answer["status"], answer["receivers_told"]) == (200, "resolved", False)
    assert admin(dispatch, "GET", "/admin/alerts")[1]["alerts"] == []


def test_a_business_alert_resolved_by_hand_stays_quiet_where_the_route_sends_no_resolves(
    dispatch, monkeypatch, tmp_path
) -> None:
    routes = routes_to(dispatch.receivers)
    routes["route"]["routes"][1]["send_resolved"] = False  # the business events' route
    (tmp_path / "quiet.json").write_text(json.dumps(routes))
    monkeypatch.setenv("ALERT_ROUTES_PATH", str(tmp_path / "quiet.json"))
    dispatch.module = load_handler("alert_dispatch")
    dispatch.module.dispatcher.clock = dispatch.clock
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    assert admin(dispatch, "POST", f"/admin/alerts/{alert_id}/resolve", {"reason": "paid"})[0] == 200
    assert len(dispatch.receivers.requests("/customers")) == 1
    assert admin(dispatch, "GET", "/admin/alerts")[1]["alerts"] == []


def test_an_alarm_alert_is_not_resolved_by_hand(dispatch) -> None:
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    (alert_id,) = alert_ids(dispatch).values()
    status, answer = admin(dispatch, "POST", f"/admin/alerts/{alert_id}/resolve", {"reason": "fixed"})
    assert status == 409 and answer["error"] == "state_owned_by_cloudwatch"
    assert "CloudWatch owns its state" in answer["message"] and "acknowledge" in answer["message"]
    assert list(alert_ids(dispatch)) == ["HighWebhookFailureRate"]
    assert dispatch.paths().count("/pagerduty") == 1


def _unknown_id() -> str:
    from billwatch.alerting.store import alert_id

    return alert_id("usage#acct_nobody#api_calls#95#")


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        pytest.param("{unknown}/ack", {"reason": "r"}, 404, "no alert", id="unknown id"),
        pytest.param("{unknown}/resolve", {"reason": "r"}, 404, "no alert", id="unknown id, resolve"),
        pytest.param("not*an*id/ack", {"reason": "r"}, 400, "alert_id", id="not base64url"),
        pytest.param("A/ack", {"reason": "r"}, 400, "not an alert id", id="not base64"),
        pytest.param("QR/ack", {"reason": "r"}, 400, "not an alert id", id="another spelling"),
        pytest.param("_w/resolve", {"reason": "r"}, 400, "not an alert id", id="not UTF-8"),
        pytest.param("{id}/ack", {}, 400, "reason", id="no reason"),
        pytest.param("{id}/resolve", {"reason": "  "}, 400, "reason", id="empty reason"),
        pytest.param("{id}/resolve", {"reason": "x" * 501}, 400, "reason", id="reason too long"),
        pytest.param("{id}/ack", {"reason": 42}, 400, "reason", id="reason not text"),
        pytest.param("{id}/ack", {"reason": "r", "until": "never"}, 400, "until", id="unknown field"),
        pytest.param("{id}/resolve", None, 400, "body", id="no body"),
        pytest.param("{id}/resolve", [{"reason": "first"}, 42], 400, "JSON object", id="an array"),
        pytest.param("{id}/ack", {"reason": "a\u0000b"}, 400, "control characters", id="a control character"),
        pytest.param("{id}/ack", {"reason": "\u001b[31mred"}, 400, "control characters", id="an escape"),
        pytest.param("{id}/resolve", {"reason": "\u200b"}, 400, "say why", id="only invisible"),
    ],
)
def test_a_bad_alert_request_gets_a_4xx_naming_the_problem_and_changes_nothing(
    dispatch, path: str, body: Any, status: int, named: str
) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    before = admin(dispatch, "GET", "/admin/alerts")[1]
    answered, answer = admin(
        dispatch, "POST", "/admin/alerts/" + path.format(id=alert_id, unknown=_unknown_id()), body
    )
    assert answered == status and named in answer["message"], answer
    assert admin(dispatch, "GET", "/admin/alerts")[1] == before
    assert len(dispatch.receivers.requests("/customers")) == 1


def _list(dispatch: Dispatch, query: dict[str, str]) -> tuple[int, Any]:
    event = iam_api_event("GET", "/admin/alerts", None, ADMIN_CALLER)
    event["queryStringParameters"] = query
    event["rawQueryString"] = "&".join(f"{name}={value}" for name, value in query.items())
    answer = dispatch(event)
    return answer["statusCode"], json.loads(answer["body"])


def test_the_alert_list_comes_a_page_at_a_time(dispatch, aws_calls) -> None:
    for n in range(5):
        dispatch.at(T0 + n)(sns_event(usage_event(f"acct_{n}", 80, T0 + n), topic="usage-events"))
    aws_calls.clear()
    status, first = _list(dispatch, {"limit": "2"})
    assert (status, first["total"], first["next_offset"]) == (200, 5, 2)
    assert aws_calls.count("Query") == 1 + 2  # the firing alerts, then each listed alert's notices
    _, second = _list(dispatch, {"limit": "2", "offset": "2"})
    _, last = _list(dispatch, {"limit": "2", "offset": "4"})
    assert last["next_offset"] is None
    listed = [alert["labels"]["account_id"] for page in (first, second, last) for alert in page["alerts"]]
    assert listed == [f"acct_{n}" for n in range(5)]  # the oldest first, each once


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"limit": "ten"}])
def test_a_bad_page_is_a_400_naming_it(dispatch, query: dict[str, str]) -> None:
    status, answer = _list(dispatch, query)
    assert status == 400 and next(iter(query)) in json.dumps(answer), answer


def test_an_alert_request_that_is_not_json_gets_a_415(dispatch) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    event = iam_api_event("POST", f"/admin/alerts/{alert_id}/resolve", None, ADMIN_CALLER)
    event.update(body="reason=paid", headers={"content-type": "application/x-www-form-urlencoded"})
    assert dispatch(event)["statusCode"] == 415
    assert list(alert_ids(dispatch)) == ["UsageThresholdCrossed"]


def test_alerts_are_for_admins_only(dispatch, metrics) -> None:
    dispatch(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"))
    (alert_id,) = alert_ids(dispatch).values()
    for method, path in [
        ("GET", "/admin/alerts"),
        ("POST", f"/admin/alerts/{alert_id}/ack"),
        ("POST", f"/admin/alerts/{alert_id}/resolve"),
    ]:
        body = {"reason": "r"} if method == "POST" else None
        assert admin(dispatch, method, path, body, caller=OUTSIDER)[0] == 403
    assert metrics.total("UnauthorizedAdminAccess") == 3
    (alert,) = admin(dispatch, "GET", "/admin/alerts")[1]["alerts"]
    assert alert["acknowledged"] is None and len(dispatch.receivers.requests("/customers")) == 1


# ------------------------------------------------------------------ delivery failures


def test_a_critical_alert_whose_channel_fails_goes_to_the_fallback(dispatch, metrics) -> None:
    dispatch.receivers.respond("/pagerduty", [Answer(500)])
    dispatch(sns_event(alarm_message("HighWebhookFailureRate", "ALARM", T0)))
    assert dispatch.paths().count("/pagerduty") == 4  # the first try and three retries
    (fallback,) = dispatch.receivers.requests("/fallback")
    assert fallback.json["alert"]["name"] == "HighWebhookFailureRate"
    assert metrics.total("AlertDeliveryFailed", Channel="pagerduty") == 1
    assert metrics.total("AlertDelivered", Channel="webhook") == 1
    assert dispatch.dead_letters() == []


def test_a_permanent_error_is_not_retried_flags_the_channel_and_dead_letters(dispatch, metrics) -> None:
    dispatch.receivers.respond("/slack", [Answer(404)])
    dispatch(
        sns_event(alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing"))
    )
    assert dispatch.paths() == ["/slack"]
    assert metrics.total("AlertDeliveryFailed", Channel="slack") == 1
    (broken,) = list(dispatch.module.dispatcher.store.broken())
    assert (broken["receiver"], broken["channel"], broken["status"]) == ("team", "slack", 404)
    (letter,) = dispatch.dead_letters()
    assert letter["reason"] == "undelivered" and letter["failed_channels"] == ["slack"]
    status, listed = admin(dispatch, "GET", "/admin/alert-channels")
    assert status == 200 and [(b["receiver"], b["status"]) for b in listed["broken"]] == [("team", 404)]

    dispatch.receivers.respond("/slack", [Answer(200)])  # the hook was fixed
    other = alarm_message("StripeAPIErrorRate", "ALARM", T0 + 60, severity="warning", runbook="stripe-api")
    dispatch.at(T0 + 60)(sns_event(other))
    assert list(dispatch.module.dispatcher.store.broken()) == []


def test_a_rate_limited_channel_is_retried_after_retry_after(dispatch) -> None:
    dispatch.receivers.respond("/slack", [Answer(429, retry_after=1), Answer(200)])
    dispatch(
        sns_event(alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing"))
    )
    first, second = dispatch.receivers.requests("/slack")
    assert second.at - first.at >= 0.9
    assert dispatch.dead_letters() == []


# ------------------------------------------------------------------ input


def test_a_malformed_record_is_counted_and_kept_without_losing_its_neighbours(dispatch, metrics) -> None:
    good = alarm_message("HighWebhookFailureRate", "ALARM", T0)
    other = alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing")
    result = dispatch(sns_event(good, "{not json", {"AlarmName": "x"}, other))
    assert result == {"records": 4, "dispatched": 2, "rejected": 2, "failed": 0}
    assert dispatch.paths().count("/pagerduty") == 1 and dispatch.paths().count("/slack") == 2
    assert metrics.total("AlertInputRejected") == 2
    problems = sorted(letter["problem"] for letter in dispatch.dead_letters())
    assert problems == ["AlarmArn is missing or not a string", "Sns.Message is not JSON"]


@pytest.mark.parametrize(
    ("configured", "severity"), [("", "critical"), ("payment_failed=warning", "warning")]
)
def test_a_failed_payment_from_the_intake_reaches_the_billing_route(
    dispatch, monkeypatch, configured: str, severity: str
) -> None:
    """One severity, from one setting, for the SNS event and for the alert it raises."""
    from devtools import stripe_events as se
    from tests.support import WEBHOOK_SECRET, WebhookClient

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="billing-events")["TopicArn"]
    queue = sqs.create_queue(QueueName="billing-events-tap")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    monkeypatch.setenv("BILLING_EVENTS_TOPIC_ARN", topic)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ALERT_SEVERITIES", configured)
    webhooks = WebhookClient(load_handler("webhook_intake"))
    invoice = se.invoice(
        id="in_9", customer="cus_9", status="open", subscription_metadata={"account_id": "acct_9"}
    )
    event = se.event("invoice.payment_failed", invoice)
    assert webhooks.post(event).status == 200
    assert webhooks.post(event).status == 200  # Stripe's retry: announced once
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"])["severity"] == severity
    dispatch(sns_event(message["Body"], topic="billing-events"))
    (notice,) = dispatch.receivers.requests("/customers")
    assert f"{severity.upper()}: PaymentFailed" in notice.json["text"]
    assert "acct_9" in json.dumps(notice.json) and "in_9" in json.dumps(notice.json)


def test_test_alerts_go_through_every_configured_route(dispatch) -> None:
    result = dispatch({"billwatch": "test-alerts"})
    assert sorted((r["severity"], r["receiver"]) for r in result["sent"]) == [
        ("critical", "oncall"),
        ("info", "team"),
        ("warning", "team"),
    ]
    assert sorted(set(dispatch.paths())) == ["/pagerduty", "/slack"]
    assert all(email.subject.startswith("TEST: ") for email in sent_emails())


def test_what_an_alert_costs_in_aws_requests(dispatch, aws_calls) -> None:
    warning = alarm_message("HighQuotaDenialRate", "ALARM", T0, severity="warning", runbook="licensing")
    dispatch(sns_event(warning))  # the container's first also reads which channels are flagged broken
    aws_calls.clear()
    other = alarm_message("StripeAPIErrorRate", "ALARM", T0, severity="warning", runbook="stripe-api")
    dispatch(sns_event(other))
    # the state, the silences, the firing alerts (an inhibit rule could hold a warning), claim, sent
    assert aws_calls == ["PutItem", "Query", "Query", "UpdateItem", "UpdateItem"]
    aws_calls.clear()
    dispatch(sns_event(other))  # a duplicate is checked receiver by receiver: nobody gets it twice
    assert aws_calls == ["PutItem", "GetItem", "Query", "Query", "UpdateItem", "GetItem"]
    aws_calls.clear()
    older = alarm_message("StripeAPIErrorRate", "OK", T0 - 600, severity="warning", runbook="stripe-api")
    dispatch(sns_event(older))  # a late, older state tells nobody anything
    assert aws_calls == ["PutItem", "GetItem"]
