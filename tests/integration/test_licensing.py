"""Licensing on moto's DynamoDB: entitlements, atomic quotas, periods and tier changes."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from billwatch.core.audit import AuditTrail
from billwatch.core.dynamo import StoreRejected
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, bind_billing_table, bind_idempotency_table
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_policy import month_period
from billwatch.licensing.service import Licensing, UsageRequestError
from billwatch.licensing.usage_events import usage_event_publisher
from devtools import stripe_events as se
from tests.support import Clock

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")
NOV_15 = int(dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def clock() -> Clock:
    return Clock(NOV_15)


@pytest.fixture
def licensing(aws, clock, metrics) -> Licensing:
    bind_billing_table(aws["BillingStateTable"])
    metrics_recorder = MetricsRecorder("Billwatch", "billwatch")
    audit = AuditTrail(aws["AuditTable"], 400, metrics_recorder, clock)
    return Licensing(CATALOG, metrics_recorder, clock, audit=audit)


def make_pro(account_id: str, period_start: int, period_end: int) -> None:
    BillingAccount(
        account_id,
        tier="PRO",
        subscription_status="active",
        current_period_start=period_start,
        current_period_end=period_end,
    ).save()


def test_an_unseen_account_gets_the_free_defaults(licensing) -> None:
    view = licensing.entitlements("acct_new")
    assert view["tier"] == "FREE"
    assert view["subscription"] == {"status": None, "current_period_end": None, "cancel_at_period_end": False}
    assert view["features"]["api_calls"] == {
        "enabled": True,
        "limit": 1000,
        "used": 0,
        "remaining": 1000,
        "resets_at": "2026-12-01T00:00:00Z",
    }
    assert view["features"]["sso"]["enabled"] is False


def test_usage_counts_up_to_the_limit_and_never_in_part(licensing) -> None:
    assert licensing.use("acct_1", "exports", 7).as_dict() == {
        "allowed": True,
        "feature": "exports",
        "used": 7,
        "limit": 10,
        "remaining": 3,
        "resets_at": "2026-12-01T00:00:00Z",
    }
    denied = licensing.use("acct_1", "exports", 4)
    assert (denied.allowed, denied.reason, denied.used, denied.remaining) == (False, "quota_exceeded", 7, 3)
    assert licensing.use("acct_1", "exports", 3).remaining == 0
    assert licensing.entitlements("acct_1")["features"]["exports"]["used"] == 10


def test_a_check_is_exactly_one_dynamodb_request(licensing, aws_calls) -> None:
    calls = aws_calls
    licensing.use("acct_1", "api_calls", 1)
    licensing.use("acct_1", "exports", 7)
    licensing.use("acct_1", "exports", 4)  # denied
    assert calls == ["UpdateItem", "UpdateItem", "UpdateItem"]
    # Crossing a threshold also records that it was announced (once per threshold and period),
    # with the announcement as a side-effects entry, which goes once it is published.
    calls.clear()
    licensing.use("acct_1", "exports", 1)
    assert calls == ["UpdateItem", "UpdateItem", "UpdateItem"]


def test_eight_threads_hammering_one_quota_get_exactly_the_limit(licensing) -> None:
    allowed = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(5):
            decision = licensing.use("acct_busy", "exports", 1)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 10 and allowed.count(False) == 30
    assert licensing.entitlements("acct_busy")["features"]["exports"]["used"] == 10


def test_features_outside_the_plan(licensing) -> None:
    assert licensing.use("acct_1", "sso", 1).as_dict() == {
        "allowed": False,
        "feature": "sso",
        "reason": "feature_not_in_plan",
    }
    assert licensing.use("acct_1", "teleport", 1).reason == "feature_not_in_plan"
    make_pro("acct_pro", NOV_15 - 86400, NOV_15 + 29 * 86400)
    assert licensing.use("acct_pro", "sso", 1).allowed
    BillingAccount("acct_ent", entitlement_lookup_keys=["teleport"]).save()
    assert licensing.use("acct_ent", "teleport", 1).allowed
    assert licensing.entitlements("acct_ent")["features"]["teleport"]["enabled"] is True


@pytest.mark.parametrize("quantity", [0, -1, 10**9, 1.5, True, "3"])
def test_bad_quantities_are_refused(licensing, quantity) -> None:
    with pytest.raises(UsageRequestError, match="quantity"):
        licensing.use("acct_1", "exports", quantity)


def test_an_upgrade_raises_the_limit_at_once_and_a_downgrade_applies_to_usage_counted(
    licensing, clock
) -> None:
    assert licensing.use("acct_1", "exports", 10).allowed
    assert not licensing.use("acct_1", "exports", 1).allowed
    # Upgraded mid-month: the paid period starts now, with the PRO quota.
    make_pro("acct_1", clock.now, clock.now + 30 * 86400)
    assert licensing.entitlements("acct_1")["features"]["exports"]["limit"] == 1000
    decision = licensing.use("acct_1", "exports", 20)
    assert (decision.allowed, decision.limit, decision.used) == (True, 1000, 20)
    # Downgraded later in the same month: FREE's limit applies to what was counted.
    clock.now += 3600
    BillingAccount("acct_1", tier="FREE", subscription_status="canceled").update(
        actions=[BillingAccount.tier.set("FREE"), BillingAccount.subscription_status.set("canceled")]
    )
    denied = licensing.use("acct_1", "exports", 1)
    assert (denied.allowed, denied.used, denied.limit, denied.remaining) == (False, 20, 10, 0)


@pytest.mark.parametrize(
    ("last_use", "next_use", "resets_at"),
    [
        ((2026, 11, 30, 23, 59, 59), (2026, 12, 1, 0, 0, 0), "2027-01-01T00:00:00Z"),
        ((2028, 2, 28, 12, 0, 0), (2028, 2, 29, 23, 0, 0), None),
        ((2028, 2, 29, 23, 59, 59), (2028, 3, 1, 0, 0, 1), "2028-04-01T00:00:00Z"),
        ((2026, 12, 31, 23, 59, 59), (2027, 1, 1, 0, 0, 0), "2027-02-01T00:00:00Z"),
    ],
)
def test_free_periods_are_calendar_months_in_utc(licensing, clock, last_use, next_use, resets_at) -> None:
    clock.now = int(dt.datetime(*last_use, tzinfo=dt.UTC).timestamp())
    assert licensing.use("acct_1", "exports", 10).allowed
    clock.now = int(dt.datetime(*next_use, tzinfo=dt.UTC).timestamp())
    decision = licensing.use("acct_1", "exports", 4)
    if resets_at is None:  # same month (leap day): still exhausted
        assert not decision.allowed and decision.resets_at == "2028-03-01T00:00:00Z"
    else:
        assert decision.allowed and decision.used == 4 and decision.resets_at == resets_at


def test_a_new_period_starts_once_and_keeps_usage_recorded_after_it(licensing, clock, monkeypatch) -> None:
    clock.now = int(dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC).timestamp())
    licensing.use("acct_1", "exports", 9)
    licensing.use("acct_1", "api_calls", 500)
    clock.now = int(dt.datetime(2026, 11, 1, 0, 5, tzinfo=dt.UTC).timestamp())
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(licensing.use("acct_1", "exports", 1)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.allowed for r in results)
    view = licensing.entitlements("acct_1")["features"]
    assert view["exports"]["used"] == 8 and view["api_calls"]["used"] == 0


def test_paid_periods_follow_the_subscription(licensing, clock) -> None:
    start = NOV_15 - 86400
    make_pro("acct_pro", start, start + 30 * 86400)
    assert licensing.use("acct_pro", "exports", 1000).allowed
    assert not licensing.use("acct_pro", "exports", 1).allowed
    # The renewal webhook moves the period: the counters start again.
    clock.now = start + 30 * 86400 + 60
    BillingAccount("acct_pro").update(
        actions=[
            BillingAccount.current_period_start.set(start + 30 * 86400),
            BillingAccount.current_period_end.set(start + 60 * 86400),
        ]
    )
    decision = licensing.use("acct_pro", "exports", 5)
    assert decision.allowed and decision.used == 5
    assert decision.resets_at == dt.datetime.fromtimestamp(start + 60 * 86400, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_metrics_and_thresholds(licensing, metrics) -> None:
    licensing.use("acct_1", "exports", 8)  # crosses 80 %
    licensing.use("acct_1", "exports", 1)  # crosses 90 %
    decision = licensing.use("acct_1", "exports", 1)  # crosses 95 % and 100 %
    assert decision.crossed_thresholds == (95, 100)
    licensing.use("acct_1", "exports", 1)  # denied
    licensing._metrics.flush()
    assert metrics.total("QuotaCheck", Feature="exports", Result="allowed") == 3
    assert metrics.total("QuotaCheck", Feature="exports", Result="denied") == 1
    assert [metrics.total("LimitHit", Threshold=t) for t in ("80", "90", "100")] == [1, 1, 1]
    assert metrics.total("QuotaConflict") == 1


def test_an_end_to_end_upgrade_by_webhooks_shows_pro_limits(webhooks, licensing) -> None:
    sub = se.subscription(id="sub_1", customer="cus_1", metadata={"account_id": "acct_e2e"})
    assert webhooks.post(se.event("customer.subscription.created", sub)).status == 200
    view = licensing.entitlements("acct_e2e")
    assert view["tier"] == "PRO" and view["features"]["api_calls"]["limit"] == 100_000
    assert view["features"]["sso"]["enabled"] is True


def test_month_period_bounds() -> None:
    leap = month_period(dt.datetime(2028, 2, 10, tzinfo=dt.UTC).timestamp())
    assert leap.end - leap.start == 29 * 86400


@pytest.fixture
def usage_topic(aws):
    import boto3

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="usage-events")["TopicArn"]
    queue = sqs.create_queue(QueueName="usage-events-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )

    def received() -> list[dict]:
        messages = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            messages += [json.loads(m["Body"]) for m in batch]
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return messages

    return topic, received


def test_threshold_events_go_out_once_per_threshold_and_period(aws, clock, usage_topic) -> None:
    topic, received = usage_topic
    bind_billing_table(aws["BillingStateTable"])
    licensing = Licensing(
        CATALOG, MetricsRecorder("Billwatch", "billwatch"), clock, usage_events=usage_event_publisher(topic)
    )
    threads = [
        threading.Thread(target=lambda: [licensing.use("acct_1", "exports", 1) for _ in range(2)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = received()
    assert sorted((e["threshold"], e["severity"]) for e in events) == [
        (80, "warning"),
        (95, "critical"),
        (100, "critical"),  # Thorbis: overage is high, which pages (billwatch.core.severities)
    ]
    assert {(e["account_id"], e["feature"], e["limit"]) for e in events} == {("acct_1", "exports", 10)}
    assert {e["period"]["resets_at"] for e in events} == {"2026-12-01T00:00:00Z"}
    # A grant that lowers the share again does not announce 80 % twice in the same period.
    licensing.grant("acct_1", "exports", 10)
    licensing.use("acct_1", "exports", 7)
    assert [e["threshold"] for e in received()] == []
    # The next period announces again.
    clock.now = int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp())
    licensing.use("acct_1", "exports", 8)
    assert [e["threshold"] for e in received()] == [80]


def test_idempotency_keys_cost_two_requests_and_replays_one(aws, licensing, aws_calls) -> None:
    bind_idempotency_table(aws["IdempotencyTable"])
    calls = aws_calls
    first = licensing.use_idempotently("acct_1", "api_calls", 3, "job-1")
    assert calls == ["BatchGetItem", "TransactWriteItems"] and first.used == 3
    calls.clear()
    assert licensing.use_idempotently("acct_1", "api_calls", 3, "job-1") == first
    assert calls == ["BatchGetItem"]


def test_concurrent_requests_with_one_key_count_once(aws, licensing) -> None:
    bind_idempotency_table(aws["IdempotencyTable"])
    answers = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(licensing.use_idempotently("acct_1", "exports", 2, "k"))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8 and all(a == answers[0] for a in answers)
    assert licensing.entitlements("acct_1")["features"]["exports"]["used"] == 2


def test_keyed_checks_race_plain_ones_without_passing_the_limit(aws, licensing) -> None:
    bind_idempotency_table(aws["IdempotencyTable"])
    allowed = []

    def keyed(n: int) -> None:
        for i in range(3):
            allowed.append(licensing.use_idempotently("acct_1", "exports", 1, f"t{n}-{i}").allowed)

    def plain() -> None:
        for _ in range(3):
            allowed.append(licensing.use("acct_1", "exports", 1).allowed)

    threads = [threading.Thread(target=keyed, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=plain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 10
    assert licensing.entitlements("acct_1")["features"]["exports"]["used"] == 10


def test_a_grant_lets_one_large_use_through_that_no_base_quota_could(licensing) -> None:
    licensing.grant("acct_1", "exports", 30)
    decision = licensing.use("acct_1", "exports", 25)
    assert (decision.allowed, decision.used, decision.limit) == (True, 25, 40)
    assert not licensing.use("acct_2", "exports", 25).allowed


@pytest.mark.parametrize(
    ("operation", "requests"),
    [
        (lambda licensing: licensing.use("acct_1", "api_calls", 1), ["UpdateItem"]),
        (
            lambda licensing: licensing.use_idempotently("acct_1", "api_calls", 1, "job-1"),
            ["BatchGetItem", "TransactWriteItems"],
        ),
        (lambda licensing: licensing.grant("acct_1", "exports", 5), ["GetItem", "TransactWriteItems"]),
        # Each admin action: the read makes its audit record's before; it and its record are one transaction.
        (lambda licensing: licensing.set_tier_override("acct_1", "PRO"), ["GetItem", "TransactWriteItems"]),
        (lambda licensing: licensing.reset_usage("acct_1"), ["GetItem", "TransactWriteItems"]),
    ],
    ids=["use", "keyed use", "grant", "tier override", "usage reset"],
)
def test_the_answer_needs_no_request_after_the_write(aws, licensing, aws_calls, operation, requests) -> None:
    """A request after the write could fail with the write committed, and the caller's retry
    would count or grant again: the answer is made from what the write returned."""
    bind_idempotency_table(aws["IdempotencyTable"])
    operation(licensing)
    assert aws_calls == requests


@pytest.mark.parametrize(
    "operation",
    [
        lambda licensing, account: licensing.use(account, "exports", 1),
        lambda licensing, account: licensing.use_idempotently(account, "exports", 1, "job-1"),
        lambda licensing, account: licensing.grant(account, "exports", 5),
        lambda licensing, account: licensing.set_tier_override(account, "PRO"),
        lambda licensing, account: licensing.reset_usage(account),
    ],
    ids=["use", "keyed use", "grant", "tier override", "usage reset"],
)
def test_a_key_dynamodb_refuses_is_rejected_not_unavailable(aws, licensing, operation) -> None:
    bind_idempotency_table(aws["IdempotencyTable"])
    with pytest.raises(StoreRejected, match="ValidationException"):
        operation(licensing, "x" * 10_000)  # past DynamoDB's 2,048 bytes; the API refuses it earlier
