"""What an applied Stripe event means for the business, and getting it out at least once.

The facts an event's side effects are made from are read before the write and recorded with it
(``billwatch.core.outbox``); the effects themselves (business metrics, the failed-payment event) are
made from those facts and the standing the change replaced, whoever delivers them: the invocation
that committed, Stripe's retry of it, or the scheduled sweep.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from billwatch.billing.store import ApplyOutcome
from billwatch.billing.stripe_events import SUBSCRIPTION_STATUSES, ParsedEvent
from billwatch.core import outbox
from billwatch.core.metrics import Metric, MetricPoint, MetricsRecorder
from billwatch.core.observability import logger
from billwatch.core.severities import DEFAULT_SEVERITIES, BusinessAlert, Severity
from billwatch.licensing.plans import PlanCatalog
from billwatch.licensing.usage_events import PAYMENT_FAILED_EVENT_TYPE, BusinessEventPublisher

# Groups whose changes have side effects; entitlements and customer deletions have none.
_GROUPS_WITH_EFFECTS = ("subscription", "payment", "checkout")
_COUNTED_ON_ARRIVAL = {
    "checkout.session.completed": Metric.CHECKOUT_COMPLETED,
    "checkout.session.expired": Metric.CHECKOUT_EXPIRED,
    "invoice.paid": Metric.PAYMENT_SUCCEEDED,
    "invoice.payment_failed": Metric.PAYMENT_FAILED,
}
# An upgrade older than this when it reached us is a replay or a backfill: its age says nothing
# about how fast billwatch applies upgrades, so it is not a latency.
UPGRADE_LATENCY_MAX_SECONDS = 3600
# Longer than any invocation that could still be delivering an entry it just wrote.
SWEEP_GRACE_SECONDS = 120
METRICS_CHANNEL = "metrics"
EVENTS_CHANNEL = "business_events"


class Receipt(StrEnum):
    NONE = "none"  # no record of delivery: deliver everything
    IN_FLIGHT = "in_flight"  # an invocation is still at it
    PARTIAL = "partial"  # the metrics went out, the business event did not
    DELIVERED = "delivered"


@dataclass
class SweepResult:
    delivered: int = 0
    removed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Effects:
    metrics: list[MetricPoint] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def effect_facts(event: Mapping[str, Any], parsed: ParsedEvent, now: float) -> dict[str, Any] | None:
    """The facts the event's side effects are made from (small: they ride on the account's item)."""
    if parsed.change is None or parsed.change.group not in _GROUPS_WITH_EFFECTS:
        return None
    fields = parsed.change.fields
    facts: dict[str, Any] = {
        "type": parsed.type,
        "event_id": parsed.id,
        "created": parsed.created,
        "received_at": int(now),
        "plan_tier": parsed.plan_tier.name if parsed.plan_tier else None,
        "billing_reason": parsed.billing_reason,
    }
    if parsed.change.group == "subscription":
        facts["after"] = {name: fields.get(name) for name in ("subscription_status", "tier", "mrr")}
    if parsed.type == "invoice.payment_failed":
        invoice = event["data"]["object"]
        facts["invoice"] = {
            name: invoice.get(name) for name in ("id", "amount_due", "currency", "attempt_count")
        }
    elif parsed.type == "invoice.paid":  # amount and currency validated by stripe_events
        invoice = event["data"]["object"]
        facts["paid"] = {name: invoice.get(name) for name in ("amount_paid", "currency")}
    facts.update(parsed.signals)
    return facts


# (fact, metric, its one label): a Stripe reason read into a bounded class, counted once per event.
_COUNTED_CLASSES = (
    ("decline_reason", Metric.PAYMENT_DECLINED, "DeclineReason"),
    ("fraud_type", Metric.EARLY_FRAUD_WARNING, "FraudType"),
    ("dispute_reason", Metric.DISPUTE_OPENED, "Reason"),
)


def _money(metric: Metric, amount: object, currency: object, tier: str) -> list[MetricPoint]:
    """A point of money in major units of its currency; none when the event left either unsaid."""
    if not isinstance(amount, int) or not isinstance(currency, str):
        return []
    from billwatch.billing.revenue import major_units  # money events only, off the cold path

    value = float(major_units(amount, currency))
    return [MetricPoint(metric, value, {"Currency": currency.upper(), "Tier": tier})]


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


class BusinessEffects:
    def __init__(
        self,
        catalog: PlanCatalog,
        metrics: MetricsRecorder,
        billing_events: BusinessEventPublisher,
        usage_events: BusinessEventPublisher,
        clock: Callable[[], float] = time.time,
        severities: Mapping[str, Severity] = DEFAULT_SEVERITIES,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._billing_events = billing_events
        self._usage_events = usage_events
        self._clock = clock
        self._severities = severities

    def of(
        self,
        facts: Mapping[str, Any],
        outcome: ApplyOutcome,
        prior: outbox.PriorStanding | None,
        account_id: str | None,
    ) -> Effects:
        """Counted once per event even when it arrived too late to apply; judged from ``prior``."""
        effects = Effects()
        event_type = facts["type"]
        default_tier = self._catalog.default_tier.name
        prior = prior or outbox.PriorStanding()
        plan_tier = facts.get("plan_tier") or prior.plan_tier or default_tier
        if event_type in _COUNTED_ON_ARRIVAL:
            effects.metrics.append(MetricPoint(_COUNTED_ON_ARRIVAL[event_type]))
        if event_type == "customer.subscription.created":
            status = (facts.get("after") or {}).get("subscription_status")
            effects.metrics.append(
                MetricPoint(
                    Metric.SUBSCRIPTION_CREATED,
                    labels={
                        "Tier": plan_tier,
                        "Status": status if status in SUBSCRIPTION_STATUSES else "other",
                    },
                )
            )
        elif event_type == "customer.subscription.deleted":
            effects.metrics.append(MetricPoint(Metric.SUBSCRIPTION_CANCELED, labels={"Tier": plan_tier}))
        elif event_type == "invoice.paid" and facts.get("billing_reason") == "subscription_cycle":
            effects.metrics.append(MetricPoint(Metric.SUBSCRIPTION_RENEWED, labels={"Tier": plan_tier}))
        elif event_type == "invoice.paid" and facts.get("billing_reason") == "subscription_create":
            effects.metrics.append(MetricPoint(Metric.FIRST_INVOICE_PAID, labels={"Tier": plan_tier}))
        after = facts.get("after")
        if outcome is ApplyOutcome.APPLIED and after:
            effects.metrics.extend(self._subscription_movement(facts, after, prior, account_id))
        if event_type == "invoice.payment_failed" and account_id:
            effects.events.append(self._failed_payment(facts, account_id))
        paid = facts.get("paid") or {}
        effects.metrics.extend(
            _money(Metric.PAYMENT_AMOUNT, paid.get("amount_paid"), paid.get("currency"), plan_tier)
        )
        invoice = facts.get("invoice") or {}
        # The money at risk, once per invoice: Stripe's dunning retries fail the same amount again
        # (attempt_count 2, 3, ...), and PaymentFailed counts those attempts.
        if event_type == "invoice.payment_failed" and invoice.get("attempt_count") == 1:
            effects.metrics.extend(
                _money(
                    Metric.PAYMENT_FAILED_AMOUNT,
                    invoice.get("amount_due"),
                    invoice.get("currency"),
                    plan_tier,
                )
            )
        effects.metrics.extend(self.signals(facts, plan_tier))
        return effects

    def signals(self, facts: Mapping[str, Any], plan_tier: str | None = None) -> list[MetricPoint]:
        """What an event counts beyond its arrival (stripe_events read and bounded each value), whether
        or not it changes an account: ``plan_tier`` is the account's, if one is known."""
        tier = plan_tier or self._catalog.default_tier.name
        points = []
        duration = facts.get("payment_duration")
        if duration:
            points.append(
                MetricPoint(
                    Metric.PAYMENT_DURATION, duration["seconds"], {"PaymentMethod": duration["method"]}
                )
            )
        refund = facts.get("refund") or {}
        if refund.get("amount"):  # an event that refunded nothing more than the last one
            points += _money(Metric.REFUND_AMOUNT, refund["amount"], refund.get("currency"), tier)
        for fact, metric, label in _COUNTED_CLASSES:
            if facts.get(fact):
                points.append(MetricPoint(metric, labels={label: facts[fact]}))
        if facts.get("checkout_velocity_exceeded"):
            points.append(MetricPoint(Metric.CHECKOUT_VELOCITY_EXCEEDED))
        return points

    def _subscription_movement(
        self,
        facts: Mapping[str, Any],
        after: Mapping[str, Any],
        prior: outbox.PriorStanding,
        account_id: str | None,
    ) -> list[MetricPoint]:
        from billwatch.billing.revenue import applied_movement  # with the MRR it judges, off the cold path

        points = []
        moved = applied_movement(prior, after)
        if moved:
            points.append(moved)
        new_tier = self._catalog.find_tier(after.get("tier"))
        old_tier = self._catalog.find_tier(prior.tier) or self._catalog.default_tier
        if new_tier is None or new_tier.rank <= old_tier.rank:
            return points
        age = facts["received_at"] - facts["created"]
        if 0 <= age <= UPGRADE_LATENCY_MAX_SECONDS:
            points.append(MetricPoint(Metric.UPGRADE_LATENCY, age * 1000.0))
        if not moved:  # a new subscription is a start, not an upgrade
            points.append(MetricPoint(Metric.SUBSCRIPTIONS_UPGRADED, labels={"Tier": new_tier.name}))
        logger.info(
            f"User upgraded to {new_tier.name}", extra={"account_id": account_id, "from_tier": old_tier.name}
        )
        return points

    def _failed_payment(self, facts: Mapping[str, Any], account_id: str) -> dict[str, Any]:
        invoice = facts.get("invoice") or {}
        return {
            "type": PAYMENT_FAILED_EVENT_TYPE,
            "severity": self._severities[BusinessAlert.PAYMENT_FAILED].value,
            "account_id": account_id,
            "invoice_id": invoice.get("id"),
            "amount_due": invoice.get("amount_due"),
            "currency": invoice.get("currency"),
            "attempt_count": invoice.get("attempt_count"),
            "stripe_event_id": facts["event_id"],
            "occurred_at": _iso(facts["created"]),
        }

    def deliver(
        self, effects: Effects, channels: tuple[str, ...] = (METRICS_CHANNEL, EVENTS_CHANNEL)
    ) -> list[str]:
        """The channels that did not take their effects (none: all delivered)."""
        undelivered = []
        if METRICS_CHANNEL in channels and effects.metrics:
            self._metrics.extend(effects.metrics)
            self._metrics.flush()  # EMF is a log line: printed, it is delivered
        if EVENTS_CHANNEL in channels:
            for announcement in effects.events:
                try:
                    self._billing_events.publish(announcement)
                except Exception:
                    logger.exception(
                        "Failed to publish a business event; the side-effects sweep will retry it",
                        extra={"business_event": announcement},
                    )
                    undelivered.append(EVENTS_CHANNEL)
        return undelivered

    # ------------------------------------------------------------------ sweep

    def sweep(self, receipt: Callable[[str], Receipt]) -> SweepResult:
        result = SweepResult()
        now = int(self._clock())
        for pk in outbox.pending_keys():
            item = outbox.raw_item(pk)
            left = 0
            for entry in outbox.entries(item).values():
                if now - entry.written_at < SWEEP_GRACE_SECONDS or not self._settle(
                    pk, entry, receipt, result
                ):
                    left += 1
            if not left:
                outbox.leave_index(pk, outbox.entries_written(item))
        logger.info("Side-effects sweep finished", extra={"result": result.__dict__})
        return result

    def _settle(
        self, pk: str, entry: outbox.Entry, receipt: Callable[[str], Receipt], result: SweepResult
    ) -> bool:
        """Whether the entry is delivered and gone."""
        try:
            delivered = self._redeliver(pk, entry, receipt)
        except Exception:
            logger.exception("Side-effects sweep could not deliver an entry", extra={"key": entry.key})
            result.failed += 1
            return False
        if delivered is None:
            return False
        result.delivered += delivered
        outbox.remove(pk, entry.key)
        result.removed += 1
        return True

    def _redeliver(self, pk: str, entry: outbox.Entry, receipt: Callable[[str], Receipt]) -> int | None:
        """1 if the entry's effects went out now, 0 if they had already; None to leave it."""
        if entry.facts.get("kind") == outbox.USAGE_KIND:
            self._usage_events.publish(entry.facts["event"])
            return 1
        status = receipt(entry.key)
        if status is Receipt.IN_FLIGHT:
            return None
        if status is Receipt.DELIVERED:
            return 0
        channels = (EVENTS_CHANNEL,) if status is Receipt.PARTIAL else (METRICS_CHANNEL, EVENTS_CHANNEL)
        effects = self.of(entry.facts, ApplyOutcome.APPLIED, entry.before, pk)
        if self.deliver(effects, channels):
            raise RuntimeError("the business event was not published")
        return 1
