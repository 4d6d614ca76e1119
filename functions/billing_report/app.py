"""BillingReport: the daily and weekly billing report, on EventBridge Scheduler schedules in the
readers' time zone, sent to the report receiver's channels. Invoke it with ``{"period": "weekly"}``
to send one now.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from billwatch.core.config import load_alert_settings, load_report_settings, load_settings
from billwatch.core.observability import logger
from billwatch.reporting.job import build_billing_report_job
from billwatch.reporting.model import ReportPeriod

# Stop retrying a channel while there is still time to count and log what was delivered.
RESERVE_SECONDS = 10.0

settings = load_settings(webhook_secret=False)
_invocation: dict[str, Any] = {}
job = build_billing_report_job(
    settings,
    load_alert_settings(alert_table=False),
    load_report_settings(),
    deadline=lambda: (
        _invocation["context"].get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS
        if "context" in _invocation
        else float("inf")
    ),
)


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: ReportPeriod = ReportPeriod.DAILY
    # The schedule's own time: a retried invocation reports on the same window.
    scheduled_time: AwareDatetime | None = None


class InvalidReportRequest(ValueError):
    """The invocation's input is not a report request; the message names the problem."""


def _request(event: Any) -> ReportRequest:
    try:
        return ReportRequest.model_validate(event if event is not None else {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in detail['loc']) or 'input'}: {detail['msg']}"
            for detail in error.errors()
        )
        raise InvalidReportRequest(f"not a billing report request: {problems}") from None


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    request = _request(event)
    _invocation["context"] = context
    try:
        outcome = job.run(request.period, request.scheduled_time)
    finally:
        _invocation.clear()
    return dataclasses.asdict(outcome)
