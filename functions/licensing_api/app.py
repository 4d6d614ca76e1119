"""LicensingApi: what an account may use, and counting its usage (HTTP API, IAM-authorized)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from billwatch.access import is_admin
from billwatch.billing_store import StoreUnavailable
from billwatch.config import load_settings
from billwatch.licensing import MAX_QUANTITY, UsageRequestError, build_licensing
from billwatch.observability import logger

ACCOUNT_ID = r"^[A-Za-z0-9_.:@-]{1,128}$"
STATUS_OF_REASON = {None: 200, "quota_exceeded": 429, "feature_not_in_plan": 403}

settings = load_settings(webhook_secret=False)
licensing = build_licensing(settings)
app = APIGatewayHttpResolver(enable_validation=True)


class UsageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    feature: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class TierOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None


class QuotaGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    feature: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    problems = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail.get("loc", ()) if part not in ("body", "path"))
        problems.append(f"{where or 'body'}: {detail.get('msg', 'is invalid')}")
    return _json(400, {"error": "invalid_request", "message": "; ".join(problems)})


@app.exception_handler(UsageRequestError)
def _bad_usage(error: UsageRequestError) -> Response:
    return _json(400, {"error": "invalid_request", "message": str(error)})


@app.exception_handler(StoreUnavailable)
def _unavailable(error: StoreUnavailable) -> Response:
    logger.exception("Licensing store unavailable")
    return _json(503, {"error": "temporarily_unavailable", "message": "try again shortly"})


@app.get("/v1/accounts/<account_id>/entitlements")
def get_entitlements(account_id: Annotated[str, Path(pattern=ACCOUNT_ID)]) -> dict[str, Any]:
    return licensing.entitlements(account_id)


@app.post("/v1/accounts/<account_id>/usage")
def record_usage(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID)], request: Annotated[UsageRequest, Body()]
):  # no return annotation: Powertools would validate the Response object as the body
    if request.idempotency_key:
        decision = licensing.use_idempotently(
            account_id, request.feature, request.quantity, request.idempotency_key
        )
    else:
        decision = licensing.use(account_id, request.feature, request.quantity)
    return _json(STATUS_OF_REASON[decision.reason], decision.as_dict())


@app.put("/admin/accounts/<account_id>/tier-override")
def set_tier_override(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID)], request: Annotated[TierOverride, Body()]
) -> dict[str, Any]:
    return licensing.set_tier_override(account_id, request.tier)


@app.post("/admin/accounts/<account_id>/grants")
def grant_quota(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID)], request: Annotated[QuotaGrant, Body()]
) -> dict[str, Any]:
    return licensing.grant(account_id, request.feature, request.quantity)


@app.post("/admin/accounts/<account_id>/usage-reset")
def reset_usage(account_id: Annotated[str, Path(pattern=ACCOUNT_ID)]) -> dict[str, Any]:
    return licensing.reset_usage(account_id)


def _plain(status: int, error: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"error": error, "message": message}),
    }


def _refusal(event: dict[str, Any]) -> dict[str, Any] | None:
    """Answers that come before routing: who is calling, and what the body is."""
    context = event.get("requestContext") or {}
    path = event.get("rawPath") or ""
    if path.startswith("/admin/"):
        caller = ((context.get("authorizer") or {}).get("iam") or {}).get("userArn")
        if not is_admin(caller, settings.admin_role_arns):
            licensing.refuse_admin(caller, f"{context.get('http', {}).get('method')} {path}")
            return _plain(403, "forbidden", "admin routes need a caller in one of the admin roles")
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    if event.get("body") and not headers.get("content-type", "").startswith("application/json"):
        # Powertools would parse form encodings and report their fields instead.
        return _plain(415, "unsupported_media_type", "the body must be application/json")
    return None


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _refusal(event) or app.resolve(event, context)
    finally:
        licensing.flush_metrics()
