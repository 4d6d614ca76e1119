"""Every metric billwatch emits, with its unit and dimensions, in one place.

Each metric is published with the dimension set ``[service]`` (the aggregate that alarms use),
``[service, *rollup]`` for each rollup (a subset of its labels that a rate or a dashboard needs
on its own), and, when it has labels, ``[service, *labels]``. CloudWatch matches a dimension set
exactly, so an alarm can only read a set listed here. Labels are low-cardinality by rule:
account and customer ids go into EMF metadata, never into a dimension.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE_DIMENSION = "service"


class Metric(StrEnum):
    WEBHOOK_RECEIVED = "WebhookReceived"
    WEBHOOK_FAILED = "WebhookFailed"
    WEBHOOK_PROCESSING_TIME = "WebhookProcessingTime"
    WEBHOOK_DUPLICATE = "WebhookDuplicate"
    WEBHOOK_SIGNATURE_INVALID = "WebhookSignatureInvalid"
    WEBHOOK_STALE_IGNORED = "WebhookStaleIgnored"
    WEBHOOK_UNHANDLED = "WebhookUnhandled"
    WEBHOOK_ID_REFUSED = "WebhookIdRefused"
    UPGRADE_LATENCY = "UpgradeLatency"
    SUBSCRIPTION_CREATED = "SubscriptionCreated"
    SUBSCRIPTION_RENEWED = "SubscriptionRenewed"
    SUBSCRIPTION_CANCELED = "SubscriptionCanceled"
    PAYMENT_SUCCEEDED = "PaymentSucceeded"
    PAYMENT_FAILED = "PaymentFailed"
    PAYMENT_AMOUNT = "PaymentAmount"
    PAYMENT_FAILED_AMOUNT = "PaymentFailedAmount"
    REFUND_AMOUNT = "RefundAmount"
    PAYMENT_DURATION = "PaymentDuration"
    PAYMENT_DECLINED = "PaymentDeclined"
    FIRST_INVOICE_PAID = "FirstInvoicePaid"
    CHECKOUT_COMPLETED = "CheckoutCompleted"
    CHECKOUT_EXPIRED = "CheckoutExpired"
    QUOTA_CHECK = "QuotaCheck"
    QUOTA_CONFLICT = "QuotaConflict"
    LIMIT_HIT = "LimitHit"
    UNAUTHORIZED_ADMIN_ACCESS = "UnauthorizedAdminAccess"
    QUOTA_RESET_SUCCEEDED = "QuotaResetSucceeded"
    QUOTA_RESET_FAILED = "QuotaResetFailed"
    QUOTA_RESET_ACCOUNTS = "QuotaResetAccounts"
    USAGE_COUNTED = "UsageCounted"
    QUOTA_GRANTED = "QuotaGranted"
    STRIPE_API_ERROR = "StripeApiError"
    HEALTH_CHECK = "HealthCheck"
    HEALTH_CHECK_LATENCY = "HealthCheckLatency"
    HEALTH_PROBE_RUN = "HealthProbeRun"
    TIME_SINCE_LAST_WEBHOOK = "TimeSinceLastWebhook"
    WEBHOOKS_STALLED = "WebhooksStalled"
    WEBHOOKS_QUIET = "WebhooksQuiet"
    WEBHOOK_ENDPOINT_DISABLED = "StripeWebhookEndpointDisabled"
    WEBHOOK_ENDPOINT_MISSING = "StripeWebhookEndpointMissing"
    WEBHOOK_DELIVERY_FAILURES = "StripeWebhookDeliveryFailures"
    DEAD_LETTER_QUEUE_DEPTH = "DeadLetterQueueDepth"
    ACTIVE_SUBSCRIPTIONS = "ActiveSubscriptions"
    ALERT_DELIVERED = "AlertDelivered"
    ALERT_DELIVERY_FAILED = "AlertDeliveryFailed"
    ALERT_SUPPRESSED = "AlertSuppressed"
    ALERT_INPUT_REJECTED = "AlertInputRejected"
    MRR = "MRR"
    PLAN_MRR = "PlanMRR"
    PAYING_SUBSCRIPTIONS = "PayingSubscriptions"
    SUBSCRIPTIONS_NEW = "SubscriptionsNew"
    SUBSCRIPTIONS_REACTIVATED = "SubscriptionsReactivated"
    SUBSCRIPTIONS_CHURNED = "SubscriptionsChurned"
    SUBSCRIPTIONS_UPGRADED = "SubscriptionsUpgraded"
    RECONCILE_RUN = "ReconcileRun"
    RECONCILE_DRIFT = "ReconcileDrift"
    RECONCILE_HEALED = "ReconcileHealed"
    RECONCILE_FAILED = "ReconcileFailed"
    REVENUE_RECONCILED = "RevenueReconciled"
    REVENUE_DRIFT = "RevenueDrift"
    EARLY_FRAUD_WARNING = "EarlyFraudWarning"
    DISPUTE_OPENED = "DisputeOpened"
    CHECKOUT_VELOCITY_EXCEEDED = "CheckoutVelocityExceeded"
    ADMIN_ACTION = "AdminAction"
    DEPLOYED = "Deployed"
    THIN_EVENT_UNRESOLVED = "ThinEventUnresolved"
    METER_ERROR_REPORTED = "MeterErrorReported"
    OVERAGE_MARKER_FAILED = "OverageMarkerFailed"
    OVERAGE_UNITS_SENT = "OverageUnitsSent"
    OVERAGE_EVENTS_SENT = "OverageEventsSent"
    OVERAGE_UNSENT = "OverageUnsent"
    OVERAGE_SEND_FAILED = "OverageSendFailed"
    METER_RECONCILED = "MeterReconciled"
    METER_DRIFT = "MeterDrift"


@dataclass(frozen=True)
class MetricDefinition:
    unit: MetricUnit
    labels: tuple[str, ...] = ()
    rollups: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for rollup in self.rollups:
            if not set(rollup) < set(self.labels):
                raise ValueError(f"rollup {rollup} must be a proper subset of the labels {self.labels}")

    def dimension_sets(self) -> list[tuple[str, ...]]:
        sets = [(SERVICE_DIMENSION,), *((SERVICE_DIMENSION, *rollup) for rollup in self.rollups)]
        if self.labels:
            sets.append((SERVICE_DIMENSION, *self.labels))
        return sets


METRICS: Mapping[Metric, MetricDefinition] = {
    Metric.WEBHOOK_RECEIVED: MetricDefinition(MetricUnit.Count, ("EventType",)),
    Metric.WEBHOOK_FAILED: MetricDefinition(MetricUnit.Count, ("EventType", "Reason"), (("EventType",),)),
    Metric.WEBHOOK_PROCESSING_TIME: MetricDefinition(MetricUnit.Milliseconds),
    Metric.WEBHOOK_DUPLICATE: MetricDefinition(MetricUnit.Count, ("EventType",)),
    Metric.WEBHOOK_SIGNATURE_INVALID: MetricDefinition(MetricUnit.Count),
    Metric.WEBHOOK_STALE_IGNORED: MetricDefinition(MetricUnit.Count, ("EventType",)),
    Metric.WEBHOOK_UNHANDLED: MetricDefinition(MetricUnit.Count, ("EventType",)),
    # A signed event whose account or customer id cannot name an account (Field: where it was).
    Metric.WEBHOOK_ID_REFUSED: MetricDefinition(MetricUnit.Count, ("Field",)),
    Metric.UPGRADE_LATENCY: MetricDefinition(MetricUnit.Milliseconds),
    # Status: the subscription's Stripe status when created (a bounded set; anything else is "other").
    Metric.SUBSCRIPTION_CREATED: MetricDefinition(MetricUnit.Count, ("Tier", "Status"), (("Tier",),)),
    Metric.SUBSCRIPTION_RENEWED: MetricDefinition(MetricUnit.Count, ("Tier",)),
    Metric.SUBSCRIPTION_CANCELED: MetricDefinition(MetricUnit.Count, ("Tier",)),
    Metric.PAYMENT_SUCCEEDED: MetricDefinition(MetricUnit.Count),
    Metric.PAYMENT_FAILED: MetricDefinition(MetricUnit.Count),
    # Money in major units of its currency, by the account's plan (Tier): amounts of two currencies
    # never add up, so a reader takes one Currency at a time. A paid invoice's amount_paid; a failed
    # one's amount_due; what a charge.refunded event newly refunded.
    Metric.PAYMENT_AMOUNT: MetricDefinition(MetricUnit.NoUnit, ("Currency", "Tier"), (("Currency",),)),
    Metric.PAYMENT_FAILED_AMOUNT: MetricDefinition(MetricUnit.NoUnit, ("Currency", "Tier"), (("Currency",),)),
    Metric.REFUND_AMOUNT: MetricDefinition(MetricUnit.NoUnit, ("Currency", "Tier"), (("Currency",),)),
    # From the invoice's finalisation to its payment; PaymentMethod is a bounded set of Stripe's types.
    Metric.PAYMENT_DURATION: MetricDefinition(MetricUnit.Seconds, ("PaymentMethod",)),
    # A declined payment attempt, by the class of Stripe's decline (billing.decline_reasons).
    Metric.PAYMENT_DECLINED: MetricDefinition(MetricUnit.Count, ("DeclineReason",)),
    # The funnel's third stage: a subscription's first invoice paid (billing_reason subscription_create).
    Metric.FIRST_INVOICE_PAID: MetricDefinition(MetricUnit.Count, ("Tier",)),
    Metric.CHECKOUT_COMPLETED: MetricDefinition(MetricUnit.Count),
    Metric.CHECKOUT_EXPIRED: MetricDefinition(MetricUnit.Count),
    Metric.QUOTA_CHECK: MetricDefinition(MetricUnit.Count, ("Feature", "Result"), (("Result",),)),
    Metric.QUOTA_CONFLICT: MetricDefinition(MetricUnit.Count),
    Metric.LIMIT_HIT: MetricDefinition(MetricUnit.Count, ("Threshold",)),
    Metric.UNAUTHORIZED_ADMIN_ACCESS: MetricDefinition(MetricUnit.Count),
    Metric.QUOTA_RESET_SUCCEEDED: MetricDefinition(MetricUnit.Count),
    Metric.QUOTA_RESET_FAILED: MetricDefinition(MetricUnit.Count),
    Metric.QUOTA_RESET_ACCOUNTS: MetricDefinition(MetricUnit.Count),
    # Units consumed by allowed checks: what "top features by usage" ranks.
    Metric.USAGE_COUNTED: MetricDefinition(MetricUnit.Count, ("Feature", "Tier"), (("Feature",), ("Tier",))),
    # Extra quota an admin granted, one point per grant valued at its quantity (so p99 is a big grant).
    Metric.QUOTA_GRANTED: MetricDefinition(MetricUnit.Count, ("Feature",)),
    # Code: rate_limit, authentication, permission, invalid_request, connection or api_error.
    Metric.STRIPE_API_ERROR: MetricDefinition(MetricUnit.Count, ("Code",)),
    # 1 healthy, 0 unhealthy, per check of the health probe.
    Metric.HEALTH_CHECK: MetricDefinition(MetricUnit.Count, ("Check",)),
    Metric.HEALTH_CHECK_LATENCY: MetricDefinition(MetricUnit.Milliseconds, ("Check",)),
    # One per scheduled probe run: the dead-man's switch alarms on its absence.
    Metric.HEALTH_PROBE_RUN: MetricDefinition(MetricUnit.Count),
    Metric.TIME_SINCE_LAST_WEBHOOK: MetricDefinition(MetricUnit.Seconds),
    # 1 when no webhook arrived for the stall window inside business hours, else 0.
    Metric.WEBHOOKS_STALLED: MetricDefinition(MetricUnit.Count),
    Metric.WEBHOOKS_QUIET: MetricDefinition(MetricUnit.Count),
    Metric.WEBHOOK_ENDPOINT_DISABLED: MetricDefinition(MetricUnit.Count),
    Metric.WEBHOOK_ENDPOINT_MISSING: MetricDefinition(MetricUnit.Count),
    Metric.WEBHOOK_DELIVERY_FAILURES: MetricDefinition(MetricUnit.Count),
    Metric.DEAD_LETTER_QUEUE_DEPTH: MetricDefinition(MetricUnit.Count, ("Queue",)),
    Metric.ACTIVE_SUBSCRIPTIONS: MetricDefinition(MetricUnit.Count, ("Tier",)),
    # Channel: slack, email, pagerduty, webhook or log. A failure is counted once per notification
    # that the channel could not take after its retries (or at once, for a permanent error).
    Metric.ALERT_DELIVERED: MetricDefinition(MetricUnit.Count, ("Channel",)),
    Metric.ALERT_DELIVERY_FAILED: MetricDefinition(MetricUnit.Count, ("Channel",)),
    # Reason: dedup, inhibited or silenced.
    Metric.ALERT_SUPPRESSED: MetricDefinition(MetricUnit.Count, ("Reason",)),
    # Records the dispatcher could not read; each is logged with its problem and dead-lettered.
    Metric.ALERT_INPUT_REJECTED: MetricDefinition(MetricUnit.Count),
    # Monthly recurring revenue of the live subscriptions, in major units of the Currency (never summed
    # across currencies), and the subscriptions it is counted from; definitions in
    # docs/revenue-metrics.md.
    Metric.MRR: MetricDefinition(MetricUnit.NoUnit, ("Currency",)),
    # MRR split by plan: a gauge of its own, since a rollup's datapoints (one per tier) would not
    # average to the currency's MRR.
    Metric.PLAN_MRR: MetricDefinition(MetricUnit.NoUnit, ("Currency", "Tier")),
    Metric.PAYING_SUBSCRIPTIONS: MetricDefinition(MetricUnit.Count),
    # One per applied change that starts, restarts or ends a paying subscription (webhooks and
    # reconciliation alike): summed, they are the change in PayingSubscriptions.
    Metric.SUBSCRIPTIONS_NEW: MetricDefinition(MetricUnit.Count),
    Metric.SUBSCRIPTIONS_REACTIVATED: MetricDefinition(MetricUnit.Count),
    Metric.SUBSCRIPTIONS_CHURNED: MetricDefinition(MetricUnit.Count),
    # An applied change that raises the tier of a subscription that already counted (not a new one).
    Metric.SUBSCRIPTIONS_UPGRADED: MetricDefinition(MetricUnit.Count, ("Tier",)),  # the tier upgraded to
    # One per finished reconciliation run; drift and healing per compared field (status, tier,
    # period_end, cancel_at_period_end, customer_link, subscription, missed_event).
    Metric.RECONCILE_RUN: MetricDefinition(MetricUnit.Count),
    Metric.RECONCILE_DRIFT: MetricDefinition(MetricUnit.Count, ("Field",)),
    Metric.RECONCILE_HEALED: MetricDefinition(MetricUnit.Count, ("Field",)),
    Metric.RECONCILE_FAILED: MetricDefinition(MetricUnit.Count),
    # One per currency per daily revenue reconciliation (Stripe's gross volume against PaymentAmount
    # less RefundAmount), and one more when that currency's drift is over the threshold.
    Metric.REVENUE_RECONCILED: MetricDefinition(MetricUnit.Count, ("Currency",)),
    Metric.REVENUE_DRIFT: MetricDefinition(MetricUnit.Count, ("Currency",)),
    # Suspicious activity, as Stripe reports it (docs/suspicious-activity.md): bounded Stripe enums.
    Metric.EARLY_FRAUD_WARNING: MetricDefinition(MetricUnit.Count, ("FraudType",)),
    Metric.DISPUTE_OPENED: MetricDefinition(MetricUnit.Count, ("Reason",)),
    Metric.CHECKOUT_VELOCITY_EXCEEDED: MetricDefinition(MetricUnit.Count),
    # An admin action, allowed and recorded in the audit trail, or refused.
    Metric.ADMIN_ACTION: MetricDefinition(MetricUnit.Count, ("Action", "Outcome"), (("Outcome",),)),
    # One per stack deployment (the dashboards' deployment marker).
    Metric.DEPLOYED: MetricDefinition(MetricUnit.Count),
    # A thin event of a handled type that could not be turned into its v1 event (Reason: a
    # billing.thin_events.UnresolvedReason); it is answered 5xx, or 422 when Stripe names no v1 event.
    Metric.THIN_EVENT_UNRESOLVED: MetricDefinition(MetricUnit.Count, ("Reason",)),
    # Stripe reported that meter events were refused (Type: error_report_triggered, no_meter_found).
    Metric.METER_ERROR_REPORTED: MetricDefinition(MetricUnit.Count, ("Type",)),
    # A usage check whose answer had overage could not put the account on the overage drain's list
    # (licensing.service): the hourly quota reset does, so the units are billed up to an hour late.
    Metric.OVERAGE_MARKER_FAILED: MetricDefinition(MetricUnit.Count),
    # The overage drain (billing.overage_drain): units and events Stripe accepted whose watermark moved
    # (one point per event, valued at its units); per run, each balance it could not make an event of
    # (Reason: no_customer, too_old) and each event Stripe did not accept, by what became of it (Outcome:
    # rate_limited, transient, key_refused, permanent, gave_up; the last two are dead-lettered).
    Metric.OVERAGE_UNITS_SENT: MetricDefinition(MetricUnit.Count, ("Feature",)),
    Metric.OVERAGE_EVENTS_SENT: MetricDefinition(MetricUnit.Count),
    Metric.OVERAGE_UNSENT: MetricDefinition(MetricUnit.Count, ("Reason",)),
    Metric.OVERAGE_SEND_FAILED: MetricDefinition(MetricUnit.Count, ("Outcome",)),
    # The daily overage reconciliation (reporting.meter_reconciliation): one per Stripe customer, meter
    # and usage period compared with Stripe's meter event summary, and one more for each that drifts
    # (Stripe counts more than was sent, still misses units sent before the last run, or has no meter).
    Metric.METER_RECONCILED: MetricDefinition(MetricUnit.Count),
    Metric.METER_DRIFT: MetricDefinition(MetricUnit.Count),
}


@dataclass(frozen=True)
class MetricPoint:
    metric: Metric
    value: float = 1
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = set(METRICS[self.metric].labels)
        if set(self.labels) != expected:
            raise ValueError(
                f"metric {self.metric.value} takes labels {sorted(expected)}, got {sorted(self.labels)}"
            )


# What points must share to go out in one EMF document: their labels (sorted name, value pairs),
# and their metric's rollups.
_EmfDocument = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, ...], ...]]


class MetricsRecorder:
    """Collects points during one invocation and writes them as CloudWatch EMF on flush.

    Points that share labels go out in one EMF document, so an invocation prints a handful
    of lines rather than one per point.
    """

    def __init__(self, namespace: str, service: str) -> None:
        self._namespace = namespace
        self._service = service
        self._points: list[MetricPoint] = []

    def add(self, metric: Metric, value: float = 1, **labels: str) -> None:
        self._points.append(MetricPoint(metric, value, labels))

    def extend(self, points: Iterable[MetricPoint]) -> None:
        self._points.extend(points)

    def flush(self, metadata: Mapping[str, Any] | None = None) -> None:
        groups: dict[_EmfDocument, list[MetricPoint]] = {}
        for point in self._points:
            key = (tuple(sorted(point.labels.items())), METRICS[point.metric].rollups)
            groups.setdefault(key, []).append(point)
        self._points = []
        for (labels, rollups), points in groups.items():
            emf = EphemeralMetrics(namespace=self._namespace, service=self._service)
            values = dict(labels)
            for rollup in rollups:
                emf.add_dimensions(**{SERVICE_DIMENSION: self._service}, **{n: values[n] for n in rollup})
            if labels:
                emf.add_dimensions(**{SERVICE_DIMENSION: self._service}, **values)
            for name, value in (metadata or {}).items():
                emf.add_metadata(name, value)
            for point in points:
                emf.add_metric(name=point.metric.value, unit=METRICS[point.metric].unit, value=point.value)
            emf.flush_metrics()
