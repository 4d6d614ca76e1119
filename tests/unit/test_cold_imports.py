"""What importing the webhook handler may cost: no pydantic, no stripe, no Powertools event handler,
no AWS client. Each is built or imported on the first event that needs it (most never do), so a
cold start's import stays near `import boto3` alone (bench/README.md, 1. Cold start).

The import runs in a fresh interpreter: in this one, other tests have long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def _import_in_a_fresh_interpreter() -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)]),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        BILLING_TABLE_NAME="billing-state",
        IDEMPOTENCY_TABLE_NAME="idempotency",
        STRIPE_WEBHOOK_SECRET="whsec_cold_imports",
    )
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(WEBHOOK_APP)],
        cwd=WEBHOOK_APP.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_webhook_handler_loads_no_heavy_package_and_makes_no_client() -> None:
    imported = _import_in_a_fresh_interpreter()
    modules = set(imported["modules"])
    loaded = [
        name for name in MUST_NOT_LOAD if name in modules or any(m.startswith(f"{name}.") for m in modules)
    ]
    assert loaded == [], f"the webhook handler's import loads {loaded}"
    assert imported["clients"] == [], f"the webhook handler's import makes AWS clients: {imported['clients']}"
    assert "billwatch.billing.intake" in modules  # the handler really was imported
