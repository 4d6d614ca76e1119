"""AlertDispatch: alarm notifications (SNS, or CloudWatch's direct invocation) and business events
in; Slack, email, PagerDuty and webhook notices out. A schedule repeats and resolves; the admin
routes (HTTP API, IAM) list, acknowledge and resolve alerts and manage silences;
``{"billwatch": "test-alerts"}`` sends a test of each severity.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pynamodb.exceptions import PynamoDBConnectionError

from billwatch.alerting.dispatcher import (
    ALERTS_PAGE_SIZE,
    MAX_ALERTS_PAGE_SIZE,
    AlertActionRefused,
    AlertInProgress,
    AlertNotFound,
    build_alert_dispatcher,
    handling_reason,
)
from billwatch.alerting.inputs import read_records
from billwatch.alerting.store import MalformedAlertId, SilenceError
from billwatch.core.audit import AdminRequest
from billwatch.core.config import load_alert_settings, load_settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.http_answers import (
    caller_of,
    invalid_request,
    json_response,
    refusal,
    store_failure_answer,
    unsupported_content_type,
)
from billwatch.core.observability import logger

TEST_ALERTS_REQUEST = {"billwatch": "test-alerts"}
SILENCE_ID = r"^[0-9a-f]{32}$"
# An alert id is its fingerprint in base64url: DynamoDB's 1,024-byte sort key takes at most 1,366.
ALERT_ID = r"^[A-Za-z0-9_-]{1,1366}$"
# Far beyond any label matcher; keeps a silence well inside DynamoDB's 400 KB item.
MAX_MATCHER_LENGTH = 1000
# Notices still in flight when Lambda stops the invocation would be lost: stop retrying before.
RESERVE_SECONDS = 5.0

settings = load_settings(webhook_secret=False)
alert_settings = load_alert_settings()
_invocation: dict[str, Any] = {}
dispatcher = build_alert_dispatcher(
    settings,
    alert_settings,
    deadline=lambda: (
        _invocation["context"].get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS
        if "context" in _invocation
        else float("inf")
    ),
)
app = APIGatewayHttpResolver(enable_validation=True)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    matchers: list[Annotated[str, Field(max_length=MAX_MATCHER_LENGTH)]] = Field(min_length=1, max_length=20)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime
    comment: str = Field(min_length=1, max_length=500)


class HandlingRequest(BaseModel):
    """Why an admin acknowledges or resolves an alert: kept on the alert and in the audit log."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str, AfterValidator(handling_reason)]


app.exception_handler(RequestValidationError)(invalid_request)
app.exception_handler(RequestUnsupportedContentType)(unsupported_content_type)
app.exception_handler(PynamoDBConnectionError)(store_failure_answer)
# The audit trail's failures: an action it cannot record is not done (a 503 while it is down).
app.exception_handler(StoreUnavailable)(store_failure_answer)
app.exception_handler(StoreRejected)(store_failure_answer)


@app.exception_handler(SilenceError)
def _bad_silence(error: SilenceError) -> Response:
    return json_response(400, {"error": "invalid_request", "message": str(error)})


@app.exception_handler(MalformedAlertId)
def _bad_alert_id(error: MalformedAlertId) -> Response:
    return json_response(400, {"error": "invalid_request", "message": f"alert_id: {error}"})


@app.exception_handler(AlertNotFound)
def _unknown_alert(error: AlertNotFound) -> Response:
    return json_response(404, {"error": "not_found", "message": str(error)})


@app.exception_handler(AlertActionRefused)
def _alert_action_refused(error: AlertActionRefused) -> Response:
    return json_response(409, {"error": error.code, "message": str(error)})


@app.get("/admin/alerts")
def list_alerts(
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS_PAGE_SIZE)] = ALERTS_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return dispatcher.active_alerts(limit, offset)


@app.post("/admin/alerts/<alert_id>/ack")
def acknowledge_alert(
    alert_id: Annotated[str, Path(pattern=ALERT_ID)], request: Annotated[HandlingRequest, Body()]
) -> dict[str, Any]:
    return dispatcher.acknowledge(alert_id, _caller(), request.reason)


@app.post("/admin/alerts/<alert_id>/resolve")
def resolve_alert(
    alert_id: Annotated[str, Path(pattern=ALERT_ID)], request: Annotated[HandlingRequest, Body()]
) -> dict[str, Any]:
    return dispatcher.resolve_by_hand(alert_id, _caller(), request.reason)


def _caller() -> str:
    return caller_of(app.current_event.raw_event) or "unknown"


@app.get("/admin/silences")
def list_silences() -> dict[str, Any]:
    now = dispatcher.clock()
    return {
        "silences": [
            {**silence.as_dict(), "active": silence.active(now)} for silence in dispatcher.store.silences()
        ]
    }


@app.get("/admin/alert-channels")
def broken_channels() -> dict[str, Any]:
    """Channels that answered a permanent error (a revoked Slack hook, a wrong routing key, ...)."""
    return {"broken": list(dispatcher.store.broken())}


@app.post("/admin/silences")
def create_silence(request: Annotated[SilenceRequest, Body()]):  # returns a Response: no annotation
    now = dispatcher.clock()
    silence = dispatcher.store.create_silence(
        request.matchers,
        int(request.starts_at.timestamp()) if request.starts_at else int(now),
        int(request.ends_at.timestamp()),
        request.comment,
        _caller(),
        int(now),
    )
    logger.info("Silence created", extra={"silence": silence.as_dict()})
    return json_response(201, silence.as_dict())


@app.delete("/admin/silences/<silence_id>")
def remove_silence(silence_id: Annotated[str, Path(pattern=SILENCE_ID)]):
    if not dispatcher.store.remove_silence(silence_id, _caller()):
        return json_response(404, {"error": "not_found", "message": f"no silence {silence_id}"})
    logger.info("Silence removed", extra={"silence_id": silence_id, "by": _caller()})
    return Response(status_code=204)


def _from_http(event: dict[str, Any], context: Any) -> dict[str, Any]:
    dispatcher.store.audit.begin(AdminRequest.of(event, context))
    try:
        refused = refusal(event, settings.admin_role_arns, dispatcher.refuse_admin)
        return refused or app.resolve(event, context)
    finally:
        dispatcher.store.audit.end()


def _from_records(event: dict[str, Any]) -> dict[str, Any]:
    """Each record on its own: an unreadable or failing one never holds back the others."""
    counts = {"records": 0, "dispatched": 0, "rejected": 0, "failed": 0}
    failed = []
    for record in read_records(event, settings.severities):
        counts["records"] += 1
        if record.problem is not None:
            counts["rejected"] += 1
            dispatcher.reject_input(record.raw, record.problem)
            continue
        if record.alert is None:
            continue
        try:
            dispatcher.dispatch(record.alert)
            counts["dispatched"] += 1
        except AlertInProgress as busy:
            logger.warning("Alert is being sent by another invocation", extra={"detail": str(busy)})
            failed.append(record.alert.fingerprint)
        except Exception:
            logger.exception("Could not dispatch an alert", extra={"fingerprint": record.alert.fingerprint})
            failed.append(record.alert.fingerprint)
    counts["failed"] = len(failed)
    if failed:
        # Lambda retries the invocation; what was already sent is not sent again (the claims hold).
        raise RuntimeError(f"{len(failed)} alert(s) could not be dispatched; the invocation will be retried")
    return counts


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _invocation["context"] = context
    try:
        if event.get("source") == "aws.events":
            return dispatcher.sweep()
        if event == TEST_ALERTS_REQUEST:
            return {"sent": dispatcher.send_test_alerts(requested_by="a test-alerts invocation")}
        if "http" in (event.get("requestContext") or {}):
            return _from_http(event, context)
        return _from_records(event)
    finally:
        dispatcher.flush_metrics()
