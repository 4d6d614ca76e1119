"""The shapes of ids that come from outside, and the key spaces they may address.

The billing table holds two kinds of item under one hash key: accounts (named by our customers,
through Stripe metadata or a checkout's ``client_reference_id``, which a buyer can set on a
Payment Link) and the stack's own items (``health#last-probe``, ``marker#webhook-received``,
``job#...``, ``usage#...``). Every internal key holds ``#``, which no id from outside may hold,
and provisional items are keyed by Stripe customer ids (``cus_...``), which no account id may
look like: so an id that passes here can only ever address an account's own item.
"""

from __future__ import annotations

import re
from typing import TypeGuard

# The licensing API's path pattern too: ASCII, no "#", at most 128 characters, so far inside
# DynamoDB's 2,048-byte key (in a usage receipt's too): too long is refused before DynamoDB is asked.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
# Stripe's object ids are a prefix and letters and digits; test fixtures add underscores.
CUSTOMER_ID_PATTERN = r"^cus_[A-Za-z0-9_]{1,100}$"
CUSTOMER_ID_PREFIX = "cus_"
EVENT_ID_PATTERN = r"^evt_[A-Za-z0-9_]{1,100}$"

_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def is_account_id(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and _ACCOUNT_ID.fullmatch(value) is not None
        and not value.startswith(CUSTOMER_ID_PREFIX)
    )


def is_customer_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _CUSTOMER_ID.fullmatch(value) is not None


def is_event_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _EVENT_ID.fullmatch(value) is not None
