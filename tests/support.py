"""Test helpers shared by unit, integration and contract tests."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools import stripe_events as se
from devtools.signing import stripe_signature_header

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_test_primary"


class LambdaContext:
    function_name = "WebhookIntakeFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:WebhookIntakeFunction"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def load_handler(function_dir: str) -> Any:
    """A fresh import of a function's app.py, so its cold-start code runs with this test's env."""
    spec = importlib.util.spec_from_file_location(
        f"{function_dir}_app_{uuid.uuid4().hex}", ROOT / "functions" / function_dir / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class WebhookClient:
    """Posts Stripe events to the handler the way API Gateway delivers Stripe's requests."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def post_raw(self, body: bytes, headers: dict[str, str], base64: bool = False) -> Response:
        event = se.api_gateway_event(body, headers=headers, base64=base64)
        result = self.handler.lambda_handler(event, LambdaContext())
        return Response(result["statusCode"], json.loads(result["body"]))

    def post(
        self, stripe_event: dict[str, Any], secrets: str | list[str] = WEBHOOK_SECRET, **kwargs: Any
    ) -> Response:
        body = json.dumps(stripe_event).encode()
        timestamp = kwargs.pop("timestamp", None)
        header = stripe_signature_header(body, secrets, timestamp=timestamp)
        return self.post_raw(body, {"stripe-signature": header, "content-type": "application/json"}, **kwargs)

    def eventbridge(self, stripe_event: dict[str, Any]) -> dict[str, Any]:
        return self.handler.lambda_handler(se.eventbridge_event(stripe_event), LambdaContext())


@dataclass(frozen=True)
class EmittedMetric:
    name: str
    value: float
    dimensions: dict[str, str]
    namespace: str
    unit: str


def parse_emf(output: str) -> list[EmittedMetric]:
    """Every (metric, dimension set) pair in the EMF documents printed to stdout."""
    emitted = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                for dimension_set in directive["Dimensions"]:
                    dims = {name: document[name] for name in dimension_set}
                    for value in values if isinstance(values, list) else [values]:
                        emitted.append(
                            EmittedMetric(metric["Name"], value, dims, directive["Namespace"], metric["Unit"])
                        )
    return emitted


class MetricsCapture:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.lines: list[str] = []

    def read(self) -> list[EmittedMetric]:
        self.lines.extend(self._capsys.readouterr().out.splitlines())
        return parse_emf("\n".join(self.lines))

    def total(self, name: str, **labels: str) -> float:
        """The sum over the dimension set that is exactly service + the given labels."""
        wanted = {"service": "billwatch", **labels}
        return sum(m.value for m in self.read() if m.name == name and m.dimensions == wanted)

    def logs(self) -> list[dict[str, Any]]:
        self.read()
        return [
            json.loads(line)
            for line in self.lines
            if line.startswith("{") and '"level"' in line and '"_aws"' not in line
        ]


class CurrentStdout:
    """Writes to whatever sys.stdout is now, so pytest's per-test capture sees the JSON logs."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class Clock:
    """A clock the test sets by hand, for code that takes ``clock=``."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
