"""The overage stack the drain and reconciliation tests share: the ledger on moto's DynamoDB (the
``aws`` fixture), the meter senders over real HTTP to the Stripe stand-in (devtools.fake_meters), a fresh
Stripe and a test clock for each test, and the dead-letter queue on moto's SQS.

Test modules take these fixtures with ``from tests.integration.overage_stack import *``: pytest finds
fixtures by name in the module's namespace, and a named import would be reported as unused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from billwatch.billing.meter_stream import RetryPolicy, V1MeterSender, V2MeterEventStream
from billwatch.billing.overage_drain import DeadLetters, OverageDrain, SenderChoice, SendFailures
from billwatch.core.audit import AuditTrail
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, bind_billing_table, bind_idempotency_table
from billwatch.licensing.overage_ledger import OverageLedger
from billwatch.licensing.service import Licensing
from billwatch.licensing.usage_history import UsageHistory
from tests.integration.test_overage import NOV_15, overage_catalog
from tests.support import Clock, FakeStripeApi, fake_stripe_api

__all__ = ["QUICK", "V1_PATH", "clock", "dlq", "drain_of", "licensing", "meters", "stripe", "use"]

V1_PATH = "/v1/billing/meter_events"
QUICK = RetryPolicy(attempts=2, max_wait_seconds=0.0, backoff_seconds=0.0, timeout_seconds=2.0)


@pytest.fixture(scope="module")
def stripe() -> Iterator[FakeStripeApi]:
    with fake_stripe_api() as server:
        yield server


@pytest.fixture
def meters(stripe: FakeStripeApi, clock: Clock) -> Any:
    stripe.meters.__init__(clock)  # a fresh Stripe for each test, on the test's clock
    stripe.meters.add_meter("exports_overage")  # api_calls_overage has no meter: Stripe refuses it
    return stripe.meters


@pytest.fixture
def clock() -> Clock:
    return Clock(NOV_15)


@pytest.fixture
def licensing(aws: dict, clock: Clock) -> Licensing:
    bind_billing_table(aws["BillingStateTable"])
    bind_idempotency_table(aws["IdempotencyTable"])
    recorder = MetricsRecorder("Billwatch", "billwatch")
    audit = AuditTrail(aws["AuditTable"], 400, recorder, clock)
    return Licensing(overage_catalog(), recorder, clock, history=UsageHistory(400), audit=audit)


@pytest.fixture
def dlq(aws: dict) -> str:
    return boto3.client("sqs").create_queue(QueueName="overage-drain-dlq")["QueueUrl"]


def drain_of(
    stripe: FakeStripeApi,
    licensing: Licensing,
    clock: Clock,
    dlq: str,
    threshold: int,
    policy: RetryPolicy = QUICK,
) -> OverageDrain:
    """The drain as the function builds it, on the stand-in: v1 below ``threshold`` events a run."""
    key = lambda: "rk_test_drain"  # noqa: E731
    no_wait = lambda seconds: None  # noqa: E731
    sender = SenderChoice(
        V1MeterSender(key, stripe.url, policy, sleep=no_wait),
        V2MeterEventStream(key, stripe.url, stripe.url, policy, clock=clock, sleep=no_wait),
        threshold,
    )
    return OverageDrain(
        OverageLedger(licensing.policy.catalog),
        sender,
        MetricsRecorder("Billwatch", "billwatch"),
        DeadLetters(dlq),
        SendFailures(),
        clock=clock,
        sleep=no_wait,
    )


def use(licensing: Licensing, account_id: str, units: int, feature: str = "exports") -> None:
    """Uses past the quota (FREE: exports 10, capped at 15; api_calls 1000): the counter is the record."""
    if BillingAccount.count(account_id) == 0:
        BillingAccount(account_id, stripe_customer_id=f"cus_{account_id}").save()
    licensing.use(account_id, feature, units)
