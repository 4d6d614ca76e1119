"""The quota rule, written once: what a usage check may do, and the condition that holds DynamoDB to it.

Pure: no client, no clock, no logging. It reads a snapshot of the account's item
(``AccountUsage``), the plan catalog and the moment it is handed, and returns decisions, pynamodb
condition expressions and update actions, which stay plain objects until ``Licensing``
(billwatch.licensing.service) sends them.

The rule
    Tier. The account's tier is its override when one is stored, else its stored tier, else the
    catalog's default; a name the catalog does not have (any more) means the default tier. An item
    merged into another account (a customer's redirect, billwatch.core.models) has no plan.

    Period. On a paid tier whose subscription period is stored (both bounds; 0 stores none), the
    usage period is the subscription's; otherwise it is the calendar month of the moment, UTC.

    Current. Counters hold usage since ``usage_since``. They count for the period while that moment
    is absent or not before the period's start (``is_current``); otherwise they belong to a past
    period, and the first use of the new one (or the scheduled reset) starts them again, counting
    from the period's start.

    Room. A counter is net of the extra quota granted for the period (``granted_<feature>``):
    used = counter + grant and limit = quota + grant, so a use of q fits when counter + q <= quota.
    On a tier that bills the feature's overage (the catalog's ``over_quota: "overage"``) the use
    fits up to the hard cap instead (counter + q <= hard_cap), or always without one; the units past
    the limit are overage, which the counter itself records (docs/overage-billing.md).

What a use of q gets (``Outcome``)
    NOT_IN_PLAN   403  a merged item; or the tier lacks the feature and no Stripe entitlement grants it
    UNMETERED     200  the tier has the feature without a quota, or an entitlement grants what it lacks
    COUNT         200  the counters are current and there is room: the conditional write adds q
    START_PERIOD  200  the counters are a past period's and q fits: they start again, at q
    OVER_QUOTA    429  the counters are current and there is no room, or a new period and q does not fit
    REPLAY        the first answer again: the idempotency key was used before, for the same use

``count_condition`` accepts an item exactly when ``decide`` answers COUNT for it, which is what lets
a plain check be one UpdateItem with no read before it, and lets the item a refused write returns
say why (tests/unit/test_quota_policy.py checks it over random catalogs, items and uses, and
tests/integration/test_quota_policy_moto.py against moto's DynamoDB).
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import functools
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from pynamodb.attributes import Attribute, NumberAttribute
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from billwatch.core.models import (
    OVERAGE_ATTRIBUTES,
    PERIOD_ATTRIBUTE_PREFIXES,
    BillingAccount,
    overage_customer,
    usage_announcements,
    usage_counter,
    usage_grant,
)
from billwatch.core.severities import USAGE_THRESHOLDS
from billwatch.licensing.plans import PlanCatalog, Tier

# Crossing one of these shares of a quota is a "limit hit" (the seeds' 80/90/100 % histogram).
LIMIT_HIT_THRESHOLDS = (80, 90, 100)
MAX_QUANTITY = 1_000_000


class UsageRequestError(ValueError):
    """The request cannot be evaluated; the message names the field."""


def validate_quantity(quantity: Any) -> None:
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise UsageRequestError(f"quantity must be an integer from 1 to {MAX_QUANTITY}")


@dataclass(frozen=True)
class Period:
    start: int
    end: int


def month_period(now: float) -> Period:
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    start = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return Period(int(start.timestamp()), int((start + dt.timedelta(days=days)).timestamp()))


def moment_text(epoch: float) -> str | None:
    """The moment as ISO 8601 UTC, or None for one no calendar can show (10**13 is in the year
    318857): a stored value may be absurd, and an invented clamped date would look real."""
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


class Outcome(enum.Enum):
    NOT_IN_PLAN = "not_in_plan"
    UNMETERED = "unmetered"
    COUNT = "count"
    START_PERIOD = "start_period"
    OVER_QUOTA = "over_quota"
    REPLAY = "replay"


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
    counted_since: float | None = field(default=None, compare=False)  # identifies the usage period
    announcements_due: tuple[int, ...] = field(default=(), compare=False)
    outcome: Outcome | None = field(default=None, compare=False)  # None only when built elsewhere
    tier: str | None = field(default=None, compare=False)  # the tier that counted the use
    # The units of this use past the limit, on a tier that bills the feature's overage; else None.
    overage: int | None = None

    @property
    def counted(self) -> bool:
        """Whether the use counts against a quota (a replay's too: it was counted the first time)."""
        return self.allowed and self.limit is not None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": self.allowed, "feature": self.feature}
        if self.reason:
            body["reason"] = self.reason
        if self.limit is not None:
            body.update(used=self.used, limit=self.limit, remaining=self.remaining, resets_at=self.resets_at)
        if self.overage is not None:
            body["overage"] = self.overage
        return body


@dataclass(frozen=True)
class AccountUsage:
    """An account's item as licensing sees it: the model, and the raw item for its counters."""

    account: BillingAccount
    raw: Mapping[str, Any]

    @classmethod
    def from_raw(cls, account_id: str, raw: Mapping[str, Any] | None) -> AccountUsage:
        account = BillingAccount.from_raw_data(dict(raw)) if raw else BillingAccount(account_id)
        return cls(account, raw or {})

    def stored(self, attribute: str) -> int | None:
        value = self.raw.get(attribute, {}).get("N")
        return int(value) if value is not None else None

    def number(self, attribute: str) -> int:
        return self.stored(attribute) or 0

    def text(self, attribute: str) -> str | None:
        value: str | None = self.raw.get(attribute, {}).get("S")
        return value

    def counter(self, feature: str) -> int:
        return self.number(usage_counter(feature).attr_name)

    def grant(self, feature: str) -> int:
        return self.number(usage_grant(feature).attr_name)

    def announced(self, feature: str) -> set[int]:
        stored = self.raw.get(usage_announcements(feature).attr_name, {}).get("NS", [])
        return {int(float(number)) for number in stored}

    def period_attributes(self) -> set[str]:
        return {name for name in self.raw if name.startswith(PERIOD_ATTRIBUTE_PREFIXES)}

    def counted_features(self) -> set[str]:
        """The features with a counter or a grant stored: what the period has to keep."""
        prefixes = (usage_counter("").attr_name, usage_grant("").attr_name)
        return {
            name.removeprefix(prefix) for name in self.raw for prefix in prefixes if name.startswith(prefix)
        }

    def restarted(self, since: int, kept: Mapping[str, int]) -> AccountUsage:
        """The item as a write that starts the counters again from ``since`` leaves it, with the
        period attributes ``kept`` set: a transaction returns no item, and reading it again after
        the write could fail a request whose write committed."""
        raw = {name: value for name, value in self.raw.items() if name not in self.period_attributes()}
        raw[BillingAccount.usage_since.attr_name] = {"N": str(since)}
        raw.update({name: {"N": str(value)} for name, value in kept.items()})
        return AccountUsage.from_raw(self.account.pk, raw)


def _all(*conditions: Condition | None) -> Condition:
    """The conjunction of the conditions given; None stands for "always"."""
    present = [condition for condition in conditions if condition is not None]
    joined = present[0]
    for condition in present[1:]:
        joined &= condition
    return joined


def _as_read(attribute: Attribute, seen: Any) -> Condition:
    return attribute.does_not_exist() if seen is None else attribute == seen


def _stored_moment(attribute: Attribute) -> Condition:
    """The attribute holds a moment: present and not 0 (a 0 stores none)."""
    return attribute.exists() & (attribute != 0)


class QuotaPolicy:
    def __init__(self, catalog: PlanCatalog):
        self.catalog = catalog
        self._default = catalog.default_tier
        self._paid_names = tuple(tier.name for tier in catalog.tiers if tier is not self._default)
        self._count_conditions = functools.lru_cache(maxsize=1024)(self._count_condition)
        self._metered = frozenset(
            name for tier in catalog.tiers for name, spec in tier.features.items() if spec.quota is not None
        )
        self._billed = frozenset(
            name for tier in catalog.tiers for name, spec in tier.features.items() if spec.overage
        )

    # --- the account's tier and period -------------------------------------------------------

    def effective_tier(self, account: BillingAccount) -> Tier:
        name = account.tier_override if account.tier_override is not None else account.tier
        return self.catalog.find_tier(name) or self._default

    def period(self, tier: Tier, account: BillingAccount, now: float) -> Period:
        start, end = account.current_period_start, account.current_period_end
        if tier is not self._default and start and end:
            return Period(int(start), int(end))
        return month_period(now)

    def period_of(self, account: BillingAccount, now: float) -> Period:
        return self.period(self.effective_tier(account), account, now)

    @staticmethod
    def is_current(usage_since: float | None, period: Period) -> bool:
        """Whether counters kept since ``usage_since`` count for ``period``: the one "current period"
        test, which ``count_condition`` states for DynamoDB."""
        return usage_since is None or usage_since >= period.start

    def past_period_end(self, account: BillingAccount, now: float) -> int:
        """When the period the stored counters belong to ended: the current period's start, and on
        calendar months no later than the end of the month they started in (an account idle for
        months had no usage period in between)."""
        current = self.period_of(account, now)
        if account.usage_since is None or current != month_period(now):
            return current.start
        try:
            return min(current.start, month_period(account.usage_since).end)
        except (OverflowError, OSError, ValueError):  # a stored moment no calendar can show
            return current.start

    def new_period(self, account: BillingAccount, now: float) -> Period | None:
        """The period to start the counters again in, when they belong to a past one; else None."""
        period = self.period_of(account, now)
        return None if self.is_current(account.usage_since, period) else period

    def metered(self, feature: str) -> bool:
        """Whether some tier has a quota for the feature (a check of it is a conditional write)."""
        return feature in self._metered

    def enabled(self, account: BillingAccount, tier: Tier, feature: str) -> bool:
        """Whether the feature is in the account's plan: its tier has it, or Stripe grants it as an
        entitlement by the same lookup key. Never on an item merged into another account."""
        if account.merged_into is not None:
            return False
        return feature in tier.features or feature in (account.entitlement_lookup_keys or [])

    @staticmethod
    def used_and_limit(usage: AccountUsage, quota: int, feature: str, current: bool) -> tuple[int, int]:
        if not current:
            return 0, quota
        grant = usage.grant(feature)
        return usage.counter(feature) + grant, quota + grant

    # --- decisions ---------------------------------------------------------------------------

    def decide(self, usage: AccountUsage, feature: str, quantity: int, now: int) -> UsageDecision:
        """The answer the item as read gives to a use of ``quantity``; ``outcome`` says what to write."""
        account = usage.account
        tier = self.effective_tier(account)
        if not self.enabled(account, tier, feature):
            return UsageDecision(False, feature, "feature_not_in_plan", outcome=Outcome.NOT_IN_PLAN)
        spec = tier.features.get(feature)
        if spec is None or spec.quota is None:
            return UsageDecision(True, feature, outcome=Outcome.UNMETERED)
        period = self.period(tier, account, now)
        current = self.is_current(account.usage_since, period)
        used, limit = self.used_and_limit(usage, spec.quota, feature, current)
        ceiling = spec.ceiling
        if ceiling is not None and used + quantity > limit - spec.quota + ceiling:
            return UsageDecision(
                False,
                feature,
                "quota_exceeded",
                used,
                limit,
                max(0, limit - used),
                moment_text(period.end),
                outcome=Outcome.OVER_QUOTA,
            )
        if current:
            since, outcome = now if account.usage_since is None else account.usage_since, Outcome.COUNT
        else:
            since, outcome = period.start, Outcome.START_PERIOD
        return self._allowed(
            usage, tier, feature, used, used + quantity, limit, period, since, current, outcome
        )

    def after_write(
        self, usage: AccountUsage, feature: str, quantity: int, now: int, outcome: Outcome = Outcome.COUNT
    ) -> UsageDecision:
        """The answer to a use a write counted (COUNT or START_PERIOD), from the item as the write
        left it: nothing is read after a write, whose retry would count the use twice."""
        account = usage.account
        tier = self.effective_tier(account)
        quota = tier.features[feature].quota
        if quota is None:
            raise ValueError(f"{tier.name} has no quota for {feature!r}: nothing was counted")
        period = self.period(tier, account, now)
        used, limit = self.used_and_limit(usage, quota, feature, current=True)
        return self._allowed(
            usage, tier, feature, used - quantity, used, limit, period, account.usage_since, True, outcome
        )

    def _allowed(
        self,
        usage: AccountUsage,
        tier: Tier,
        feature: str,
        before: int,
        after: int,
        limit: int,
        period: Period,
        since: float | None,
        current: bool,
        outcome: Outcome,
    ) -> UsageDecision:
        return UsageDecision(
            True,
            feature,
            None,
            after,
            limit,
            max(0, limit - after),
            moment_text(period.end),
            crossed(before, after, limit),
            since,
            unannounced(usage, feature, after, limit, current),
            outcome,
            tier.name,
            units_past(before, after, limit) if tier.features[feature].overage else None,
        )

    @staticmethod
    def replay(
        first_feature: str, first_quantity: float, first_answer: str, feature: str, quantity: int
    ) -> UsageDecision:
        """The answer to a use whose idempotency key a first use already took: the first answer."""
        if (first_feature, first_quantity) != (feature, quantity):
            raise UsageRequestError("idempotency_key was already used with a different feature or quantity")
        return UsageDecision(**json.loads(first_answer), outcome=Outcome.REPLAY)

    # --- what DynamoDB is told ---------------------------------------------------------------

    def count_condition(self, feature: str, quantity: int, now: int) -> Condition:
        """Accepts the item exactly when ``decide`` answers COUNT: not merged, and for some tier that
        meters the feature, the account is on it, its counters are current and the use fits.

        Built once per feature, quantity and month (pynamodb's operands cost more to build than to
        send, and a check is on the hot path); the objects are never changed once built."""
        return self._count_conditions(feature, quantity, month_period(now).start)

    def _count_condition(self, feature: str, quantity: int, month_start: int) -> Condition:
        clauses = [
            _all(
                self._on_tier(tier),
                self._counters_current(tier, month_start),
                self._room(feature, spec.ceiling, quantity),
            )
            for tier in self.catalog.tiers
            if (spec := tier.features.get(feature)) is not None and spec.quota is not None
        ]
        if not clauses:
            raise ValueError(f"no tier meters {feature!r}: there is nothing to count")
        either = clauses[0]
        for clause in clauses[1:]:
            either |= clause
        return BillingAccount.merged_into.does_not_exist() & either

    def _on_tier(self, tier: Tier) -> Condition | None:
        """``effective_tier`` is ``tier``; None when that always holds (a catalog of one tier)."""
        override, stored = BillingAccount.tier_override, BillingAccount.tier
        if tier is not self._default:
            return (override == tier.name) | (override.does_not_exist() & (stored == tier.name))
        if not self._paid_names:
            return None
        paid = override.is_in(*self._paid_names) | (
            override.does_not_exist() & stored.is_in(*self._paid_names)
        )
        return ~paid  # a missing name, the default's or one the catalog lacks

    def _counters_current(self, tier: Tier, month_start: int) -> Condition:
        """``is_current`` of ``period``, on ``tier``."""
        since = BillingAccount.usage_since
        if tier is self._default:
            return since.does_not_exist() | (since >= month_start)
        start = BillingAccount.current_period_start
        subscription = _stored_moment(start) & _stored_moment(BillingAccount.current_period_end)
        return (
            since.does_not_exist()
            | (subscription & (since >= start))
            | (~subscription & (since >= month_start))
        )

    @staticmethod
    def _room(feature: str, ceiling: int | None, quantity: int) -> Condition | None:
        """The use fits under the quota, or the hard cap of a tier that bills overage; None when
        nothing caps it (overage without a hard cap)."""
        if ceiling is None:
            return None
        counter = usage_counter(feature)  # below zero, it holds extra quota granted
        room = counter <= ceiling - quantity
        return counter.does_not_exist() | room if quantity <= ceiling else room

    @staticmethod
    def count_actions(feature: str, quantity: int, now: int) -> list[Action]:
        """A COUNT's write (and the conditional write that tries one without reading first)."""
        since = BillingAccount.usage_since
        return [usage_counter(feature).add(quantity), since.set(since | now)]

    def start_period_actions(
        self, usage: AccountUsage, feature: str, quantity: int, now: int
    ) -> list[Action]:
        """A START_PERIOD's write: the counters start again, with this use."""
        counter = usage_counter(feature)
        return [counter.set(quantity), *self.restart_actions(usage, now, keep={counter.attr_name})]

    def restart_actions(self, usage: AccountUsage, now: float, keep: Set[str] = frozenset()) -> list[Action]:
        """Starts the counters again in the period of ``now``: the past period's counters, grants and
        announced thresholds go, and usage counts from the period's start (not from now: a paid period
        that Stripe's clock began a little ahead of ours must not look past again to the next use).
        A START_PERIOD's write and the scheduled reset's (billwatch.licensing.quota_reset)."""
        start = self.period_of(usage.account, now).start
        return [BillingAccount.usage_since.set(start), *self.forget(usage, keep)]

    def restarted(self, usage: AccountUsage, now: float, kept: Mapping[str, int]) -> AccountUsage:
        """The item as ``restart_actions`` leave it, with the period attributes ``kept`` set."""
        return usage.restarted(self.period_of(usage.account, now).start, kept)

    @staticmethod
    def forget(usage: AccountUsage, keep: Set[str]) -> list[Action]:
        """Removes what the past period left: counters, grants, announced thresholds."""
        return [NumberAttribute(attr_name=name).remove() for name in sorted(usage.period_attributes() - keep)]

    @staticmethod
    def period_as_read(account: BillingAccount) -> Condition:
        """The counters are still the period's they were read in: what makes starting a new period,
        by a use, a grant or the scheduled reset, happen once."""
        return _as_read(BillingAccount.usage_since, account.usage_since)

    @staticmethod
    def tier_and_period_as_read(account: BillingAccount) -> Condition:
        """The account's tier and usage period are still what they were read as: what the overage
        ledger's writes (billwatch.licensing.overage_ledger) go on, so none lands on another period."""
        return _all(*(_as_read(attribute, seen) for attribute, seen in _tier_and_period_read(account)))

    def closing_as_read(self, usage: AccountUsage) -> Condition:
        """The tier, the period and every counter and grant still hold what they held: the condition
        a write that closes a period goes on, so that the period it keeps (billwatch.licensing.
        usage_history) is exactly the one the write ends, and it ends once."""
        account = usage.account
        features = usage.counted_features() | self._metered
        read = _tier_and_period_read(account)
        for feature in sorted(features):
            counter, grant = usage_counter(feature), usage_grant(feature)
            read += [(counter, usage.stored(counter.attr_name)), (grant, usage.stored(grant.attr_name))]
        # The overage ledger's watermarks and pins too: the record keeps them, and a drain's write
        # between this read and the write would otherwise be lost with the period (a double bill).
        billed = self._billed | {
            name.removeprefix(attribute("").attr_name)
            for attribute in OVERAGE_ATTRIBUTES
            for name in usage.raw
            if name.startswith(attribute("").attr_name)
        }
        for feature in sorted(billed):
            read += [
                (attribute(feature), usage.stored(attribute(feature).attr_name))
                for attribute in OVERAGE_ATTRIBUTES
            ]
            customer = overage_customer(feature)
            read.append((customer, usage.text(customer.attr_name)))
        return _all(*(_as_read(attribute, seen) for attribute, seen in read))

    def as_read(self, usage: AccountUsage, feature: str) -> Condition:
        """Every attribute ``decide`` read for the feature still holds what it held: the condition a
        decision made from a read (a keyed use) is written on."""
        account = usage.account
        counter, grant = usage_counter(feature), usage_grant(feature)
        read = [
            *_tier_and_period_read(account),
            (counter, usage.stored(counter.attr_name)),
            (grant, usage.stored(grant.attr_name)),
        ]
        if feature not in self.effective_tier(account).features:
            read.append((BillingAccount.entitlement_lookup_keys, account.entitlement_lookup_keys))
        return _all(*(_as_read(attribute, seen) for attribute, seen in read))


def _tier_and_period_read(account: BillingAccount) -> list[tuple[Attribute, Any]]:
    """What the account's tier and usage period are decided from, as read."""
    return [
        (BillingAccount.merged_into, account.merged_into),
        (BillingAccount.tier_override, account.tier_override),
        (BillingAccount.tier, account.tier),
        (BillingAccount.current_period_start, account.current_period_start),
        (BillingAccount.current_period_end, account.current_period_end),
        (BillingAccount.usage_since, account.usage_since),
    ]


def units_past(before: int, after: int, limit: int) -> int:
    """The units of a use going from ``before`` to ``after`` that are past the limit."""
    return max(0, after - limit) - max(0, before - limit)


def crossed(before: int, after: int, limit: int) -> tuple[int, ...]:
    """The thresholds (in % of the limit) that usage passes going from ``before`` to ``after``."""
    thresholds = sorted({*LIMIT_HIT_THRESHOLDS, *USAGE_THRESHOLDS})
    return tuple(t for t in thresholds if before * 100 < t * limit <= after * 100)


def unannounced(
    usage: AccountUsage, feature: str, used: int, limit: int, current: bool = True
) -> tuple[int, ...]:
    """Alert thresholds the period's usage has reached that no check has announced yet.

    Judged from the state, not from this check's crossing: one that a failed write or a dead
    invocation left unannounced goes out with the feature's next check.
    """
    announced = usage.announced(feature) if current else set()
    return tuple(t for t in sorted(USAGE_THRESHOLDS) if t * limit <= used * 100 and t not in announced)
