"""Reconciliation with Stripe: find what the webhooks missed, and heal it the way webhooks do.

Two passes, each resumable from a checkpoint (the cursor is the last object id handled):

1. **Subscriptions.** The first run compares every subscription; later runs only those that
   changed since the previous run began (Stripe's subscription list cannot filter on change, so
   the changes come from the ``customer.subscription.*`` events of that window, and each changed
   subscription is read as Stripe holds it now). A difference in status, tier, period end,
   cancel_at_period_end or the customer -> account link is counted as ``ReconcileDrift{Field}``,
   logged with the ids, and healed through the webhooks' own apply path with a version of "as
   read from Stripe at this second", so the ordering rules hold and nothing newer is overwritten.
2. **Missed events.** Stripe's events whose delivery failed (``delivery_success=false``, the
   last 30 days) go through the webhook intake itself, idempotency included: an event that was
   applied after all is a duplicate there, not a second application.

A 429 is backed off from and the pass resumes at its cursor; a Lambda short of time hands over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any

from billwatch.billing.intake import IntakeOutcome, WebhookIntake
from billwatch.billing.revenue import applied_movement
from billwatch.billing.store import AccountRef, ApplyOutcome, BillingStore
from billwatch.billing.stripe_api import StripeApi, StripeApiFailure, StripeErrorCode, configured_api_key
from billwatch.billing.stripe_events import (
    AUTHORITATIVE_RANK,
    ENTITLING_STATUSES,
    SUBSCRIPTION_EVENTS,
    MalformedEvent,
    RefusedId,
    subscription_account,
    subscription_change,
)
from billwatch.core.config import Settings
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import BillingAccount, JobCheckpoint
from billwatch.core.observability import logger
from billwatch.licensing.plans import PlanCatalog, load_plan_catalog

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Stripe keeps events for 30 days: further back, nothing can be replayed.
EVENT_RETENTION_SECONDS = 30 * 86400
CHECKPOINT_EVERY = 50  # objects between checkpoint writes
LAST_RUN = "reconcile#last-run"


class Stage(StrEnum):
    SUBSCRIPTIONS = "subscriptions"
    MISSED_EVENTS = "missed_events"
    DONE = "done"


# The stored field each compared aspect lives in, and the name the drift metric gives it.
COMPARED_FIELDS = {
    "status": "subscription_status",
    "tier": "tier",
    "period_end": "current_period_end",
    "cancel_at_period_end": "cancel_at_period_end",
}


@dataclass(frozen=True)
class RunResult:
    run_id: str
    finished: bool
    checked: int
    drift: int
    healed: int


class Reconciler:
    def __init__(
        self,
        stripe: StripeApi,
        store: BillingStore,
        intake: WebhookIntake,
        catalog: PlanCatalog,
        metrics: MetricsRecorder,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._stripe = stripe
        self._store = store
        self._intake = intake
        self._catalog = catalog
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self._max_backoff_seconds = max_backoff_seconds

    def run(
        self, run_id: str, time_left: Callable[[], float] = lambda: float("inf"), reserve: float = 30.0
    ) -> RunResult:
        checkpoint = JobCheckpoint.load(f"reconcile#{run_id}")
        state = json.loads(checkpoint.cursor) if checkpoint.cursor else self._new_run_state()
        # Numbers come back from DynamoDB as whatever JSON makes of them; the counts are whole.
        checked, drift = int(checkpoint.scanned or 0), int(checkpoint.reset or 0)
        healed = state.get("healed", 0)
        try:
            while state["stage"] != Stage.DONE:
                items = self._items(state)
                for handled, found in self._with_backoff(items, state):
                    checked += 1
                    drift += found
                    healed += handled
                    state["healed"] = healed
                    if checked % CHECKPOINT_EVERY == 0:
                        checkpoint.advance(state, checked, drift)
                        if time_left() < reserve:
                            return RunResult(run_id, False, checked, drift, healed)
                state = self._next_stage(state)
                checkpoint.advance(state, checked, drift)
        except Exception:
            self.metrics.add(Metric.RECONCILE_FAILED)
            logger.exception("Reconciliation failed", extra={"run_id": run_id, "stage": state["stage"]})
            checkpoint.advance(state, checked, drift)
            raise
        finally:
            self.metrics.flush(metadata={"run_id": run_id})
        checkpoint.advance(None, checked, drift)
        JobCheckpoint.load(LAST_RUN).advance({"started_at": state["started_at"]}, checked, drift)
        self.metrics.add(Metric.RECONCILE_RUN)
        self.metrics.flush(metadata={"run_id": run_id})
        logger.info(
            "Reconciliation finished",
            extra={"run_id": run_id, "checked": checked, "drift": drift, "healed": healed},
        )
        return RunResult(run_id, True, checked, drift, healed)

    def register_lambda_context(self, context: LambdaContext) -> None:
        """Replays share the intake's idempotency records, which should expire with the invocation."""
        self._intake.register_lambda_context(context)

    # ------------------------------------------------------------------ passes

    def _new_run_state(self) -> dict[str, Any]:
        last = JobCheckpoint.load(LAST_RUN)
        since = json.loads(last.cursor)["started_at"] if last.cursor else None
        return {"stage": Stage.SUBSCRIPTIONS, "after": None, "since": since, "started_at": int(self.clock())}

    def _next_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        following = Stage.MISSED_EVENTS if state["stage"] == Stage.SUBSCRIPTIONS else Stage.DONE
        return {**state, "stage": following, "after": None}

    def _items(self, state: dict[str, Any]) -> Iterator[tuple[str, Callable[[], tuple[int, int]]]]:
        """(object id, what handling it heals and finds) for the stage, from its cursor on."""
        if state["stage"] == Stage.SUBSCRIPTIONS and state["since"] is None:
            for sub in self._stripe.subscriptions(starting_after=state["after"]):
                yield sub["id"], partial(self._reconcile_subscription, sub, state["started_at"])
        elif state["stage"] == Stage.SUBSCRIPTIONS:
            seen: set[str] = set()
            changes = self._stripe.events(
                state["since"], types=sorted(SUBSCRIPTION_EVENTS), starting_after=state["after"]
            )
            for event in changes:
                subscription_id = event["data"]["object"]["id"]
                if subscription_id in seen:
                    yield event["id"], lambda: (0, 0)
                    continue
                seen.add(subscription_id)
                yield event["id"], partial(self._reconcile_current, subscription_id, state["started_at"])
        else:
            since = state["started_at"] - EVENT_RETENTION_SECONDS
            for event in self._stripe.events(since, undelivered_only=True, starting_after=state["after"]):
                yield event["id"], partial(self._replay, event)

    def _with_backoff(
        self, items: Iterator[tuple[str, Callable[[], tuple[int, int]]]], state: dict[str, Any]
    ) -> Iterator[tuple[int, int]]:
        """Handles each item; on a 429, waits and resumes the listing after the last item handled."""
        delay = 1.0
        while True:
            try:
                for object_id, handle in items:
                    outcome = handle()
                    state["after"] = object_id  # before the yield: the caller may stop there
                    delay = 1.0
                    yield outcome
                return
            except StripeApiFailure as failure:
                if failure.code is not StripeErrorCode.RATE_LIMIT:
                    raise
                logger.warning("Stripe rate-limited reconciliation; backing off", extra={"seconds": delay})
                self._sleep(delay)
                delay = min(delay * 2, self._max_backoff_seconds)
                items = self._items(state)

    # ---------------------------------------------------------------- compare

    def _reconcile_current(self, subscription_id: str, read_at: int) -> tuple[int, int]:
        return self._reconcile_subscription(self._stripe.subscription(subscription_id), read_at)

    def _reconcile_subscription(self, sub: dict[str, Any], read_at: int) -> tuple[int, int]:
        """(fields healed, fields that drifted) for one subscription as Stripe holds it now."""
        try:
            ref = subscription_account(sub, where="")
            change, _tier = subscription_change(
                f"reconcile-{read_at}", read_at, AUTHORITATIVE_RANK, sub, self._catalog
            )
        except (RefusedId, MalformedEvent) as unreadable:
            # The webhooks refused the same object; one subscription must not fail every run.
            logger.warning(
                "Skipped a subscription that cannot be reconciled",
                extra={"subscription_id": sub.get("id"), "reason": str(unreadable)},
            )
            return 0, 0
        key = ref.account_id or ref.customer_id
        stored = self._store.get(key) if key else None
        while stored is not None and stored.merged_into:  # the customer's redirect to its account
            stored = self._store.get(stored.merged_into)
        drifted = self._drifted(stored, sub, change.fields, ref)
        if not drifted:
            return 0, 0
        for field in drifted:
            self.metrics.add(Metric.RECONCILE_DRIFT, Field=field)
        logger.warning(
            "Billing state drifted from Stripe",
            extra={
                "subscription_id": sub["id"],
                "customer_id": ref.customer_id,
                "account_id": stored.pk if stored else ref.account_id,
                "fields": drifted,
            },
        )
        result = self._store.apply(
            AccountRef(ref.account_id or (stored.pk if stored else None), ref.customer_id), change
        )
        if result.outcome is not ApplyOutcome.APPLIED:
            return 0, len(drifted)
        for field in drifted:
            self.metrics.add(Metric.RECONCILE_HEALED, Field=field)
        moved = applied_movement(result.previous, change.fields)
        if moved:
            self.metrics.add(moved.metric)
        return len(drifted), len(drifted)

    @staticmethod
    def _drifted(
        stored: BillingAccount | None, sub: dict[str, Any], fields: Mapping[str, Any], ref: AccountRef
    ) -> list[str]:
        live = sub["status"] in ENTITLING_STATUSES
        if stored is None or stored.subscription_id is None:
            return ["subscription"] if live else []
        if stored.subscription_id != sub["id"]:
            # A dead subscription never displaces the live one the account follows.
            stored_live = stored.subscription_status in ENTITLING_STATUSES
            return ["subscription"] if live and not stored_live else []
        # An unset attribute reads as None where Stripe says False: both mean "no".
        drifted = [
            name
            for name, attribute in COMPARED_FIELDS.items()
            if (getattr(stored, attribute) or None) != (fields[attribute] or None)
        ]
        if ref.account_id and ref.customer_id and stored.stripe_customer_id != ref.customer_id:
            drifted.append("customer_link")
        return drifted

    # ----------------------------------------------------------------- replay

    def _replay(self, event: dict[str, Any]) -> tuple[int, int]:
        result = self._intake.receive_trusted(event)
        if result.outcome is not IntakeOutcome.APPLIED:
            return 0, 0  # applied after all, stale, or not ours: nothing was missing
        self.metrics.add(Metric.RECONCILE_DRIFT, Field="missed_event")
        self.metrics.add(Metric.RECONCILE_HEALED, Field="missed_event")
        logger.warning(
            "Replayed a Stripe event whose delivery had failed",
            extra={"event_id": event["id"], "event_type": event["type"], "account_id": result.account_id},
        )
        return 1, 1


def run_id_of(moment: float) -> str:
    """One run per scheduled day; a start on demand gets a run of its own."""
    return time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(moment))


def build_reconciler(settings: Settings) -> Reconciler:
    from billwatch.billing.intake import build_webhook_intake

    intake = build_webhook_intake(settings)
    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)

    def count_stripe_error(code: StripeErrorCode) -> None:
        metrics.add(Metric.STRIPE_API_ERROR, Code=code.value)

    stripe = StripeApi(
        configured_api_key(settings),
        settings.stripe_api_base,
        count_stripe_error,
        max_network_retries=0,  # the reconciler backs off from 429s itself, and resumes at its cursor
    )
    return Reconciler(stripe, BillingStore(), intake, load_plan_catalog(settings), metrics)
