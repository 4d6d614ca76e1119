"""What the HTTP API handlers answer before and around routing; only handlers import this.

The admin check, the content type rule, the JSON reading, the shape of a 400 and the answer to a
DynamoDB failure are the same on every IAM route (licensing, alert silences, reconciliation), so
they are written once here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from billwatch.core import strict_json
from billwatch.core.access import is_admin
from billwatch.core.dynamo import StoreRejected, StoreUnavailable, store_failure
from billwatch.core.observability import logger
from billwatch.core.request_body import BodyNotBase64, request_body

if TYPE_CHECKING:  # Powertools' event handler is imported by the routes that answer through it
    from aws_lambda_powertools.event_handler import Response
    from aws_lambda_powertools.event_handler.openapi.exceptions import (
        RequestUnsupportedContentType,
        RequestValidationError,
    )


def json_response(status: int, body: dict[str, Any]) -> Response:
    from aws_lambda_powertools.event_handler import Response, content_types

    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def invalid_request(error: RequestValidationError) -> Response:
    """A 400 that names every field that is wrong."""
    problems = [(detail.get("loc", ()), detail.get("msg", "is invalid")) for detail in error.errors()]
    return json_response(400, {"error": "invalid_request", "message": problems_message(problems)})


def problems_message(problems: Iterable[tuple[Sequence[Any], str]]) -> str:
    """Each problem as "<field>: <what is wrong>", the field named by its place in a pydantic location."""
    named = []
    for location, problem in problems:
        where = ".".join(str(part) for part in location if part not in ("body", "path"))
        named.append(f"{where or 'body'}: {problem}")
    return "; ".join(named)


def unsupported_content_type(error: RequestUnsupportedContentType) -> Response:
    """A route that takes a body, called without one and with another content type."""
    return json_response(
        415, {"error": "unsupported_media_type", "message": "the body must be application/json"}
    )


def store_failure_answer(error: Exception) -> Response:
    """A DynamoDB failure as the caller sees it: a request DynamoDB refuses (a key or item too
    large, ...) fails the same way however often it is sent, so it gets a 422 with DynamoDB's reason
    and never the 503 that invites a retry; only a failure a retry may fix gets the 503."""
    return json_response(*store_failure_status(error))


def store_failure_status(error: Exception) -> tuple[int, dict[str, Any]]:
    """``store_failure_answer``'s status and body, logged."""
    failure = error if isinstance(error, StoreRejected | StoreUnavailable) else store_failure(error)
    if isinstance(failure, StoreRejected):
        logger.warning("DynamoDB refused a request", extra={"detail": str(failure)})
        return 422, {"error": "rejected_by_store", "message": str(failure)}
    logger.exception("DynamoDB unavailable")
    return 503, {"error": "temporarily_unavailable", "message": "try again shortly"}


def plain(status: int, error: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"error": error, "message": message}),
    }


def caller_of(event: dict[str, Any]) -> str | None:
    return (((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}).get("userArn")


def refusal(
    event: dict[str, Any], admin_role_arns: Iterable[str], refuse: Callable[[str | None, str], None]
) -> dict[str, Any] | None:
    """Answers that come before routing: who is calling, and whether the body is JSON that can be
    read (a 400 naming the problem when it is not, whatever the route)."""
    return caller_refusal(event, admin_role_arns, refuse) or read_json_body(event)[0]


def caller_refusal(
    event: dict[str, Any], admin_role_arns: Iterable[str], refuse: Callable[[str | None, str], None]
) -> dict[str, Any] | None:
    """A 403 for a caller the route does not admit.

    API Gateway's AWS_IAM authorizer guards these routes; the handler holds to it too, so that an
    invocation that did not come through it (a direct invoke, a misconfigured route) changes nothing.
    """
    path = event.get("rawPath") or ""
    caller = caller_of(event)
    if path.startswith("/admin/"):
        if not is_admin(caller, admin_role_arns):
            method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
            refuse(caller, f"{method} {path}")
            return plain(403, "forbidden", "admin routes need a caller in one of the admin roles")
    elif not caller:
        return plain(403, "forbidden", "this route needs an IAM-signed caller")
    return None


NO_BODY = object()  # a request without a body (JSON's null is a body: None)


def read_json_body(event: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """The body's JSON, read once (``NO_BODY`` when there is none); or the answer that refuses it."""
    try:
        body = request_body(event)
    except BodyNotBase64:
        return plain(400, "invalid_request", "the body is marked base64 but is not valid base64"), NO_BODY
    if not body:
        return None, NO_BODY
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    if not headers.get("content-type", "").lower().startswith("application/json"):  # media types ignore case
        # Powertools would parse form encodings and report their fields instead.
        return plain(415, "unsupported_media_type", "the body must be application/json"), NO_BODY
    try:
        # Powertools' own reading crashes on deep nesting, long integers and bytes that are not
        # UTF-8; what passes here it reads safely.
        value = strict_json.loads(body)
    except strict_json.JsonRefused as refused:
        return plain(400, "invalid_request", str(refused)), NO_BODY
    if not isinstance(value, dict):
        # Powertools would take an array's first element as the body, whatever followed it.
        return plain(400, "invalid_request", "the body must be a JSON object"), NO_BODY
    return None, value
