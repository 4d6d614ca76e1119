"""Shared fixtures: moto-backed AWS with the template's tables, the webhook handler, EMF capture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devtools.template import load_template
from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    CurrentStdout,
    FakeStripeApi,
    MetricsCapture,
    WebhookClient,
    fake_aws_credentials,
    fake_stripe_api,
    load_handler,
    moto_with_tables,
)


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch)


@pytest.fixture
def aws(aws_credentials: None, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    with moto_with_tables(template, monkeypatch) as names:
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


@pytest.fixture
def stripe_api() -> Iterator[FakeStripeApi]:
    """A stand-in for the Stripe API on 127.0.0.1 (point STRIPE_API_BASE at its url)."""
    with fake_stripe_api() as server:
        yield server
