"""LicensingApi: what an account may use, and counting its usage (HTTP API, IAM-authorized).

Routed and validated here rather than by Powertools' event handler and pydantic, which together
cost a cold start more than importing boto3 does; the answers are the ones they gave: Powertools'
404 and response shape, and 400s naming each wrong field in pydantic's (strict mode) words.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from billwatch.core import startup
from billwatch.core.audit import AdminRequest, HistoryQuery, HistoryQueryError
from billwatch.core.config import load_settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.http_answers import (
    NO_BODY,
    caller_refusal,
    problems_message,
    read_json_body,
    store_failure_status,
)
from billwatch.core.ids import ACCOUNT_ID_PATTERN, is_account_id
from billwatch.core.observability import logger
from billwatch.core.request_fields import MISSING, Field, Integer, Problem, Text, read_fields
from billwatch.licensing.service import MAX_QUANTITY, UsageRequestError, build_licensing
from billwatch.licensing.usage_report import UsageReport

STATUS_OF_REASON = {None: 200, "quota_exceeded": 429, "feature_not_in_plan": 403}

settings = load_settings(webhook_secret=False)
licensing = build_licensing(settings)
usage_reports = UsageReport(licensing)

ACCOUNT_ID = Text(pattern=ACCOUNT_ID_PATTERN)
# Until Stripe names a customer's account, its item is keyed by the customer id: not the caller's to use.
NOT_A_CUSTOMER_ID = "a Stripe customer id (cus_...) names no account; use the account id"
USAGE_REQUEST: dict[str, Field] = {
    "feature": Text(min_length=1, max_length=64),
    "quantity": Integer(1, MAX_QUANTITY, default=1),
    "idempotency_key": Text(min_length=1, max_length=255, nullable=True, default=None),
}
TIER_OVERRIDE: dict[str, Field] = {"tier": Text(nullable=True)}
QUOTA_GRANT: dict[str, Field] = {
    "feature": Text(min_length=1, max_length=64),
    "quantity": Integer(1, MAX_QUANTITY),
}


def get_entitlements(account_id: str, _request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, licensing.entitlements(account_id)


def record_usage(account_id: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if request["idempotency_key"]:
        decision = licensing.use_idempotently(
            account_id, request["feature"], request["quantity"], request["idempotency_key"]
        )
    else:
        decision = licensing.use(account_id, request["feature"], request["quantity"])
    return STATUS_OF_REASON[decision.reason], decision.as_dict()


def set_tier_override(account_id: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, licensing.set_tier_override(account_id, request["tier"])


def grant_quota(account_id: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, licensing.grant(account_id, request["feature"], request["quantity"])


def reset_usage(account_id: str, _request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, licensing.reset_usage(account_id)


def usage_report(account_id: str, query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    report = usage_reports.of(account_id, query)
    if report is None:
        message = f"no account {account_id}: nothing was billed or counted for it"
        return 404, {"error": "account_not_found", "message": message}
    return 200, report


def audit_history(event: dict[str, Any]) -> dict[str, Any]:
    """GET /admin/audit?account=&from=&to=&limit=&cursor=: the audit trail, newest first."""
    try:
        query = HistoryQuery.parse(event.get("queryStringParameters") or {}, time.time())
        return _answer(200, licensing.audit.history(query))
    except HistoryQueryError as error:
        return _answer(400, {"error": "invalid_request", "message": str(error)})
    except (StoreRejected, StoreUnavailable) as failure:
        return _answer(*store_failure_status(failure))


Route = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]
# Powertools' rule for a path parameter: one segment of URI characters, safe or not.
_SEGMENT = r"(?P<account_id>[-._~()'!*:@,;=+&$%<> \[\]{}|^\w]+)"
ROUTES: list[tuple[str, re.Pattern[str], Route, Mapping[str, Field] | None]] = [
    ("GET", re.compile(f"^/v1/accounts/{_SEGMENT}/entitlements$"), get_entitlements, None),
    ("GET", re.compile(f"^/v1/accounts/{_SEGMENT}/usage-report$"), usage_report, None),
    ("POST", re.compile(f"^/v1/accounts/{_SEGMENT}/usage$"), record_usage, USAGE_REQUEST),
    ("PUT", re.compile(f"^/admin/accounts/{_SEGMENT}/tier-override$"), set_tier_override, TIER_OVERRIDE),
    ("POST", re.compile(f"^/admin/accounts/{_SEGMENT}/grants$"), grant_quota, QUOTA_GRANT),
    ("POST", re.compile(f"^/admin/accounts/{_SEGMENT}/usage-reset$"), reset_usage, None),
]


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "cookies": [],
    }


def _body(event: dict[str, Any], parsed: Any) -> Any:
    """The body as the route reads it, from what ``read_json_body`` read."""
    if parsed is not NO_BODY:
        if parsed is None:
            return MISSING
        # Powertools read a list's first item as the object: kept, so no answer changes.
        return parsed[0] if isinstance(parsed, list) and parsed else parsed
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "").strip()
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {}  # an empty form: every required field is missing
    if content_type and not content_type.startswith("application/json"):
        raise _UnsupportedContentType
    return MISSING


class _UnsupportedContentType(Exception):
    pass


class Router:
    """Each request to its route, its account id and body checked first, its failures answered."""

    def __init__(self, routes: list[tuple[str, re.Pattern[str], Route, Mapping[str, Field] | None]]) -> None:
        self._routes = routes

    def resolve(self, event: dict[str, Any]) -> dict[str, Any]:
        refused, body = read_json_body(event)
        if refused is not None:
            return refused
        context = event.get("requestContext") or {}
        method = str((context.get("http") or {}).get("method", "")).upper()
        path = event.get("rawPath") or ""
        stage = context.get("stage")
        if stage != "$default":
            path = path[len(f"/{stage}") :]
        if (method, path) == ("GET", "/admin/audit"):  # the one admin route that names no account
            return audit_history(event)
        for route_method, pattern, answer, fields in self._routes:
            match = pattern.match(path) if method == route_method else None
            if match is not None:
                return self._call(event, body, match["account_id"], answer, fields)
        return _answer(404, {"statusCode": 404, "message": "Not found"})

    @staticmethod
    def _call(
        event: dict[str, Any], body: Any, account_id: str, answer: Route, fields: Mapping[str, Field] | None
    ) -> dict[str, Any]:
        problems: list[Problem] = []
        if problem := ACCOUNT_ID.problem(account_id):
            problems.append((("path", "account_id"), problem))
        elif not is_account_id(account_id):  # the pattern admits it: only the prefix is left to refuse
            problems.append(
                (("path", "account_id"), "a Stripe customer id names no account; use the account id")
            )
        # A route without a body reads its query string (the usage report; the others take none).
        request: dict[str, Any] = dict(event.get("queryStringParameters") or {})
        if fields is not None:
            try:
                request, wrong = read_fields(fields, _body(event, body))
            except _UnsupportedContentType:
                return _answer(
                    415, {"error": "unsupported_media_type", "message": "the body must be application/json"}
                )
            problems += wrong
        if problems:
            return _answer(400, {"error": "invalid_request", "message": problems_message(problems)})
        try:
            return _answer(*answer(account_id, request))
        except UsageRequestError as error:
            return _answer(400, {"error": "invalid_request", "message": str(error)})
        except (StoreRejected, StoreUnavailable) as failure:
            return _answer(*store_failure_status(failure))


app = Router(ROUTES)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    licensing.audit.begin(AdminRequest.of(event, context))
    try:
        return caller_refusal(event, settings.admin_role_arns, licensing.refuse_admin) or app.resolve(event)
    finally:
        licensing.audit.end()
        licensing.flush_metrics()


startup.handler_imported()
