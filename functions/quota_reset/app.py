"""QuotaReset: the scheduled sweep that starts each account's new usage period.

The schedule's invocation records that the schedule started a run (the health probe judges the
runs by it) and fans out one asynchronous invocation per scan segment. A segment that runs short
of time hands the rest over to a fresh invocation, which resumes from its checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from billwatch.core.config import load_settings
from billwatch.core.observability import logger
from billwatch.licensing.quota_reset import (
    SegmentDispatcher,
    build_quota_reset,
    record_scheduled_start,
    run_id_of,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

settings = load_settings(webhook_secret=False)
job = build_quota_reset(settings)
RESERVE_SECONDS = 60.0


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    dispatcher = SegmentDispatcher(context.invoked_function_arn)
    if event.get("source") == "aws.events":
        run_id = run_id_of(event["time"])
        record_scheduled_start(event["time"])
        for segment in range(settings.quota_reset_segments):
            dispatcher.start(run_id, segment, settings.quota_reset_segments)
        logger.info(
            "Quota reset started", extra={"run_id": run_id, "segments": settings.quota_reset_segments}
        )
        return {"run_id": run_id, "segments": settings.quota_reset_segments}
    result = job.run_segment(
        event["run_id"],
        event["segment"],
        event["total_segments"],
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        reserve_seconds=RESERVE_SECONDS,
    )
    if not result.finished:
        dispatcher.start(result.run_id, result.segment, event["total_segments"])
    return asdict(result)
