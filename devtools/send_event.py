"""POST a Stripe event file to a local webhook endpoint, signed like Stripe signs it.

    python -m devtools.send_event events/customer.subscription.updated.json \
        [--url http://127.0.0.1:3000/webhooks/stripe] [--secret whsec_...[,whsec_...]]

The secret defaults to $STRIPE_WEBHOOK_SECRET (comma-separated for several active secrets; one
``v1`` signature per secret, as during a secret roll).  The file may be a bare Stripe event, an
API Gateway (HTTP API v2) Lambda event or an EventBridge event wrapping one; the Stripe event is
extracted.  The event is dated now, as if Stripe had just created it: its ``created`` becomes the
current time and every other timestamp in it (the subscription's period, its start and trial, an
invoice's period and payment times, ...) moves by as much, so the samples under events/ stay
current (``--keep-dates`` sends the file as it is).  The signature uses the current time.  Exits 0
on a 2xx response, 1 on any other HTTP status, 2 on usage / connection errors.  Standard library
only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TypeGuard

from devtools.signing import stripe_signature_header

DEFAULT_URL = "http://127.0.0.1:3000/webhooks/stripe"
SECRET_ENV = "STRIPE_WEBHOOK_SECRET"  # nosec B105 # the name of the environment variable, not its value
# How Stripe names the Unix timestamps of its objects: created, a period's start and end, and
# fields ending in _at, _start, _end, _date or _timestamp (paid_at, current_period_end, ...).
_TIMESTAMP_NAMES = frozenset(
    {"created", "start", "end", "timestamp", "billing_cycle_anchor", "next_payment_attempt"}
)
_TIMESTAMP_SUFFIXES = ("_at", "_start", "_end", "_date", "_timestamp")


class UsageError(Exception):
    pass


def extract_stripe_payload(raw: bytes) -> bytes:
    """The raw bytes of the Stripe event inside ``raw`` (a bare event, API GW or EventBridge event)."""
    try:
        doc: Any = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UsageError("expected a JSON object")
    if doc.get("object") == "event":
        return raw  # send the file's bytes untouched
    if "requestContext" in doc and "body" in doc:  # API Gateway (REST v1 or HTTP API v2)
        body = doc["body"] or ""
        return base64.b64decode(body) if doc.get("isBase64Encoded") else body.encode("utf-8")
    if "detail-type" in doc and isinstance(doc.get("detail"), dict):  # EventBridge
        return (json.dumps(doc["detail"], indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    raise UsageError("not a Stripe event (object != 'event') nor an API Gateway / EventBridge wrapper")


def _is_timestamp(value: Any, name: str) -> TypeGuard[int]:
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    return is_integer and (name in _TIMESTAMP_NAMES or name.endswith(_TIMESTAMP_SUFFIXES))


def _shifted(node: Any, seconds: int) -> Any:
    if isinstance(node, dict):
        return {
            name: value + seconds if _is_timestamp(value, name) else _shifted(value, seconds)
            for name, value in node.items()
        }
    if isinstance(node, list):
        return [_shifted(item, seconds) for item in node]
    return node


def dated(payload: bytes, now: int) -> bytes:
    """The Stripe event ``payload`` created at ``now``, every timestamp in it moved by as much.

    An event without an integer ``created`` is returned as it is: there is nothing to date it by.
    """
    try:
        event = json.loads(payload)
    except ValueError:
        return payload
    created = event.get("created") if isinstance(event, dict) else None
    if not _is_timestamp(created, "created"):
        return payload
    return (json.dumps(_shifted(event, now - created), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_secrets(value: str | None) -> list[str]:
    secrets = [s.strip() for s in (value or "").split(",") if s.strip()]
    if not secrets:
        raise UsageError(
            f"no webhook secret: pass --secret or set {SECRET_ENV} "
            "(the local stack's documented test secret is whsec_local_dev_secret)"
        )
    return secrets


def send(payload: bytes, url: str, secrets: list[str], *, timeout: float = 30.0) -> tuple[int, bytes]:
    """POST ``payload`` with a fresh Stripe-Signature; returns (status, body) for any HTTP status."""
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature_header(payload, secrets),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) billwatch-devtools",
        },
    )
    host = urllib.parse.urlsplit(url).hostname or ""
    # Never route a loopback URL through an HTTP(S)_PROXY from the environment.
    handlers = [urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.send_event", description=__doc__.split("\n")[0])
    parser.add_argument("event_file", type=Path, help="events/<type>.json (or an apigw/eventbridge wrapper)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"webhook URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--secret", default=None, help=f"webhook secret(s), comma-separated (default ${SECRET_ENV})"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--keep-dates", action="store_true", help="send the event's own created and timestamps, not now"
    )
    args = parser.parse_args(argv)

    try:
        secrets = parse_secrets(args.secret if args.secret is not None else os.environ.get(SECRET_ENV))
        try:
            raw = args.event_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.event_file}: {exc.strerror or exc}") from exc
        payload = extract_stripe_payload(raw)
        if not args.keep_dates:
            payload = dated(payload, int(time.time()))
    except UsageError as exc:
        print(f"send_event: error: {exc}", file=sys.stderr)
        return 2

    try:
        event_type = json.loads(payload).get("type", "?")
    except ValueError:
        event_type = "?"
    print(f"POST {args.url}  ({event_type}, {len(payload)} bytes, {len(secrets)} signature(s))")
    try:
        status, body = send(payload, args.url, secrets, timeout=args.timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"send_event: error: cannot reach {args.url}: {reason} (is `make run` running?)", file=sys.stderr
        )
        return 2
    print(f"HTTP {status}")
    if body:
        print(body.decode("utf-8", errors="replace"))
    if _refused_signature(status, body):
        source = "--secret" if args.secret is not None else f"${SECRET_ENV}"
        print(
            f"send_event: the endpoint refused the signature: check {SECRET_ENV}. This signed with "
            f"{source}; `make run` and `make send` must share the same {SECRET_ENV} (export it in both "
            "shells, or in neither for the local dev secret), and `make run` reads it when it starts.",
            file=sys.stderr,
        )
    return 0 if 200 <= status < 300 else 1


def _refused_signature(status: int, body: bytes) -> bool:
    """Whether the webhook intake answered that no secret it has made the signature."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return status == 400 and isinstance(answer, dict) and answer.get("error") == "invalid_signature"


if __name__ == "__main__":
    sys.exit(main())
