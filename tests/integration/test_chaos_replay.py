"""Chaos replay (issue 9): a seeded stream of Stripe lifecycles, delivered with duplicates, per-customer
reordering, DynamoDB faults and eight concurrent senders while usage is counted, must end in
exactly the state that one clean, in-order delivery of the same events produces.

The reference is honest rather than hand-computed: the same handler replays the stream in
`created` order, once, without faults, on fresh tables, in a process of its own beside the chaos.

Size: CHAOS_CUSTOMERS (default 150 customers, about 1,600 events, ~2 CPU-minutes; `make chaos
CUSTOMERS=2000` for a bigger run) and CHAOS_SEED (default 9). Each customer's lifecycle and its chaos
(duplicates, reordering, faults, four customers at a time under eight senders) are drawn the same
way at any size, so a smaller run is fewer samples of the same situations, not easier ones: 150
customers (seed 9) still bring every event type, some 150 faults of each kind spread over every
DynamoDB operation the functions make, over 200 same-second ties and 300 duplicates (the test
checks that each kind of chaos came up).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import multiprocessing
import os
import random
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from billwatch.billing import side_effects
from billwatch.core import outbox
from billwatch.core.models import FIELD_GROUPS
from devtools.emulator.functions import POWERTOOLS_ROUTING_LOCK
from tests.chaos import (
    DeliveryLog,
    DeliveryPlan,
    DynamoDBFaults,
    ScannedOutput,
    StreamEvent,
    StripeSender,
    chaos_plan,
    customer,
    event_stream,
    quiet_functions,
    replay_in_order,
    tables_snapshot,
)
from tests.scenarios import iam_api_event
from tests.support import WEBHOOK_SECRET, LambdaContext, load_handler

CUSTOMERS = int(os.environ.get("CHAOS_CUSTOMERS", "150"))
SEED = int(os.environ.get("CHAOS_SEED", "9"))
SENDERS = 8
USAGE_CLIENTS = 2
DUPLICATE_SHARE = 0.20
FAULT_RATE = 0.05
CUSTOMERS_IN_FLIGHT = 4  # the senders work on this many customers' events at a time
IN_PROGRESS_MS = 1_000
USAGE_ACCOUNT_SHARE = 0.1
USAGE_FEATURE = "api_calls"
USAGE_CALLS_PER_ACCOUNT = 25  # quantity <= 3 each: far inside FREE's 1,000, so no call is denied
SERVICE_CALLER = "arn:aws:sts::123456789012:assumed-role/billwatch-app/service"

# Bookkeeping that differs with the path taken, not with the outcome: `revision` counts accepted
# writes, and an out-of-order delivery rejects as stale what an in-order one applies.
BOOKKEEPING = {"created_at", "updated_at", "revision"}
USAGE_PREFIXES = ("used_", "granted_", "announced_", "alerted_", "usage_since")
# Side effects still to deliver differ with the path too; the sweep below settles them.
OUTBOX_PREFIX = "outbox_"
FINAL_OUTCOMES = {"applied", "duplicate", "stale"}
GROUP_VERSIONS = tuple(f"{group}_version" for group in FIELD_GROUPS)


def billing_state(item: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in item.items()
        if name not in BOOKKEEPING and not name.startswith((*USAGE_PREFIXES, OUTBOX_PREFIX))
    }


def same_second_ties(events: list[StreamEvent]) -> int:
    """Neighbours in a customer's lifecycle created in the same second."""
    lifecycle = sorted(events, key=lambda event: (event.customer_index, event.sequence))
    return sum(
        earlier.customer_index == later.customer_index and earlier.created == later.created
        for earlier, later in itertools.pairwise(lifecycle)
    )


@dataclass
class UsageLog:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    replays_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    counted: dict[str, dict[str, int]] = field(default_factory=dict)  # account -> key -> quantity
    answers: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    refused: list[tuple[str, str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class UsageClient:
    """A service counting usage through LicensingApi, retrying 5xx with the same idempotency key."""

    def __init__(self, handler: Any, log: UsageLog, max_attempts: int = 200) -> None:
        self.handler = handler
        self.log = log
        self.max_attempts = max_attempts

    def use(self, account_id: str, key: str, quantity: int) -> dict | None:
        body = {"feature": USAGE_FEATURE, "quantity": quantity, "idempotency_key": key}
        for attempt in range(self.max_attempts):
            request = iam_api_event("POST", f"/v1/accounts/{account_id}/usage", body, SERVICE_CALLER)
            try:
                # Each client stands for its own Lambda instance, but in one process the two
                # handlers share Powertools' routing state: one of them routes at a time.
                with POWERTOOLS_ROUTING_LOCK:
                    answer = self.handler.lambda_handler(request, LambdaContext())
                status, payload = answer["statusCode"], json.loads(answer["body"])
            except Exception as crash:
                status, payload = 502, {"error": type(crash).__name__}
            with self.log.lock:
                self.log.attempts += 1
                self.log.statuses[status] += 1
                if status < 500:
                    self.log.answers.setdefault((account_id, key), []).append(payload)
                    if status == 200 and payload.get("allowed"):
                        self.log.counted.setdefault(account_id, {})[key] = quantity
                    else:
                        self.log.refused.append((account_id, key, status, json.dumps(payload)))
                    return payload
                self.log.retries += 1
            time.sleep(min(0.002 * 2**attempt, 0.05) * random.random())
        return None

    def run(self, plan: list[tuple[str, str, int]], done: threading.Event, rng: random.Random) -> None:
        """Spreads the calls over the webhook delivery; some keys are sent again, as a client whose
        answer was lost would."""
        for account_id, key, quantity in plan:
            with self.log.lock:
                self.log.calls += 1
            self.use(account_id, key, quantity)
            if rng.random() < 0.1:
                with self.log.lock:
                    self.log.replays_sent += 1
                self.use(account_id, key, quantity)
            if not done.is_set():
                time.sleep(rng.uniform(0, 0.1))


def usage_plans(rng: random.Random) -> list[list[tuple[str, str, int]]]:
    accounts = [
        customer(index).account_id for index in range(CUSTOMERS) if rng.random() < USAGE_ACCOUNT_SHARE
    ]
    calls = [
        (account_id, f"{account_id}-use-{n}", rng.randint(1, 3))
        for account_id in accounts
        for n in range(USAGE_CALLS_PER_ACCOUNT)
    ]
    rng.shuffle(calls)
    return [calls[start::USAGE_CLIENTS] for start in range(USAGE_CLIENTS)]


def deliver_with_chaos(
    plan: DeliveryPlan, faults: DynamoDBFaults, monkeypatch: pytest.MonkeyPatch
) -> tuple[DeliveryLog, UsageLog, ScannedOutput]:
    """Eight senders, one container each, deliver the plan while two services count usage."""
    log = DeliveryLog()
    usage_log = UsageLog()
    rng = random.Random(SEED)
    with quiet_functions(monkeypatch) as output:
        senders = [StripeSender(load_handler("webhook_intake"), log, IN_PROGRESS_MS) for _ in range(SENDERS)]
        usage_clients = [UsageClient(load_handler("licensing_api"), usage_log) for _ in range(USAGE_CLIENTS)]
        deliveries = iter(plan.deliveries)
        handing_out = threading.Lock()
        webhooks_done = threading.Event()
        sender_threads = [
            threading.Thread(target=sender.drain, args=(deliveries, handing_out)) for sender in senders
        ]
        usage_threads = [
            threading.Thread(target=client.run, args=(calls, webhooks_done, random.Random(rng.random())))
            for client, calls in zip(usage_clients, usage_plans(rng), strict=True)
        ]
        with faults.during():
            for thread in sender_threads + usage_threads:
                thread.start()
            for thread in sender_threads:
                thread.join()
            webhooks_done.set()
            for thread in usage_threads:
                thread.join()
    return log, usage_log, output


@pytest.mark.slow
def test_chaotic_delivery_ends_in_the_state_of_one_clean_in_order_delivery(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.perf_counter()
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    events = event_stream(CUSTOMERS, SEED)
    plan = chaos_plan(events, SEED, DUPLICATE_SHARE, CUSTOMERS_IN_FLIGHT)
    generated = time.perf_counter()

    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as reference_process:
        reference_run = reference_process.submit(replay_in_order, events, IN_PROGRESS_MS)

        # The chaos, meanwhile, on the fixture's tables.
        faults = DynamoDBFaults(monkeypatch, FAULT_RATE, SEED)
        log, usage_log, chaos_output = deliver_with_chaos(plan, faults, monkeypatch)
        chaos_done = time.perf_counter()
        in_order = reference_run.result()
    final = tables_snapshot(aws["BillingStateTable"])
    reference = in_order["state"]
    # Every side effect the chaos committed is on record as delivered, or the sweep delivers it.
    monkeypatch.setattr(side_effects, "SWEEP_GRACE_SECONDS", 0)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event"}
    swept = load_handler("webhook_intake").lambda_handler(scheduled, LambdaContext())
    assert swept["failed"] == 0 and list(outbox.pending_keys()) == [], swept
    assert not in_order["client_errors"], in_order["client_errors"][:5]
    assert len(in_order["outcomes"]) == len(events)
    assert {outcomes[-1] for outcomes in in_order["outcomes"].values()} <= FINAL_OUTCOMES

    # What went wrong, and what it came to.
    event_ids = {event.id for event in events}
    never_answered = sorted(event_ids - set(log.outcomes))
    not_final = {
        eid: outcomes for eid, outcomes in log.outcomes.items() if outcomes[-1] not in FINAL_OUTCOMES
    }
    applied_twice = {eid: outcomes for eid, outcomes in log.outcomes.items() if outcomes.count("applied") > 1}
    state_mismatches = {
        pk: {"expected": billing_state(reference.get(pk, {})), "actual": billing_state(final.get(pk, {}))}
        for pk in sorted(set(reference) | set(final))
        if billing_state(reference.get(pk, {})) != billing_state(final.get(pk, {}))
    }
    version_mismatches = Counter(
        group
        for pk in reference
        for group in GROUP_VERSIONS
        if reference[pk].get(group) != final.get(pk, {}).get(group)
    )
    counter_name = f"used_{USAGE_FEATURE}"
    usage_mismatches = {
        account_id: (sum(keys.values()), int(final.get(account_id, {}).get(counter_name, {}).get("N", 0)))
        for account_id, keys in usage_log.counted.items()
        if sum(keys.values()) != int(final.get(account_id, {}).get(counter_name, {}).get("N", 0))
    }
    uncounted_usage = {
        pk: item[counter_name]["N"]
        for pk, item in final.items()
        if counter_name in item and pk not in usage_log.counted
    }
    inconsistent_replays = {
        key: answers
        for key, answers in usage_log.answers.items()
        if len({json.dumps(a) for a in answers}) > 1
    }

    report = {
        "customers": CUSTOMERS,
        "seed": SEED,
        "events": len(events),
        "event_types": dict(Counter(event.type for event in events)),
        "same_second_ties": same_second_ties(events),
        "deliveries_planned": len(plan.deliveries),
        "duplicates_delivered": plan.duplicated,
        "events_overtaken_by_a_later_one": plan.overtaken,
        "dynamodb_calls_during_chaos": faults.calls,
        "side_effects_swept_after": swept,
        "faults_injected": faults.total(),
        "faults_by_kind": faults.by_kind(),
        "faults_by_operation": dict(
            Counter(name.split(":")[1] for name, n in faults.injected.items() for _ in range(n))
        ),
        "webhook_attempts": log.attempts,
        "webhook_retries_after_5xx": log.retries_after_5xx,
        "webhook_retries_after_409_in_progress": log.retries_after_409,
        "webhook_handler_crashes": log.handler_crashes,
        "webhook_statuses": dict(log.statuses),
        "outcomes_chaos_per_2xx": log.outcome_counts(),
        "outcomes_reference": in_order["outcome_counts"],
        "usage_accounts": sum(len(keys) > 0 for keys in usage_log.counted.values()),
        "usage_calls": usage_log.calls,
        "usage_replays_sent": usage_log.replays_sent,
        "usage_attempts": usage_log.attempts,
        "usage_retries_after_5xx": usage_log.retries,
        "usage_statuses": dict(usage_log.statuses),
        "usage_units_counted": sum(sum(keys.values()) for keys in usage_log.counted.values()),
        "accounts_compared": len(reference),
        "state_mismatches": len(state_mismatches),
        "version_mismatches_by_group": dict(version_mismatches),
        "usage_counter_mismatches": len(usage_mismatches),
        "seconds": {
            "generate": round(generated - started, 1),
            "reference_beside_the_chaos": in_order["seconds"],
            "chaos": round(chaos_done - generated, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
    print("\nchaos replay report:\n" + json.dumps(report, indent=2))

    # The run was chaotic in every way it is meant to be, whatever its size.
    assert set(faults.by_kind()) == set(DynamoDBFaults.KINDS), report["faults_by_kind"]
    assert plan.duplicated and plan.overtaken and report["same_second_ties"], report
    assert not log.client_errors, f"4xx for valid signed events: {log.client_errors[:5]}"
    assert not never_answered, f"{len(never_answered)} events never got a 2xx: {never_answered[:5]}"
    assert not not_final, f"events without a final outcome: {list(not_final.items())[:5]}"
    assert not applied_twice, f"events applied more than once: {list(applied_twice.items())[:5]}"
    assert not state_mismatches, (
        f"{len(state_mismatches)} accounts differ from the reference, e.g. "
        f"{json.dumps(dict(list(state_mismatches.items())[:2]), indent=1)}"
    )
    assert not usage_mismatches, f"(counted by 2xx, stored) per account: {list(usage_mismatches.items())[:5]}"
    assert not uncounted_usage, f"usage stored without an allowed answer: {list(uncounted_usage.items())[:5]}"
    assert not inconsistent_replays, f"one key, different answers: {list(inconsistent_replays.items())[:3]}"
    assert not usage_log.refused, f"usage refused: {usage_log.refused[:5]}"
    assert not in_order["secrets_logged"], "the functions logged a test secret"
    assert not chaos_output.secrets, "the functions logged a test secret"
