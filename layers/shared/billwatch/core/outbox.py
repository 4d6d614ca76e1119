"""Side effects of a committed change, kept on the item the change wrote until they are delivered.

Why on the item, and not an outbox item in a transaction: the change is one conditional
UpdateItem whose ``ALL_OLD`` answer is the standing it replaced (what business metrics are judged
from), and TransactWriteItems returns no old values. So the same UpdateItem also writes:

- ``outbox_<event id>``: what the side effects are made from (JSON), and when;
- ``outbox_<event id>|was_<field>``: the replaced standing, copied by ``if_not_exists`` inside the
  write, since DynamoDB evaluates every operand against the item as it was;
- ``outbox_shard``, which puts the item on the sparse ``PendingSideEffects`` index, and
  ``outbox_written``, a count of entries ever written that tells the sweep nothing new came.

The invocation that committed delivers the effects itself. If it dies first, Stripe's retry finds
the entry in the ``ALL_OLD`` of its rejected write, and the scheduled sweep finds it on the index.
A delivered entry is removed by the container's next write to the item, or by the sweep once
delivery is on record: the webhook path adds no request, and an item does not grow with entries
(every write is charged by the item's size).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.constants import ALL_NEW
from pynamodb.expressions.update import Action

from billwatch.core import dynamo
from billwatch.core.dynamo import conditional_update
from billwatch.core.models import BillingAccount
from billwatch.core.observability import logger

PREFIX = "outbox_"
SHARD_ATTRIBUTE = "outbox_shard"
WRITTEN_ATTRIBUTE = "outbox_written"
# An entry whose facts are a usage announcement (billwatch.licensing.service), not a Stripe event's.
USAGE_KIND = "usage"
# The index's writes spread over this many partition keys, so a burst of webhooks never queues
# behind one hot GSI partition.
SHARDS = 8
# What a delivery needs to know of the standing a change replaced.
STANDING_FIELDS = ("subscription_status", "tier", "plan_tier")
_ABSENT = ""
_ABSENT_MRR = -1


@dataclass(frozen=True)
class PriorStanding:
    """The account's subscription standing just before a change: None where nothing was stored."""

    subscription_status: str | None = None
    tier: str | None = None
    plan_tier: str | None = None
    mrr: int | None = None


@dataclass(frozen=True)
class Entry:
    key: str  # the event id (or usage announcement id) the effects belong to
    facts: Mapping[str, Any]  # JSON: what the effects are made from
    written_at: int
    before: PriorStanding


def shard_of(pk: str) -> str:
    return str(zlib.crc32(pk.encode("utf-8")) % SHARDS)


def _entry_attribute(key: str) -> UnicodeAttribute:
    return UnicodeAttribute(attr_name=f"{PREFIX}{key}")


def _was(key: str, field: str) -> str:
    return f"{PREFIX}{key}|was_{field}"


def write_actions(
    pk: str,
    key: str | None,
    facts: Mapping[str, Any] | None,
    now: int,
    with_standing: bool = True,
    delivered: Sequence[str] = (),
) -> list[Action]:
    """The UpdateItem actions that record an entry beside the change they belong to, and forget
    the ``delivered`` ones (this container's, delivered since its last write to the item)."""
    actions: list[Action] = [
        UnicodeAttribute(attr_name=name).remove() for done in delivered for name in _entry_names(done)
    ]
    if key is None or facts is None:
        return actions
    actions += [
        _entry_attribute(key).set(json.dumps({"facts": facts, "at": now}, separators=(",", ":"))),
        BillingAccount.outbox_shard.set(shard_of(pk)),
        BillingAccount.outbox_written.add(1),
    ]
    if not with_standing:
        return actions
    actions.append(NumberAttribute(attr_name=_was(key, "mrr")).set(BillingAccount.mrr | _ABSENT_MRR))
    for field in STANDING_FIELDS:
        stored = getattr(BillingAccount, field)
        actions.append(UnicodeAttribute(attr_name=_was(key, field)).set(stored | _ABSENT))
    return actions


def _entry_names(key: str) -> list[str]:
    return [f"{PREFIX}{key}", _was(key, "mrr"), *(_was(key, field) for field in STANDING_FIELDS)]


def remove(pk: str, key: str) -> None:
    """Forget a delivered entry (the sweep takes the item off the index once none is left)."""
    removals = [UnicodeAttribute(attr_name=name).remove() for name in _entry_names(key)]
    conditional_update(BillingAccount, pk, removals, _entry_attribute(key).exists(), ALL_NEW)


def leave_index(pk: str, written: int) -> None:
    """Take an item whose entries are all gone off the index, unless one was written since."""
    conditional_update(
        BillingAccount,
        pk,
        [BillingAccount.outbox_shard.remove()],
        BillingAccount.outbox_written == written,
        ALL_NEW,
    )


def entries_written(raw_item: Mapping[str, Any] | None) -> int:
    """How many entries were ever written to the item: what tells the sweep nothing new came."""
    return _number((raw_item or {}).get(WRITTEN_ATTRIBUTE)) or 0


def pending_keys() -> Iterator[str]:
    """Keys of the items with entries, off the sparse index: no scan."""
    for shard in range(SHARDS):
        for item in BillingAccount.pending_side_effects.query(str(shard)):
            yield item.pk


def raw_item(pk: str) -> dict[str, Any] | None:
    """The item as DynamoDB holds it: entries are attributes the model does not declare."""
    connection = dynamo.low_level(BillingAccount)
    return connection.get_item(BillingAccount.Meta.table_name, pk, consistent_read=True).get("Item")


def _text(raw: Mapping[str, Any] | None) -> str | None:
    """A string of a raw DynamoDB item (``{"S": ...}``); None when absent or empty."""
    return (raw or {}).get("S") or None


def _number(raw: Mapping[str, Any] | None) -> int | None:
    """A number of a raw DynamoDB item (``{"N": ...}``); None when absent or marked absent."""
    if not raw or "N" not in raw:
        return None
    number = int(float(raw["N"]))
    return None if number == _ABSENT_MRR else number


def entries(raw_item: Mapping[str, Any] | None) -> dict[str, Entry]:
    """The undelivered entries of an item as DynamoDB returned it (raw attribute values)."""
    found: dict[str, Entry] = {}
    item = raw_item or {}
    for name, value in item.items():
        if not name.startswith(PREFIX) or "|" in name or name in (SHARD_ATTRIBUTE, WRITTEN_ATTRIBUTE):
            continue
        key = name[len(PREFIX) :]
        try:
            document = json.loads(value["S"])
            facts, written_at = document["facts"], int(document["at"])
        except (KeyError, TypeError, ValueError):
            continue  # not an entry this code wrote; never let it stop the others
        before = PriorStanding(
            **{field: _text(item.get(_was(key, field))) for field in STANDING_FIELDS},
            mrr=_number(item.get(_was(key, "mrr"))),
        )
        found[key] = Entry(key, facts, written_at, before)
    return found


def standing_of(account: BillingAccount | None) -> PriorStanding | None:
    if account is None:
        return None
    return PriorStanding(
        account.subscription_status,
        account.tier,
        account.plan_tier,
        None if account.mrr is None else int(account.mrr),
    )


def usage_key(account_id: str, feature: str, threshold: int, since: int) -> str:
    """One announcement per account, feature, threshold and period; hashed, since callers name features."""
    digest = hashlib.sha256(f"{account_id}|{feature}|{threshold}|{since}".encode()).hexdigest()
    return f"{USAGE_KIND}_{digest[:24]}"


class Publisher(Protocol):
    def publish(self, event: dict[str, Any]) -> None: ...


def publish_recorded(pk: str, key: str, event: Mapping[str, Any], publisher: Publisher) -> None:
    """Publish a business event recorded as an entry, and remove the entry once it is out."""
    try:
        publisher.publish(dict(event))
    except Exception:
        logger.exception(
            "Failed to publish a business event; the side-effects sweep will retry it",
            extra={"business_event": event},
        )
        return
    try:
        remove(pk, key)
    except Exception:
        # Published: the sweep publishes it once more, which at least once allows.
        logger.warning("Could not remove a delivered side-effects entry", exc_info=True)
