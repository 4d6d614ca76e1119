from __future__ import annotations

import io
import json

import boto3
from botocore.stub import Stubber

from devtools.reconcile import start


def test_the_cli_starts_an_asynchronous_run_with_its_id(aws_credentials) -> None:
    client = boto3.client("lambda", region_name="us-east-1")
    expected = {
        "FunctionName": "billwatch-reconcile-prod",
        "InvocationType": "Event",
        "Payload": json.dumps({"run_id": "manual-1"}).encode(),
    }
    with Stubber(client) as stub:
        stub.add_response("invoke", {"StatusCode": 202, "Payload": io.BytesIO(b"")}, expected)
        assert start(client, "billwatch-reconcile-prod", "manual-1") == 202
        stub.assert_no_pending_responses()
