"""WebhookIntake: Stripe events from POST /webhooks/stripe and from Stripe's EventBridge destination."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from billwatch.billing.intake import (
    EventRejected,
    IntakeOutcome,
    PayloadTooLarge,
    ProcessingFailed,
    build_webhook_intake,
)
from billwatch.billing.signature import SignatureInvalid
from billwatch.billing.stripe_events import MalformedEvent
from billwatch.core import startup
from billwatch.core.config import load_settings
from billwatch.core.observability import logger
from billwatch.core.request_body import BodyNotBase64, request_body

STRIPE_PARTNER_SOURCE_PREFIX = "aws.partner/stripe.com"
# The side-effects sweep's schedule (template.yaml: SideEffectsSweep).
SCHEDULE_SOURCE = "aws.events"

settings = load_settings()
intake = build_webhook_intake(settings)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def _error(status: int, error: str, message: str, **details: Any) -> dict[str, Any]:
    return _response(status, {"error": error, "message": message, **details})


def _from_http(event: dict[str, Any]) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    try:
        body = request_body(event)
    except BodyNotBase64 as not_base64:
        return _error(400, "malformed_body", str(not_base64))
    try:
        result = intake.receive_signed(body, headers.get("stripe-signature"))
    except PayloadTooLarge as too_large:
        return _error(413, "payload_too_large", str(too_large))
    except SignatureInvalid as invalid:
        return _error(
            400, "invalid_signature", "Webhook signature verification failed", reason=invalid.reason
        )
    except MalformedEvent as malformed:
        return _error(400, "malformed_event", str(malformed))
    except EventRejected as rejected:
        return _error(422, "unprocessable_event", str(rejected))
    except ProcessingFailed as failed:
        return _error(503, "temporarily_unavailable", f"{failed}; Stripe will retry the delivery")
    if result.outcome is IntakeOutcome.IN_PROGRESS:
        return _error(409, "in_progress", f"event {result.event_id} is being processed; retry later")
    return _response(200, {"received": True, "event_id": result.event_id, "outcome": result.outcome.value})


def _from_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    # An asynchronous invocation: raising hands the event to Lambda's retries and then the DLQ.
    result = intake.receive_trusted(event.get("detail"))
    if result.outcome is IntakeOutcome.IN_PROGRESS:
        raise ProcessingFailed(f"event {result.event_id} is being processed by another invocation")
    return {"event_id": result.event_id, "outcome": result.outcome.value}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    intake.register_lambda_context(context)
    if str(event.get("source", "")).startswith(STRIPE_PARTNER_SOURCE_PREFIX) and "detail" in event:
        return _from_eventbridge(event)
    if event.get("source") == SCHEDULE_SOURCE and "requestContext" not in event:
        return asdict(intake.sweep_side_effects())
    return _from_http(event)


startup.handler_imported()
