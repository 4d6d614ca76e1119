"""The DynamoDB item shapes, as pynamodb models.

One BillingAccount item per account, keyed by the account id. Until Stripe tells us which
account a customer belongs to, the customer id stands in as the account id; once the link is
known, that provisional item is merged into the account's item and left behind as a redirect
(``merged_into``), so later events that only name the customer still find the account.

Each group of fields records the version of the Stripe event that last wrote it
(``<group>_version``), which is what keeps out-of-order deliveries from going backwards.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    NumberAttribute,
    NumberSetAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection

from billwatch.core.dynamo import SharedClientModel, bind_table


class ActiveSubscriptionsByTier(GlobalSecondaryIndex):
    """Sparse: only accounts with a live subscription carry ``active_tier``, so counting a tier
    reads just those keys instead of scanning the table."""

    class Meta:
        index_name = "ActiveSubscriptionsByTier"
        projection = IncludeProjection(["mrr", "mrr_currency"])

    active_tier = UnicodeAttribute(hash_key=True)
    pk = UnicodeAttribute(range_key=True)


class PendingSideEffects(GlobalSecondaryIndex):
    """Sparse: only items with side effects still to deliver carry ``outbox_shard`` (core.outbox)."""

    class Meta:
        index_name = "PendingSideEffects"
        projection = KeysOnlyProjection()

    outbox_shard = UnicodeAttribute(hash_key=True)
    pk = UnicodeAttribute(range_key=True)


class OverageDue(GlobalSecondaryIndex):
    """Sparse: only accounts whose period owes overage units to Stripe, or has units in flight or sent
    and unconfirmed, carry ``overage_due`` (billwatch.licensing.overage_ledger), so the drain and the
    reconciliation query their work instead of scanning the table."""

    class Meta:
        index_name = "OverageDue"
        projection = KeysOnlyProjection()

    overage_due = UnicodeAttribute(hash_key=True)
    pk = UnicodeAttribute(range_key=True)


class ByStripeCustomer(GlobalSecondaryIndex):
    """The accounts billed to a Stripe customer (and its provisional item or redirect, which
    ``merged_into`` and the key tell apart): overage reconciliation compares a customer's meter
    summary with one account's units only when no other account bills that customer."""

    class Meta:
        index_name = "ByStripeCustomer"
        projection = IncludeProjection(["merged_into"])

    stripe_customer_id = UnicodeAttribute(hash_key=True)
    pk = UnicodeAttribute(range_key=True)


class BillingAccount(SharedClientModel):
    class Meta:
        table_name = "billing-state"  # replaced by bind_billing_table() at start-up

    pk = UnicodeAttribute(hash_key=True)
    merged_into = UnicodeAttribute(null=True)
    stripe_customer_id = UnicodeAttribute(null=True)

    subscription_id = UnicodeAttribute(null=True)
    subscription_status = UnicodeAttribute(null=True)
    tier = UnicodeAttribute(null=True)
    plan_tier = UnicodeAttribute(null=True)
    active_tier = UnicodeAttribute(null=True)  # the tier while the subscription is live, else absent
    price_id = UnicodeAttribute(null=True)
    price_lookup_key = UnicodeAttribute(null=True)
    current_period_start = NumberAttribute(null=True)
    current_period_end = NumberAttribute(null=True)
    cancel_at_period_end = BooleanAttribute(null=True)
    trial_end = NumberAttribute(null=True)
    subscription_started_at = NumberAttribute(null=True)  # Stripe's start_date: the cohort it is in
    subscription_version = UnicodeAttribute(null=True)

    last_invoice_id = UnicodeAttribute(null=True)
    last_payment_status = UnicodeAttribute(null=True)
    last_billing_reason = UnicodeAttribute(null=True)
    last_payment_at = NumberAttribute(null=True)
    payment_version = UnicodeAttribute(null=True)

    last_checkout_session_id = UnicodeAttribute(null=True)
    last_checkout_status = UnicodeAttribute(null=True)
    checkout_version = UnicodeAttribute(null=True)

    entitlement_lookup_keys = ListAttribute(of=UnicodeAttribute, null=True)
    entitlements_version = UnicodeAttribute(null=True)

    customer_deleted = BooleanAttribute(null=True)
    customer_version = UnicodeAttribute(null=True)

    # Licensing. Per-feature counters are attributes named by the catalog (usage_counter below).
    tier_override = UnicodeAttribute(null=True)
    usage_since = NumberAttribute(null=True)  # the counters hold usage from this epoch second on

    created_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    revision = NumberAttribute(null=True)

    active_subscriptions_by_tier = ActiveSubscriptionsByTier()
    # What the live subscription adds to MRR, in minor units of mrr_currency (billwatch.billing.revenue).
    mrr = NumberAttribute(null=True)
    mrr_currency = UnicodeAttribute(null=True)

    # Side effects still to deliver (billwatch.core.outbox): entries are attributes named by their key.
    outbox_shard = UnicodeAttribute(null=True)
    outbox_written = NumberAttribute(null=True)
    pending_side_effects = PendingSideEffects()

    # Overage owed to Stripe, in flight, or sent and not yet confirmed (billwatch.licensing.overage_ledger).
    overage_due = UnicodeAttribute(null=True)
    overage_due_index = OverageDue()
    by_stripe_customer = ByStripeCustomer()


# The fields each kind of Stripe event owns. An event only ever writes its own group.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "subscription": (
        "subscription_id",
        "subscription_status",
        "tier",
        "plan_tier",
        "active_tier",
        "mrr",
        "mrr_currency",
        "price_id",
        "price_lookup_key",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "trial_end",
        "subscription_started_at",
    ),
    "payment": ("last_invoice_id", "last_payment_status", "last_billing_reason", "last_payment_at"),
    "checkout": ("last_checkout_session_id", "last_checkout_status"),
    "entitlements": ("entitlement_lookup_keys",),
    "customer": ("customer_deleted",),
}


def version_attribute(group: str) -> str:
    return f"{group}_version"


class JobCheckpoint(SharedClientModel):
    """Where a scheduled job's scan segment got to, so that a rerun continues instead of restarting."""

    class Meta:
        table_name = "billing-state"  # replaced by bind_billing_table() at start-up

    pk = UnicodeAttribute(hash_key=True)  # job#<job>#<run>#<segment>
    cursor = UnicodeAttribute(null=True)  # the scan's LastEvaluatedKey, as JSON
    scanned = NumberAttribute(null=True)
    reset = NumberAttribute(null=True)
    finished = BooleanAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)

    @staticmethod
    def key(name: str) -> str:
        return f"job#{name}"

    @classmethod
    def load(cls, name: str) -> JobCheckpoint:
        try:
            return cls.get(cls.key(name), consistent_read=True)
        except cls.DoesNotExist:
            return cls(cls.key(name))

    def advance(self, cursor: dict | None, scanned: int, reset: int) -> None:
        self.cursor = json.dumps(cursor) if cursor else None
        self.scanned, self.reset, self.finished = scanned, reset, cursor is None
        self.updated_at = datetime.now(UTC)
        self.save()


class WebhookMarker(SharedClientModel):
    """When the intake last received a verified webhook: what the health probe's freshness reads."""

    class Meta:
        table_name = "billing-state"  # replaced by bind_billing_table() at start-up

    pk = UnicodeAttribute(hash_key=True)  # marker#webhook-received
    received_at = NumberAttribute()  # epoch second; only ever moves forward


class HealthSnapshot(SharedClientModel):
    """The last scheduled health probe's report, which the shallow GET /health answers from."""

    class Meta:
        table_name = "billing-state"  # replaced by bind_billing_table() at start-up

    pk = UnicodeAttribute(hash_key=True)  # health#last-probe
    probed_at = NumberAttribute()  # epoch second
    report = UnicodeAttribute()  # the report, as JSON


class OverageSendFailure(SharedClientModel):
    """An overage range in flight that the drain could not send (billwatch.billing.overage_drain): the
    runs in a row that failed, and once dead-lettered, when it was parked. Gone once Stripe accepts it;
    an operator re-drives a parked range by deleting its item (docs/runbooks/overage-drain.md)."""

    class Meta:
        table_name = "billing-state"  # replaced by bind_billing_table() at start-up

    pk = UnicodeAttribute(hash_key=True)  # overage-drain#<the event's identifier>
    runs = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)  # the last one, as the dead letter names it
    failed_at = NumberAttribute(null=True)
    parked_at = NumberAttribute(null=True)

    PREFIX = "overage-drain#"

    @classmethod
    def key(cls, identifier: str) -> str:
        return cls.PREFIX + identifier

    @property
    def identifier(self) -> str:
        return self.pk.removeprefix(self.PREFIX)


class UsageReceipt(SharedClientModel):
    """The answer to a usage check made with an idempotency key, kept for its replays."""

    class Meta:
        table_name = "idempotency"  # replaced by bind_idempotency_table() at start-up

    id = UnicodeAttribute(hash_key=True)  # usage#<account>#<key>; Powertools' ids never start so
    feature = UnicodeAttribute()
    quantity = NumberAttribute()
    answer = UnicodeAttribute()  # the first answer, as JSON
    expiration = NumberAttribute()  # the table's TTL attribute


class CheckoutVelocityCounter(SharedClientModel):
    """The checkout sessions one buyer opened in one minute (billwatch.billing.velocity).

    Beside the count, each counted session's place in it, as ``s_<hash of the session id>``, for
    the sessions up to the first one over the limit: that bounds the item.
    """

    class Meta:
        table_name = "idempotency"  # replaced by bind_idempotency_table() at start-up

    id = UnicodeAttribute(hash_key=True)  # checkout-velocity#<hash>; Powertools' ids never start so
    sessions = NumberAttribute(null=True)
    expiration = NumberAttribute()  # the table's TTL attribute


class OverageDueRecords(GlobalSecondaryIndex):
    """Sparse: only closed periods that still owe overage units, have units in flight or sent and
    unconfirmed carry ``overage_due``; the table's key (account_id, period_start) is projected."""

    class Meta:
        index_name = "OverageDue"
        projection = KeysOnlyProjection()

    overage_due = UnicodeAttribute(hash_key=True)
    account_id = UnicodeAttribute(range_key=True)


class UsagePeriodRecord(SharedClientModel):
    """An account's closed usage period (billwatch.licensing.usage_history), kept until ``expiration``.

    Keyed by the account id and the moment the period's counters counted from, which only the
    account's own item supplies: nothing from a request names a period.
    """

    class Meta:
        table_name = "usage-history"  # replaced by bind_usage_history_table() at start-up

    account_id = UnicodeAttribute(hash_key=True)
    period_start = NumberAttribute(range_key=True)  # epoch second: the closed period's usage_since
    period_end = NumberAttribute()  # epoch second
    closed_at = NumberAttribute()
    closed_by = UnicodeAttribute()  # what closed it: usage, quota_reset, grant, admin_reset
    tier = UnicodeAttribute()  # the tier in force when it closed
    tier_override = UnicodeAttribute(null=True)  # the admin's pin, when that was what set the tier
    # {feature: {"used", "granted", "limit"}}, as JSON; a feature billed as overage adds "reported",
    # "confirmed", "checked" once reconciled, and while a range is in flight "sending" and "pinned_at"
    # (licensing.overage_ledger).
    features = UnicodeAttribute()
    expiration = NumberAttribute()  # the table's TTL attribute
    overage_due = UnicodeAttribute(null=True)  # as BillingAccount.overage_due, for this closed period
    overage_due_index = OverageDueRecords()


def bind_idempotency_table(table_name: str) -> None:
    bind_table(table_name, UsageReceipt, CheckoutVelocityCounter)


def bind_usage_history_table(table_name: str) -> None:
    bind_table(table_name, UsagePeriodRecord)


def bind_billing_table(table_name: str) -> None:
    bind_table(table_name, BillingAccount, JobCheckpoint, WebhookMarker, HealthSnapshot, OverageSendFailure)


def usage_counter(feature: str) -> NumberAttribute:
    """Usage of a feature since ``usage_since``, net of the extra quota granted for the period."""
    return NumberAttribute(attr_name=f"used_{feature}")


def usage_grant(feature: str) -> NumberAttribute:
    """Extra quota an admin granted for the current period."""
    return NumberAttribute(attr_name=f"granted_{feature}")


def usage_announcements(feature: str) -> NumberSetAttribute:
    """The usage thresholds (in %) already announced for the feature this period.

    A set, not the highest one: two checks that cross 80 % and 95 % at once record both, whichever
    writes first.
    """
    return NumberSetAttribute(attr_name=f"announced_{feature}")


def overage_reported(feature: str) -> NumberAttribute:
    """The watermark: the period's overage units Stripe has accepted (absent: none)."""
    return NumberAttribute(attr_name=f"overage_reported_{feature}")


def overage_sending(feature: str) -> NumberAttribute:
    """The end of the range of overage units in flight to Stripe (after the watermark, through this)."""
    return NumberAttribute(attr_name=f"overage_sending_{feature}")


def overage_pinned_at(feature: str) -> NumberAttribute:
    """When the range in flight was pinned (epoch second)."""
    return NumberAttribute(attr_name=f"overage_pinned_at_{feature}")


def overage_customer(feature: str) -> UnicodeAttribute:
    """The Stripe customer the period's first range was pinned for: every unit of the period goes to
    it, so a range is resent as first sent and a change of customer takes effect at the next period."""
    return UnicodeAttribute(attr_name=f"overage_customer_{feature}")


def overage_confirmed(feature: str) -> NumberAttribute:
    """The period's overage units reconciliation found in Stripe's event summaries."""
    return NumberAttribute(attr_name=f"overage_confirmed_{feature}")


def overage_checked(feature: str) -> NumberAttribute:
    """The watermark reconciliation last compared with Stripe's summaries (which count late)."""
    return NumberAttribute(attr_name=f"overage_checked_{feature}")


OVERAGE_ATTRIBUTES = (
    overage_reported,
    overage_sending,
    overage_pinned_at,
    overage_confirmed,
    overage_checked,
)
# The overage_due marker of an item the drain has work on is one of these shards; one with only units
# sent and not yet confirmed carries SENT_MARKER_PREFIX + its shard (billwatch.licensing.overage_ledger).
OVERAGE_SHARDS = tuple(str(shard) for shard in range(8))
SENT_MARKER_PREFIX = "sent#"
# One owing units the drain cannot send as things stand (no Stripe customer, too old, parked) carries
# HELD_MARKER_PREFIX + its shard: off the every-minute list, read again by the drain's hourly held pass.
HELD_MARKER_PREFIX = "held#"


def overage_shard(account_id: str) -> str:
    """The account's OverageDue partition: stable, and spread evenly over the shards."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return OVERAGE_SHARDS[digest[0] % len(OVERAGE_SHARDS)]


# Attributes that belong to one usage period and go when a new one starts ("alerted_" held the
# highest announced threshold before the set replaced it).
PERIOD_ATTRIBUTE_PREFIXES = (
    "used_",
    "granted_",
    "announced_",
    "alerted_",
    *(attribute("").attr_name for attribute in OVERAGE_ATTRIBUTES),
    overage_customer("").attr_name,
)


# ---------------------------------------------------------------------------- alert dispatch
# One table (AlertStateTable), partitioned by what an item is, so that each kind is one Query.


class _AlertTableModel(SharedClientModel):
    class Meta:
        table_name = "alert-state"  # replaced by bind_alert_table() at start-up

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    expiration = NumberAttribute(null=True)  # the table's TTL attribute


class AlertRecord(_AlertTableModel):
    """An alert's current state (pk "alert", sk its fingerprint)."""

    status = UnicodeAttribute()
    since = UnicodeAttribute()
    version = UnicodeAttribute()
    last_seen_at = NumberAttribute()  # epoch second of the last input about it
    alert = UnicodeAttribute()  # the Alert, as JSON, to render repeats and resolved notices from
    # An admin's acknowledgement holds repeats of the version it names, and of no later one.
    acked_version = UnicodeAttribute(null=True)
    acked_by = UnicodeAttribute(null=True)
    acked_at = NumberAttribute(null=True)
    acked_reason = UnicodeAttribute(null=True)
    # On a state an admin resolved by hand (alerting.store.AlertStore.resolve_by_hand).
    resolved_by = UnicodeAttribute(null=True)
    resolved_at = NumberAttribute(null=True)
    resolved_reason = UnicodeAttribute(null=True)


class NotificationRecord(_AlertTableModel):
    """What a receiver was last told about an alert (pk "notify", sk "<fingerprint>|<receiver>")."""

    sent_version = UnicodeAttribute(null=True)
    sent_status = UnicodeAttribute(null=True)
    sent_at = NumberAttribute(null=True)
    lease_until = NumberAttribute(null=True)  # a dispatcher is sending it; others keep off till then


class SilenceRecord(_AlertTableModel):
    """A maintenance window (pk "silence", sk its id): matching alerts are recorded, not sent."""

    matchers = ListAttribute(of=UnicodeAttribute)
    starts_at = NumberAttribute()
    ends_at = NumberAttribute()
    comment = UnicodeAttribute()
    created_by = UnicodeAttribute()


class BrokenChannel(_AlertTableModel):
    """A channel that answered a permanent error (pk "broken", sk "<receiver>|<channel index>")."""

    channel = UnicodeAttribute()
    status = NumberAttribute(null=True)
    detail = UnicodeAttribute()
    since = NumberAttribute()


def bind_alert_table(table_name: str) -> None:
    bind_table(table_name, AlertRecord, NotificationRecord, SilenceRecord, BrokenChannel)


# ------------------------------------------------------------------ audit trail
# AuditTable: one item per admin action or refused attempt (billwatch.core.audit), never rewritten.


class AuditByMonth(GlobalSecondaryIndex):
    """Every record of a month, across accounts: a range of a few months is a few Queries."""

    class Meta:
        index_name = "ByMonth"
        projection = AllProjection()

    month = UnicodeAttribute(hash_key=True)  # YYYY-MM of the record's time
    sk = UnicodeAttribute(range_key=True)


class AuditRecord(SharedClientModel):
    class Meta:
        table_name = "audit"  # replaced by bind_audit_table() at start-up

    pk = UnicodeAttribute(hash_key=True)  # account#<account id>, or "stack" for the stack's own things
    sk = UnicodeAttribute(range_key=True)  # <UTC time, microseconds>#<random hex>: sorts by time, unique
    month = UnicodeAttribute()
    at = UnicodeAttribute()  # ISO 8601 UTC
    caller = UnicodeAttribute()  # the IAM ARN API Gateway's authorizer names, or STS for devtools.alerts
    on_behalf_of = UnicodeAttribute(null=True)  # devtools.alerts' --by: the operator's note, not verified
    action = UnicodeAttribute()
    target_kind = UnicodeAttribute()  # account, silence, alert or none
    target = UnicodeAttribute(null=True)
    outcome = UnicodeAttribute()  # recorded (done) or refused
    reason = UnicodeAttribute(null=True)  # why it was refused, or the admin's own reason
    before = UnicodeAttribute(null=True)  # JSON
    after = UnicodeAttribute(null=True)  # JSON
    api_request_id = UnicodeAttribute(null=True)
    lambda_request_id = UnicodeAttribute(null=True)
    expiration = NumberAttribute()  # the table's TTL attribute
    by_month = AuditByMonth()


def bind_audit_table(table_name: str) -> None:
    bind_table(table_name, AuditRecord)
