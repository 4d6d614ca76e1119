"""Compute ``Stripe-Signature`` headers exactly as Stripe sends them.

Stripe signs ``f"{t}.{raw_body}"`` with HMAC-SHA256 using each active endpoint secret and sends
``t=<unix ts>,v1=<hex>[,v1=<hex>...]`` - one ``v1`` per active secret while a secret is being rolled.

Written apart from ``billwatch.billing.signature`` on purpose: the tests sign with this and verify with
that, so a mistake in one is not repeated in the other; and the dev tools run without the layer.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["LOCAL_DEV_SECRET", "compute_signature", "stripe_signature_header"]

# The documented secret for local runs (make run / sam local); never a real secret.
LOCAL_DEV_SECRET = "whsec_local_dev_secret"  # nosec B105 # the documented public dev secret, see above


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{payload}"`` keyed with ``secret`` (the ``v1`` value)."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def stripe_signature_header(
    payload: bytes | str, secrets: str | list[str], timestamp: int | None = None
) -> str:
    """``"t=<ts>,v1=<sig>[,v1=<sig>...]"`` for ``payload``; ``timestamp`` defaults to now.

    ``secrets`` may be one secret or a list (one ``v1`` each, in order).  A ``str`` payload is
    encoded as UTF-8.
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list or not all(secret_list):
        raise ValueError("at least one non-empty webhook secret is required")
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={ts}", *(f"v1={compute_signature(payload, s, ts)}" for s in secret_list)])
