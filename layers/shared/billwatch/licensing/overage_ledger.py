"""The overage ledger: what each account's periods owe Stripe in overage units, what is in flight, and
what Stripe has (docs/overage-billing.md, "The record").

Per account, billed feature and usage period:

- the overage: the counter past the quota (current period; the counter is net of grants) or
  ``max(0, used - limit)`` of a closed period's record: the counter is the record;
- ``reported``: the watermark, the units Stripe accepted;
- ``sending`` and ``pinned_at``: a range in flight, (reported, sending], pinned before it is sent, so
  that a run after a lost watermark write sends exactly that range again, under the same identifier;
- ``confirmed``: the units reconciliation found in Stripe's event summaries, and ``checked``: the
  watermark it last compared with them (Stripe counts late: the next run expects at least that).

The current period's figures are attributes of the account's item (models.overage_reported ...),
period attributes that the write closing the period holds as read and copies into its history record
(billwatch.licensing.usage_history), whose feature JSON keeps them from then on.

Work lists, not scans: an item or a closed period's record carries ``overage_due`` (a sparse KEYS_ONLY
index ``OverageDue`` on each table) while it has work: its shard ("0".."7") while units are owed or a
range is in flight (the drain's list: ``due``), ``sent#<shard>`` while only units sent and not yet
confirmed remain (reconciliation's list, with the first: ``sent_totals``), ``held#<shard>`` while
what is owed cannot be sent as things stand (``hold``: no Stripe customer, too old, parked; the drain
reads them with ``held`` once an hour, not every minute, so they never crowd a run's list). The usage
check sets the shard on the first overage use of a period (best-effort; a keyed check in its
transaction), the hourly quota reset on any item that owes without it (the guarantee), ``pin`` on
whatever it pins; ``release`` and ``confirm`` move it on once nothing is owed or in flight, on the
condition that nothing became owed since they read. The check and the quota reset leave a held marker.

Every write is conditional on what it read: a racing drain, a use that changes what is owed, a grant
or a closing period makes it return False (read again next run), never count a unit twice.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import Attribute
from pynamodb.constants import NONE
from pynamodb.exceptions import GetError, PynamoDBException, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from billwatch.core import dynamo
from billwatch.core.config import ConfigError, Settings
from billwatch.core.dynamo import (
    CONDITION_FAILED,
    StoreUnavailable,
    conditional_update,
    error_code,
    store_failure,
)
from billwatch.core.models import (
    HELD_MARKER_PREFIX,
    OVERAGE_ATTRIBUTES,
    OVERAGE_SHARDS,
    SENT_MARKER_PREFIX,
    BillingAccount,
    JobCheckpoint,
    UsagePeriodRecord,
    bind_billing_table,
    bind_usage_history_table,
    overage_checked,
    overage_confirmed,
    overage_customer,
    overage_pinned_at,
    overage_reported,
    overage_sending,
    overage_shard,
    usage_counter,
)
from billwatch.core.observability import logger
from billwatch.licensing.overage import BillingState, OverageBalance, overage_marker
from billwatch.licensing.plans import PlanCatalog, Tier, load_plan_catalog
from billwatch.licensing.quota_policy import AccountUsage, QuotaPolicy
from billwatch.licensing.usage_history import FeatureUsage

# The markers of items the drain has work on, and of items only reconciliation has work on.
DUE_MARKERS = OVERAGE_SHARDS
SENT_MARKERS = tuple(SENT_MARKER_PREFIX + shard for shard in OVERAGE_SHARDS)
# Items owing what the drain cannot send for now: read by its hourly held pass, not every minute.
HELD_MARKERS = tuple(HELD_MARKER_PREFIX + shard for shard in OVERAGE_SHARDS)
# On one of the drain's lists: the check and the quota reset leave the marker as it is.
LISTED_MARKERS = DUE_MARKERS + HELD_MARKERS
INDEX_NAME = "OverageDue"
_Listing = type[BillingAccount] | type[UsagePeriodRecord]
_LISTING_MODELS: tuple[_Listing, ...] = (BillingAccount, UsagePeriodRecord)
# A part of an OverageDue index read in order: marker, model, the key to read after, a range key condition.
_Segment = tuple[str, _Listing, dict[str, Any] | None, Condition | None]
# The JobCheckpoint holding the index key of the last item a run's ``due`` read: the next run reads on
# from there, so that a list longer than a run's limit is read whole in turn, not only its first items.
DUE_CHECKPOINT = "overage-drain#due"
_BATCH_GET_KEYS = 100  # DynamoDB's limit per BatchGetItem
_BATCH_GET_ATTEMPTS = 5


@dataclass(frozen=True)
class _ItemRead:
    usage: AccountUsage
    quota: int


@dataclass(frozen=True)
class _Billed:
    """A feature the item's tier bills as overage, and its billing state as read."""

    quota: int
    event_name: str
    state: BillingState


@dataclass(frozen=True)
class OwedBalance:
    """A billed feature's overage in one period of one account, as the ledger read it."""

    balance: OverageBalance  # overage = units past the limit now; reported = the watermark
    sending: int | None  # the pinned range's end, if a range is in flight
    pinned_at: int | None
    closed: bool  # True: a closed period (its history record), else the account item's period
    confirmed: int = 0
    checked: int = 0  # the watermark reconciliation last compared with Stripe's summaries
    # What the ledger's writes are conditional on: the account's item, or the record's features JSON.
    read: _ItemRead | str = field(default="", compare=False, repr=False)

    @property
    def state(self) -> BillingState:
        return BillingState(self.balance.overage, self.balance.reported, self.sending, self.confirmed)

    @property
    def owing(self) -> bool:
        """Units to send, or a range in flight."""
        return self.state.owing


class OverageLedger:
    def __init__(self, catalog: PlanCatalog):
        self._catalog = catalog
        self._policy = QuotaPolicy(catalog)

    # --- reading ---------------------------------------------------------------------------------

    def due(self, now: int, limit: int = 500) -> list[OwedBalance]:
        """Every billed feature of the items and closed periods the drain has work on (up to ``limit``
        of them, read on from the item the previous run's read stopped at, round the shards and back,
        so that every one is read within ceil(listed / limit) runs): the ones owing units or with a
        range in flight, and the others of the same items, whose ``release`` takes the marker off once
        nothing is owed. An item that no longer bills any feature (its tier changed) loses its marker
        here."""
        checkpoint = _load_checkpoint(DUE_CHECKPOINT)
        after = None if checkpoint.cursor is None else json.loads(checkpoint.cursor)
        segments = _whole(DUE_MARKERS)
        lists = [(marker, model) for marker, model, _, _ in segments]
        if after is not None and (first := _list_of(after)) in lists:
            at = lists.index(first)
            segments = [
                (*first, after, None),
                *segments[at + 1 :],
                *segments[:at],
                (*first, None, _up_to(first[1], after)),  # back to where this run began
            ]
        accounts, records, last = self._marked(segments, limit)
        if last is not None and last != after:
            _save_checkpoint(DUE_CHECKPOINT, last, now)
        return self._read(accounts, records, now)

    def held(self, now: int) -> list[OwedBalance]:
        """Every billed feature of the items and closed periods ``hold`` took off the drain's list: for
        its held pass, which sends what became sendable (a Stripe customer added, a range re-driven)."""
        return self._read(*self._marked(_whole(HELD_MARKERS), None)[:2], now)

    @staticmethod
    def accounts_billed_to(customer: str) -> set[str]:
        """The accounts whose overage goes to this Stripe customer (its provisional item and the
        redirect it leaves are not accounts); one Query of the ByStripeCustomer index."""
        try:
            return {
                item.pk
                for item in BillingAccount.by_stripe_customer.query(customer)
                if item.pk != customer and item.merged_into is None
            }
        except PynamoDBException as exc:
            raise store_failure(exc) from exc

    def sent_totals(self, since: int, until: int, now: int) -> list[OwedBalance]:
        """For reconciliation: every period overlapping [since, until) with units sent (reported > 0)
        or in flight, per account, feature (``balance.event_name``), Stripe customer and period, whose
        sent units are not all confirmed yet or that still owes units. A period whose every sent unit
        reconciliation confirmed, owing nothing, has no marker any more and is not listed."""
        return [
            owed
            for owed in self._read(*self._marked(_whole(LISTED_MARKERS + SENT_MARKERS), None)[:2], now)
            if (owed.balance.reported > 0 or owed.sending is not None)
            and owed.balance.period_start < until
            and owed.balance.period_end > since
        ]

    def owes(self, usage: AccountUsage) -> bool:
        """Whether the item, as read, owes units or has a range in flight."""
        return any(billed.state.owing for billed in self._item_states(usage).values())

    def mark_if_owing(self, usage: AccountUsage) -> bool:
        """Puts the item on the drain's list if, as read, it owes units or has a range in flight and
        is not on it (the hourly quota reset's guarantee); on the marker as read. Whether it wrote."""
        account = usage.account
        if account.overage_due in LISTED_MARKERS or not self.owes(usage):
            return False
        due = BillingAccount.overage_due
        marked = _update_item(account.pk, [due.set(overage_shard(account.pk))], _is(due, account.overage_due))
        if marked:
            logger.info(
                "An account owing overage units was put on the drain's list", extra={"account_id": account.pk}
            )
        return marked

    def _read(self, accounts: list[str], records: list[tuple[str, int]], now: int) -> list[OwedBalance]:
        items, kept = _batch_get(sorted(set(accounts) | {account for account, _ in records}), records)
        owed: list[OwedBalance] = []
        for account_id in accounts:
            usage = AccountUsage.from_raw(account_id, items.get(account_id))
            found = list(self._item_balances(usage, now))
            if not found and usage.raw:
                self._rewrite_item(usage, {}, [])  # nothing billed any more: off the list
            owed += found
        for key in records:
            if (raw := kept.get(key)) is None:
                continue  # expired since the index listed it
            record = UsagePeriodRecord.from_raw_data(raw)
            customer = items.get(record.account_id, {}).get(BillingAccount.stripe_customer_id.attr_name, {})
            found = list(self._record_balances(record, customer.get("S")))
            if not found:
                self._rewrite_record(record, _features(record))
            owed += found
        return owed

    def _marked(
        self, segments: Sequence[_Segment], limit: int | None
    ) -> tuple[list[str], list[tuple[str, int]], dict[str, Any] | None]:
        """The keys of the items and records in these index segments, in order, up to ``limit``; and
        the index key of the last one read."""
        accounts: list[str] = []
        records: list[tuple[str, int]] = []
        last: dict[str, Any] | None = None
        for marker, model, cursor, range_key_condition in segments:
            while limit is None or len(accounts) + len(records) < limit:
                left = None if limit is None else limit - len(accounts) - len(records)
                try:
                    page = dynamo.table_connection(model).query(
                        marker,
                        range_key_condition=range_key_condition,
                        index_name=INDEX_NAME,
                        limit=left,
                        exclusive_start_key=cursor,
                    )
                except PynamoDBException as exc:
                    raise store_failure(exc) from exc
                for item in page.get("Items", []):
                    if model is BillingAccount:
                        accounts.append(item["pk"]["S"])
                    else:
                        records.append((item["account_id"]["S"], int(item["period_start"]["N"])))
                    last = item
                cursor = page.get("LastEvaluatedKey")
                if cursor is None:
                    break
        # An index is eventually consistent: an item whose marker just moved can be under both.
        return list(dict.fromkeys(accounts)), list(dict.fromkeys(records)), last

    def _item_states(self, usage: AccountUsage) -> dict[str, _Billed]:
        """Per feature the item's tier bills: its quota, meter and billing state, as read."""
        account = usage.account
        if account.usage_since is None or account.merged_into is not None:
            return {}
        tier = self._policy.effective_tier(account)
        states = {}
        for name, spec in sorted(tier.features.items()):
            if spec.overage and spec.quota is not None and spec.event_name is not None:
                state = BillingState(
                    max(0, usage.counter(name) - spec.quota),
                    usage.number(overage_reported(name).attr_name),
                    usage.stored(overage_sending(name).attr_name),
                    usage.number(overage_confirmed(name).attr_name),
                )
                states[name] = _Billed(spec.quota, spec.event_name, state)
        return states

    def _item_balances(self, usage: AccountUsage, now: int) -> Iterator[OwedBalance]:
        account = usage.account
        states = self._item_states(usage)
        if not states or account.usage_since is None:
            return
        period = self._policy.period_of(account, now)
        current = self._policy.is_current(account.usage_since, period)
        end = period.end if current else self._policy.past_period_end(account, now)
        for name, billed in states.items():
            state = billed.state
            balance = OverageBalance(
                account.pk,
                usage.text(overage_customer(name).attr_name) or account.stripe_customer_id,
                name,
                billed.event_name,
                int(account.usage_since),
                end,
                state.overage,
                state.reported,
            )
            pinned_at = usage.stored(overage_pinned_at(name).attr_name)
            read = _ItemRead(usage, billed.quota)
            checked = usage.number(overage_checked(name).attr_name)
            yield OwedBalance(balance, state.sending, pinned_at, False, state.confirmed, checked, read)

    def _record_balances(self, record: UsagePeriodRecord, customer: str | None) -> Iterator[OwedBalance]:
        tier = self._catalog.find_tier(record.tier) or self._catalog.default_tier
        for name, usage in _features(record).items():
            state = usage.billing()
            event_name = None if state is None else self._event_name(tier, name)
            if state is None or event_name is None:
                continue
            balance = OverageBalance(
                record.account_id,
                usage.customer or customer,
                name,
                event_name,
                int(record.period_start),
                int(record.period_end),
                state.overage,
                state.reported,
            )
            yield OwedBalance(
                balance, state.sending, usage.pinned_at, True, state.confirmed, usage.checked, record.features
            )

    def _event_name(self, tier: Tier, feature: str) -> str | None:
        """The meter the record's tier billed the feature to; else the one a tier bills it to now."""
        for candidate in (tier, *self._catalog.tiers):
            spec = candidate.features.get(feature)
            if spec is not None and spec.event_name is not None:
                return spec.event_name
        logger.warning("A closed period bills a feature no meter is named for", extra={"feature": feature})
        return None

    # --- writing ---------------------------------------------------------------------------------

    def pin(self, owed: OwedBalance, through: int, now: int) -> bool:
        """Pins the range (reported, through] before it is sent: on the watermark as read, no pin or
        this same pin, the period as read and (current period) the overage still at least
        ``through`` (a use since adds units, which stay for the next range; a grant that lowered the
        overage below it refuses). False: changed since read."""
        balance = owed.balance
        if owed.sending is not None:
            if owed.sending != through:
                return False  # another range is in flight: that one is sent first
        elif not balance.reported < through <= balance.overage:
            raise ValueError(f"a range to pin is ({balance.reported}, {through}]: through must be above")
        if isinstance(owed.read, _ItemRead):
            usage, feature = owed.read.usage, balance.feature
            sending = overage_sending(feature)
            condition = self._policy.tier_and_period_as_read(usage.account) & _is(
                overage_reported(feature), usage.stored(overage_reported(feature).attr_name)
            )
            actions: list[Action] = [BillingAccount.overage_due.set(overage_shard(balance.account_id))]
            if owed.sending is None:
                condition &= sending.does_not_exist() & (usage_counter(feature) >= owed.read.quota + through)
                actions += [sending.set(through), overage_pinned_at(feature).set(now)]
                customer = overage_customer(feature)
                condition &= _is(customer, usage.text(customer.attr_name))
                if balance.stripe_customer_id is not None:
                    actions.append(customer.set(balance.stripe_customer_id))
            else:  # the same pin: still there, so the resend is that range's
                condition &= sending == through
            return _update_item(balance.account_id, actions, condition)
        record = _record(balance.account_id, balance.period_start)
        if record is None or record.features != owed.read:
            return False
        features = _features(record)
        if owed.sending is None:
            features[balance.feature] = replace(
                features[balance.feature], sending=through, pinned_at=now, customer=balance.stripe_customer_id
            )
        return self._rewrite_record(record, features)

    def settle(self, owed: OwedBalance, through: int) -> bool:
        """Stripe accepted the pinned range: the watermark becomes ``through`` and the pin goes, on the
        watermark as read (``owed`` may be the balance read before its pin) and that pin, in the
        period as read. The marker stays (``release`` takes it off once nothing is owed)."""
        balance, feature = owed.balance, owed.balance.feature
        if isinstance(owed.read, _ItemRead):
            usage = owed.read.usage
            reported = overage_reported(feature)
            condition = (
                self._policy.period_as_read(usage.account)
                & _is(reported, usage.stored(reported.attr_name))
                & (overage_sending(feature) == through)
            )
            actions = [reported.set(through), overage_sending(feature).remove()]
            return _update_item(
                balance.account_id, [*actions, overage_pinned_at(feature).remove()], condition
            )
        record = _record(balance.account_id, balance.period_start)
        if record is None:
            return False
        features = _features(record)
        figures = features.get(feature)
        if figures is None or figures.reported != balance.reported or figures.sending != through:
            return False
        features[feature] = replace(figures, reported=through, sending=None, pinned_at=None)
        return self._rewrite_record(record, features)

    def release(self, owed: OwedBalance) -> bool:
        """Takes the marker of the item (or record) ``owed`` was read from off the drain's list once
        nothing on it is owed or in flight: read again, then written on that read (to ``sent#``
        while sent units are unconfirmed). False: something is still owed, or it changed."""
        balance = owed.balance
        if isinstance(owed.read, _ItemRead):
            usage = self._load(balance.account_id)
            states = self._item_states(usage)
            if any(billed.state.owing for billed in states.values()):
                return False
            return self._rewrite_item(usage, states, [])
        record = _record(balance.account_id, balance.period_start)
        if record is None:
            return True
        features = _features(record)
        if any(state.owing for state in _states(features)):
            return False
        return self._rewrite_record(record, features)

    def hold(self, owed: OwedBalance) -> bool:
        """Moves the item (or closed period) ``owed`` was read from to the drain's held list, when what
        it owes cannot be sent as things stand (no Stripe customer, too old for Stripe, a range parked
        for an operator): read by the drain's held pass, not every minute, so that it never keeps
        another account's units from the run's list. On the item as read, its Stripe customer
        included. False: changed since read."""
        balance = owed.balance
        if isinstance(owed.read, _ItemRead):
            usage = owed.read.usage
            return self._rewrite_item(usage, self._item_states(usage), [], hold=True)
        record = _record(balance.account_id, balance.period_start)
        if record is None or record.features != owed.read:
            return False
        return self._rewrite_record(record, _features(record), hold=True)

    def confirm(
        self, account_id: str, feature: str, period_start: int, units: int, checked: int | None = None
    ) -> bool:
        """Records the units of the period reconciliation confirmed in Stripe's event summaries (and
        ``checked``, the watermark it compared), on the account's item while it holds the period,
        else on its record; the marker follows (off once every sent unit is confirmed and nothing
        is owed). False: no such billed period, or it changed since read (reconcile it again)."""
        usage = self._load(account_id)
        if usage.account.usage_since is not None and int(usage.account.usage_since) == period_start:
            states = self._item_states(usage)
            if feature not in states:
                return False
            billed = states[feature]
            states[feature] = replace(billed, state=replace(billed.state, confirmed=units))
            actions: list[Action] = [overage_confirmed(feature).set(units)]
            if checked is not None:
                actions.append(overage_checked(feature).set(checked))
            return self._rewrite_item(usage, states, actions)
        record = _record(account_id, period_start)
        features = {} if record is None else _features(record)
        if record is None or feature not in features or features[feature].reported is None:
            return False
        figures = features[feature]
        features[feature] = replace(
            figures, confirmed=units, checked=figures.checked if checked is None else checked
        )
        return self._rewrite_record(record, features)

    def _load(self, account_id: str) -> AccountUsage:
        try:
            raw = dynamo.table_connection(BillingAccount).get_item(account_id, consistent_read=True)
        except GetError as exc:
            raise store_failure(exc) from exc
        return AccountUsage.from_raw(account_id, raw.get("Item"))

    def _rewrite_item(
        self, usage: AccountUsage, states: Mapping[str, _Billed], actions: list[Action], hold: bool = False
    ) -> bool:
        """``actions`` and the marker ``states`` call for (``hold``: the held one), on every billed
        feature's ledger figures and the Stripe customer as read and, unless the marker keeps it on one
        of the drain's lists, no use having made units owed."""
        account = usage.account
        marker = _held(account.pk) if hold else overage_marker(account.pk, (b.state for b in states.values()))
        if marker == account.overage_due and not actions:
            return True
        due = BillingAccount.overage_due
        actions = [*actions, due.remove() if marker is None else due.set(marker)]
        condition = (
            self._policy.tier_and_period_as_read(account)
            & _is(due, account.overage_due)
            & _is(BillingAccount.stripe_customer_id, account.stripe_customer_id)
        )
        for name, billed in states.items():
            for attribute in OVERAGE_ATTRIBUTES:
                condition &= _is(attribute(name), usage.stored(attribute(name).attr_name))
            if marker not in LISTED_MARKERS:
                counter = usage_counter(name)
                reported = usage.number(overage_reported(name).attr_name)
                condition &= counter.does_not_exist() | (counter <= billed.quota + reported)
        return _update_item(account.pk, actions, condition)

    @staticmethod
    def _rewrite_record(
        record: UsagePeriodRecord, features: Mapping[str, FeatureUsage], hold: bool = False
    ) -> bool:
        """The record's features and marker (``hold``: the held one), on its features and marker as read."""
        document = json.dumps({name: usage.as_json() for name, usage in features.items()}, sort_keys=True)
        marker = _held(record.account_id) if hold else overage_marker(record.account_id, _states(features))
        if document == record.features and marker == record.overage_due:
            return True
        due = UsagePeriodRecord.overage_due
        actions: list[Action] = [
            UsagePeriodRecord.features.set(document),
            due.remove() if marker is None else due.set(marker),
        ]
        condition = (UsagePeriodRecord.features == record.features) & _is(due, record.overage_due)
        try:
            UsagePeriodRecord(record.account_id, record.period_start).update(actions, condition=condition)
        except UpdateError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise store_failure(exc) from exc
        return True


def _whole(markers: Sequence[str]) -> list[_Segment]:
    return [(marker, model, None, None) for marker in markers for model in _LISTING_MODELS]


def _list_of(key: Mapping[str, Any]) -> tuple[str, _Listing]:
    """The marker and index an index key was read from."""
    return key["overage_due"]["S"], BillingAccount if "pk" in key else UsagePeriodRecord


def _up_to(model: _Listing, key: Mapping[str, Any]) -> Condition:
    if model is BillingAccount:
        return BillingAccount.pk <= key["pk"]["S"]
    return UsagePeriodRecord.account_id <= key["account_id"]["S"]


def _load_checkpoint(name: str) -> JobCheckpoint:
    try:
        return JobCheckpoint.load(name)
    except PynamoDBException as exc:
        raise store_failure(exc) from exc


def _save_checkpoint(name: str, cursor: Mapping[str, Any], now: int) -> None:
    """An UpdateItem (it creates the item): the drain may update items of the billing table, not put them."""
    updated_at = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        JobCheckpoint(JobCheckpoint.key(name)).update(
            [
                JobCheckpoint.cursor.set(json.dumps(cursor, sort_keys=True)),
                JobCheckpoint.updated_at.set(updated_at),
            ]
        )
    except PynamoDBException as exc:
        raise store_failure(exc) from exc


def _held(account_id: str) -> str:
    return HELD_MARKER_PREFIX + overage_shard(account_id)


def _is(attribute: Attribute, seen: Any) -> Condition:
    return attribute.does_not_exist() if seen is None else attribute == seen


def _states(features: Mapping[str, FeatureUsage]) -> Iterable[BillingState]:
    return filter(None, (usage.billing() for usage in features.values()))


def _features(record: UsagePeriodRecord) -> dict[str, FeatureUsage]:
    return {name: FeatureUsage(**figures) for name, figures in json.loads(record.features).items()}


def _record(account_id: str, period_start: int) -> UsagePeriodRecord | None:
    try:
        return UsagePeriodRecord.get(account_id, period_start, consistent_read=True)
    except UsagePeriodRecord.DoesNotExist:
        return None
    except GetError as exc:
        raise store_failure(exc) from exc


def _update_item(account_id: str, actions: list[Action], condition: Condition) -> bool:
    accepted, _ = conditional_update(BillingAccount, account_id, actions, condition, return_values=NONE)
    return accepted


def _batch_get(
    accounts: Sequence[str], records: Sequence[tuple[str, int]]
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """The account items and history records, consistently read, in BatchGetItems of 100 keys."""
    billing, history = BillingAccount.Meta.table_name, UsagePeriodRecord.Meta.table_name
    keys = [(billing, {"pk": {"S": account}}) for account in accounts] + [
        (history, {"account_id": {"S": account}, "period_start": {"N": str(start)}})
        for account, start in records
    ]
    client = dynamo.low_level(BillingAccount).client
    items: dict[str, dict[str, Any]] = {}
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for first in range(0, len(keys), _BATCH_GET_KEYS):
        request: dict[str, Any] = {}
        for table, key in keys[first : first + _BATCH_GET_KEYS]:
            request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
        for attempt in range(_BATCH_GET_ATTEMPTS):
            try:
                response = client.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise store_failure(exc) from exc
            for item in response.get("Responses", {}).get(billing, []):
                items[item["pk"]["S"]] = item
            for item in response.get("Responses", {}).get(history, []):
                kept[(item["account_id"]["S"], int(item["period_start"]["N"]))] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)  # DynamoDB throttled some keys: back off before asking again
        else:
            raise StoreUnavailable("DynamoDB did not read every overage item; the next run reads them")
    return items, kept


def build_overage_ledger(settings: Settings) -> OverageLedger:
    if settings.usage_history_table is None:
        raise ConfigError("USAGE_HISTORY_TABLE_NAME is required where overage is billed")
    bind_billing_table(settings.billing_table)
    bind_usage_history_table(settings.usage_history_table)
    return OverageLedger(load_plan_catalog(settings))
