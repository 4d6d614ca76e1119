from __future__ import annotations

import time

import pytest

from billwatch.billing.signature import SignatureInvalid, verify_signature
from devtools.signing import stripe_signature_header

PAYLOAD = b'{"id": "evt_1", "object": "event"}'


def header(secrets, timestamp=None) -> str:
    return stripe_signature_header(PAYLOAD, secrets, timestamp=timestamp)


def test_good_signature() -> None:
    verify_signature(PAYLOAD, header("whsec_a"), ["whsec_a"], 300)


def test_rotated_secrets_either_one_matches() -> None:
    verify_signature(PAYLOAD, header(["whsec_new", "whsec_old"]), ["whsec_old"], 300)
    verify_signature(PAYLOAD, header("whsec_new"), ["whsec_old", "whsec_new"], 300)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing_signature_header"),
        ("", "missing_signature_header"),
        ("garbage", "malformed_signature_header"),
        ("t=abc,v1=def", "malformed_signature_header"),
        ("t=1700000000,v0=abc", "malformed_signature_header"),
        ("FORGED", "no_matching_signature"),
        ("STALE", "timestamp_outside_tolerance"),
    ],
)
def test_rejections_carry_a_reason(signature, reason: str) -> None:
    if signature == "FORGED":
        signature = header("whsec_attacker")
    elif signature == "STALE":
        signature = header("whsec_a", timestamp=int(time.time()) - 301)
    with pytest.raises(SignatureInvalid) as rejected:
        verify_signature(PAYLOAD, signature, ["whsec_a", "whsec_b"], 300)
    assert rejected.value.reason == reason


def test_a_signature_just_inside_the_tolerance_passes() -> None:
    verify_signature(PAYLOAD, header("whsec_a", timestamp=int(time.time()) - 290), ["whsec_a"], 300)


def test_the_signature_covers_the_exact_raw_body() -> None:
    with pytest.raises(SignatureInvalid):
        verify_signature(PAYLOAD.replace(b" ", b""), header("whsec_a"), ["whsec_a"], 300)


def test_a_timestamp_beyond_the_tolerance_in_the_future_is_refused() -> None:
    ahead = header("whsec_a", timestamp=int(time.time()) + 301)
    with pytest.raises(SignatureInvalid) as rejected:
        verify_signature(PAYLOAD, ahead, ["whsec_a"], 300)
    assert rejected.value.reason == "timestamp_outside_tolerance"
    verify_signature(PAYLOAD, header("whsec_a", timestamp=int(time.time()) + 290), ["whsec_a"], 300)


def test_a_body_that_is_not_utf8_is_verified_as_bytes() -> None:
    """Stripe never sends one, but its signature still decides: nothing is decoded before."""
    binary = b"\xff\xfe{\x80}"
    verify_signature(binary, stripe_signature_header(binary, "whsec_a"), ["whsec_a"], 300)
    with pytest.raises(SignatureInvalid) as rejected:
        verify_signature(binary, header("whsec_a"), ["whsec_a"], 300)
    assert rejected.value.reason == "no_matching_signature"


@pytest.mark.parametrize(
    "signature",
    [
        "t=1700000000,v1=\u00e9\u00e9",
        "t=\u0661\u0662,v1=ab",
        "t=" + "9" * 5000 + ",v1=ab",
        "v1=ab,t=1,t=2",
        "x" * 5000,
    ],
)
def test_hostile_headers_are_refused_without_raising_anything_else(signature: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify_signature(PAYLOAD, signature, ["whsec_a"], 300)


def test_agrees_with_stripe_python_on_a_stripe_signed_body() -> None:
    from stripe import WebhookSignature

    stripe_header = WebhookSignature.generate_signature_header(PAYLOAD.decode(), "whsec_a")
    verify_signature(PAYLOAD, stripe_header, ["whsec_a"], 300)
