"""An account's closed usage periods: kept when a period closes, read back for the usage report.

A period closes when its counters start again: the first use in a new period (Outcome.START_PERIOD,
keyed or not), a grant in a new period, the scheduled quota reset, an admin's usage reset. Each of
them is one transaction: the account's update, on the condition that its tier, its period and every
counter and grant are as read (``QuotaPolicy.closing_as_read``), and the closed period's record, put
only if no record has its key. So a record holds exactly what the write removed; a retry or a racing
closer finds the condition false and keeps nothing twice; a write that fails keeps nothing.

A usage check that closes nothing writes nothing here: the hot path stays one UpdateItem. A period in
which nothing was counted or granted (an idle account the sweep restarts) keeps no record either:
there is nothing to report, and no item to pay for.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from pynamodb.constants import NONE
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from billwatch.core import dynamo
from billwatch.core.dynamo import conditional_update, store_failure
from billwatch.core.models import (
    BillingAccount,
    UsagePeriodRecord,
    overage_checked,
    overage_confirmed,
    overage_customer,
    overage_pinned_at,
    overage_reported,
    overage_sending,
)
from billwatch.licensing.overage import BillingState, overage_marker
from billwatch.licensing.quota_policy import AccountUsage, QuotaPolicy

DEFAULT_RETENTION_DAYS = 400  # as the template's UsageHistoryRetentionDays


class ClosedBy(enum.StrEnum):
    USE = "usage"
    QUOTA_RESET = "quota_reset"
    GRANT = "grant"
    ADMIN_RESET = "admin_reset"


@dataclass(frozen=True)
class FeatureUsage:
    used: int  # counted in the period, granted extra quota included
    granted: int
    limit: int | None  # quota + grant; None when the tier in force had no quota for the feature
    # Overage billing (billwatch.licensing.overage_ledger): None where the tier did not bill the
    # feature's overage; else the units Stripe accepted, then the range in flight and the confirmed.
    reported: int | None = None
    sending: int | None = None
    pinned_at: int | None = None
    confirmed: int = 0
    checked: int = 0  # the watermark reconciliation last compared (Stripe's summaries count late)
    customer: str | None = None  # the Stripe customer the period's first range was pinned for

    def billing(self) -> BillingState | None:
        """The overage's billing state, where the feature's overage is billed."""
        if self.reported is None or self.limit is None:
            return None
        return BillingState(max(0, self.used - self.limit), self.reported, self.sending, self.confirmed)

    def as_json(self) -> dict[str, int | str | None]:
        """As a history record keeps it: a feature not billed as overage as before billing existed."""
        kept: dict[str, int | str | None] = {"used": self.used, "granted": self.granted, "limit": self.limit}
        if self.reported is not None:
            kept.update(reported=self.reported, confirmed=self.confirmed)
            if self.checked:
                kept.update(checked=self.checked)
            if self.customer is not None:
                kept.update(customer=self.customer)
            if self.sending is not None:
                kept.update(sending=self.sending, pinned_at=self.pinned_at)
        return kept


@dataclass(frozen=True)
class ClosedPeriod:
    start: int  # epoch seconds
    end: int
    closed_at: int
    closed_by: ClosedBy
    tier: str
    tier_override: str | None
    features: Mapping[str, FeatureUsage]

    def overage_marker(self, account_id: str) -> str | None:
        """The record's ``overage_due`` marker: set while its overage is owed, in flight or unconfirmed."""
        return overage_marker(account_id, filter(None, (usage.billing() for usage in self.features.values())))


def closed_period(
    policy: QuotaPolicy, usage: AccountUsage, now: int, closed_by: ClosedBy, end: int | None = None
) -> ClosedPeriod | None:
    """The period a write that starts the counters again closes, with its figures as read; None when
    it counted and granted nothing. ``end``: when it ends, if not at the start of the current period
    (an admin's reset ends it now)."""
    account = usage.account
    if account.usage_since is None or not usage.counted_features():
        return None
    return ClosedPeriod(
        start=int(account.usage_since),
        end=policy.past_period_end(account, now) if end is None else end,
        closed_at=now,
        closed_by=closed_by,
        tier=policy.effective_tier(account).name,
        tier_override=account.tier_override,
        features=feature_usage(policy, usage),
    )


def feature_usage(policy: QuotaPolicy, usage: AccountUsage) -> dict[str, FeatureUsage]:
    """The stored counters' figures, per feature the tier in force meters or the item counted."""
    tier = policy.effective_tier(usage.account)
    metered = {name for name, spec in tier.features.items() if spec.quota is not None}
    features = {}
    for name in sorted(usage.counted_features() | metered):
        spec = tier.features.get(name)
        quota = getattr(spec, "quota", None)
        granted = usage.grant(name)
        figures = FeatureUsage(
            usage.counter(name) + granted, granted, None if quota is None else quota + granted
        )
        if spec is not None and spec.overage:
            figures = replace(
                figures,
                reported=usage.number(overage_reported(name).attr_name),
                sending=usage.stored(overage_sending(name).attr_name),
                pinned_at=usage.stored(overage_pinned_at(name).attr_name),
                confirmed=usage.number(overage_confirmed(name).attr_name),
                checked=usage.number(overage_checked(name).attr_name),
                customer=usage.text(overage_customer(name).attr_name),
            )
        features[name] = figures
    return features


class UsageHistory:
    """Keeps closed periods for ``retention_days`` after their end, and reads them back."""

    def __init__(self, retention_days: int = DEFAULT_RETENTION_DAYS):
        self._retention_seconds = retention_days * 24 * 3600

    def record(self, account_id: str, period: ClosedPeriod) -> UsagePeriodRecord:
        features = {name: figures.as_json() for name, figures in period.features.items()}
        return UsagePeriodRecord(
            account_id,
            period.start,
            period_end=period.end,
            closed_at=period.closed_at,
            closed_by=period.closed_by.value,
            tier=period.tier,
            tier_override=period.tier_override,
            features=json.dumps(features, sort_keys=True),
            expiration=period.end + self._retention_seconds,
            overage_due=period.overage_marker(account_id),
        )

    def close(
        self,
        policy: QuotaPolicy,
        usage: AccountUsage,
        actions: list[Action],
        closed_by: ClosedBy,
        now: int,
        end: int | None = None,
        also: Sequence[tuple[Model, Condition | None]] = (),
    ) -> bool:
        """Writes ``actions``, which start the account's counters again, and keeps the period they
        close, all or nothing. ``also``: more items to put in the same transaction, each on its
        condition. False when the account changed since it was read (read it again and retry)."""
        account_id = usage.account.pk
        period = closed_period(policy, usage, now, closed_by, end)
        puts = list(also)
        if period is not None:
            puts.append((self.record(account_id, period), UsagePeriodRecord.period_start.does_not_exist()))
        return write_with(account_id, actions, policy.closing_as_read(usage), puts)

    @staticmethod
    def periods(account_id: str, since: int, until: int, now: int) -> list[ClosedPeriod]:
        """The account's closed periods that overlap [since, until), oldest first; one Query. Records
        past their retention are left out: DynamoDB's TTL deletes them only within days."""
        records = UsagePeriodRecord.query(
            account_id,
            UsagePeriodRecord.period_start < until,
            filter_condition=(UsagePeriodRecord.period_end > since) & (UsagePeriodRecord.expiration > now),
        )
        try:
            return list(_periods(records))
        except PynamoDBException as exc:
            raise store_failure(exc) from exc


def _periods(records: Iterator[UsagePeriodRecord]) -> Iterator[ClosedPeriod]:
    for record in records:
        features = {name: FeatureUsage(**figures) for name, figures in json.loads(record.features).items()}
        yield ClosedPeriod(
            start=int(record.period_start),  # pynamodb types every number as float
            end=int(record.period_end),
            closed_at=int(record.closed_at),
            closed_by=ClosedBy(record.closed_by),
            tier=record.tier,
            tier_override=record.tier_override,
            features=features,
        )


def write_with(
    account_id: str,
    actions: list[Action],
    condition: Condition,
    puts: Sequence[tuple[Model, Condition | None]],
) -> bool:
    """The account's conditional update, with ``puts`` in the same transaction when there are any.
    False when the account's condition refused it; a refused put (or any other failure) raises."""
    if not puts:
        accepted, _ = conditional_update(BillingAccount, account_id, actions, condition, return_values=NONE)
        return accepted
    from pynamodb.transactions import TransactWrite  # only a write that closes a period needs it

    try:
        with TransactWrite(connection=dynamo.low_level(BillingAccount)) as transaction:
            for item, item_condition in puts:
                transaction.save(item, condition=item_condition)
            transaction.update(BillingAccount(account_id), actions=actions, condition=condition)
    except TransactWriteError as exc:
        reasons = list(exc.cancellation_reasons or [])
        # pynamodb sends the puts before the update: the account's reason is the last one.
        if reasons and reasons[-1] is not None and reasons[-1].code == "ConditionalCheckFailed":
            return False
        raise store_failure(exc) from exc
    return True
