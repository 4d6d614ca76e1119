"""What importing the webhook handler may cost: no pydantic, no stripe, no Powertools event handler,
no AWS client. Each is built or imported on the first event that needs it (most never do), so a
cold start's import stays near `import boto3` alone (bench/README.md, 1. Cold start). And what the
first event may cost: one DynamoDB client, whatever pynamodb and Powertools need (1b. First event).

Each runs in a fresh interpreter: in this one, other tests have long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

WEBHOOK_APP = ROOT / "functions" / "webhook_intake" / "app.py"
MUST_NOT_LOAD = ("pydantic", "stripe", "aws_lambda_powertools.event_handler")

_CHILD = """
import importlib.util, json, sys
import botocore.session

clients = []
create_client = botocore.session.Session.create_client

def counting_create_client(self, service_name, *args, **kwargs):
    clients.append(service_name)
    return create_client(self, service_name, *args, **kwargs)

botocore.session.Session.create_client = counting_create_client
spec = importlib.util.spec_from_file_location("webhook_intake_app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"modules": sorted(sys.modules), "clients": clients}))
"""


def _child_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)]),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        BILLING_TABLE_NAME="billing-state",
        IDEMPOTENCY_TABLE_NAME="idempotency",
        USAGE_HISTORY_TABLE_NAME="usage-history",
        STRIPE_WEBHOOK_SECRET="whsec_cold_imports",
        POWERTOOLS_LOG_LEVEL="WARNING",
    )
    return env


def _run(code: str, *args: str, **env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=_child_environment() | env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_webhook_handler_loads_no_heavy_package_and_makes_no_client() -> None:
    imported = _run(_CHILD, str(WEBHOOK_APP))
    modules = set(imported["modules"])
    loaded = [
        name for name in MUST_NOT_LOAD if name in modules or any(m.startswith(f"{name}.") for m in modules)
    ]
    assert loaded == [], f"the webhook handler's import loads {loaded}"
    assert imported["clients"] == [], f"the webhook handler's import makes AWS clients: {imported['clients']}"
    assert "billwatch.billing.intake" in modules  # the handler really was imported


_FIRST_EVENT = """
import json, os, sys
import botocore.session
from moto import mock_aws

from devtools import stripe_events
from devtools.signing import stripe_signature_header
from devtools.template import create_tables, load_template
from tests.support import LambdaContext, load_handler

function = sys.argv[1]
clients = []
create_client = botocore.session.Session.create_client

def counting_create_client(self, service_name, *args, **kwargs):
    clients.append(service_name)
    return create_client(self, service_name, *args, **kwargs)

with mock_aws():
    import boto3

    names = create_tables(boto3.client("dynamodb"), load_template("template.yaml"))
    os.environ["BILLING_TABLE_NAME"] = names["BillingStateTable"]
    os.environ["IDEMPOTENCY_TABLE_NAME"] = names["IdempotencyTable"]
    os.environ["USAGE_HISTORY_TABLE_NAME"] = names["UsageHistoryTable"]
    botocore.session.Session.create_client = counting_create_client
    handler = load_handler(function)
    if function == "webhook_intake":
        sub = stripe_events.subscription(customer="cus_cold", metadata={"account_id": "acct_cold"})
        body = json.dumps(stripe_events.event("customer.subscription.created", sub)).encode()
        headers = {"stripe-signature": stripe_signature_header(body, os.environ["STRIPE_WEBHOOK_SECRET"])}
    else:
        body = json.dumps({"feature": "api_calls"}).encode()
        headers = {"content-type": "application/json"}
    event = stripe_events.api_gateway_event(body, headers=headers, path=sys.argv[2], method="POST")
    caller = "arn:aws:sts::123456789012:assumed-role/Reader/cold"
    event["requestContext"]["authorizer"] = {"iam": {"userArn": caller}}
    answer = handler.lambda_handler(event, LambdaContext())
print(json.dumps({"status": answer["statusCode"], "clients": clients}))
"""


@pytest.mark.parametrize(
    ("function", "path"),
    [("webhook_intake", "/webhooks/stripe"), ("licensing_api", "/v1/accounts/acct_cold/usage")],
)
def test_the_first_event_makes_one_dynamodb_client(function: str, path: str) -> None:
    first = _run(_FIRST_EVENT, function, path)
    assert first["status"] == 200
    assert first["clients"] == ["dynamodb"], f"the first event made {first['clients']}"


_FROZEN = """
import gc, json, sys
from tests.support import load_handler

load_handler(sys.argv[1])
print(json.dumps({"frozen": gc.get_freeze_count()}))
"""


@pytest.mark.parametrize("function", ["webhook_intake", "licensing_api"])
def test_a_lambda_process_keeps_what_the_import_built_out_of_garbage_collection(function: str) -> None:
    # Without it, the first event's client set off a full collection over all of it (1b. First event).
    assert _run(_FROZEN, function, LAMBDA_TASK_ROOT=str(ROOT / "functions" / function))["frozen"] > 0
    # A test process imports handlers again and again: what is frozen is never collected.
    assert _run(_FROZEN, function)["frozen"] == 0
