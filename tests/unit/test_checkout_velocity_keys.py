"""How the checkout velocity rule keys its counts: by buyer and minute, and never by a value as sent."""

from __future__ import annotations

import re

from billwatch.billing.velocity import KEY_PREFIX, counter_key, email_digest

MINUTE = 1_700_000_040  # a minute's first second


def test_a_minute_is_one_key_and_the_next_another() -> None:
    first = counter_key("customer", "cus_1", MINUTE)
    assert counter_key("customer", "cus_1", MINUTE + 59) == first
    assert counter_key("customer", "cus_1", MINUTE + 60) != first
    assert counter_key("customer", "cus_1", MINUTE - 1) != first


def test_buyers_of_two_kinds_or_two_names_never_share_a_key() -> None:
    keys = {
        counter_key("customer", "cus_1", MINUTE),
        counter_key("customer", "cus_2", MINUTE),
        counter_key("email", "cus_1", MINUTE),
    }
    assert len(keys) == 3


def test_no_value_from_outside_shapes_the_key() -> None:
    hostile = ["health#last-probe", "marker#webhook-received", "stripe-event#x", "usage#acct#k", "a" * 5000]
    for value in hostile:
        key = counter_key("customer", value, MINUTE)
        assert re.fullmatch(re.escape(KEY_PREFIX) + "[0-9a-f]{64}", key)


def test_an_email_is_one_buyer_however_it_is_typed_and_is_kept_as_a_digest() -> None:
    digest = email_digest("Card.Tester@Example.com")
    assert email_digest("  card.tester@example.com ") == digest
    assert re.fullmatch("[0-9a-f]{64}", digest) and "tester" not in digest
    assert email_digest("other@example.com") != digest
