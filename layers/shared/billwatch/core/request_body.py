"""The body of an API Gateway request as the caller sent it (kept light: the webhook intake's
cold start imports it)."""

from __future__ import annotations

import base64
import binascii
from typing import Any


class BodyNotBase64(ValueError):
    """API Gateway marked the body base64-encoded, and it is not."""


def request_body(event: dict[str, Any]) -> bytes:
    raw = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        # An event's text can hold lone surrogates (a JSON "\udcff" escape); kept as the invalid
        # UTF-8 they stand for, for the reader to refuse, rather than failing here.
        return raw.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BodyNotBase64("the body is marked base64-encoded but is not valid base64") from exc
