"""Webhook intake: verify, deduplicate, order and apply Stripe events.

Knows nothing of API Gateway or EventBridge: the handler hands it a raw body and a signature
header (signed path) or an already-trusted event (EventBridge path), and maps the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from billwatch.billing.side_effects import (
    EVENTS_CHANNEL,
    METRICS_CHANNEL,
    BusinessEffects,
    Effects,
    Receipt,
    SweepResult,
    effect_facts,
)
from billwatch.billing.signature import SignatureInvalid, verify_signature
from billwatch.billing.store import ApplyOutcome, ApplyResult, BillingStore, StateChange
from billwatch.billing.stripe_api import StripeApi, StripeApiFailure, StripeErrorCode, configured_api_key
from billwatch.billing.stripe_events import (
    AUTHORITATIVE_RANK,
    COUNTED_EVENT_TYPES,
    SUBSCRIPTION_EVENTS,
    MalformedEvent,
    ParsedEvent,
    is_event_type,
    parse_event,
    subscription_change,
)
from billwatch.billing.thin_events import (
    METER_ERROR_TYPES,
    ThinNotification,
    UnresolvedReason,
    is_thin_notification,
    read_notification,
    snapshot_event_matches,
)
from billwatch.billing.velocity import CheckoutVelocity
from billwatch.billing.webhook_marker import WebhookArrivals
from billwatch.core import parameters as aws_parameters
from billwatch.core import strict_json
from billwatch.core.config import Settings
from billwatch.core.dynamo import StoreRejected, dynamodb_client
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import bind_billing_table, bind_idempotency_table
from billwatch.core.observability import logger
from billwatch.core.outbox import standing_of
from billwatch.licensing.plans import PlanCatalog, load_plan_catalog
from billwatch.licensing.usage_events import payment_event_publisher, usage_event_publisher

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Fixed, not derived from the function's name: the side-effects sweep and the reconcile
# function's replays look up the same records.
IDEMPOTENCY_KEY_PREFIX = "stripe-event"


class IntakeOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    UNATTRIBUTED = "unattributed"
    UNHANDLED = "unhandled"
    IN_PROGRESS = "in_progress"
    COUNTED = "counted"  # an event that changes no account's state; what it tells is counted


_OUTCOME_OF_APPLY = {
    ApplyOutcome.APPLIED: IntakeOutcome.APPLIED,
    ApplyOutcome.STALE: IntakeOutcome.STALE,
    ApplyOutcome.ALREADY_APPLIED: IntakeOutcome.DUPLICATE,
    ApplyOutcome.UNATTRIBUTED: IntakeOutcome.UNATTRIBUTED,
    ApplyOutcome.CLAIM_REFUSED: IntakeOutcome.UNATTRIBUTED,
}
# Where a claim came from that names an account another Stripe customer already holds.
CLAIM_FIELD = "data.object.client_reference_id"


@dataclass(frozen=True)
class IntakeResult:
    outcome: IntakeOutcome
    event_id: str
    event_type: str
    account_id: str | None = None


class PayloadTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the body is {size} bytes; the limit is {limit}")


class ProcessingFailed(Exception):
    """The event was not applied; the sender should retry it."""


class EventRejected(Exception):
    """The event was not applied, and a retry would fail the same way (DynamoDB refused the write)."""


class _Idempotency(NamedTuple):
    config: IdempotencyConfig
    apply_once: Callable[..., dict[str, Any]]  # WebhookIntake._apply, once per event id
    store: DynamoDBPersistenceLayer


class WebhookIntake:
    def __init__(
        self,
        settings: Settings,
        catalog: PlanCatalog,
        store: BillingStore,
        idempotency_table: str,
        metrics: MetricsRecorder,
        secrets: Callable[[], tuple[str, ...]],
        stripe_api: StripeApi | None = None,
        arrivals: WebhookArrivals | None = None,
        effects: BusinessEffects | None = None,
        velocity: CheckoutVelocity | None = None,
    ) -> None:
        self._settings = settings
        self._velocity = velocity or CheckoutVelocity(settings.checkout_velocity_limit)
        self._effects = effects or BusinessEffects(
            catalog, metrics, payment_event_publisher(None), usage_event_publisher(None)
        )
        self._catalog = catalog
        self._store = store
        self._metrics = metrics
        self._secrets = secrets
        self._stripe_api = stripe_api
        self._arrivals = arrivals or WebhookArrivals()
        self._idempotency_table = idempotency_table
        self._lambda_context: LambdaContext | None = None

    @cached_property
    def _idempotency(self) -> _Idempotency:
        # Powertools idempotency and the boto3 client behind it are built on first use (~65 ms):
        # the import, unhandled events and rejected requests need not pay for them.
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        config = IdempotencyConfig(
            event_key_jmespath="id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self._settings.idempotency_ttl_seconds,
            response_hook=lambda response, _record: {**response, "duplicate": True},
        )
        store = DynamoDBPersistenceLayer(table_name=self._idempotency_table, boto3_client=dynamodb_client())
        store.configure(config, key_prefix=IDEMPOTENCY_KEY_PREFIX)
        apply_once = idempotent_function(
            data_keyword_argument="event",
            persistence_store=store,
            config=config,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )
        return _Idempotency(config, apply_once(self._apply), store)

    def register_lambda_context(self, context: LambdaContext) -> None:
        """Lets an in-progress record expire with the invocation if the function dies mid-way."""
        self._lambda_context = context

    def _apply_once(self, event: Any, parsed: ParsedEvent) -> dict[str, Any]:
        idempotency = self._idempotency
        if self._lambda_context is not None:
            idempotency.config.register_lambda_context(self._lambda_context)
        return idempotency.apply_once(event=event, parsed=parsed)

    def receive_signed(self, body: bytes, signature_header: str | None) -> IntakeResult:
        started = time.perf_counter()
        if len(body) > self._settings.max_body_bytes:
            raise PayloadTooLarge(len(body), self._settings.max_body_bytes)
        try:
            secrets = self._secrets()
        except Exception as failure:
            logger.exception("Could not load the webhook signing secrets")
            # Every delivery fails while this lasts: the failure-rate alarms must see it.
            self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType="unknown")
            self._metrics.add(Metric.WEBHOOK_FAILED, EventType="unknown", Reason="SecretsUnavailable")
            self._metrics.flush()
            raise ProcessingFailed("the webhook signing secrets are unavailable") from failure
        try:
            verify_signature(body, signature_header, secrets, self._settings.signature_tolerance_seconds)
        except SignatureInvalid as invalid:
            # Before anything about the body is read: an unsigned request counts only here, so
            # junk from anyone can move the signature alarm but never a delivery rate or the SLO.
            logger.error("Webhook signature verification failed", extra={"reason": invalid.reason})
            self._metrics.add(Metric.WEBHOOK_SIGNATURE_INVALID)
            self._metrics.flush()
            raise
        try:
            event = strict_json.loads(body)
        except strict_json.JsonRefused as refused:
            raise self._rejected(MalformedEvent(str(refused)), "unknown") from None
        return self.receive_trusted(event, started)

    def receive_trusted(self, event: Any, started: float | None = None) -> IntakeResult:
        """An event whose origin is already established: signed, or delivered by a trusted bus.

        A thin event notification is first turned into the v1 event it stands for, which then takes
        the snapshot path: its id is the one a snapshot destination delivers, so the idempotency
        record applies a change once whichever format brings it first.
        """
        started = time.perf_counter() if started is None else started
        with self._arrivals.recording():
            if is_thin_notification(event):
                resolved = self._resolve_thin(event)
                if isinstance(resolved, IntakeResult):
                    return resolved
                event = resolved
            return self._receive(event, started)

    def _resolve_thin(self, notification: Mapping[str, Any]) -> Mapping[str, Any] | IntakeResult:
        try:
            thin = read_notification(notification)
        except MalformedEvent as malformed:
            raise self._rejected(malformed, "unknown") from None
        # A delivery that ends here counts as received by its thin type; one that is resolved counts
        # once, as its v1 event.
        meter_error = METER_ERROR_TYPES.get(thin.type)
        if meter_error is not None:
            # Counted from the notification alone: the alert must not wait on the key or on Stripe.
            self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType=thin.type)
            self._metrics.add(Metric.METER_ERROR_REPORTED, Type=meter_error)
            self._metrics.flush()
            logger.warning(
                "Stripe refused meter events",
                extra={"event_id": thin.id, "event_type": thin.type, "meter": thin.related_object_id},
            )
            return IntakeResult(IntakeOutcome.COUNTED, thin.id, thin.type)
        if not thin.handled:
            self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType=thin.type)
            self._metrics.add(Metric.WEBHOOK_UNHANDLED, EventType=thin.type)
            self._metrics.flush()
            return IntakeResult(IntakeOutcome.UNHANDLED, thin.id, thin.type)
        if self._stripe_api is None:
            raise self._unresolved(
                thin,
                UnresolvedReason.NO_RESTRICTED_KEY,
                ProcessingFailed(
                    f"thin event {thin.id} cannot be resolved: no restricted Stripe key is configured "
                    "(STRIPE_API_KEY_SECRET_ID)"
                ),
            )
        try:
            snapshot = self._stripe_api.snapshot_event_of(notification)
        except StripeApiFailure as failure:
            raise self._unresolved(
                thin,
                UnresolvedReason.STRIPE_FAILED,
                ProcessingFailed(f"thin event {thin.id} could not be fetched from Stripe ({failure.code})"),
            ) from failure
        if snapshot is None or not snapshot_event_matches(thin, snapshot):
            raise self._unresolved(
                thin,
                UnresolvedReason.NO_SNAPSHOT_EVENT,
                EventRejected(f"thin event {thin.id}: Stripe names no v1 {thin.snapshot_type} event for it"),
            )
        return snapshot

    def _unresolved(self, thin: ThinNotification, reason: UnresolvedReason, error: Exception) -> Exception:
        logger.error(
            "Could not resolve a Stripe thin event",
            extra={"event_id": thin.id, "event_type": thin.type, "reason": reason.value},
        )
        # Received and failed, so the delivery failure-rate alarms see a thin path that is down.
        self._metrics.add(Metric.THIN_EVENT_UNRESOLVED, Reason=reason.value)
        self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType=thin.type)
        self._metrics.add(Metric.WEBHOOK_FAILED, EventType=thin.type, Reason="ThinEventUnresolved")
        self._metrics.flush()
        return error

    def _receive(self, event: Any, started: float) -> IntakeResult:
        try:
            parsed = parse_event(event, self._catalog)
        except MalformedEvent as malformed:
            event_type = event.get("type") if isinstance(event, Mapping) else None
            raise self._rejected(malformed, event_type if is_event_type(event_type) else "unknown") from None
        self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType=parsed.type)
        log_context: dict[str, str | None] = {"event_id": parsed.id, "event_type": parsed.type}
        try:
            result = self._dispatch(event, parsed)
            log_context["account_id"] = result.account_id
            logger.info("Stripe event processed", extra={**log_context, "outcome": result.outcome.value})
            return result
        except Exception as failure:
            reason = type(failure).__name__
            self._metrics.add(Metric.WEBHOOK_FAILED, EventType=parsed.type, Reason=reason)
            message = (
                "Failed to process subscription update"
                if parsed.type in SUBSCRIPTION_EVENTS
                else "Failed to process Stripe event"
            )
            logger.exception(message, extra={**log_context, "reason": reason})
            if isinstance(failure, StoreRejected):
                raise EventRejected(f"event {parsed.id} cannot be stored: {failure}") from failure
            raise ProcessingFailed(f"event {parsed.id} was not applied ({reason})") from failure
        finally:
            self._metrics.add(Metric.WEBHOOK_PROCESSING_TIME, (time.perf_counter() - started) * 1000)
            self._metrics.flush(metadata=log_context)

    def _rejected(self, malformed: MalformedEvent, event_type: str) -> MalformedEvent:
        logger.error("Rejected a Stripe event that cannot be read", extra={"reason": str(malformed)})
        # Counted as received too, so that failed / received stays a rate of at most 100 %.
        self._metrics.add(Metric.WEBHOOK_RECEIVED, EventType=event_type)
        self._metrics.add(Metric.WEBHOOK_FAILED, EventType=event_type, Reason="MalformedEvent")
        self._metrics.flush()
        return malformed

    def _dispatch(self, event: Any, parsed: ParsedEvent) -> IntakeResult:
        if not parsed.handled:
            self._metrics.add(Metric.WEBHOOK_UNHANDLED, EventType=parsed.type)
            return IntakeResult(IntakeOutcome.UNHANDLED, parsed.id, parsed.type)
        if parsed.refused_id_field:
            # Answered 2xx: Stripe resending the same id changes nothing.
            self._refuse_id(parsed, parsed.refused_id_field, "it cannot name an account")
            if not parsed.counts:
                return IntakeResult(IntakeOutcome.UNATTRIBUTED, parsed.id, parsed.type)
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

        try:
            applied = self._apply_once(event, parsed)
        except IdempotencyAlreadyInProgressError:
            self._metrics.add(Metric.WEBHOOK_DUPLICATE, EventType=parsed.type)
            return IntakeResult(IntakeOutcome.IN_PROGRESS, parsed.id, parsed.type)
        if applied.get("duplicate"):
            self._metrics.add(Metric.WEBHOOK_DUPLICATE, EventType=parsed.type)
            return IntakeResult(IntakeOutcome.DUPLICATE, parsed.id, parsed.type, applied.get("account_id"))
        if applied["outcome"] == IntakeOutcome.COUNTED:
            return IntakeResult(IntakeOutcome.COUNTED, parsed.id, parsed.type, applied.get("account_id"))
        applied_outcome = ApplyOutcome(applied["outcome"])
        if applied_outcome is ApplyOutcome.CLAIM_REFUSED:
            self._refuse_id(parsed, CLAIM_FIELD, "it names an account that another Stripe customer holds")
        outcome = _OUTCOME_OF_APPLY[applied_outcome]
        if outcome is IntakeOutcome.STALE:
            self._metrics.add(Metric.WEBHOOK_STALE_IGNORED, EventType=parsed.type)
        elif outcome is IntakeOutcome.DUPLICATE:
            self._metrics.add(Metric.WEBHOOK_DUPLICATE, EventType=parsed.type)
        return IntakeResult(outcome, parsed.id, parsed.type, applied.get("account_id"))

    def _refuse_id(self, parsed: ParsedEvent, field: str, why: str) -> None:
        """The field is named, never its value: it can be anything a buyer typed."""
        self._metrics.add(Metric.WEBHOOK_ID_REFUSED, Field=field)
        logger.warning(
            f"Left a Stripe event unattributed: the id in {field} was refused, {why}",
            extra={"event_id": parsed.id, "event_type": parsed.type, "field": field},
        )

    def _apply(self, event: Mapping[str, Any], parsed: ParsedEvent) -> dict[str, Any]:
        """Runs once per Stripe event id; its result is what a duplicate delivery gets back.

        The side effects are delivered in here, before Powertools records the event as done: a
        completed record is the receipt the side-effects sweep trusts.
        """
        # Before any write, and again on a retry: a session already counted keeps its place.
        velocity_exceeded = parsed.checkout is not None and self._velocity.went_over(parsed.checkout)
        change = parsed.change
        if change is None:  # _dispatch hands over only changes with trusted ids, and what counts
            return self._count(parsed, velocity_exceeded)
        facts: Mapping[str, Any] | None = effect_facts(event, parsed, time.time())
        if facts is not None:
            if velocity_exceeded:
                facts = {**facts, "checkout_velocity_exceeded": True}
            change = replace(change, side_effects=(parsed.id, facts))
        result = self._store.apply(parsed.account, change)
        tied = self._tied_subscription(change, parsed.created, result)
        if self._stripe_api is not None and tied is not None:
            change, result = self._apply_current_subscription(self._stripe_api, tied, parsed, change, result)
        prior = standing_of(result.previous)
        if result.outcome is ApplyOutcome.ALREADY_APPLIED:
            # Committed by an invocation that may have died before delivering: the entry says.
            entry = result.pending.get(parsed.id)
            facts, prior = (entry.facts, entry.before) if entry else (None, prior)
        undelivered: list[str] = []
        if facts is not None:
            try:
                undelivered = self._effects.deliver(
                    self._effects.of(facts, result.outcome, prior, result.account_id)
                )
                if not undelivered and result.account_id and result.outcome is not ApplyOutcome.STALE:
                    self._store.delivered(result.account_id, parsed.id)
            except Exception:
                if result.outcome is ApplyOutcome.UNATTRIBUTED:
                    # Nothing was written, so no entry keeps the effects: only Stripe's retry can.
                    raise
                # The change is committed: failing now would only have Stripe resend what is
                # done. The entry stays, and the receipt sends the sweep after it.
                logger.exception("Could not deliver the side effects of an applied event")
                undelivered = [METRICS_CHANNEL, EVENTS_CHANNEL]
        return {
            "outcome": result.outcome.value,
            "account_id": result.account_id,
            "undelivered": undelivered,
        }

    def _count(self, parsed: ParsedEvent, velocity_exceeded: bool) -> dict[str, Any]:
        """An event that changes no account's state: a dispute, an early fraud warning, a decline, a
        refund, or a checkout whose ids were refused.

        Nothing is written, so nothing is left for the sweep: the metrics go out in here, before
        Powertools records the event id as done, and a failure before that answers 5xx and
        Stripe's retry counts them. Once recorded, a resend is a duplicate and counts nothing.
        """
        facts = {**parsed.signals, "checkout_velocity_exceeded": velocity_exceeded}
        # Only a refund's amount is told by plan: the one event here that costs a read.
        account = self._store.find(parsed.account) if "refund" in facts else None
        plan_tier = account.plan_tier if account else None
        self._effects.deliver(Effects(self._effects.signals(facts, plan_tier)), (METRICS_CHANNEL,))
        suspicion = facts.get("fraud_type") or facts.get("dispute_reason")
        if suspicion:
            # What the suspicious-activity runbook searches for: the event leads to the charge in Stripe.
            logger.warning(
                "Stripe reported suspicious activity",
                extra={"event_id": parsed.id, "event_type": parsed.type, "class": suspicion},
            )
        # A checkout whose ids were refused still counts toward the velocity rule, but applies nothing.
        counted = parsed.type in COUNTED_EVENT_TYPES
        outcome = IntakeOutcome.COUNTED if counted else IntakeOutcome.UNATTRIBUTED
        return {"outcome": outcome.value, "account_id": account.pk if account else None, "undelivered": []}

    @staticmethod
    def _tied_subscription(change: StateChange, created: int, result: ApplyResult) -> str | None:
        """The subscription whose stored state is from the same second as this event, where the
        order is a guess; None when there is none."""
        if change.group != "subscription" or change.subscription_id is None or result.previous is None:
            return None
        stored = result.previous.subscription_version
        tied = bool(stored) and stored != change.version and stored.startswith(f"{created:012d}|")
        return change.subscription_id if tied else None

    def _apply_current_subscription(
        self,
        stripe_api: StripeApi,
        subscription_id: str,
        parsed: ParsedEvent,
        change: StateChange,
        result: ApplyResult,
    ) -> tuple[StateChange, ApplyResult]:
        """Break a same-second tie with the subscription as Stripe holds it now."""
        try:
            current = stripe_api.subscription(subscription_id)
            settled_change, _ = subscription_change(
                parsed.id, parsed.created, AUTHORITATIVE_RANK, current, self._catalog
            )
        except Exception:
            logger.warning(
                "Could not fetch the subscription from Stripe to order same-second events; "
                "kept the lifecycle order",
                extra={"event_id": parsed.id, "subscription_id": subscription_id},
                exc_info=True,
            )
            return change, result
        if result.outcome is not ApplyOutcome.APPLIED:
            # The first write recorded nothing: this one carries the event's side effects.
            settled_change = replace(settled_change, side_effects=change.side_effects)
        settled = self._store.apply(parsed.account, settled_change)
        outcome = ApplyOutcome.APPLIED if settled.outcome is ApplyOutcome.APPLIED else result.outcome
        previous = result.previous if result.outcome is ApplyOutcome.APPLIED else settled.previous
        return settled_change, ApplyResult(outcome, settled.account_id or result.account_id, previous)

    def sweep_side_effects(self) -> SweepResult:
        """Deliver what committed changes left undelivered; remove what is on record as delivered."""
        return self._effects.sweep(self._receipt)

    def _receipt(self, event_id: str) -> Receipt:
        """What the idempotency record says of an event's side effects."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError

        try:
            record = self._idempotency.store.get_record({"id": event_id})
        except IdempotencyItemNotFoundError:
            return Receipt.NONE
        if record is None or record.is_expired:
            return Receipt.NONE
        if record.status != "COMPLETED":
            # An invocation that died leaves its record in progress until Lambda's time is up.
            still_running = (record.in_progress_expiry_timestamp or 0) > time.time() * 1000
            return Receipt.IN_FLIGHT if still_running else Receipt.NONE
        undelivered = set((record.response_json_as_dict() or {}).get("undelivered") or ())
        if METRICS_CHANNEL in undelivered:
            return Receipt.NONE
        return Receipt.PARTIAL if undelivered else Receipt.DELIVERED


def build_webhook_intake(settings: Settings) -> WebhookIntake:
    bind_billing_table(settings.billing_table)
    bind_idempotency_table(settings.idempotency_table)
    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)

    def count_stripe_error(code: StripeErrorCode) -> None:
        metrics.add(Metric.STRIPE_API_ERROR, Code=code.value)

    catalog = load_plan_catalog(settings)
    return WebhookIntake(
        settings=settings,
        catalog=catalog,
        store=BillingStore(),
        idempotency_table=settings.idempotency_table,
        metrics=metrics,
        secrets=lambda: aws_parameters.webhook_secrets(settings),
        stripe_api=StripeApi(configured_api_key(settings), settings.stripe_api_base, count_stripe_error)
        if settings.stripe_api_configured
        else None,
        effects=BusinessEffects(
            catalog,
            metrics,
            payment_event_publisher(settings.billing_events_topic_arn),
            usage_event_publisher(settings.usage_events_topic_arn),
            severities=settings.severities,
        ),
    )
