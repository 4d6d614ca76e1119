"""Licensing: what an account may use, and its usage counted atomically against the quotas.

The quota rule itself (tiers, periods, room, and the DynamoDB condition that states it) is
billwatch.licensing.quota_policy, which does no I/O. This module does the I/O around it and asks
it for every decision.

A usage check is one conditional UpdateItem on the account's item. The condition carries the
whole decision: for each tier that has the feature, "the account is on this tier, its counters
belong to the current period, and the usage plus this request stays within the tier's quota".
Concurrent callers therefore can never push usage past a limit, and no read precedes the write.
A refused write returns the item, and the policy's decision on that item says why: over the
quota, not in the plan, or counters of a past period, which one more conditional write starts
again, exactly once.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.constants import ALL_NEW, ALL_OLD, NONE
from pynamodb.exceptions import GetError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from billwatch.core import dynamo, outbox
from billwatch.core.access import record_refusal
from billwatch.core.audit import DEFAULT_RETENTION_DAYS, AuditedRoute, AuditTrail, Target
from billwatch.core.config import ConfigError, Settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable, conditional_update, store_failure
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import (
    AuditRecord,
    BillingAccount,
    UsagePeriodRecord,
    UsageReceipt,
    bind_billing_table,
    bind_idempotency_table,
    bind_usage_history_table,
    overage_confirmed,
    overage_reported,
    overage_shard,
    usage_announcements,
    usage_counter,
    usage_grant,
)
from billwatch.core.observability import logger
from billwatch.core.severities import DEFAULT_SEVERITIES, Severity, usage_alert
from billwatch.licensing.overage import BillingState
from billwatch.licensing.overage_ledger import HELD_MARKERS, LISTED_MARKERS
from billwatch.licensing.plans import PlanCatalog, load_plan_catalog
from billwatch.licensing.quota_policy import (
    LIMIT_HIT_THRESHOLDS,
    MAX_QUANTITY,
    AccountUsage,
    Outcome,
    QuotaPolicy,
    UsageDecision,
    UsageRequestError,
    moment_text,
    validate_quantity,
)
from billwatch.licensing.usage_events import USAGE_EVENT_TYPE, BusinessEventPublisher, usage_event_publisher
from billwatch.licensing.usage_history import ClosedBy, UsageHistory, closed_period

__all__ = ["MAX_QUANTITY", "Licensing", "UsageDecision", "UsageRequestError", "build_licensing"]

_MAX_ADMIN_ATTEMPTS = 3
# The admin routes (functions/licensing_api), as refused attempts are recorded.
AUDITED_ROUTES = (
    AuditedRoute("PUT /admin/accounts/{account_id}/tier-override", "tier_override"),
    AuditedRoute("POST /admin/accounts/{account_id}/grants", "grant"),
    AuditedRoute("POST /admin/accounts/{account_id}/usage-reset", "usage_reset"),
    AuditedRoute("GET /admin/audit", "audit_read"),
)
_MAX_OPTIMISTIC_ATTEMPTS = 10
OTHER_FEATURE = "other"  # metric label for names outside the catalog, which callers choose freely


def iso(epoch: float) -> str | None:
    """The moment as ISO 8601 UTC, or None (logged) for one no calendar can show.

    Stored timestamps are rendered through here, and a stored value may be absurd (written by
    hand, or by a bug): 10**13 is in the year 318857. Such a value renders as null, and is logged,
    rather than failing every read of the account; an invented clamped date would look real.
    """
    text = moment_text(epoch)
    if text is None:
        logger.warning("A stored timestamp is out of range", extra={"epoch": epoch})
    return text


class Licensing:
    """The I/O around the quota rule (billwatch.licensing.quota_policy): the reads, the conditional
    writes and transactions, the metrics and the announcements. Every decision is the policy's."""

    def __init__(
        self,
        catalog: PlanCatalog,
        metrics: MetricsRecorder,
        clock: Callable[[], float] = time.time,
        idempotency_ttl_seconds: int = 24 * 3600,
        usage_events: BusinessEventPublisher | None = None,
        severities: Mapping[str, Severity] = DEFAULT_SEVERITIES,
        history: UsageHistory | None = None,
        audit: AuditTrail | None = None,
    ):
        self._catalog = catalog
        self.policy = QuotaPolicy(catalog)
        self.history = history or UsageHistory()
        self._metrics = metrics
        self._clock = clock
        self._idempotency_ttl_seconds = idempotency_ttl_seconds
        self._usage_events = usage_events or usage_event_publisher(None)
        self._severities = severities
        self.audit = audit or AuditTrail(None, DEFAULT_RETENTION_DAYS, metrics, clock, bound=True)

    def flush_metrics(self) -> None:
        self._metrics.flush()

    def refuse_admin(self, caller_arn: str | None, operation: str) -> None:
        record_refusal(self._metrics, caller_arn, operation)
        self.audit.refuse(operation, AUDITED_ROUTES, "not in the admin roles", caller_arn)

    # --- reading -------------------------------------------------------------------------------

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
        tier = self.policy.effective_tier(account)
        period = self.policy.period(tier, account, self._clock())
        current = self.policy.is_current(account.usage_since, period)
        features: dict[str, Any] = {}
        names = {name for t in self._catalog.tiers for name in t.features}
        # pynamodb types the list's items as attributes; they are read as str
        names |= {str(key) for key in account.entitlement_lookup_keys or []}
        for name in sorted(names):
            spec = tier.features.get(name)
            enabled = self.policy.enabled(account, tier, name)
            if not enabled or spec is None or spec.quota is None:
                features[name] = {
                    "enabled": enabled,
                    "limit": None,
                    "used": None,
                    "remaining": None,
                    "resets_at": None,
                }
                continue
            used, limit = self.policy.used_and_limit(usage, spec.quota, name, current)
            features[name] = {
                "enabled": True,
                "limit": limit,
                "used": used,
                "remaining": max(0, limit - used),
                "resets_at": iso(period.end),
            }
            if spec.overage:  # the period's units past the limit, billed (docs/overage-billing.md)
                cap = None if spec.hard_cap is None else spec.hard_cap + limit - spec.quota  # with grants
                overage = max(0, used - limit)
                billing = BillingState(
                    overage,
                    usage.number(overage_reported(name).attr_name) if current else 0,
                    confirmed=usage.number(overage_confirmed(name).attr_name) if current else 0,
                )
                features[name].update(overage=overage, hard_cap=cap, billing=billing.as_dict())
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

    # --- administration ------------------------------------------------------------------------

    def set_tier_override(self, account_id: str, tier: str | None) -> dict[str, Any]:
        """Pins the account to a tier whatever its subscription says; None lifts the pin."""
        names = [t.name for t in self._catalog.tiers]
        if tier is not None and tier not in names:
            raise UsageRequestError(f"tier must be one of {names} or null, got {tier!r}")
        action = BillingAccount.tier_override.set(tier) if tier else BillingAccount.tier_override.remove()
        for _ in range(_MAX_ADMIN_ATTEMPTS):
            usage = self.load(account_id)
            if usage.account.merged_into is not None:  # a redirect: nothing of it to pin
                return self._entitlements_of(account_id, usage)
            was = usage.account.tier_override
            pin = BillingAccount.tier_override
            raw = {key: value for key, value in usage.raw.items() if key != pin.attr_name}
            raw["pk"] = {"S": account_id}
            if tier:
                raw[pin.attr_name] = {"S": tier}
            stored = AccountUsage.from_raw(account_id, raw)
            record = self.audit.entry(
                "tier_override",
                Target("account", account_id),
                {"tier_override": was, "tier": self.policy.effective_tier(usage.account).name},
                {"tier_override": tier, "tier": self.policy.effective_tier(stored.account).name},
            )
            condition = BillingAccount.merged_into.does_not_exist() & (
                pin.does_not_exist() if was is None else pin == was
            )
            if self.audit.commit(record, _update(account_id, [action], condition)):
                # Rendered from the read with the pin changed: a read after the commit could fail it.
                return self._entitlements_of(account_id, stored)
        raise StoreUnavailable(f"the tier override of {account_id} kept changing; try again")

    def grant(self, account_id: str, feature: str, quantity: int) -> dict[str, Any]:
        """Extra quota for the current period: it goes when the period does."""
        validate_quantity(quantity)
        if not self.policy.metered(feature):
            raise UsageRequestError(f"feature {feature!r} has no quota to extend")
        counter, granted, since = usage_counter(feature), usage_grant(feature), BillingAccount.usage_since
        for _ in range(_MAX_ADMIN_ATTEMPTS):
            usage = self.load(account_id)
            now = int(self._clock())
            actions: list[Action]
            was = usage.stored(granted.attr_name)
            if self.policy.new_period(usage.account, now) is None:
                actions = [counter.add(-quantity), granted.add(quantity), since.set(since | now)]
                # Rendered from the read with the grant added: a read after the commit could fail it.
                stored = _with_numbers(
                    usage,
                    {
                        counter.attr_name: usage.counter(feature) - quantity,
                        granted.attr_name: (was or 0) + quantity,
                        since.attr_name: int(usage.account.usage_since or now),
                    },
                )
                record = self._grant_record(account_id, feature, usage, stored)
                # The grant as read too, so that the record's before and after are exactly the write's.
                condition = self.policy.period_as_read(usage.account) & (
                    granted.does_not_exist() if was is None else granted == was
                )
                accepted = self.audit.commit(record, _update(account_id, actions, condition))
            else:  # the grant starts the new period, and closes the past one
                kept = {counter.attr_name: -quantity, granted.attr_name: quantity}
                actions = [counter.set(-quantity), granted.set(quantity)]
                actions += self.policy.restart_actions(usage, now, keep=set(kept))
                stored = self.policy.restarted(usage, now, kept)
                record = self._grant_record(account_id, feature, usage, stored)
                accepted = self.history.close(
                    self.policy, usage, actions, ClosedBy.GRANT, now, also=[self.audit.put(record)]
                )
                if accepted:
                    self.audit.recorded(record)
            if accepted:
                self._metrics.add(Metric.QUOTA_GRANTED, quantity, Feature=feature)
                return self._entitlements_of(account_id, stored)
        raise StoreUnavailable(f"usage of {account_id} kept changing; try the grant again")

    def _grant_record(
        self, account_id: str, feature: str, usage: AccountUsage, stored: AccountUsage
    ) -> AuditRecord:
        def view(of: AccountUsage) -> dict[str, Any]:
            since = of.account.usage_since
            return {
                "feature": feature,
                "granted": of.grant(feature),
                "period_since": None if since is None else iso(since),
            }

        return self.audit.entry("grant", Target("account", account_id), view(usage), view(stored))

    def reset_usage(self, account_id: str) -> dict[str, Any]:
        """Starts the account's usage period again from now, for every feature: the counters count
        from the reset, whether their period is still running or has already ended. The period they
        held is kept (billwatch.licensing.usage_history). ``reset_usage_write`` is the write."""
        for _ in range(_MAX_ADMIN_ATTEMPTS):
            usage = self.load(account_id)
            if usage.account.merged_into is not None:  # a redirect has no usage of its own
                return self._entitlements_of(account_id, usage)
            # Every write that closes a period moves usage_since forward, two resets in one second
            # too: the start of a closed period is its record's key, used once.
            since = max(int(self._clock()), int(usage.account.usage_since or 0) + 1)
            restarted = usage.restarted(since, {})
            record = self.audit.entry(
                "usage_reset", Target("account", account_id), _usage_view(usage), _usage_view(restarted)
            )
            if self.reset_usage_write(usage, since, also=[self.audit.put(record)]):
                self.audit.recorded(record)
                return self._entitlements_of(account_id, restarted)
        raise StoreUnavailable(f"usage of {account_id} kept changing; try the reset again")

    def reset_usage_write(
        self, usage: AccountUsage, since: int, also: Sequence[tuple[Model, Condition | None]] = ()
    ) -> bool:
        """The reset's one transaction: the counters start again from ``since``, the period they close
        is kept, and ``also`` is put alongside; False when the account changed since it was read.

        A period still running ends at the reset. One that had already ended ends at its own end:
        the counters were past (no use, grant or sweep had closed them yet), and nothing can have
        been counted since, as the first count would have closed them."""
        actions = [BillingAccount.usage_since.set(since), *self.policy.forget(usage, keep=set())]
        end = since if self.policy.new_period(usage.account, since) is None else None
        return self.history.close(
            self.policy, usage, actions, ClosedBy.ADMIN_RESET, since, end=end, also=also
        )

    # --- counting ------------------------------------------------------------------------------

    def use(self, account_id: str, feature: str, quantity: int) -> UsageDecision:
        validate_quantity(quantity)
        if self.policy.metered(feature):
            decision, usage = self._count(account_id, feature, quantity)
        else:  # on or off: nothing to count, so nothing to write
            usage = self.load(account_id)
            decision = self.policy.decide(usage, feature, quantity, int(self._clock()))
        self._account_for(account_id, decision, quantity)
        self._mark_overage(usage, decision)
        return decision

    def _count(self, account_id: str, feature: str, quantity: int) -> tuple[UsageDecision, AccountUsage]:
        """One conditional write that counts the use if the policy allows it as the item stands; if
        refused, the item it returns says why, without a read. The decision, and the item as the
        write left it (or as it refused it)."""
        for _ in range(_MAX_OPTIMISTIC_ATTEMPTS):
            now = int(self._clock())
            actions = self.policy.count_actions(feature, quantity, now)
            accepted, raw = self._update(
                account_id, actions, self.policy.count_condition(feature, quantity, now)
            )
            usage = AccountUsage.from_raw(account_id, raw)
            if accepted:
                return self.policy.after_write(usage, feature, quantity, now), usage
            decision = self.policy.decide(usage, feature, quantity, now)
            if decision.outcome is Outcome.START_PERIOD:
                actions = self.policy.start_period_actions(usage, feature, quantity, now)
                if self.history.close(self.policy, usage, actions, ClosedBy.USE, now):
                    started = self.policy.restarted(usage, now, {usage_counter(feature).attr_name: quantity})
                    answer = self.policy.after_write(started, feature, quantity, now, Outcome.START_PERIOD)
                    return answer, started
                self._metrics.add(Metric.QUOTA_CONFLICT)
                continue  # another check started the period first: count against its counters
            if decision.outcome is not Outcome.COUNT:
                return decision, usage
            # COUNT for the very item the condition refused: the rule and its condition disagree
            # (tests/unit/test_quota_policy.py exists to rule this out). Never answer it as counted.
            logger.error(
                "The quota condition refused a use the quota rule allows", extra={"feature": feature}
            )
        raise StoreUnavailable(f"usage of {account_id} kept changing; retry the request")

    def use_idempotently(
        self, account_id: str, feature: str, quantity: int, idempotency_key: str
    ) -> UsageDecision:
        """A repeated key gets the first answer back and consumes nothing more.

        Two requests: one read of the account together with the key's receipt, then one
        transaction that writes what the policy decided only if the account is still as read, and
        stores the receipt with the answer only if the key is new. A replay is answered by the read
        alone.
        """
        validate_quantity(quantity)
        receipt_id = f"usage#{account_id}#{idempotency_key}"
        for attempt in range(_MAX_OPTIMISTIC_ATTEMPTS):
            receipt, raw = self._read_with_receipt(account_id, receipt_id)
            if receipt is not None:
                return self._replay(receipt, feature, quantity)
            usage = AccountUsage.from_raw(account_id, raw)
            now = int(self._clock())
            decision = self.policy.decide(usage, feature, quantity, now)
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

    def _replay(self, receipt: UsageReceipt | dict, feature: str, quantity: int) -> UsageDecision:
        if isinstance(receipt, dict):
            receipt = UsageReceipt.from_raw_data(receipt)
        return self.policy.replay(receipt.feature, receipt.quantity, receipt.answer, feature, quantity)

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

        pk = usage.account.pk
        unchanged = self.policy.as_read(usage, feature)
        closed = None
        receipt = UsageReceipt(
            receipt_id,
            feature=feature,
            quantity=quantity,
            answer=json.dumps(decision.as_dict()),
            expiration=now + self._idempotency_ttl_seconds,
        )
        if decision.outcome is Outcome.COUNT:
            actions = self.policy.count_actions(feature, quantity, now)
        elif decision.outcome is Outcome.START_PERIOD:
            actions = self.policy.start_period_actions(usage, feature, quantity, now)
            unchanged &= self.policy.closing_as_read(usage)
            closed = closed_period(self.policy, usage, now, ClosedBy.USE)
        else:
            actions = []
        if decision.overage and usage.account.overage_due not in HELD_MARKERS:
            # On the drain's list in the same write, whatever the item read: a drain's release since
            # the read has taken it off, and the units this use makes owed go within the minute.
            actions.append(BillingAccount.overage_due.set(overage_shard(pk)))
        try:
            with TransactWrite(connection=dynamo.low_level(BillingAccount)) as transaction:
                if actions:
                    transaction.update(BillingAccount(pk), actions=actions, condition=unchanged)
                else:
                    transaction.condition_check(BillingAccount, pk, condition=unchanged)
                transaction.save(receipt, condition=UsageReceipt.id.does_not_exist(), return_values=ALL_OLD)
                if closed is not None:  # the period the use closes is kept (licensing.usage_history)
                    record = self.history.record(pk, closed)
                    transaction.save(record, condition=UsagePeriodRecord.period_start.does_not_exist())
        except TransactWriteError as exc:
            # pynamodb sends condition checks first, then puts (in order), then updates.
            reasons = list(exc.cancellation_reasons or []) or [None] * (3 if closed else 2)
            receipt_reason = reasons[0] if actions else reasons[1]
            account_reason = reasons[-1] if actions else reasons[0]
            if receipt_reason is not None and receipt_reason.code == "ConditionalCheckFailed":
                return receipt_reason.raw_item or False  # without the item, the next read finds it
            if account_reason is not None and account_reason.code == "ConditionalCheckFailed":
                return False
            raise store_failure(exc) from exc
        return True

    def _account_for(self, account_id: str, decision: UsageDecision, quantity: int) -> None:
        """The metrics and announcements of a decision that was made for the first time."""
        feature = decision.feature
        label = feature if any(feature in t.features for t in self._catalog.tiers) else OTHER_FEATURE
        self._metrics.add(
            Metric.QUOTA_CHECK, Feature=label, Result="allowed" if decision.allowed else "denied"
        )
        if decision.limit is not None and decision.resets_at is None:
            logger.warning(
                "A stored timestamp is out of range",
                extra={"account_id": account_id, "feature": feature, "field": "resets_at"},
            )
        if decision.counted:
            self._metrics.add(
                Metric.USAGE_COUNTED,
                quantity,
                Feature=label,
                Tier=decision.tier or self._catalog.default_tier.name,
            )
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

    def _mark_overage(self, usage: AccountUsage, decision: UsageDecision) -> None:
        """Puts the account on the overage drain's list (billwatch.licensing.overage_ledger) when the
        answer has units past the limit and the item, as the check saw it, is not on it (nor held, for
        the drain's hourly pass): one more request, once until the drain takes the account off. A check
        with an idempotency key sets it in its transaction instead. Best-effort: the use is counted and
        answered, and the hourly quota reset puts on the list any account owing units without it."""
        due = BillingAccount.overage_due
        if not decision.overage or usage.account.overage_due in LISTED_MARKERS:
            return
        account_id = usage.account.pk
        try:
            conditional_update(
                BillingAccount,
                account_id,
                [due.set(overage_shard(account_id))],
                BillingAccount.pk.exists() & BillingAccount.merged_into.does_not_exist(),
                return_values=NONE,
            )
        except (StoreUnavailable, StoreRejected):
            self._metrics.add(Metric.OVERAGE_MARKER_FAILED)
            logger.warning(
                "Could not put the account on the overage drain's list; the quota reset will",
                extra={"account_id": account_id, "feature": decision.feature},
                exc_info=True,
            )

    def _announce(self, account_id: str, decision: UsageDecision, threshold: int) -> None:
        """Once per account, feature, threshold and period: the write that records it decides.

        The same write records the announcement as a side-effects entry (billwatch.core.outbox), so a
        publish that fails, or an invocation that dies, leaves it to the scheduled sweep.
        """
        since = decision.counted_since
        assert since is not None  # nosec B101 # announcements are due only for a use counted in a period
        announced = usage_announcements(decision.feature)
        condition = (BillingAccount.usage_since == since) & (
            announced.does_not_exist() | ~announced.contains(threshold)
        )
        now = int(self._clock())
        event = {
            "type": USAGE_EVENT_TYPE,
            "account_id": account_id,
            "feature": decision.feature,
            "threshold": threshold,
            "severity": self._severities[usage_alert(threshold)].value,
            "used": decision.used,
            "limit": decision.limit,
            "period": {"since": iso(since), "resets_at": decision.resets_at},
            "occurred_at": iso(now),
        }
        key = outbox.usage_key(account_id, decision.feature, threshold, int(since))
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

    def _update(self, account_id: str, actions: list, condition: Condition) -> tuple[bool, Any]:
        accepted, item = conditional_update(
            BillingAccount, account_id, actions, condition, return_values=ALL_NEW
        )
        if not accepted:
            self._metrics.add(Metric.QUOTA_CONFLICT)
        return accepted, item


def _usage_view(usage: AccountUsage) -> dict[str, Any]:
    """An account's usage period as an audit record keeps it."""
    since = usage.account.usage_since
    features = sorted(usage.counted_features())
    return {
        "period_since": None if since is None else iso(since),
        "used": {name: usage.counter(name) + usage.grant(name) for name in features},
        "granted": {name: usage.grant(name) for name in features},
    }


def _with_numbers(usage: AccountUsage, numbers: Mapping[str, int]) -> AccountUsage:
    """The item as read, with these number attributes as a write sets them."""
    raw = {**usage.raw, "pk": {"S": usage.account.pk}}
    raw.update({name: {"N": str(value)} for name, value in numbers.items()})
    return AccountUsage.from_raw(usage.account.pk, raw)


def _update(account_id: str, actions: list[Action], condition: Condition) -> Callable[[Any], None]:
    """The account's conditional update, as one item of a transaction."""
    return lambda transaction: transaction.update(
        BillingAccount(account_id), actions=actions, condition=condition
    )


def build_licensing(settings: Settings) -> Licensing:
    if settings.usage_history_table is None:
        raise ConfigError("USAGE_HISTORY_TABLE_NAME is required where usage is counted")
    bind_billing_table(settings.billing_table)
    bind_idempotency_table(settings.idempotency_table)
    bind_usage_history_table(settings.usage_history_table)
    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)
    return Licensing(
        catalog=load_plan_catalog(settings),
        metrics=metrics,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        usage_events=usage_event_publisher(settings.usage_events_topic_arn),
        severities=settings.severities,
        history=UsageHistory(settings.usage_history_retention_days),
        audit=AuditTrail(settings.audit_table, settings.audit_retention_days, metrics),
    )
