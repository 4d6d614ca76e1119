"""Correct an overage count in Stripe by a meter event adjustment, never by a second event.

    STRIPE_API_KEY=rk_... python -m devtools.meter_correction summary \\
        --event-name api_calls_overage --customer cus_... --from 2026-12-01T00:00Z --to 2026-12-02T00:00Z
    STRIPE_API_KEY=rk_... python -m devtools.meter_correction cancel \\
        --event-name api_calls_overage --identifier bw_...

``summary`` prints what Stripe's meter counts for the customer over [from, to) (whole minutes, as
Stripe's summaries take them); ``cancel`` cancels the event with that identifier, which Stripe allows
within 24 hours of receiving it. The key comes from the environment, never the command line (shell
history): a restricted key with Billing Meters read and Billing Meter Event Adjustments write.
The steps that lead here are in docs/runbooks/overage-drain.md ("Meter drift").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from billwatch.billing.stripe_api import StripeApi, StripeApiFailure
from billwatch.core.ids import is_customer_id

IDENTIFIER_LIMIT = 100  # Stripe's limit on a meter event's identifier


def _minute(text: str) -> int:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or an offset)")
    second = int(moment.timestamp())
    if second % 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not on a whole minute (Stripe's summaries need one)")
    return second


def _customer(text: str) -> str:
    if not is_customer_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Stripe customer id (cus_...)")
    return text


def _identifier(text: str) -> str:
    if not 0 < len(text) <= IDENTIFIER_LIMIT or not text.isprintable():
        raise argparse.ArgumentTypeError(f"an identifier has 1 to {IDENTIFIER_LIMIT} printable characters")
    return text


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.meter_correction", description=(__doc__ or "").splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="what Stripe's meter counts for a customer")
    summary.add_argument("--event-name", required=True)
    summary.add_argument("--customer", required=True, type=_customer)
    summary.add_argument("--from", dest="start", required=True, type=_minute)
    summary.add_argument("--to", dest="end", required=True, type=_minute)
    cancel = commands.add_parser("cancel", help="cancel one meter event by its identifier")
    cancel.add_argument("--event-name", required=True)
    cancel.add_argument("--identifier", required=True, type=_identifier)
    args = parser.parse_args(argv)
    environ = os.environ.copy() if environ is None else environ
    key = environ.get("STRIPE_API_KEY")
    if not key:
        print("STRIPE_API_KEY is not set", file=sys.stderr)
        return 2
    stripe = StripeApi(lambda: key, environ.get("STRIPE_API_BASE"), max_network_retries=2)
    try:
        if args.command == "summary":
            meter_id = stripe.meters().get(args.event_name)
            if meter_id is None:
                print(f"Stripe has no active meter for {args.event_name!r}", file=sys.stderr)
                return 1
            units = stripe.meter_event_summaries(meter_id, args.customer, args.start, args.end)
            print(json.dumps({"event_name": args.event_name, "customer": args.customer, "units": units}))
        else:
            stripe.cancel_meter_event(args.event_name, args.identifier)
            print(
                json.dumps({"event_name": args.event_name, "identifier": args.identifier, "cancelled": True})
            )
    except StripeApiFailure as failure:
        print(f"Stripe refused it ({failure.code.value})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
