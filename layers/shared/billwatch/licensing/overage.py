"""What the overage drain sends to Stripe: the meter event an account's unreported overage makes.

Pure: no client, no clock, no logging (billwatch.licensing.overage_ledger reads the balances and
moves the watermarks; billwatch.billing.overage_drain sends the events). The overage of an account's
period for a feature is the counter past the limit; ``reported`` is the watermark, the units Stripe
has already been sent. Everything in between goes as one event, whose identifier is derived from the
units it carries, so a retry of the same drain (or a drain after a crash between Stripe's acceptance
and the watermark's write) sends the same identifier, which Stripe deduplicates within its 24 hours.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from billwatch.core.ids import is_customer_id
from billwatch.core.models import SENT_MARKER_PREFIX, overage_shard

# Stripe takes a meter event whose timestamp is within the past 35 days or up to 5 minutes ahead.
STRIPE_PAST_WINDOW_SECONDS = 35 * 86_400
STRIPE_FUTURE_WINDOW_SECONDS = 300
# The margin kept from the window's old edge: an event timestamped at the edge could be past it by
# the time Stripe receives it (the drain's retries, a clock apart from Stripe's).
WINDOW_MARGIN_SECONDS = 3600
# Stripe's limit on an identifier's length; a derived one is "bw_" and a SHA-256 in hex: 67.
IDENTIFIER_PREFIX = "bw_"


@dataclass(frozen=True)
class OverageBalance:
    """An account's overage for a feature in one usage period, and how much of it Stripe has."""

    account_id: str
    stripe_customer_id: str | None
    feature: str
    event_name: str
    period_start: int
    period_end: int
    overage: int  # the period's units past the limit
    reported: int  # the watermark: the units already sent


@dataclass(frozen=True)
class MeterEvent:
    event_name: str
    identifier: str
    stripe_customer_id: str
    value: int
    timestamp: int
    reported_after: int  # the watermark once Stripe has the event

    def params(self) -> dict[str, Any]:
        """The event as POST /v1/billing/meter_events (and the v2 meter event stream) take it."""
        return {
            "event_name": self.event_name,
            "identifier": self.identifier,
            "timestamp": self.timestamp,
            "payload": {"stripe_customer_id": self.stripe_customer_id, "value": str(self.value)},
        }


class Unsent(enum.Enum):
    """Why a balance makes no event."""

    NOTHING_DUE = "nothing_due"  # all reported (or a grant lowered the overage below the watermark)
    NO_CUSTOMER = "no_customer"  # the account has no Stripe customer to bill: left for reconciliation
    TOO_OLD = "too_old"  # the period ended before Stripe's window: reconciliation bills it otherwise


def identifier(account_id: str, feature: str, period_start: int, after: int, through: int) -> str:
    """The identifier of the event carrying the overage units after ``after`` through ``through``
    of the account's period: the same units always get the same identifier, others another one."""
    key = "\x1f".join([account_id, feature, str(period_start), str(after), str(through)])
    return IDENTIFIER_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def event_timestamp(balance: OverageBalance, now: int) -> int | None:
    """Within the period (so the units land on its invoice) and within Stripe's window: the last
    second of the minute before now while the period runs, its last whole minute's last second once
    it has ended; None when that is too old for Stripe. A period that Stripe's clock began a little
    ahead of ours starts it, as far as the window allows.

    Inside the period's whole minutes, [ceil_minute(start), floor_minute(end)): Stripe's event
    summaries take minute-aligned windows, and reconciliation asks for exactly those of the period.
    Before now's minute, because a period may still end within it (an admin's reset a few seconds
    on): its window would end at that minute and leave an event stamped now in no period's window.
    A period shorter than that (a reset a few seconds in) keeps to the period itself."""
    first, last = _ceil_minute(balance.period_start), _floor_minute(balance.period_end) - 1
    if first > last:
        first, last = balance.period_start, balance.period_end - 1
    moment = min(_floor_minute(now) - 1, last)
    if moment < now - STRIPE_PAST_WINDOW_SECONDS + WINDOW_MARGIN_SECONDS:
        return None
    return min(max(moment, first), now + STRIPE_FUTURE_WINDOW_SECONDS)


def _floor_minute(moment: int) -> int:
    return moment - moment % 60


def _ceil_minute(moment: int) -> int:
    return -_floor_minute(-moment)


def summary_window(period_start: int, period_end: int) -> tuple[int, int]:
    """The minute-aligned window of Stripe's event summaries that holds exactly the period's events."""
    return _ceil_minute(period_start), _floor_minute(period_end)


def meter_event(balance: OverageBalance, now: int) -> MeterEvent | Unsent:
    """The one event that brings Stripe up to the balance's overage, or why there is none."""
    if balance.overage <= balance.reported:
        return Unsent.NOTHING_DUE
    if not is_customer_id(balance.stripe_customer_id):
        return Unsent.NO_CUSTOMER
    timestamp = event_timestamp(balance, now)
    if timestamp is None:
        return Unsent.TOO_OLD
    return MeterEvent(
        event_name=balance.event_name,
        identifier=identifier(
            balance.account_id, balance.feature, balance.period_start, balance.reported, balance.overage
        ),
        stripe_customer_id=balance.stripe_customer_id,
        value=balance.overage - balance.reported,
        timestamp=timestamp,
        reported_after=balance.overage,
    )


@dataclass(frozen=True)
class BillingState:
    """Where a period's overage units of a feature are on their way to Stripe."""

    overage: int  # the units past the limit
    reported: int = 0  # accepted by Stripe (the watermark)
    sending: int | None = None  # the end of the range in flight, if one is
    confirmed: int = 0  # found in Stripe's event summaries by reconciliation

    @property
    def owing(self) -> bool:
        """Units to send, or a range in flight: work for the drain."""
        return self.overage > self.reported or self.sending is not None

    @property
    def unconfirmed(self) -> bool:
        """Units sent that reconciliation has not found in Stripe yet."""
        return self.reported > self.confirmed

    def as_dict(self) -> dict[str, int]:
        """pending: past the limit, not accepted by Stripe; sent: accepted, not confirmed; confirmed."""
        return {
            "pending": max(0, self.overage - self.reported),
            "sent": max(0, self.reported - self.confirmed),
            "confirmed": min(self.confirmed, self.reported),
        }


def overage_marker(account_id: str, states: Iterable[BillingState]) -> str | None:
    """The ``overage_due`` marker an item (or a closed period) with these states carries: its shard
    while the drain has work on it, sent#<shard> while only reconciliation has, else none."""
    states = list(states)
    if any(state.owing for state in states):
        return overage_shard(account_id)
    if any(state.unconfirmed for state in states):
        return SENT_MARKER_PREFIX + overage_shard(account_id)
    return None
