"""Start a reconciliation with Stripe now, on the deployed Reconcile function.

    python -m devtools.reconcile [--function billwatch-reconcile-<stage>] [--run-id ID]

The run is asynchronous (it may take minutes and hands itself over); follow it in the function's
log ("Reconciliation finished") or its checkpoint item ``job#reconcile#<run id>``. A run id that
already exists resumes that run from its checkpoint. Uses your AWS credentials.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any


def start(lambda_client: Any, function: str, run_id: str) -> int:
    response = lambda_client.invoke(
        FunctionName=function, InvocationType="Event", Payload=json.dumps({"run_id": run_id}).encode()
    )
    return response["StatusCode"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.reconcile", description=__doc__.splitlines()[0])
    parser.add_argument("--function", default="billwatch-reconcile-dev", help="the Reconcile function's name")
    parser.add_argument("--run-id", default=dt.datetime.now(dt.UTC).strftime("manual-%Y-%m-%dT%H%M%S"))
    args = parser.parse_args(argv)
    import boto3

    status = start(boto3.client("lambda"), args.function, args.run_id)
    if status != 202:
        print(f"Lambda answered {status}, not 202 (accepted)", file=sys.stderr)
        return 1
    print(json.dumps({"run_id": args.run_id, "function": args.function, "status": "started"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
