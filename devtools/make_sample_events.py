"""Regenerate the sample events under events/ from devtools.stripe_events.

    python -m devtools.make_sample_events [--out events]

Writes one Stripe event per handled type (events/<type>.json), legacy-shape variants
(events/legacy/), and Lambda wrappers for ``sam local invoke -e`` (events/apigw/, events/eventbridge/).
Output is deterministic: fixed ids and timestamps; the API Gateway sample is signed with
``LOCAL_DEV_SECRET`` at a fixed timestamp (so it is stale by the time you use it - see events/README.md).
events/README.md is hand-written and not touched.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from devtools import stripe_events as se
from devtools.signing import LOCAL_DEV_SECRET, stripe_signature_header

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"

ACCOUNT_ID = "acct_demo"
CUSTOMER_ID = "cus_demo"
SUBSCRIPTION_ID = "sub_demo"
META = {"account_id": ACCOUNT_ID}

# 2025-10-01T00:00:00Z .. 2025-11-01T00:00:00Z: the demo subscription's current period.
PERIOD_START = 1_759_276_800
PERIOD_END = 1_761_955_200
# Events happen a little after the period starts (2025-10-01T00:05:00Z onwards).
T0 = PERIOD_START + 300
DAY = 86_400


def _evt_id(name: str) -> str:
    return "evt_demo_" + name.replace(".", "_")


def _sub(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "id": SUBSCRIPTION_ID,
        "customer": CUSTOMER_ID,
        "metadata": META,
        "current_period_start": PERIOD_START,
        "current_period_end": PERIOD_END,
        "created": PERIOD_START,
    }
    kwargs.update(overrides)
    return se.subscription(**kwargs)


def _invoice(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "id": "in_demo_0001",
        "customer": CUSTOMER_ID,
        "subscription": SUBSCRIPTION_ID,
        "subscription_metadata": META,
        "created": PERIOD_START,
        "period_start": PERIOD_START,
        "period_end": PERIOD_END,
    }
    kwargs.update(overrides)
    return se.invoice(**kwargs)


def _scheduled_cancel(sub: dict[str, Any]) -> dict[str, Any]:
    """The customer asked to cancel at period end (what the customer portal does)."""
    sub["canceled_at"] = T0
    sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
    return sub


SUB_UPDATED_PREVIOUS = {
    "cancel_at": None,
    "cancel_at_period_end": False,
    "canceled_at": None,
    "cancellation_details": {"reason": None},
}


def stripe_events() -> dict[str, dict[str, Any]]:
    """{relative path: Stripe event} for the bare and legacy samples."""
    out: dict[str, dict[str, Any]] = {}

    def add(type_: str, obj: dict, *, created: int, prefix: str = "", **kw: Any) -> None:
        name = f"{prefix}{type_}"
        out[f"{name}.json"] = se.event(type_, obj, id=_evt_id(name.replace("/", "_")), created=created, **kw)

    add(
        "checkout.session.completed",
        se.checkout_session(
            id="cs_test_demo_completed",
            customer=CUSTOMER_ID,
            client_reference_id=ACCOUNT_ID,
            subscription=SUBSCRIPTION_ID,
            metadata=META,
            created=PERIOD_START - 120,
        ),
        created=PERIOD_START + 2,
    )
    add(
        "checkout.session.expired",
        se.checkout_session(
            id="cs_test_demo_expired",
            customer=None,
            client_reference_id=ACCOUNT_ID,
            status="expired",
            subscription=None,
            metadata=META,
            created=PERIOD_START - 2 * DAY,
        ),
        created=PERIOD_START - DAY,
    )
    add("customer.subscription.created", _sub(), created=PERIOD_START + 1)
    add(
        "customer.subscription.updated",
        _scheduled_cancel(_sub(cancel_at_period_end=True)),
        created=T0,
        previous_attributes=SUB_UPDATED_PREVIOUS,
    )
    add(
        "customer.subscription.deleted",
        _sub(status="canceled", cancel_at_period_end=True),
        created=PERIOD_END + 5,
    )
    trial_end = PERIOD_START + 14 * DAY
    add(
        "customer.subscription.trial_will_end",
        _sub(status="trialing", trial_end=trial_end, current_period_end=trial_end),
        created=trial_end - 3 * DAY,
    )
    add(
        "customer.subscription.paused",
        _sub(status="paused", trial_end=trial_end, current_period_end=trial_end),
        created=trial_end + 5,
        previous_attributes={"status": "trialing"},
    )
    add(
        "customer.subscription.resumed",
        _sub(current_period_start=trial_end + 3600, current_period_end=trial_end + 3600 + 31 * DAY),
        created=trial_end + 3605,
        previous_attributes={"status": "paused"},
    )
    add("invoice.paid", _invoice(), created=PERIOD_START + 3600)
    add(
        "invoice.payment_failed",
        _invoice(id="in_demo_0002", status="open", billing_reason="subscription_cycle"),
        created=PERIOD_START + 3600,
    )
    add(
        "entitlements.active_entitlement_summary.updated",
        se.entitlement_summary(customer=CUSTOMER_ID, lookup_keys=("sso", "audit_log")),
        created=PERIOD_START + 3,
        previous_attributes={
            "entitlements": se.entitlement_summary(customer=CUSTOMER_ID, lookup_keys=())["entitlements"]
        },
    )
    add("customer.deleted", se.customer(id=CUSTOMER_ID, metadata=META), created=PERIOD_END + 10 * DAY)

    # Legacy (pre-2025-03-31) shapes: API version inferred from the object -> 2024-06-20.
    add(
        "customer.subscription.updated",
        _scheduled_cancel(_sub(cancel_at_period_end=True, legacy=True)),
        created=T0,
        previous_attributes=SUB_UPDATED_PREVIOUS,
        prefix="legacy/",
    )
    add("invoice.paid", _invoice(legacy=True), created=PERIOD_START + 3600, prefix="legacy/")
    return out


def dumps(doc: Any) -> str:
    """How every sample is serialised (Stripe also sends 2-space-indented JSON)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def all_events() -> dict[str, dict[str, Any]]:
    """{relative path under events/: document} for every generated file."""
    out = stripe_events()
    updated = out["customer.subscription.updated.json"]

    body = dumps(updated).encode("utf-8")
    signed_at = updated["created"] + 1
    out["apigw/customer.subscription.updated.json"] = se.api_gateway_event(
        body,
        headers={
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": stripe_signature_header(body, LOCAL_DEV_SECRET, timestamp=signed_at),
        },
        request_id="Sd3mOjDemo0AAAA=",
        time_epoch_ms=signed_at * 1000 + 137,
    )
    out["eventbridge/customer.subscription.updated.json"] = se.eventbridge_event(updated)
    return out


def write(out_dir: Path = EVENTS_DIR) -> list[Path]:
    written = []
    for rel, doc in sorted(all_events().items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.make_sample_events", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=EVENTS_DIR, help="output directory (default: events/)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
