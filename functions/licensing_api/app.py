"""LicensingApi: what an account may use, and counting its usage (HTTP API, IAM-authorized)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from billwatch.core.config import load_settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.http_answers import (
    invalid_request,
    json_response,
    refusal,
    store_failure_answer,
    unsupported_content_type,
)
from billwatch.core.ids import ACCOUNT_ID_PATTERN
from billwatch.core.observability import logger
from billwatch.licensing.service import MAX_QUANTITY, UsageRequestError, build_licensing

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


app.exception_handler(RequestValidationError)(invalid_request)
app.exception_handler(RequestUnsupportedContentType)(unsupported_content_type)
app.exception_handler([StoreRejected, StoreUnavailable])(store_failure_answer)


@app.exception_handler(UsageRequestError)
def _bad_usage(error: UsageRequestError) -> Response:
    return json_response(400, {"error": "invalid_request", "message": str(error)})


@app.get("/v1/accounts/<account_id>/entitlements")
def get_entitlements(account_id: Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]) -> dict[str, Any]:
    return licensing.entitlements(account_id)


@app.post("/v1/accounts/<account_id>/usage")
def record_usage(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)], request: Annotated[UsageRequest, Body()]
):  # no return annotation: Powertools would validate the Response object as the body
    if request.idempotency_key:
        decision = licensing.use_idempotently(
            account_id, request.feature, request.quantity, request.idempotency_key
        )
    else:
        decision = licensing.use(account_id, request.feature, request.quantity)
    return json_response(STATUS_OF_REASON[decision.reason], decision.as_dict())


@app.put("/admin/accounts/<account_id>/tier-override")
def set_tier_override(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)], request: Annotated[TierOverride, Body()]
) -> dict[str, Any]:
    return licensing.set_tier_override(account_id, request.tier)


@app.post("/admin/accounts/<account_id>/grants")
def grant_quota(
    account_id: Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)], request: Annotated[QuotaGrant, Body()]
) -> dict[str, Any]:
    return licensing.grant(account_id, request.feature, request.quantity)


@app.post("/admin/accounts/<account_id>/usage-reset")
def reset_usage(account_id: Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]) -> dict[str, Any]:
    return licensing.reset_usage(account_id)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return refusal(event, settings.admin_role_arns, licensing.refuse_admin) or app.resolve(event, context)
    finally:
        licensing.flush_metrics()
