"""Stripe webhook signature verification over the raw body, with several secrets accepted during a roll.

Stripe's scheme (https://docs.stripe.com/webhooks#verify-manually): ``Stripe-Signature`` carries
``t=<unix time>`` and one ``v1=<hex HMAC-SHA256>`` per active secret, computed over
``"<t>." + body``. stripe-python decodes the body as UTF-8 before it computes the HMAC, so a body
that is not UTF-8 would raise before its signature was checked; here the HMAC is computed over the
bytes as they arrived, and nothing about the body is read until a secret has signed it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

SCHEME = "v1"
# Longer than any real Stripe-Signature (a timestamp and a few 64-digit signatures); parsing a
# header is bounded by it.
MAX_HEADER_LENGTH = 4096
_MAX_TIMESTAMP_DIGITS = 12


class SignatureInvalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _timestamp_and_signatures(header: str) -> tuple[int, list[bytes]]:
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureInvalid("malformed_signature_header")
    pairs = [item.partition("=") for item in header.split(",")]
    timestamps = [value.strip() for name, _, value in pairs if name.strip() == "t"]
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()):
        raise SignatureInvalid("malformed_signature_header")
    if len(timestamps[0]) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureInvalid("malformed_signature_header")
    # Bytes, because compare_digest refuses text that is not ASCII, and a header may hold anything.
    signatures = [
        value.strip().encode("utf-8", "replace") for name, _, value in pairs if name.strip() == SCHEME
    ]
    if not signatures:
        raise SignatureInvalid("malformed_signature_header")
    return int(timestamps[0]), signatures


def signed_by(payload: bytes, timestamp: int, secret: str) -> str:
    """The ``v1`` signature ``secret`` gives ``payload`` at ``timestamp``."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance_seconds: int,
    clock: Callable[[], float] = time.time,
) -> None:
    """Pass when any configured secret signed the raw body within the tolerance, either side of now.

    A timestamp from the future is refused like an old one: a signature made with a clock far
    ahead would otherwise stay replayable for as long as it is ahead.
    """
    if not header:
        raise SignatureInvalid("missing_signature_header")
    timestamp, signatures = _timestamp_and_signatures(header)
    matched = any(
        hmac.compare_digest(signed_by(payload, timestamp, secret).encode("ascii"), signature)
        for secret in secrets
        for signature in signatures
    )
    if not matched:
        raise SignatureInvalid("no_matching_signature")
    # Checked after the match, as Stripe's libraries do: a stale forgery is a forgery.
    if abs(clock() - timestamp) > tolerance_seconds:
        raise SignatureInvalid("timestamp_outside_tolerance")
