"""Shared fixtures: moto-backed AWS with the template's tables, the webhook handler, EMF capture."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import BaseResponse

from devtools.template import create_tables, load_template
from tests.support import ROOT, WEBHOOK_SECRET, CurrentStdout, MetricsCapture, WebhookClient, load_handler


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "STRIPE_API_KEY", "WEBHOOK_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws(aws_credentials: None, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    # DynamoDB applies each request atomically; moto's in-process backend does not lock, so
    # concurrent conditional writes could interleave inside it. One request at a time restores
    # the guarantee the code relies on, which is what the concurrency tests are about.
    original = BaseResponse.call_action
    lock = threading.Lock()

    def atomic_call_action(self: BaseResponse) -> Any:
        with lock:
            return original(self)

    monkeypatch.setattr(BaseResponse, "call_action", atomic_call_action)
    with mock_aws():
        names = create_tables(boto3.client("dynamodb"), template)
        monkeypatch.setenv("BILLING_TABLE_NAME", names["BillingStateTable"])
        monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", names["IdempotencyTable"])
        yield names


@pytest.fixture
def webhook_handler(aws: dict, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return load_handler("webhook_intake")


@pytest.fixture
def webhooks(webhook_handler: Any) -> WebhookClient:
    return WebhookClient(webhook_handler)


@pytest.fixture
def metrics(capsys: pytest.CaptureFixture[str]) -> MetricsCapture:
    from billwatch.observability import logger

    # The Powertools handler keeps the stream it was created with, which is not this test's capture.
    logger.registered_handler.stream = CurrentStdout()
    return MetricsCapture(capsys)


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the AWS API operations botocore sends from here on, in order."""
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call

    def counting(client: BaseClient, operation: str, params: dict) -> Any:
        calls.append(operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return calls
