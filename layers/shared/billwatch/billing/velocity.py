"""The checkout velocity rule: one buyer opening more than CheckoutVelocityLimit sessions in a minute.

Seed 000 asks for "the same IP opening more than 10 checkout sessions in a minute". Stripe sends
no buyer's IP, and no event when a session is created: a session reaches billwatch when it ends,
completed or expired (exactly one of the two), and is counted then, in the minute of its own
``created``. The buyer is the Stripe customer and, apart, the email typed at checkout: a Payment
Link makes a new customer for every session, so one buyer is often many customers of one email.

A count is one item of the idempotency table (TTL), keyed by a hash of the buyer and the minute:
no value from outside chooses the item, and no email is stored. The UpdateItem that counts a
session also records its place in the count (see CheckoutVelocityCounter), under the condition
that it has none yet: a session Stripe resends is not counted again, and finds its place, so the
session that went over the limit goes over on every delivery of its event until one is recorded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from pynamodb.attributes import NumberAttribute
from pynamodb.constants import UPDATED_NEW

from billwatch.core.dynamo import conditional_update
from billwatch.core.models import CheckoutVelocityCounter
from billwatch.core.observability import logger

KEY_PREFIX = "checkout-velocity#"
# A session ends up to 24 hours after it was created (Stripe's longest expires_at), and Stripe
# retries an event for 3 days: its minute's count must outlive both.
KEEP_SECONDS = 4 * 86400


@dataclass(frozen=True)
class CheckoutSession:
    """A checkout session as the velocity rule sees it."""

    id: str
    created: int
    # ("customer", its id) and ("email", a sha256 of the address): whoever may be one buyer.
    buyers: tuple[tuple[str, str], ...]


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def counter_key(kind: str, buyer: str, created: int) -> str:
    minute = created - created % 60
    return KEY_PREFIX + hashlib.sha256(f"{kind}|{buyer}|{minute}".encode()).hexdigest()


def _place_attribute(session_id: str) -> NumberAttribute:
    return NumberAttribute(attr_name="s_" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:32])


class CheckoutVelocity:
    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self._limit = limit
        self._clock = clock

    def went_over(self, session: CheckoutSession) -> bool:
        """Whether this session took one of its buyers past the limit in its minute."""
        over = [kind for kind, buyer in session.buyers if self._place(kind, buyer, session) == self._limit]
        if over:
            logger.warning(
                "Checkout velocity exceeded: more checkout sessions of one buyer in a minute than the limit",
                extra={
                    "checkout_session_id": session.id,
                    "session_created": session.created,
                    "buyer_kinds": over,
                    "limit": self._limit,
                },
            )
        return bool(over)

    def _place(self, kind: str, buyer: str, session: CheckoutSession) -> int | None:
        """The session's place in its buyer's count (0 for the first); None past the first one over."""
        place = _place_attribute(session.id)
        counted = CheckoutVelocityCounter.sessions
        _, item = conditional_update(
            CheckoutVelocityCounter,
            counter_key(kind, buyer, session.created),
            [
                place.set(counted | 0),  # operands read the item as it was: the count before this one
                counted.add(1),
                CheckoutVelocityCounter.expiration.set(int(self._clock()) + KEEP_SECONDS),
            ],
            place.does_not_exist() & (counted.does_not_exist() | (counted <= self._limit)),
            UPDATED_NEW,
        )
        value = (item or {}).get(place.attr_name, {}).get("N")
        return None if value is None else int(value)
