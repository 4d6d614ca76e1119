"""Chaos for the webhook intake: a seeded Stripe event stream, a delivery plan that duplicates and
reorders it, DynamoDB faults injected under botocore, and Stripe-like senders that retry.

Used by tests/integration/test_chaos_replay.py; everything random draws from a seeded RNG so a
failing seed can be replayed (thread scheduling still varies from run to run).
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from devtools import stripe_events as se
from devtools.moto_patches import install_parse_once
from devtools.signing import stripe_signature_header
from devtools.template import DEFAULT_TEMPLATE, load_template
from tests.scenarios import SwitchedFault, throughput_exceeded
from tests.security.log_secrets import find_secrets
from tests.support import WEBHOOK_SECRET, LambdaContext, fake_aws_credentials, load_handler, moto_with_tables

# Oct 2025: every subscription period lies in the past, so usage counted now never starts a new
# period and the usage counters can be checked exactly.
STREAM_START = 1_760_000_000
PRO_PRICES = ("pro_monthly", "pro_yearly")
FREE_PRICE = "starter_monthly"  # not in the catalog: the default (FREE) tier
MONTH = 30 * 86_400


@dataclass(frozen=True)
class StreamEvent:
    """One Stripe event, serialised once, with where it sits in its customer's lifecycle."""

    customer_index: int
    sequence: int  # position in the customer's lifecycle, the order Stripe created them in
    id: str
    type: str
    created: int
    body: bytes


@dataclass(frozen=True)
class Customer:
    index: int
    account_id: str
    customer_id: str


def customer(index: int) -> Customer:
    return Customer(index, f"acct_{index:05d}", f"cus_{index:05d}")


class _Lifecycle:
    """Builds one customer's events with Stripe's factories; `created` never decreases."""

    def __init__(self, who: Customer, rng: random.Random) -> None:
        self.who = who
        self.rng = rng
        self.now = STREAM_START + who.index * 37 + rng.randrange(3600)
        self.events: list[StreamEvent] = []
        # Some subscriptions carry the account in their metadata; the others are found through
        # the customer, which sends their early events to a provisional item that is merged later.
        self.metadata = {"account_id": who.account_id} if rng.random() < 0.6 else {}

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(64):016x}"

    def tick(self) -> int:
        # One step in six stays in the same second, so the lifecycle tie-break decides.
        self.now += 0 if self.rng.random() < 1 / 6 else self.rng.randint(1, 3600)
        return self.now

    def add(self, event_type: str, obj: dict[str, Any]) -> None:
        created = self.tick()
        event = se.event(event_type, obj, id=self._id("evt_"), created=created)
        self.events.append(
            StreamEvent(
                self.who.index,
                len(self.events),
                event["id"],
                event_type,
                created,
                json.dumps(event, separators=(",", ":")).encode(),
            )
        )

    def subscription(self, event_type: str, sub_id: str, status: str, price: str, period: int) -> None:
        obj = se.subscription(
            id=sub_id,
            customer=self.who.customer_id,
            status=status,
            lookup_key=price,
            price_id=f"price_{price}",
            metadata=self.metadata,
            current_period_start=period,
            current_period_end=period + MONTH,
            created=STREAM_START,
        )
        self.add(event_type, obj)

    def invoice(self, event_type: str, sub_id: str, reason: str, period: int) -> None:
        obj = se.invoice(
            id=self._id("in_"),
            customer=self.who.customer_id,
            subscription=sub_id,
            billing_reason=reason,
            status="paid" if event_type == "invoice.paid" else "open",
            subscription_metadata=self.metadata or None,
            created=self.now,
            period_start=period,
            period_end=period + MONTH,
        )
        self.add(event_type, obj)

    def entitlements(self, lookup_keys: tuple[str, ...]) -> None:
        self.add(
            "entitlements.active_entitlement_summary.updated",
            se.entitlement_summary(customer=self.who.customer_id, lookup_keys=lookup_keys),
        )

    def build(self) -> list[StreamEvent]:
        rng, who = self.rng, self.who
        sub_id = self._id("sub_")
        price = rng.choice(PRO_PRICES)
        period = self.now
        self.add(
            "checkout.session.completed",
            se.checkout_session(
                id=self._id("cs_test_"),
                customer=who.customer_id,
                client_reference_id=who.account_id,
                subscription=sub_id,
                created=self.now,
            ),
        )
        self.subscription("customer.subscription.created", sub_id, "incomplete", price, period)
        self.subscription("customer.subscription.updated", sub_id, "active", price, period)
        self.invoice("invoice.paid", sub_id, "subscription_create", period)
        self.entitlements(("sso",))
        status = "active"
        for _ in range(rng.randint(1, 4)):
            step = rng.random()
            if step < 0.35:  # renewal
                period += MONTH
                self.invoice("invoice.paid", sub_id, "subscription_cycle", period)
                self.subscription("customer.subscription.updated", sub_id, status, price, period)
            elif step < 0.6:  # a card fails, dunning, then it is paid
                self.invoice("invoice.payment_failed", sub_id, "subscription_cycle", period)
                self.subscription("customer.subscription.updated", sub_id, "past_due", price, period)
                self.invoice("invoice.paid", sub_id, "subscription_cycle", period)
                self.subscription("customer.subscription.updated", sub_id, "active", price, period)
            elif step < 0.85:  # tier change: another PRO price, or down to the FREE one
                price = rng.choice([p for p in (*PRO_PRICES, FREE_PRICE) if p != price])
                self.subscription("customer.subscription.updated", sub_id, status, price, period)
            else:
                self.entitlements(
                    tuple(rng.sample(["sso", "audit_log", "priority_support"], rng.randint(0, 2)))
                )
        if rng.random() < 0.3:
            self.subscription("customer.subscription.deleted", sub_id, "canceled", price, period)
            if rng.random() < 0.3:  # comes back with a new subscription
                sub_id, period = self._id("sub_"), self.now
                self.subscription("customer.subscription.created", sub_id, "active", PRO_PRICES[0], period)
                self.invoice("invoice.paid", sub_id, "subscription_create", period)
            elif rng.random() < 0.15:
                metadata = {"account_id": who.account_id} if rng.random() < 0.5 else {}
                self.add("customer.deleted", se.customer(id=who.customer_id, metadata=metadata))
        return self.events


def event_stream(customers: int, seed: int) -> list[StreamEvent]:
    """Every customer's lifecycle, in the order Stripe created the events."""
    rng = random.Random(seed)
    events = [event for index in range(customers) for event in _Lifecycle(customer(index), rng).build()]
    return sorted(events, key=lambda event: (event.created, event.customer_index, event.sequence))


@dataclass
class DeliveryPlan:
    deliveries: list[StreamEvent]
    duplicated: int  # events that go out twice
    overtaken: int  # events delivered after a later event of the same customer


def chaos_plan(
    events: list[StreamEvent], seed: int, duplicate_share: float, customers_in_flight: int
) -> DeliveryPlan:
    """Duplicates, then a shuffle per customer; customers are interleaved a few at a time so that
    concurrent senders work on the same accounts at once."""
    rng = random.Random(seed)
    by_customer: dict[int, list[StreamEvent]] = {}
    for event in events:
        by_customer.setdefault(event.customer_index, []).append(event)
    duplicated = overtaken = 0
    shuffled: list[list[StreamEvent]] = []
    for index in sorted(by_customer):
        lifecycle = list(by_customer[index])
        copies = [event for event in lifecycle if rng.random() < duplicate_share]
        duplicated += len(copies)
        lifecycle += copies
        rng.shuffle(lifecycle)
        seen: set[str] = set()
        latest = -1
        for event in lifecycle:
            if event.id in seen:
                continue
            seen.add(event.id)
            overtaken += event.sequence < latest
            latest = max(latest, event.sequence)
        shuffled.append(lifecycle)
    deliveries: list[StreamEvent] = []
    for start in range(0, len(shuffled), customers_in_flight):
        group = [list(lifecycle) for lifecycle in shuffled[start : start + customers_in_flight]]
        while group:
            lifecycle = rng.choice(group)
            deliveries.append(lifecycle.pop(0))
            if not lifecycle:
                group.remove(lifecycle)
    return DeliveryPlan(deliveries, duplicated, overtaken)


class DynamoDBFaults(SwitchedFault):
    """Fails a share of DynamoDB calls the way botocore reports them once its own retries give up.

    Throttling and connect timeouts fail before the request reaches DynamoDB; read timeouts after
    it was applied, so the caller cannot know whether its write landed.
    """

    KINDS = ("throttled", "connect_timeout", "read_timeout_after_write")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rate: float, seed: int) -> None:
        self.rate = rate
        self.calls = 0
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        original = BaseClient._make_api_call

        def faulty(client: BaseClient, operation: str, params: dict) -> Any:
            if not self.active or client.meta.service_model.service_name != "dynamodb":
                return original(client, operation, params)
            with self._lock:
                self.calls += 1
                kind = self._rng.choice(self.KINDS) if self._rng.random() < self.rate else None
                if kind:
                    self.injected[f"{kind}:{operation}"] += 1
            endpoint = client.meta.endpoint_url
            if kind == "throttled":
                raise throughput_exceeded(operation)
            if kind == "connect_timeout":
                raise ConnectTimeoutError(endpoint_url=endpoint)
            answer = original(client, operation, params)
            if kind == "read_timeout_after_write":
                raise ReadTimeoutError(endpoint_url=endpoint)
            return answer

        monkeypatch.setattr(BaseClient, "_make_api_call", faulty)

    def total(self) -> int:
        return sum(self.injected.values())

    def by_kind(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for name, count in self.injected.items():
            kinds[name.split(":")[0]] += count
        return dict(kinds)


class ShortLivedContext(LambdaContext):
    """A Lambda invocation with little time left: an in-progress idempotency record left behind by
    a failed invocation expires after this, instead of after the function's 15 s timeout."""

    def __init__(self, remaining_ms: int) -> None:
        super().__init__()
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


@dataclass
class DeliveryLog:
    """What the senders saw, shared by all of them."""

    attempts: int = 0
    retries_after_5xx: int = 0
    retries_after_409: int = 0
    handler_crashes: int = 0
    client_errors: list[tuple[str, int, str]] = field(default_factory=list)  # (event id, status, body)
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # event id -> outcome per 2xx
    statuses: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome_counts(self) -> dict[str, int]:
        return dict(Counter(outcome for outcomes in self.outcomes.values() for outcome in outcomes))


class StripeSender:
    """Delivers like Stripe: signs each attempt afresh and retries until it gets a 2xx."""

    def __init__(self, handler: Any, log: DeliveryLog, in_progress_ms: int, max_attempts: int = 200) -> None:
        self.handler = handler
        self.log = log
        self.in_progress_ms = in_progress_ms
        self.max_attempts = max_attempts

    def deliver(self, event: StreamEvent) -> str | None:
        """The outcome the intake answered with, or None when it never answered 2xx (or said 4xx)."""
        for attempt in range(self.max_attempts):
            headers = {"stripe-signature": stripe_signature_header(event.body, WEBHOOK_SECRET)}
            request = se.api_gateway_event(event.body, headers=headers)
            try:
                answer = self.handler.lambda_handler(request, ShortLivedContext(self.in_progress_ms))
                status, body = answer["statusCode"], json.loads(answer["body"])
            except Exception as crash:  # API Gateway would answer 502: Stripe retries that too
                status, body = 502, {"error": type(crash).__name__}
                with self.log.lock:
                    self.log.handler_crashes += 1
            with self.log.lock:
                self.log.attempts += 1
                self.log.statuses[status] += 1
                if 200 <= status < 300:
                    self.log.outcomes.setdefault(event.id, []).append(body["outcome"])
                    return body["outcome"]
                if status == 409 and body.get("error") == "in_progress":
                    self.log.retries_after_409 += 1
                elif 400 <= status < 500:
                    self.log.client_errors.append((event.id, status, json.dumps(body)))
                    return None
                else:
                    self.log.retries_after_5xx += 1
            # An in-progress record blocks for its lifetime: polling it faster only burns invocations.
            pause = self.in_progress_ms / 4000 if status == 409 else min(0.002 * 2**attempt, 0.05)
            time.sleep(pause * random.random())
        return None

    def drain(self, deliveries: Iterator[StreamEvent], lock: threading.Lock) -> None:
        while True:
            with lock:
                event = next(deliveries, None)
            if event is None:
                return
            self.deliver(event)


class ScannedOutput(io.StringIO):
    """Where the functions' logs and EMF documents go during a replay: scanned for the tests'
    secrets, as the session scans every other log line, then dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def write(self, text: str) -> int:
        self.secrets |= find_secrets(text)
        return len(text)


@contextmanager
def quiet_functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScannedOutput]:
    """Thousands of invocations' logs would bury the report. Kept by pytest's log capture, the
    failures' records would also keep their tracebacks' frames, moto's table copies among them."""
    from billwatch.core.observability import logger

    output = ScannedOutput()
    with monkeypatch.context() as patch, redirect_stdout(output):
        patch.setattr(logger.registered_handler, "stream", output)
        patch.setattr(logging.getLogger(logger.name), "propagate", False)
        yield output


def tables_snapshot(table_name: str) -> dict[str, dict[str, Any]]:
    """The accounts' and customers' items, by key."""
    client = boto3.client("dynamodb")
    items: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table_name, ConsistentRead=True):
        for item in page["Items"]:
            if item["pk"]["S"].startswith(("acct_", "cus_")):  # not the markers, jobs, health
                items[item["pk"]["S"]] = item
    return items


def replay_in_order(events: list[StreamEvent], in_progress_ms: int) -> dict[str, Any]:
    """The reference: each event once, in `created` order, without faults, through the same
    handler, on fresh tables. Run in a process of its own (spawned, so only what is pickled
    crosses), it takes the second core while the chaos takes the first."""
    started = time.perf_counter()
    monkeypatch = pytest.MonkeyPatch()
    # The spawned process runs none of conftest's fixtures: moto parses once here as it does there.
    undo_parsing = install_parse_once()
    try:
        fake_aws_credentials(monkeypatch)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        with moto_with_tables(load_template(DEFAULT_TEMPLATE), monkeypatch) as tables:
            with quiet_functions(monkeypatch) as output:
                log = DeliveryLog()
                sender = StripeSender(load_handler("webhook_intake"), log, in_progress_ms)
                for event in events:
                    sender.deliver(event)
            return {
                "state": tables_snapshot(tables["BillingStateTable"]),
                "outcomes": log.outcomes,
                "outcome_counts": log.outcome_counts(),
                "client_errors": log.client_errors,
                "secrets_logged": sorted(output.secrets),
                "seconds": round(time.perf_counter() - started, 1),
            }
    finally:
        monkeypatch.undo()
        undo_parsing()
