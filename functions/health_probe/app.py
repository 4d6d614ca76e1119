"""HealthProbe: the scheduled health probe (EventBridge), GET /health (HTTP API, payload 2.0) and the
stack's finished deployments (EventBridge, DeployedRule)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from billwatch.core.config import load_settings
from billwatch.core.observability import logger
from billwatch.health.deployments import build_deployment_marker, is_stack_status_change
from billwatch.health.probe import build_health_probe

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

settings = load_settings(webhook_secret=False)
probe = build_health_probe(settings)
deployments = build_deployment_marker(settings)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    # no-store: a cached answer would hide an outage from whoever polls the route.
    headers = {"content-type": "application/json", "cache-control": "no-store"}
    return {"statusCode": status, "headers": headers, "body": json.dumps(body)}


def _from_http(event: dict[str, Any]) -> dict[str, Any]:
    deep = (event.get("queryStringParameters") or {}).get("deep")
    if deep not in (None, "1"):
        return _response(400, {"error": "invalid_request", "message": "deep must be 1 when given"})
    report = probe.deep() if deep else probe.shallow()
    return _response(report.http_status, report.as_body())


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.events":
        return probe.run_scheduled().as_body()
    if is_stack_status_change(event):  # DeployedRule: a deployment of the stack finished
        return deployments.record(event)
    return _from_http(event)
