"""Reconcile: the daily comparison with Stripe (EventBridge), started on demand too (HTTP API,
admin roles, or ``python -m devtools.reconcile``). A run short of time hands over to a new
invocation of this function, which resumes from the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from billwatch.billing.reconcile import build_reconciler, run_id_of
from billwatch.core.config import ConfigError, load_settings
from billwatch.core.http_answers import plain, refusal
from billwatch.core.observability import logger
from billwatch.core.self_invoke import SelfInvoker

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

RESERVE_SECONDS = 60.0

NO_STRIPE_KEY = "reconciliation reads Stripe: set STRIPE_API_KEY_SECRET_ID (or STRIPE_API_KEY locally)"

settings = load_settings(webhook_secret=False)
# The template deploys this function only with a Stripe key; locally it may be served without one.
reconciler = build_reconciler(settings) if settings.stripe_api_configured else None


def _start(context: LambdaContext, run_id: str) -> None:
    SelfInvoker(context.invoked_function_arn).start({"run_id": run_id})


def _refuse_admin(caller: str | None, operation: str) -> None:
    from billwatch.core.access import record_refusal
    from billwatch.core.metrics import MetricsRecorder

    metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)
    record_refusal(metrics, caller, operation)
    metrics.flush()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "http" in (event.get("requestContext") or {}):
        refused = refusal(event, settings.admin_role_arns, _refuse_admin)
        if refused:
            return refused
        if reconciler is None:
            return plain(503, "not_configured", NO_STRIPE_KEY)
        run_id = run_id_of(reconciler.clock())
        _start(context, run_id)
        logger.info("Reconciliation started on demand", extra={"run_id": run_id})
        body = json.dumps({"run_id": run_id, "status": "started"})
        return {"statusCode": 202, "headers": {"content-type": "application/json"}, "body": body}
    if reconciler is None:
        raise ConfigError(NO_STRIPE_KEY)
    reconciler.register_lambda_context(context)
    if event.get("source") == "aws.events":
        run_id = run_id_of(dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
    else:
        run_id = event["run_id"]
    result = reconciler.run(
        run_id, time_left=lambda: context.get_remaining_time_in_millis() / 1000, reserve=RESERVE_SECONDS
    )
    if not result.finished:
        _start(context, run_id)
    return asdict(result)
