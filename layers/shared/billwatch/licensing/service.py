"""Licensing: what an account may use, and its usage counted atomically against the quotas.

A usage check is one conditional UpdateItem on the account's item. The condition carries the
whole decision: for each tier that has the feature, "the account is on this tier, its counters
belong to the current period, and the usage plus this request stays within the tier's quota".
Concurrent callers therefore can never push usage past a limit, and no read precedes the write.

Counters hold usage since ``usage_since``. They count for the current billing period while that
moment lies inside it (the subscription's period on a paid tier, else the calendar month, UTC);
the first check of a new period starts them again from zero, exactly once.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import NumberAttribute
from pynamodb.constants import ALL_NEW, ALL_OLD
from pynamodb.exceptions import GetError, TransactWriteError
from pynamodb.expressions.condition import Condition

from billwatch.core import dynamo, outbox
from billwatch.core.access import record_refusal
from billwatch.core.config import Settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable, conditional_update, store_failure
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import (
    PERIOD_ATTRIBUTE_PREFIXES,
    BillingAccount,
    UsageReceipt,
    bind_billing_table,
    bind_idempotency_table,
    usage_announcements,
    usage_counter,
    usage_grant,
)
from billwatch.core.observability import logger
from billwatch.licensing.plans import Feature, PlanCatalog, Tier, load_plan_catalog
from billwatch.licensing.usage_events import USAGE_EVENT_TYPE, BusinessEventPublisher, usage_event_publisher

# Crossing one of these shares of a quota is a "limit hit" (the seeds' 80/90/100 % histogram).
LIMIT_HIT_THRESHOLDS = (80, 90, 100)
# Crossing one of these raises a business event for alert dispatch.
USAGE_ALERT_THRESHOLDS = {80: "warning", 95: "critical", 100: "limit_reached"}
MAX_QUANTITY = 1_000_000
_MAX_ADMIN_ATTEMPTS = 3
_MAX_OPTIMISTIC_ATTEMPTS = 10
OTHER_FEATURE = "other"  # metric label for names outside the catalog, which callers choose freely


class UsageRequestError(ValueError):
    """The request cannot be evaluated; the message names the field."""


@dataclass(frozen=True)
class Period:
    start: int
    end: int


@dataclass(frozen=True)
class UsageDecision:
    allowed: bool
    feature: str
    reason: str | None = None
    used: int | None = None
    limit: int | None = None
    remaining: int | None = None
    resets_at: str | None = None
    crossed_thresholds: tuple[int, ...] = field(default=(), compare=False)
    counted_since: int | None = field(default=None, compare=False)  # identifies the usage period
    announcements_due: tuple[int, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": self.allowed, "feature": self.feature}
        if self.reason:
            body["reason"] = self.reason
        if self.limit is not None:
            body.update(used=self.used, limit=self.limit, remaining=self.remaining, resets_at=self.resets_at)
        return body


def month_period(now: float) -> Period:
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    start = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return Period(int(start.timestamp()), int((start + dt.timedelta(days=days)).timestamp()))


def iso(epoch: float) -> str | None:
    """The moment as ISO 8601 UTC, or None for one no calendar can show.

    Stored timestamps are rendered through here, and a stored value may be absurd (written by
    hand, or by a bug): 10**13 is in the year 318857. Such a value renders as null, and is logged,
    rather than failing every read of the account; an invented clamped date would look real.
    """
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        logger.warning("A stored timestamp is out of range", extra={"epoch": epoch})
        return None


@dataclass(frozen=True)
class AccountUsage:
    """An account's item as licensing sees it."""

    account: BillingAccount
    raw: Mapping[str, Any]

    @classmethod
    def from_raw(cls, account_id: str, raw: Mapping[str, Any] | None) -> AccountUsage:
        account = BillingAccount.from_raw_data(dict(raw)) if raw else BillingAccount(account_id)
        return cls(account, raw or {})

    def number(self, attribute: str) -> int:
        value = self.raw.get(attribute, {}).get("N")
        return int(value) if value is not None else 0

    def counter(self, feature: str) -> int:
        return self.number(usage_counter(feature).attr_name)

    def grant(self, feature: str) -> int:
        return self.number(usage_grant(feature).attr_name)

    def period_attributes(self) -> set[str]:
        return {name for name in self.raw if name.startswith(PERIOD_ATTRIBUTE_PREFIXES)}


class Licensing:
    def __init__(
        self,
        catalog: PlanCatalog,
        metrics: MetricsRecorder,
        clock: Callable[[], float] = time.time,
        idempotency_ttl_seconds: int = 24 * 3600,
        usage_events: BusinessEventPublisher | None = None,
    ):
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._idempotency_ttl_seconds = idempotency_ttl_seconds
        self._usage_events = usage_events or usage_event_publisher(None)

    def flush_metrics(self) -> None:
        self._metrics.flush()

    def refuse_admin(self, caller_arn: str | None, operation: str) -> None:
        record_refusal(self._metrics, caller_arn, operation)

    # --- reading -------------------------------------------------------------------------------

    def effective_tier(self, account: BillingAccount) -> Tier:
        name = account.tier_override or account.tier
        try:
            return self._catalog.tier(name) if name else self._catalog.default_tier
        except KeyError:
            return self._catalog.default_tier

    def period(self, tier: Tier, account: BillingAccount, now: float) -> Period:
        if (
            tier is not self._catalog.default_tier
            and account.current_period_start
            and account.current_period_end
        ):
            return Period(int(account.current_period_start), int(account.current_period_end))
        return month_period(now)

    def load(self, account_id: str) -> AccountUsage:
        connection = dynamo.table_connection(BillingAccount)
        try:
            raw = connection.get_item(account_id, consistent_read=True).get("Item")
        except GetError as exc:  # pynamodb's wrapping of botocore's errors
            raise store_failure(exc) from exc
        return AccountUsage.from_raw(account_id, raw)

    def entitlements(self, account_id: str) -> dict[str, Any]:
        return self._entitlements_of(account_id, self.load(account_id))

    def _entitlements_of(self, account_id: str, usage: AccountUsage) -> dict[str, Any]:
        account = usage.account
        tier = self.effective_tier(account)
        now = self._clock()
        period = self.period(tier, account, now)
        current = account.usage_since is None or account.usage_since >= period.start
        features: dict[str, Any] = {}
        names = {name for t in self._catalog.tiers for name in t.features}
        names |= set(account.entitlement_lookup_keys or [])
        for name in sorted(names):
            spec = tier.features.get(name)
            granted_by_stripe = name in (account.entitlement_lookup_keys or [])
            if spec is None or spec.quota is None:
                enabled = spec is not None or granted_by_stripe
                features[name] = {
                    "enabled": enabled,
                    "limit": None,
                    "used": None,
                    "remaining": None,
                    "resets_at": None,
                }
                continue
            used, limit = self._used_and_limit(usage, spec, current)
            features[name] = {
                "enabled": True,
                "limit": limit,
                "used": used,
                "remaining": max(0, limit - used),
                "resets_at": iso(period.end),
            }
        return {
            "account_id": account_id,
            "tier": tier.name,
            "subscription": {
                "status": account.subscription_status,
                "current_period_end": iso(account.current_period_end) if account.current_period_end else None,
                "cancel_at_period_end": bool(account.cancel_at_period_end),
            },
            "features": features,
        }

    @staticmethod
    def _used_and_limit(usage: AccountUsage, spec: Feature, current: bool) -> tuple[int, int]:
        if not current:
            return 0, spec.quota
        grant = usage.grant(spec.name)
        return usage.counter(spec.name) + grant, spec.quota + grant

    # --- administration ------------------------------------------------------------------------

    def set_tier_override(self, account_id: str, tier: str | None) -> dict[str, Any]:
        """Pins the account to a tier whatever its subscription says; None lifts the pin."""
        names = [t.name for t in self._catalog.tiers]
        if tier is not None and tier not in names:
            raise UsageRequestError(f"tier must be one of {names} or null, got {tier!r}")
        action = BillingAccount.tier_override.set(tier) if tier else BillingAccount.tier_override.remove()
        _, stored = self._admin_update(account_id, [action], BillingAccount.merged_into.does_not_exist())
        return self._entitlements_of(account_id, stored)

    def grant(self, account_id: str, feature: str, quantity: int) -> dict[str, Any]:
        """Extra quota for the current period: it goes when the period does."""
        self._validate_quantity(quantity)
        if not any((spec := t.features.get(feature)) and spec.quota is not None for t in self._catalog.tiers):
            raise UsageRequestError(f"feature {feature!r} has no quota to extend")
        counter, granted, since = usage_counter(feature), usage_grant(feature), BillingAccount.usage_since
        for _ in range(_MAX_ADMIN_ATTEMPTS):
            usage = self.load(account_id)
            now = int(self._clock())
            seen = usage.account.usage_since
            period = self.period(self.effective_tier(usage.account), usage.account, now)
            if seen is None or seen >= period.start:
                actions = [counter.add(-quantity), granted.add(quantity), since.set(since | now)]
            else:
                actions = [counter.set(-quantity), granted.set(quantity), since.set(now)]
                actions += self._forget(usage, keep={counter.attr_name, granted.attr_name})
            unchanged = since.does_not_exist() if seen is None else since == seen
            accepted, stored = self._admin_update(account_id, actions, unchanged)
            if accepted:
                self._metrics.add(Metric.QUOTA_GRANTED, quantity, Feature=feature)
                return self._entitlements_of(account_id, stored)
        raise StoreUnavailable(f"usage of {account_id} kept changing; try the grant again")

    def reset_usage(self, account_id: str) -> dict[str, Any]:
        """Starts the account's usage period again from now, for every feature."""
        usage = self.load(account_id)
        actions = [BillingAccount.usage_since.set(int(self._clock())), *self._forget(usage, keep=set())]
        _, stored = self._admin_update(account_id, actions, BillingAccount.merged_into.does_not_exist())
        return self._entitlements_of(account_id, stored)

    @staticmethod
    def _forget(usage: AccountUsage, keep: set[str]) -> list:
        return [NumberAttribute(attr_name=name).remove() for name in usage.period_attributes() - keep]

    @staticmethod
    def _admin_update(account_id: str, actions: list, condition: Condition) -> tuple[bool, AccountUsage]:
        """Whether the condition accepted the write, and the account as the write left it (or as it
        stood when refused). The answer is rendered from that item rather than read again, so
        nothing can fail once a grant has been added: a retry would add it twice."""
        accepted, raw = conditional_update(
            BillingAccount, account_id, actions, condition, return_values=ALL_NEW
        )
        return accepted, AccountUsage.from_raw(account_id, raw)

    # --- counting ------------------------------------------------------------------------------

    def use_idempotently(
        self, account_id: str, feature: str, quantity: int, idempotency_key: str
    ) -> UsageDecision:
        """A repeated key gets the first answer back and consumes nothing more.

        Two requests: one read of the account together with the key's receipt, then one
        transaction that counts the use only if the account is still exactly as read, and stores
        the receipt with the answer only if the key is new. A replay is answered by the read alone.
        """
        self._validate_quantity(quantity)
        receipt_id = f"usage#{account_id}#{idempotency_key}"
        for attempt in range(_MAX_OPTIMISTIC_ATTEMPTS):
            receipt, raw = self._read_with_receipt(account_id, receipt_id)
            if receipt is not None:
                return self._replay(receipt, feature, quantity)
            usage = AccountUsage.from_raw(account_id, raw)
            now = int(self._clock())
            decision = self._decide(usage, feature, quantity, now)
            outcome = self._commit(usage, receipt_id, feature, quantity, decision, now)
            if outcome is True:
                self._account_for(account_id, decision, quantity)
                return decision
            if outcome is not False:  # the same key was committed concurrently: its answer stands
                return self._replay(outcome, feature, quantity)
            self._metrics.add(Metric.QUOTA_CONFLICT)
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 # nosec B311 # jitter, not a secret
        raise StoreUnavailable(f"usage of {account_id} kept changing; retry the request")

    def _read_with_receipt(self, account_id: str, receipt_id: str) -> tuple[UsageReceipt | None, Any]:
        client = dynamo.low_level(BillingAccount).client
        billing, receipts = BillingAccount.Meta.table_name, UsageReceipt.Meta.table_name
        try:
            response = client.batch_get_item(
                RequestItems={
                    billing: {"Keys": [{"pk": {"S": account_id}}], "ConsistentRead": True},
                    receipts: {"Keys": [{"id": {"S": receipt_id}}], "ConsistentRead": True},
                }
            )
        except (ClientError, BotoCoreError) as exc:
            raise store_failure(exc) from exc
        if response.get("UnprocessedKeys"):
            raise StoreUnavailable("DynamoDB did not read every key; retry the request")
        found = response.get("Responses", {})
        receipt_items, account_items = found.get(receipts, []), found.get(billing, [])
        receipt = UsageReceipt.from_raw_data(receipt_items[0]) if receipt_items else None
        return receipt, (account_items[0] if account_items else None)

    @staticmethod
    def _replay(receipt: UsageReceipt | dict, feature: str, quantity: int) -> UsageDecision:
        if isinstance(receipt, dict):
            receipt = UsageReceipt.from_raw_data(receipt)
        if (receipt.feature, receipt.quantity) != (feature, quantity):
            raise UsageRequestError("idempotency_key was already used with a different feature or quantity")
        return UsageDecision(**json.loads(receipt.answer))

    def _decide(self, usage: AccountUsage, feature: str, quantity: int, now: int) -> UsageDecision:
        """The answer the account as read gives; the commit makes sure it still holds."""
        account = usage.account
        tier = self.effective_tier(account)
        spec = tier.features.get(feature)
        if spec is None or spec.quota is None:
            enabled = spec is not None or feature in (account.entitlement_lookup_keys or [])
            return UsageDecision(enabled, feature, None if enabled else "feature_not_in_plan")
        period = self.period(tier, account, now)
        current = account.usage_since is None or account.usage_since >= period.start
        used, limit = self._used_and_limit(usage, spec, current)
        if used + quantity > limit:
            remaining = max(0, limit - used)
            return UsageDecision(False, feature, "quota_exceeded", used, limit, remaining, iso(period.end))
        after = used + quantity
        since = account.usage_since if current and account.usage_since is not None else now
        crossed = self._crossed(used, after, limit)
        due = self._unannounced(usage, feature, after, limit, current)
        return UsageDecision(
            True, feature, None, after, limit, limit - after, iso(period.end), crossed, since, due
        )

    def _commit(
        self,
        usage: AccountUsage,
        receipt_id: str,
        feature: str,
        quantity: int,
        decision: UsageDecision,
        now: int,
    ) -> bool | dict:
        """True when committed; False when the account changed since it was read; otherwise the
        receipt another request with the same key committed first."""
        from pynamodb.transactions import TransactWrite  # only idempotency keys need it

        account = usage.account
        counter = usage_counter(feature)
        seen_counter = usage.raw.get(counter.attr_name, {}).get("N")
        unchanged = BillingAccount.merged_into.does_not_exist()
        for attribute, seen in (
            (BillingAccount.tier, account.tier),
            (BillingAccount.tier_override, account.tier_override),
            (BillingAccount.current_period_start, account.current_period_start),
            (BillingAccount.usage_since, account.usage_since),
            (counter, int(seen_counter) if seen_counter is not None else None),
        ):
            unchanged &= attribute.does_not_exist() if seen is None else attribute == seen
        receipt = UsageReceipt(
            receipt_id,
            feature=feature,
            quantity=quantity,
            answer=json.dumps(decision.as_dict()),
            expiration=now + self._idempotency_ttl_seconds,
        )
        counted = decision.allowed and decision.limit is not None
        try:
            with TransactWrite(connection=dynamo.low_level(BillingAccount)) as transaction:
                if counted and decision.counted_since == account.usage_since:
                    actions = [counter.add(quantity)]
                    transaction.update(BillingAccount(account.pk), actions=actions, condition=unchanged)
                elif counted:  # the first use in a new period starts the counters again
                    actions = [counter.set(quantity), BillingAccount.usage_since.set(decision.counted_since)]
                    actions += self._forget(usage, keep={counter.attr_name})
                    transaction.update(BillingAccount(account.pk), actions=actions, condition=unchanged)
                else:
                    transaction.condition_check(BillingAccount, account.pk, condition=unchanged)
                transaction.save(receipt, condition=UsageReceipt.id.does_not_exist(), return_values=ALL_OLD)
        except TransactWriteError as exc:
            # pynamodb sends condition checks first, then puts, then updates.
            reasons = list(exc.cancellation_reasons or [None, None])
            receipt_reason, account_reason = reasons if counted else reversed(reasons)
            if receipt_reason is not None and receipt_reason.code == "ConditionalCheckFailed":
                return receipt_reason.raw_item or False  # without the item, the next read finds it
            if account_reason is not None and account_reason.code == "ConditionalCheckFailed":
                return False
            raise store_failure(exc) from exc
        return True

    @staticmethod
    def _validate_quantity(quantity: Any) -> None:
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
            raise UsageRequestError(f"quantity must be an integer from 1 to {MAX_QUANTITY}")

    def use(self, account_id: str, feature: str, quantity: int) -> UsageDecision:
        self._validate_quantity(quantity)
        counted = any(
            spec.quota is not None
            for t in self._catalog.tiers
            if (spec := t.features.get(feature)) is not None
        )
        decision = (
            self._count(account_id, feature, quantity)
            if counted
            else self._check_boolean(account_id, feature)
        )
        self._account_for(account_id, decision, quantity)
        return decision

    def _account_for(self, account_id: str, decision: UsageDecision, quantity: int) -> None:
        """The metrics and announcements of a decision that was made for the first time."""
        feature = decision.feature
        label = feature if any(feature in t.features for t in self._catalog.tiers) else OTHER_FEATURE
        self._metrics.add(
            Metric.QUOTA_CHECK, Feature=label, Result="allowed" if decision.allowed else "denied"
        )
        if decision.allowed and decision.limit is not None:
            self._metrics.add(Metric.USAGE_COUNTED, quantity, Feature=label)
        for threshold in decision.crossed_thresholds:
            if threshold in LIMIT_HIT_THRESHOLDS:
                self._metrics.add(Metric.LIMIT_HIT, Threshold=str(threshold))
        for threshold in decision.announcements_due:
            try:
                self._announce(account_id, decision, threshold)
            except (StoreUnavailable, StoreRejected):
                # The use is counted and answered: failing it now would have the caller count it
                # again. The threshold stays unannounced, so the feature's next check sends it.
                logger.warning(
                    "Could not record a usage announcement; the next check will",
                    extra={"account_id": account_id, "feature": decision.feature, "threshold": threshold},
                    exc_info=True,
                )

    @staticmethod
    def _crossed(before: int, after: int, limit: int) -> tuple[int, ...]:
        thresholds = sorted({*LIMIT_HIT_THRESHOLDS, *USAGE_ALERT_THRESHOLDS})
        return tuple(t for t in thresholds if before * 100 < t * limit <= after * 100)

    @staticmethod
    def _unannounced(
        usage: AccountUsage, feature: str, used: int, limit: int, current: bool = True
    ) -> tuple[int, ...]:
        """Alert thresholds the period's usage has reached that no check has announced yet.

        Judged from the state, not from this check's crossing: one that a failed write or a dead
        invocation left unannounced goes out with the feature's next check.
        """
        stored = usage.raw.get(usage_announcements(feature).attr_name, {}).get("NS", []) if current else []
        announced = {int(float(number)) for number in stored}
        return tuple(
            t for t in sorted(USAGE_ALERT_THRESHOLDS) if t * limit <= used * 100 and t not in announced
        )

    def _announce(self, account_id: str, decision: UsageDecision, threshold: int) -> None:
        """Once per account, feature, threshold and period: the write that records it decides.

        The same write records the announcement as a side-effects entry (billwatch.core.outbox), so a
        publish that fails, or an invocation that dies, leaves it to the scheduled sweep.
        """
        announced = usage_announcements(decision.feature)
        condition = (BillingAccount.usage_since == decision.counted_since) & (
            announced.does_not_exist() | ~announced.contains(threshold)
        )
        now = int(self._clock())
        event = {
            "type": USAGE_EVENT_TYPE,
            "account_id": account_id,
            "feature": decision.feature,
            "threshold": threshold,
            "severity": USAGE_ALERT_THRESHOLDS[threshold],
            "used": decision.used,
            "limit": decision.limit,
            "period": {"since": iso(decision.counted_since), "resets_at": decision.resets_at},
            "occurred_at": iso(now),
        }
        key = outbox.usage_key(account_id, decision.feature, threshold, decision.counted_since)
        facts = {"kind": outbox.USAGE_KIND, "event": event}
        actions = [
            announced.add({threshold}),
            *outbox.write_actions(account_id, key, facts, now, with_standing=False),
        ]
        accepted, _ = conditional_update(
            BillingAccount, account_id, actions, condition, return_values=ALL_NEW
        )
        if accepted:
            outbox.publish_recorded(account_id, key, event, self._usage_events)

    def _check_boolean(self, account_id: str, feature: str) -> UsageDecision:
        """A feature without a quota is on or off: nothing to count."""
        return self._decide(self.load(account_id), feature, 1, int(self._clock()))

    def _count(self, account_id: str, feature: str, quantity: int) -> UsageDecision:
        now = int(self._clock())
        counter = usage_counter(feature)
        condition = self._within_quota(feature, quantity, now)
        actions = [counter.add(quantity), BillingAccount.usage_since.set(BillingAccount.usage_since | now)]
        accepted, raw = self._update(account_id, actions, condition)
        if accepted:
            return self._allowed(account_id, feature, quantity, raw, now)
        usage = AccountUsage.from_raw(account_id, raw)
        tier = self.effective_tier(usage.account)
        spec = tier.features.get(feature)
        if spec is None or spec.quota is None:
            return UsageDecision(False, feature, "feature_not_in_plan")
        period = self.period(tier, usage.account, now)
        since = usage.account.usage_since
        if since is not None and since < period.start:
            return self._start_new_period(account_id, feature, quantity, usage, now)
        used, limit = self._used_and_limit(usage, spec, current=True)
        return UsageDecision(
            False, feature, "quota_exceeded", used, limit, max(0, limit - used), iso(period.end)
        )

    def _within_quota(self, feature: str, quantity: int, now: int) -> Condition:
        counter = usage_counter(feature)
        month_start = month_period(now).start
        since = BillingAccount.usage_since
        clauses = []
        for tier in self._catalog.tiers:
            spec = tier.features.get(feature)
            if spec is None or spec.quota is None:
                continue
            if tier is self._catalog.default_tier:
                current = since >= month_start
            else:
                subscription_period = BillingAccount.current_period_start
                current = (subscription_period.exists() & (since >= subscription_period)) | (
                    subscription_period.does_not_exist() & (since >= month_start)
                )
            room = counter <= spec.quota - quantity  # a counter below zero holds extra quota granted
            if quantity <= spec.quota:
                room = counter.does_not_exist() | room
            clauses.append(self._on_tier(tier) & (since.does_not_exist() | current) & room)
        condition = clauses[0]
        for clause in clauses[1:]:
            condition |= clause
        return BillingAccount.merged_into.does_not_exist() & condition

    def _on_tier(self, tier: Tier) -> Condition:
        override = BillingAccount.tier_override
        stored = BillingAccount.tier == tier.name
        if tier is self._catalog.default_tier:
            stored = BillingAccount.tier.does_not_exist() | stored
        return (override.does_not_exist() & stored) | (override == tier.name)

    def _start_new_period(
        self, account_id: str, feature: str, quantity: int, usage: AccountUsage, now: int
    ) -> UsageDecision:
        """The counters belong to a past period: start them again, exactly once, with this use."""
        tier = self.effective_tier(usage.account)
        spec = tier.features[feature]
        period = self.period(tier, usage.account, now)
        if quantity > spec.quota:
            return UsageDecision(False, feature, "quota_exceeded", 0, spec.quota, spec.quota, iso(period.end))
        counter = usage_counter(feature)
        actions = [counter.set(quantity), BillingAccount.usage_since.set(now)]
        actions += self._forget(usage, keep={counter.attr_name})
        accepted, raw = self._update(
            account_id, actions, BillingAccount.usage_since == usage.account.usage_since
        )
        if not accepted:  # another check started the period first: count against its counters
            return self._count(account_id, feature, quantity)
        return self._allowed(account_id, feature, quantity, raw, now)

    def _allowed(self, account_id: str, feature: str, quantity: int, raw: Any, now: int) -> UsageDecision:
        usage = AccountUsage.from_raw(account_id, raw)
        tier = self.effective_tier(usage.account)
        spec = tier.features[feature]
        used, limit = self._used_and_limit(usage, spec, current=True)
        crossed = self._crossed(used - quantity, used, limit)
        period = self.period(tier, usage.account, now)
        return UsageDecision(
            True,
            feature,
            None,
            used,
            limit,
            max(0, limit - used),
            iso(period.end),
            crossed,
            usage.account.usage_since,
            self._unannounced(usage, feature, used, limit),
        )

    def _update(self, account_id: str, actions: list, condition: Condition) -> tuple[bool, Any]:
        accepted, item = conditional_update(
            BillingAccount, account_id, actions, condition, return_values=ALL_NEW
        )
        if not accepted:
            self._metrics.add(Metric.QUOTA_CONFLICT)
        return accepted, item


def build_licensing(settings: Settings) -> Licensing:
    bind_billing_table(settings.billing_table)
    bind_idempotency_table(settings.idempotency_table)
    return Licensing(
        catalog=load_plan_catalog(settings),
        metrics=MetricsRecorder(settings.metrics_namespace, settings.service_name),
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        usage_events=usage_event_publisher(settings.usage_events_topic_arn),
    )
