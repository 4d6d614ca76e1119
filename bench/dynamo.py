"""DynamoDB requests per event, and warm handler time, against moto's server on loopback.

Run as a child process by ``python -m bench`` (its stdout, where the handler logs and EMF
metrics go, is redirected to .bench/handler-stdout.log); results are written as JSON:

    python -m bench.dynamo --layer-python .bench/layer/python --out .bench/dynamo.json

The real handler module (functions/<name>/app.py) runs in-process against moto's server with
the tables template.yaml declares, requests counted on the wire (see bench.harness).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import DUPLICATE_MAX_REQUESTS, FUNCTION_DIR, NEW_EVENT_MAX_REQUESTS, UNHANDLED_MAX_REQUESTS
from bench.environment import WEBHOOK_SECRET, BenchError
from bench.harness import FunctionBench, Window, child_main, deploy, moto_server, scenario_result

if TYPE_CHECKING:
    from bench.harness import Deployment

# ------------------------------------------------------------------------ Stripe events


class EventFactory:
    """Realistic signed deliveries (devtools.stripe_events), `created` strictly increasing."""

    def __init__(self) -> None:
        from devtools import stripe_events

        self.se = stripe_events
        self.clock = int(time.time()) - 7 * 86_400

    def _created(self) -> int:
        self.clock += 1
        return self.clock

    def subscription(self, event_type: str, account: str | None, customer: str, sub_id: str) -> dict:
        created = self._created()
        sub = self.se.subscription(
            id=sub_id,
            customer=customer,
            metadata={"account_id": account} if account else {},
            created=created - 3600,
            current_period_start=created - 3600,
            current_period_end=created + 30 * 86_400,
        )
        return self.se.event(event_type, sub, created=created)

    def invoice_paid(self, account: str, customer: str, sub_id: str) -> dict:
        created = self._created()
        invoice = self.se.invoice(
            customer=customer,
            subscription=sub_id,
            subscription_metadata={"account_id": account},
            created=created,
            period_start=created,
            period_end=created + 30 * 86_400,
        )
        return self.se.event("invoice.paid", invoice, created=created)

    def unhandled(self, account: str, customer: str) -> dict:
        obj = self.se.customer(id=customer, metadata={"account_id": account})
        return self.se.event("customer.created", obj, created=self._created())

    def entitlements(self, customer: str) -> dict:
        summary = self.se.entitlement_summary(customer=customer, lookup_keys=("sso",))
        return self.se.event(
            "entitlements.active_entitlement_summary.updated", summary, created=self._created()
        )

    def http(self, stripe_event: dict) -> dict:
        """The API Gateway (HTTP API v2) event carrying the delivery, signed now."""
        from devtools.signing import stripe_signature_header

        body = json.dumps(stripe_event).encode()
        headers = {
            "stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET),
            "content-type": "application/json; charset=utf-8",
        }
        return self.se.api_gateway_event(body, headers=headers)


# ------------------------------------------------------------------------ the run


class Bench(FunctionBench):
    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.events = EventFactory()

    def load_handler(self, fresh_container: bool) -> Callable[[dict, Any], dict]:
        """The handler of a new import of the module (``fresh_container``: of billwatch too)."""
        return getattr(self.load_module(fresh_container), self.function.handler_name)

    def deliver(self, handler: Callable, stripe_event: dict) -> tuple[str, Window, float]:
        http_event = self.events.http(stripe_event)  # signing and wrapping are not timed
        response, window, elapsed = self.counter.timed(handler, http_event, self.context())
        body = json.loads(response.get("body") or "{}")
        if response.get("statusCode") != 200:
            return f"http {response.get('statusCode')}: {body}", window, elapsed
        return str(body.get("outcome")), window, elapsed

    def scenario(
        self, key: str, title: str, handler: Callable, events: list[dict], expected: str, limit: int | None
    ) -> dict[str, Any]:
        runs = []
        for stripe_event in events:
            outcome, window, _ = self.deliver(handler, stripe_event)
            runs.append(
                {
                    "event_type": stripe_event["type"],
                    "outcome": outcome,
                    **self.counts(window),
                    "other_requests": [
                        f"{r.service} {r.operation}" for r in window.wire if r.service != "dynamodb"
                    ],
                }
            )
        problems = [
            f"outcome {run['outcome']!r}, expected {expected!r}" for run in runs if run["outcome"] != expected
        ]
        return scenario_result(key, title, runs, problems, limit)

    # -------------------------------------------------------------- scenarios

    def request_counts(self) -> tuple[list[dict[str, Any]], Callable, list[tuple[str, str]]]:
        factory = self.events
        scenarios: list[dict[str, Any]] = []
        handler = self.load_handler(fresh_container=True)

        scenarios.append(
            self.scenario(
                "cold_first_event",
                "first event in a fresh container (new account W): +1 write for the webhook arrival marker,"
                " once per container and minute - informational",
                handler,
                [
                    factory.subscription(
                        "customer.subscription.created", "acct_bench_w", "cus_bench_w", "sub_bench_w"
                    )
                ],
                "applied",
                None,
            )
        )
        account, customer, sub_id = "acct_bench_a", "cus_bench_a", "sub_bench_a"
        scenarios.append(
            self.scenario(
                "c_new_account",
                "(c) first event of a brand-new account: +1 write for the customer redirect, once per"
                " account - informational",
                handler,
                [factory.subscription("customer.subscription.created", account, customer, sub_id)],
                "applied",
                None,
            )
        )
        updates = [
            factory.subscription("customer.subscription.updated", account, customer, sub_id) for _ in range(3)
        ]
        invoices = [factory.invoice_paid(account, customer, sub_id) for _ in range(3)]
        established = self.scenario(
            "a_established_subscription_updated",
            "(a) established account: customer.subscription.updated",
            handler,
            updates,
            "applied",
            NEW_EVENT_MAX_REQUESTS,
        )
        scenarios.append(established)
        scenarios.append(
            self.scenario(
                "a_established_invoice_paid",
                "(a) established account: invoice.paid",
                handler,
                invoices,
                "applied",
                NEW_EVENT_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "b_duplicate",
                "(b) duplicate delivery (same event id again)",
                handler,
                [updates[-1], invoices[-1]],
                "duplicate",
                DUPLICATE_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "d_unhandled",
                "(d) unhandled event type (customer.created)",
                handler,
                [factory.unhandled(account, customer)],
                "unhandled",
                UNHANDLED_MAX_REQUESTS,
            )
        )
        scenarios.append(
            self.scenario(
                "e_customer_only_warm",
                "customer-only event (entitlements summary), link cached in the container - informational",
                handler,
                [factory.entitlements(customer)],
                "applied",
                None,
            )
        )
        fresh = self.load_handler(fresh_container=True)
        scenarios.append(
            self.scenario(
                "cold_established",
                "fresh container: first event, established account (+1 webhook arrival marker write)"
                " - informational",
                fresh,
                [factory.subscription("customer.subscription.updated", account, customer, sub_id)],
                "applied",
                None,
            )
        )
        scenarios.append(
            self.scenario(
                "e_customer_only_cold",
                "fresh container: customer-only event, link not cached yet - informational",
                fresh,
                [factory.entitlements(customer)],
                "applied",
                None,
            )
        )
        last = established["runs"][-1]["sequence"]
        sequence = [(step.partition("(")[0], step.partition("(")[2].rstrip(")")) for step in last]
        return scenarios, handler, sequence

    # -------------------------------------------------------------- warm timing

    def warm_timing(
        self, handler: Callable, sequence: list[tuple[str, str]], events: int, batch: int, warmup: int
    ) -> dict[str, Any]:
        import boto3

        raw = RawImplementation(boto3.client("dynamodb"), self.table_of, sequence)
        account, customer, sub_id = "acct_bench_a", "cus_bench_a", "sub_bench_a"
        timing = self.new_warm_timing()

        def handler_call(record: bool) -> tuple[float, Window] | None:
            stripe_event = self.events.subscription(
                "customer.subscription.updated", account, customer, sub_id
            )
            outcome, window, elapsed = self.deliver(handler, stripe_event)
            if not record:
                return None
            if outcome != "applied":
                timing.unexpected(outcome)
            return elapsed, window

        timing.run(handler_call, raw.event, events, batch, warmup)
        return {
            "events": events,
            "batch": batch,
            "warmup": warmup,
            "raw_sequence": [f"{op}({role})" for op, role in sequence],
            **timing.summary("event"),
        }


class RawImplementation:
    """What a minimal implementation would send per event: the handler's calls, made directly."""

    def __init__(self, client: Any, table_of: Callable[[str], str], sequence: list[tuple[str, str]]) -> None:
        self.client = client
        self.table_of = table_of
        self.account = "acct_bench_raw"
        self.clock = int(time.time())
        self._previous_entry: str | None = None  # delivered: the next write removes it
        self.steps = []
        for operation, role in sequence:
            step = getattr(self, f"_{operation}_{role}", None)
            if step is None:
                raise BenchError(f"no direct equivalent for {operation} on the {role} table")
            self.steps.append(step)

    def event(self) -> None:
        self.clock += 1
        event_id = f"evt_raw_{uuid.uuid4().hex[:24]}"
        context = {"id": event_id, "version": f"{self.clock:012d}|012|{event_id}"}
        for step in self.steps:
            step(context)

    def _PutItem_idempotency(self, context: dict) -> None:
        now = int(time.time())
        self.client.put_item(
            TableName=self.table_of("idempotency"),
            Item={
                "id": {"S": context["id"]},
                "expiration": {"N": str(now + 345_600)},
                "status": {"S": "INPROGRESS"},
                "in_progress_expiration": {"N": str(now * 1000 + 15_000)},
            },
            ConditionExpression="attribute_not_exists(#id) OR #expiry < :now",
            ExpressionAttributeNames={"#id": "id", "#expiry": "expiration"},
            ExpressionAttributeValues={":now": {"N": str(now)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def _UpdateItem_idempotency(self, context: dict) -> None:
        data = {
            "outcome": "applied",
            "account_id": self.account,
            "previous_tier": "pro",
            "previous_plan_tier": "pro",
        }
        self.client.update_item(
            TableName=self.table_of("idempotency"),
            Key={"id": {"S": context["id"]}},
            UpdateExpression="SET #data = :data, #expiry = :expiry, #status = :status",
            ExpressionAttributeNames={"#data": "data", "#expiry": "expiration", "#status": "status"},
            ExpressionAttributeValues={
                ":data": {"S": json.dumps(data)},
                ":expiry": {"N": str(int(time.time()) + 345_600)},
                ":status": {"S": "COMPLETED"},
            },
        )

    def _UpdateItem_billing(self, context: dict) -> None:
        """The state update, and in the same write what at least once needs (billwatch.core.outbox):
        the event's side-effects entry with the standing it replaces, and the removal of the entry
        the previous event left there once delivered."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())
        entry, previous = f"outbox_{context['id']}", self._previous_entry
        standing = ("subscription_status", "tier", "plan_tier", "mrr")
        names = {"#version": "subscription_version", "#entry": entry}
        names |= {f"#was{n}": f"{entry}|was_{field}" for n, field in enumerate(standing)}
        snapshot = ", ".join(f"#was{n} = if_not_exists({field}, :absent)" for n, field in enumerate(standing))
        removal = ""
        if previous:
            names |= {
                f"#old{n}": name
                for n, name in enumerate([previous, *(f"{previous}|was_{f}" for f in standing)])
            }
            removal = ", " + ", ".join(f"#old{n}" for n in range(len(standing) + 1))
        self._previous_entry = entry
        self.client.update_item(
            TableName=self.table_of("billing"),
            Key={"pk": {"S": self.account}},
            UpdateExpression=(
                "SET #version = :version, updated_at = :now, created_at = if_not_exists(created_at, :now), "
                "subscription_id = :sub, subscription_status = :status, tier = :tier, plan_tier = :tier, "
                "active_tier = :tier, "
                "price_id = :price, price_lookup_key = :lookup, current_period_start = :start, "
                "current_period_end = :end, cancel_at_period_end = :cancel, "
                f"#entry = :facts, outbox_shard = :shard, {snapshot} "
                f"REMOVE trial_end{removal} ADD revision :one, outbox_written :one"
            ),
            ConditionExpression="attribute_not_exists(merged_into) AND "
            "(attribute_not_exists(#version) OR #version <> :version)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                ":facts": {
                    "S": json.dumps(
                        {
                            "facts": {"type": "customer.subscription.updated", "event_id": context["id"]},
                            "at": self.clock,
                        }
                    )
                },
                ":shard": {"S": "3"},
                ":absent": {"S": ""},
                ":version": {"S": context["version"]},
                ":now": {"S": now},
                ":sub": {"S": "sub_bench_raw"},
                ":status": {"S": "active"},
                ":tier": {"S": "pro"},
                ":price": {"S": "price_pro_monthly"},
                ":lookup": {"S": "pro_monthly"},
                ":start": {"N": str(self.clock - 3600)},
                ":end": {"N": str(self.clock + 30 * 86_400)},
                ":cancel": {"BOOL": False},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_OLD",
        )

    def _GetItem_billing(self, context: dict) -> None:
        self.client.get_item(
            TableName=self.table_of("billing"), Key={"pk": {"S": self.account}}, ConsistentRead=True
        )

    def _GetItem_idempotency(self, context: dict) -> None:
        self.client.get_item(
            TableName=self.table_of("idempotency"), Key={"id": {"S": context["id"]}}, ConsistentRead=True
        )

    def _PutItem_billing(self, context: dict) -> None:
        self.client.put_item(
            TableName=self.table_of("billing"),
            Item={"pk": {"S": f"cus_raw_{context['id']}"}, "merged_into": {"S": self.account}},
            ConditionExpression="attribute_not_exists(pk) OR merged_into = :account",
            ExpressionAttributeValues={":account": {"S": self.account}},
        )


# ------------------------------------------------------------------------ entry point


def run(layer_python: Path, events: int, batch: int, warmup: int) -> dict[str, Any]:
    with moto_server(layer_python) as endpoint:
        deployment = deploy(FUNCTION_DIR)
        bench = Bench(deployment)
        scenarios, handler, sequence = bench.request_counts()
        warm = bench.warm_timing(handler, sequence, events=events, batch=batch, warmup=warmup)
        import billwatch

        return {
            "endpoint": endpoint,
            "tables": deployment.tables,
            "billwatch_from": str(Path(billwatch.__file__).parent),
            "scenarios": scenarios,
            "warm": warm,
        }


def main(argv: list[str] | None = None) -> int:
    return child_main("bench.dynamo", __doc__, run, "events", argv)


if __name__ == "__main__":
    sys.exit(main())
