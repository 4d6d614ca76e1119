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
from billwatch.core.access import record_refusal
from billwatch.core.audit import AdminRequest, AuditedRoute, AuditTrail, Target
from billwatch.core.config import ConfigError, load_settings
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.http_answers import plain, refusal, store_failure_status
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.observability import logger
from billwatch.core.self_invoke import SelfInvoker

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

RESERVE_SECONDS = 60.0

NO_STRIPE_KEY = "reconciliation reads Stripe: set STRIPE_API_KEY_SECRET_ID (or STRIPE_API_KEY locally)"
AUDITED_ROUTES = (AuditedRoute("POST /admin/reconcile", "reconcile"),)

settings = load_settings(webhook_secret=False)
# The template deploys this function only with a Stripe key; locally it may be served without one.
reconciler = build_reconciler(settings) if settings.stripe_api_configured else None
admin_metrics = MetricsRecorder(settings.metrics_namespace, settings.service_name)
audit = AuditTrail(settings.audit_table, settings.audit_retention_days, admin_metrics)


def _start(context: LambdaContext, run_id: str) -> None:
    SelfInvoker(context.invoked_function_arn).start({"run_id": run_id})


def _refuse_admin(caller: str | None, operation: str) -> None:
    record_refusal(admin_metrics, caller, operation)
    audit.refuse(operation, AUDITED_ROUTES, "not in the admin roles", caller)


def _on_demand(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """POST /admin/reconcile: an admin action, recorded in the audit trail before the run starts."""
    refused = refusal(event, settings.admin_role_arns, _refuse_admin)
    if refused:
        return refused
    if reconciler is None:
        return plain(503, "not_configured", NO_STRIPE_KEY)
    run_id = run_id_of(reconciler.clock())
    try:
        audit.write(audit.entry("reconcile", Target("run", run_id), None, {"run_id": run_id}))
    except (StoreUnavailable, StoreRejected) as failure:
        status, answer = store_failure_status(failure)
        return plain(status, answer["error"], answer["message"])
    _start(context, run_id)
    logger.info("Reconciliation started on demand", extra={"run_id": run_id})
    body = json.dumps({"run_id": run_id, "status": "started"})
    return {"statusCode": 202, "headers": {"content-type": "application/json"}, "body": body}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "http" in (event.get("requestContext") or {}):
        audit.begin(AdminRequest.of(event, context))
        try:
            return _on_demand(event, context)
        finally:
            audit.end()
            admin_metrics.flush()
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
