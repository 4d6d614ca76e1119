"""Drive the real functions through timed scenarios and keep what they emit.

A Scenario invokes the handlers (on moto) as things happen at simulated moments: every EMF
document an invocation prints is stamped with that moment and stored in an alarm_evaluator
MetricStore, and its JSON log lines are kept. Alarm tests then evaluate the template's alarms
over what the code really emitted, and the contract test reads the metrics and dimension sets
off the same output.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ReadTimeoutError

from devtools import stripe_events as se
from devtools.alarm_evaluator import MetricStore
from devtools.local_deployment import stack_status_change
from tests.support import LambdaContext, WebhookClient, load_handler

ADMIN_ROLE = "arn:aws:iam::123456789012:role/billwatch-admin"
ADMIN_CALLER = "arn:aws:sts::123456789012:assumed-role/billwatch-admin/ops"
OUTSIDER = "arn:aws:sts::123456789012:assumed-role/Reader/someone"


def iam_api_event(method: str, path: str, body: dict | None, caller: str) -> dict[str, Any]:
    """An HTTP API request on an IAM route, as API Gateway hands it over once SigV4 checked out."""
    event = se.api_gateway_event(
        json.dumps(body) if body is not None else b"",
        headers={"content-type": "application/json"},
        path=path,
        method=method,
    )
    if body is None:
        event.pop("body", None)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": caller}}
    return event


def dynamodb_error(code: str) -> Callable[[str], Exception]:
    """A DynamoDB error of ``code`` for an operation, as botocore raises it."""
    return lambda operation: ClientError({"Error": {"Code": code, "Message": f"{code} injected"}}, operation)


def read_timeout(operation: str) -> ReadTimeoutError:
    """The answer lost on the way back: the caller cannot know whether the request was applied."""
    return ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


# A refusal DynamoDB gives every time (422), and failures a retry may fix (503).
STORE_FAILURES = [
    pytest.param(dynamodb_error("ValidationException"), 422, id="validation"),
    pytest.param(dynamodb_error("ProvisionedThroughputExceededException"), 503, id="throttled"),
    pytest.param(dynamodb_error("InternalServerError"), 503, id="5xx"),
    pytest.param(read_timeout, 503, id="timeout"),
]


def throughput_exceeded(operation: str) -> ClientError:
    """DynamoDB's throttling, as botocore reports it once its own retries give up."""
    error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


class SwitchedFault:
    """A fault installed for a whole test that acts only inside ``during()``."""

    active = False

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


class DynamoDBOutage(SwitchedFault):
    """DynamoDB refusing the named operations."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, operations: set[str]) -> None:
        original = BaseClient._make_api_call

        def refusing(client: BaseClient, operation: str, params: dict) -> Any:
            if self.active and operation in operations:
                raise throughput_exceeded(operation)
            return original(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", refusing)


class SlowClock:
    """The intake's view of time: each AWS call it makes takes ``delay_seconds``, and nothing else
    takes any time, so that a loaded machine's own slowness cannot move a duration across a
    threshold."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay_seconds: float) -> None:
        import billwatch.billing.intake

        self.delay_seconds = delay_seconds
        self.added = 0.0
        original = BaseClient._make_api_call

        def delayed(client: BaseClient, operation: str, params: dict) -> Any:
            self.added += self.delay_seconds
            return original(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", delayed)
        monkeypatch.setattr(billwatch.billing.intake, "time", self)

    def perf_counter(self) -> float:
        return self.added

    def time(self) -> float:
        return time.time()


class Scenario:
    """The billwatch functions, invoked at simulated moments; what they emit, stamped with them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float) -> None:
        self.now = start
        self.store = MetricStore()
        self.documents: list[tuple[float, dict[str, Any]]] = []
        self.logs: list[dict[str, Any]] = []
        self._monkeypatch = monkeypatch
        self._handlers: dict[str, Any] = {}
        monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
        from billwatch.core.observability import logger
        from tests.support import CurrentStdout

        # The Powertools handler keeps the stream it was created with; follow redirect_stdout.
        logger.registered_handler.stream = CurrentStdout()

    def at(self, moment: float) -> Scenario:
        self.now = moment
        return self

    @contextlib.contextmanager
    def _captured(self) -> Iterator[None]:
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                yield
        finally:
            self._keep(output.getvalue())

    def _keep(self, output: str) -> None:
        for line in output.splitlines():
            if not line.startswith("{"):
                continue
            document = json.loads(line)
            if "_aws" in document:
                self.documents.append((self.now, document))
                self.store.put_emf(document, timestamp=self.now)
            elif "level" in document:
                self.logs.append(document)

    def handler(self, name: str) -> Any:
        if name not in self._handlers:
            with self._captured():
                module = self._handlers[name] = load_handler(name)
            self._follow_the_scenario_clock(module)
        return self._handlers[name]

    def _follow_the_scenario_clock(self, module: Any) -> None:
        """What reads the time of day for its logic (not for metrics) reads the scenario's."""
        clock = lambda: self.now  # noqa: E731
        if hasattr(module, "intake"):
            arrivals = module.intake._arrivals
            self._monkeypatch.setattr(arrivals, "_clock", clock)
            self._monkeypatch.setattr(arrivals, "_monotonic", clock)
        if hasattr(module, "probe"):
            self._monkeypatch.setattr(module.probe, "clock", clock)
        if hasattr(module, "dispatcher"):
            self._monkeypatch.setattr(module.dispatcher, "clock", clock)
        if getattr(module, "reconciler", None) is not None:
            self._monkeypatch.setattr(module.reconciler, "clock", clock)

    # ---------------------------------------------------------------- webhooks

    def webhook(self, stripe_event: dict[str, Any]) -> int:
        with self._captured():
            return WebhookClient(self.handler("webhook_intake")).post(stripe_event).status

    def webhook_with_bad_signature(self) -> int:
        stripe_event = se.event("invoice.paid", se.invoice(customer="cus_x"))
        with self._captured():
            client = WebhookClient(self.handler("webhook_intake"))
            return client.post(stripe_event, secrets="whsec_not_the_one").status

    def malformed_webhook(self) -> int:
        with self._captured():
            client = WebhookClient(self.handler("webhook_intake"))
            return client.post({"id": "evt_broken", "type": "invoice.paid", "data": "oops"}).status

    # --------------------------------------------------------------- licensing

    def licensing(self, method: str, path: str, body: dict | None = None, caller: str = ADMIN_CALLER) -> int:
        event = iam_api_event(method, path, body, caller)
        with self._captured():
            return self.handler("licensing_api").lambda_handler(event, LambdaContext())["statusCode"]

    def usage(self, account_id: str, feature: str, quantity: int = 1, key: str | None = None) -> int:
        body: dict[str, Any] = {"feature": feature, "quantity": quantity}
        if key:
            body["idempotency_key"] = key
        return self.licensing("POST", f"/v1/accounts/{account_id}/usage", body)

    # ------------------------------------------------------------ quota reset

    def quota_reset_segment(self, run_id: str, segment: int = 0, total_segments: int = 1) -> dict[str, Any]:
        payload = {"run_id": run_id, "segment": segment, "total_segments": total_segments}
        with self._captured():
            return self.handler("quota_reset").lambda_handler(payload, LambdaContext())

    # ------------------------------------------------------- scheduled functions

    def scheduled(self, function: str) -> Any:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now)),
            "region": "us-east-1",
            "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{function}"],
            "detail": {},
        }
        with self._captured():
            return self.handler(function).lambda_handler(event, LambdaContext())

    def billing_report(self, period: str = "daily") -> Any:
        """The scheduled billing report of the window that ends now (STAGE and alert routes set)."""
        request = {
            "period": period,
            "scheduled_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now)),
        }
        with self._captured():
            return self.handler("billing_report").lambda_handler(request, LambdaContext())

    def recorded_day(
        self, paid: dict[str, float], probed_from_start: bool = True, webhooks: bool = True
    ) -> None:
        """What the last 24 hours of billwatch left in CloudWatch (moto) for the billing report: the
        webhooks it received (none: the endpoint was down), PaymentAmount per currency, and the
        probe's gauge every hour (from the window's first hour, or only from its second: a stack
        deployed during the day)."""
        import boto3

        service = [{"Name": "service", "Value": "billwatch"}]
        points = [("WebhookReceived", service, 10.0, self.now - 5 * 3600)] if webhooks else []
        points += [
            (
                "PaymentAmount",
                [*service, {"Name": "Currency", "Value": currency}],
                amount,
                self.now - 5 * 3600,
            )
            for currency, amount in paid.items()
        ]
        points += [
            ("PayingSubscriptions", service, 1.0, self.now - 86400 + hour * 3600 + 60)
            for hour in range(0 if probed_from_start else 1, 24)
        ]
        boto3.client("cloudwatch").put_metric_data(
            Namespace="Billwatch",
            MetricData=[
                {"MetricName": name, "Dimensions": dims, "Value": value, "Timestamp": moment}
                for name, dims, value, moment in points
            ],
        )

    def deployment(self, status: str = "UPDATE_COMPLETE") -> Any:
        """What DeployedRule passes to the health probe's function when a deployment finishes."""
        with self._captured():
            event = stack_status_change(status, self.now)
            return self.handler("health_probe").lambda_handler(event, LambdaContext())

    # --------------------------------------------------------------- alert dispatch

    def alert_input(self, event: dict[str, Any]) -> dict[str, Any]:
        """An SNS delivery (or alarm invocation) to the AlertDispatch function; its answer."""
        with self._captured():
            return self.handler("alert_dispatch").lambda_handler(event, LambdaContext())
