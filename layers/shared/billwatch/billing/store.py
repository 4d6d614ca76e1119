"""Billing state in DynamoDB: applying one Stripe change with ordering, links and merges.

Applying a change is a single conditional UpdateItem in the common case. The condition holds
the ordering rule (the stored version of the change's field group is older than the change),
so out-of-order or concurrent deliveries can never move state backwards and no read precedes
the write. Reads happen only on the rare paths: a rejected write (stale, or a redirect left by
a merge) and the first time a customer is linked to an account.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pynamodb.constants import ALL_OLD
from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from billwatch.core import dynamo, outbox
from billwatch.core.dynamo import (
    CONDITION_FAILED,
    StoreUnavailable,
    conditional_update,
    error_code,
    store_failure,
)
from billwatch.core.models import FIELD_GROUPS, BillingAccount, version_attribute
from billwatch.core.observability import logger

# Subscription statuses that leave the account free to follow another subscription.
ENDED_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")
_MAX_REDIRECTS = 3
_MAX_MERGE_ATTEMPTS = 5
_LINK_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class AccountRef:
    account_id: str | None  # named by Stripe metadata or a checkout's client_reference_id
    customer_id: str | None
    # The account id is a claim anyone can make (a Payment Link takes client_reference_id from
    # its URL): it may name an account that no other Stripe customer holds, never take one over.
    claimed: bool = False


@dataclass(frozen=True)
class StateChange:
    group: str
    version: str
    fields: Mapping[str, Any]
    subscription_id: str | None = None
    subscription_live: bool = False
    # (event id, facts): side effects to record in the same write (billwatch.core.outbox).
    side_effects: tuple[str, Mapping[str, Any]] | None = None


class ApplyOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    ALREADY_APPLIED = "already_applied"
    UNATTRIBUTED = "unattributed"
    CLAIM_REFUSED = "claim_refused"  # a claimed account already belongs to another customer


@dataclass(frozen=True)
class ApplyResult:
    outcome: ApplyOutcome
    account_id: str | None = None
    previous: BillingAccount | None = None
    # Undelivered side effects on the item, as the rejected write found it.
    pending: Mapping[str, outbox.Entry] = field(default_factory=dict)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BillingStore:
    def __init__(self) -> None:
        # customer id -> account id. Links never change once made, so a warm container can
        # skip the redirect hop for customers it has already seen.
        self._links: dict[str, str] = {}
        # item key -> side-effects entries this container delivered there; the next write to the
        # item removes them, so entries do not pile up between sweeps at no extra request.
        self._delivered: dict[str, dict[str, None]] = {}  # ordered sets: an entry can be delivered twice

    def get(self, account_id: str) -> BillingAccount | None:
        try:
            return BillingAccount.get(account_id, consistent_read=True)
        except BillingAccount.DoesNotExist:
            return None

    def find(self, ref: AccountRef) -> BillingAccount | None:
        """The account an event names, where one is stored, for an event that changes nothing."""
        key = ref.account_id or self._links.get(ref.customer_id or "") or ref.customer_id
        for _ in range(_MAX_REDIRECTS):
            account = self.get(key) if key else None
            if account is None or not account.merged_into:
                return account
            key = account.merged_into
        raise StoreUnavailable(f"too many redirects resolving account {key}")

    def apply(self, ref: AccountRef, change: StateChange) -> ApplyResult:
        key = ref.account_id or self._links.get(ref.customer_id or "") or ref.customer_id
        if key is None:
            return ApplyResult(ApplyOutcome.UNATTRIBUTED)
        linking = ref.customer_id if ref.account_id else None
        for _ in range(_MAX_REDIRECTS):
            accepted, current, pending = self._conditional_update(key, change, linking, ref.claimed)
            if accepted:
                if linking and (current is None or current.stripe_customer_id != linking):
                    self._ensure_link(linking, key)
                return ApplyResult(ApplyOutcome.APPLIED, key, current)
            if current is not None and current.merged_into:
                self._remember_link(key, current.merged_into)
                key = current.merged_into
                continue
            if ref.claimed and current is not None and current.stripe_customer_id not in (None, linking):
                return ApplyResult(ApplyOutcome.CLAIM_REFUSED, None, None)
            if linking:
                # The write may have landed before a crash that cut the link step short.
                self._ensure_link(linking, key)
            stored = getattr(current, version_attribute(change.group), None) if current else None
            outcome = ApplyOutcome.ALREADY_APPLIED if stored == change.version else ApplyOutcome.STALE
            return ApplyResult(outcome, key, current, pending)
        raise StoreUnavailable(f"too many redirects resolving account {key}")

    def _conditional_update(
        self, key: str, change: StateChange, linking: str | None, claimed: bool = False
    ) -> tuple[bool, BillingAccount | None, dict[str, outbox.Entry]]:
        """Whether the condition accepted the write, the item as it was before it, and the side
        effects that item still had to deliver."""
        version_attr = getattr(BillingAccount, version_attribute(change.group))
        now = _now()
        actions: list[Action] = [
            version_attr.set(change.version),
            BillingAccount.updated_at.set(now),
            BillingAccount.created_at.set(BillingAccount.created_at | now),
            BillingAccount.revision.add(1),
        ]
        for name, value in change.fields.items():
            attribute = getattr(BillingAccount, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        if linking:
            actions.append(BillingAccount.stripe_customer_id.set(linking))
        entry_key, facts = change.side_effects or (None, None)
        # Never the entry this write records (a retry of a delivered event writes it again).
        delivered = [done for done in self._delivered.get(key, {}) if done != entry_key]
        actions += outbox.write_actions(key, entry_key, facts, int(now.timestamp()), delivered=delivered)
        newer = version_attr.does_not_exist() | (version_attr < change.version)
        successor = self._successor_in_the_same_second(change)
        if successor is not None:
            newer |= successor
        condition = BillingAccount.merged_into.does_not_exist() & newer
        if claimed and linking:
            condition &= BillingAccount.stripe_customer_id.does_not_exist() | (
                BillingAccount.stripe_customer_id == linking
            )
        guard = self._subscription_guard(change)
        if guard is not None:
            condition &= guard
        accepted, item = conditional_update(BillingAccount, key, actions, condition, return_values=ALL_OLD)
        pending = outbox.entries(item)
        if accepted:
            self._delivered.pop(key, None)
            return True, BillingAccount.from_raw_data(item) if item else BillingAccount(key), pending
        return False, BillingAccount.from_raw_data(item) if item else None, pending

    @staticmethod
    def _successor_in_the_same_second(change: StateChange) -> Condition | None:
        """A live subscription that follows an ended one of the same second wins, whatever its rank.

        Within one subscription the lifecycle rank orders a same-second tie (created before deleted).
        Across two, a cancel and the next subscription's start in the same second, the rank would
        let the cancel win when it arrives first, while the other order keeps the live one (a dead
        subscription never displaces a live one): this makes both orders end on the live one.
        """
        if change.group != "subscription" or not change.subscription_live:
            return None
        same_second = change.version.split("|", 1)[0] + "|"
        return (
            BillingAccount.subscription_version.startswith(same_second)
            & (BillingAccount.subscription_id != change.subscription_id)
            & BillingAccount.subscription_status.is_in(*ENDED_SUBSCRIPTION_STATUSES)
        )

    @staticmethod
    def _subscription_guard(change: StateChange) -> Condition | None:
        """A dead subscription must not displace the account's live one, whatever its timestamp."""
        if change.group != "subscription" or change.subscription_live:
            return None
        return (
            BillingAccount.subscription_id.does_not_exist()
            | (BillingAccount.subscription_id == change.subscription_id)
            | BillingAccount.subscription_status.is_in(*ENDED_SUBSCRIPTION_STATUSES)
        )

    def delivered(self, key: str, entry_key: str) -> None:
        """The entry's side effects went out: the container's next write to the item removes it."""
        if len(self._delivered) >= _LINK_CACHE_SIZE:
            self._delivered.clear()  # the sweep removes what is forgotten here
        self._delivered.setdefault(key, {})[entry_key] = None

    def _remember_link(self, customer_id: str, account_id: str) -> None:
        if len(self._links) >= _LINK_CACHE_SIZE:
            self._links.clear()
        self._links[customer_id] = account_id

    def _ensure_link(self, customer_id: str, account_id: str) -> None:
        """Leave a redirect from the customer to the account, merging any state stored under it."""
        if self._links.get(customer_id) == account_id:
            return  # cached only once the redirect is stored
        for _ in range(_MAX_MERGE_ATTEMPTS):
            redirect = BillingAccount(customer_id, merged_into=account_id, updated_at=_now())
            try:
                redirect.save(
                    condition=BillingAccount.pk.does_not_exist() | (BillingAccount.merged_into == account_id)
                )
                self._remember_link(customer_id, account_id)
                return
            except PutError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise store_failure(exc) from exc
            provisional = self.get(customer_id)
            if provisional is None:
                continue
            if provisional.merged_into and provisional.merged_into != account_id:
                logger.warning(
                    "Stripe customer is already linked to another account; keeping the first link",
                    extra={
                        "customer_id": customer_id,
                        "account_id": account_id,
                        "linked_account_id": provisional.merged_into,
                    },
                )
                return
            if provisional.merged_into == account_id or self._merge(provisional, account_id):
                self._remember_link(customer_id, account_id)
                return
        raise StoreUnavailable(f"could not link customer {customer_id} to account {account_id}")

    def _merge(self, provisional: BillingAccount, account_id: str) -> bool:
        """Move what the provisional item knows into the account, newest group wins; False on a race."""
        account = self.get(account_id)
        first_seen = [when for when in (provisional.created_at, account and account.created_at) if when]
        actions: list[Action] = [
            BillingAccount.stripe_customer_id.set(provisional.pk),
            BillingAccount.updated_at.set(_now()),
            BillingAccount.created_at.set(min(first_seen, default=_now())),
            BillingAccount.revision.add(1),
        ]
        for group, names in FIELD_GROUPS.items():
            theirs = getattr(provisional, version_attribute(group))
            ours = getattr(account, version_attribute(group)) if account else None
            if theirs is None or (ours is not None and ours >= theirs):
                continue
            for name in (*names, version_attribute(group)):
                value = getattr(provisional, name)
                attribute = getattr(BillingAccount, name)
                actions.append(attribute.remove() if value is None else attribute.set(value))
        unchanged_account = (
            BillingAccount.pk.does_not_exist()
            if account is None
            else BillingAccount.revision == (account.revision or 0)
        )
        redirect = BillingAccount(provisional.pk, merged_into=account_id, updated_at=_now())
        from pynamodb.transactions import TransactWrite  # once per account link; kept off cold start

        try:
            with TransactWrite(connection=dynamo.low_level(BillingAccount)) as transaction:
                transaction.update(BillingAccount(account_id), actions=actions, condition=unchanged_account)
                transaction.save(redirect, condition=BillingAccount.revision == (provisional.revision or 0))
        except TransactWriteError as exc:
            if any(
                reason and reason.code == "ConditionalCheckFailed"
                for reason in exc.cancellation_reasons or []
            ):
                return False
            raise store_failure(exc) from exc
        logger.info(
            "Merged billing state stored under a Stripe customer into its account",
            extra={"customer_id": provisional.pk, "account_id": account_id},
        )
        return True
