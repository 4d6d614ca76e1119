"""Stripe webhook signature verification, with several secrets accepted during a roll."""

from __future__ import annotations

from collections.abc import Sequence

# stripe raises one error type; its message is the only thing that tells the causes apart,
# and operators need the cause (a stale signature points at clocks or replays, not at forgery).
_REASONS_BY_MESSAGE = (
    ("No Stripe-Signature header", "missing_signature_header"),
    ("Unable to extract timestamp", "malformed_signature_header"),
    ("No signatures found with expected scheme", "malformed_signature_header"),
    ("Timestamp outside the tolerance zone", "timestamp_outside_tolerance"),
    ("No signatures found matching", "no_matching_signature"),
)


class SignatureInvalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(error: Exception) -> str:
    message = str(error.user_message or error)
    return next((reason for prefix, reason in _REASONS_BY_MESSAGE if message.startswith(prefix)), "invalid")


def verify_signature(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance_seconds: int
) -> None:
    """Pass when any configured secret signed the raw body within the tolerance."""
    if not header:
        raise SignatureInvalid("missing_signature_header")
    # Imported on first use: stripe costs ~30 ms of cold start and EventBridge deliveries,
    # which arrive unsigned from a trusted bus, never need it.
    from stripe import SignatureVerificationError, WebhookSignature

    reasons = []
    for secret in secrets:
        try:
            WebhookSignature.verify_header(payload, header, secret, tolerance_seconds)
            return
        except SignatureVerificationError as error:
            reasons.append(_reason(error))
    # A signature that matched one secret but was too old says more than the other mismatches.
    preference = ("timestamp_outside_tolerance", "malformed_signature_header", "no_matching_signature")
    raise SignatureInvalid(
        next((r for r in preference if r in reasons), reasons[0] if reasons else "invalid")
    )
