"""The scheduled quota reset: starts each account's new usage period once its old one has ended.

Counters are keyed by period already (they hold usage since ``usage_since``, and a check in a
new period starts them again), so no account needs a write for its quota to be right. The sweep
makes the reset explicit for every account whose period has ended, idle ones included: it clears
the past period's counters, grants and announced thresholds. Each reset is one conditional write
on "the counters are still the ones I read", so a second run, a schedule that fires twice or a
rerun after a crash resets nothing twice and never drops usage recorded after a reset.

The sweep runs as parallel scan segments. Each segment checkpoints its scan cursor after every
page, so a run cut short by the Lambda timeout (or a crash) continues from where it stopped.

The sweep is also what guarantees the overage drain sees every account owing overage units: one
that owes without the ``overage_due`` marker (the usage check's best-effort write failed) gets it
(billwatch.licensing.overage_ledger). A period that ended keeps its own marker in its record.

Each start of the schedule is recorded too: an EventBridge rate counts from when its rule was
created, not from the hour, so only the schedule's real starts tell the health probe when the
next run is due.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError

from billwatch.core import dynamo
from billwatch.core.config import Settings
from billwatch.core.dynamo import CONDITION_FAILED, error_code
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import BillingAccount, JobCheckpoint
from billwatch.core.observability import logger
from billwatch.core.self_invoke import SelfInvoker
from billwatch.licensing.overage_ledger import OverageLedger
from billwatch.licensing.quota_policy import AccountUsage
from billwatch.licensing.service import Licensing, build_licensing
from billwatch.licensing.usage_history import ClosedBy

PAGE_SIZE = 200
SCHEDULE_SECONDS = 3600  # QuotaResetFunction's rate(1 hour) in template.yaml
# The JobCheckpoint whose updated_at is when the schedule last started a run. The health probe
# reads it in the same BatchGetItem as the segments' checkpoints (billwatch.health.probe).
SCHEDULE_CHECKPOINT = "quota-reset#schedule"


@dataclass(frozen=True)
class SegmentResult:
    """Counts are for the whole run of the segment, across the invocations that resumed it."""

    run_id: str
    segment: int
    finished: bool
    scanned: int
    reset: int
    cursor: dict[str, Any] | None


class QuotaReset:
    def __init__(
        self, licensing: Licensing, metrics: MetricsRecorder, clock: Callable[[], float] = time.time
    ):
        self._policy = licensing.policy
        self._history = licensing.history
        self._ledger = OverageLedger(licensing.policy.catalog)
        self._metrics = metrics
        self._clock = clock

    def run_segment(
        self,
        run_id: str,
        segment: int,
        total_segments: int,
        time_left: Callable[[], float] = lambda: float("inf"),
        reserve_seconds: float = 30.0,
    ) -> SegmentResult:
        """Sweeps one scan segment, resuming from its checkpoint; stops early when time runs short."""
        checkpoint = JobCheckpoint.load(segment_checkpoint(run_id, segment))
        # pynamodb types every number as float
        scanned, reset = int(checkpoint.scanned or 0), int(checkpoint.reset or 0)
        if checkpoint.finished:
            return SegmentResult(run_id, segment, True, scanned, reset, None)
        cursor = json.loads(checkpoint.cursor) if checkpoint.cursor else None
        connection = dynamo.table_connection(BillingAccount)
        try:
            while True:
                page = connection.scan(
                    filter_condition=BillingAccount.usage_since.exists()
                    & BillingAccount.merged_into.does_not_exist(),
                    limit=PAGE_SIZE,
                    segment=segment,
                    total_segments=total_segments,
                    exclusive_start_key=cursor,
                )
                for raw in page.get("Items", []):
                    scanned += 1
                    if self._reset_if_ended(raw):
                        reset += 1
                        self._metrics.add(Metric.QUOTA_RESET_ACCOUNTS)
                cursor = page.get("LastEvaluatedKey")
                checkpoint.advance(cursor, scanned, reset)
                if cursor is None or time_left() < reserve_seconds:
                    break
        except Exception:
            self._metrics.add(Metric.QUOTA_RESET_FAILED)
            logger.exception(
                "Quota reset failed", extra={"run_id": run_id, "segment": segment, "scanned": scanned}
            )
            raise
        finally:
            self._metrics.flush(metadata={"run_id": run_id, "segment": segment})
        if cursor is None:
            self._metrics.add(Metric.QUOTA_RESET_SUCCEEDED)
            self._metrics.flush(metadata={"run_id": run_id, "segment": segment})
            logger.info(
                "Quota reset segment finished", extra={"run_id": run_id, "segment": segment, "reset": reset}
            )
        return SegmentResult(run_id, segment, cursor is None, scanned, reset, cursor)

    def _reset_if_ended(self, raw: dict[str, Any]) -> bool:
        usage = AccountUsage.from_raw(raw["pk"]["S"], raw)
        now = int(self._clock())
        if self._policy.new_period(usage.account, now) is None:
            self._ledger.mark_if_owing(usage)
            return False
        actions = self._policy.restart_actions(usage, now)
        return self._history.close(self._policy, usage, actions, ClosedBy.QUOTA_RESET, now)


class SegmentDispatcher:
    """Starts segment workers as asynchronous invocations of this same function."""

    def __init__(self, function_name: str) -> None:
        self._invoker = SelfInvoker(function_name)

    def start(self, run_id: str, segment: int, total_segments: int) -> None:
        self._invoker.start({"run_id": run_id, "segment": segment, "total_segments": total_segments})


def segment_checkpoint(run_id: str, segment: int) -> str:
    """The JobCheckpoint name of one segment of one run."""
    return f"quota-reset#{run_id}#{segment}"


def run_id_of(scheduled_time: str) -> str:
    """One run per scheduled hour: a schedule that fires twice in the hour joins the same run."""
    return scheduled_time[:13]


def record_scheduled_start(scheduled_time: str) -> None:
    """Remembers that the schedule started the run of ``scheduled_time`` (its event's ISO time).

    The record only moves forward: Lambda may retry an older start after a newer one.
    """
    started = dt.datetime.fromisoformat(scheduled_time)
    record = JobCheckpoint(JobCheckpoint.key(SCHEDULE_CHECKPOINT), updated_at=started)
    try:
        record.save(JobCheckpoint.updated_at.does_not_exist() | (JobCheckpoint.updated_at < started))
    except PutError as error:
        if error_code(error) != CONDITION_FAILED:
            raise


def build_quota_reset(settings: Settings) -> QuotaReset:
    licensing = build_licensing(settings)
    return QuotaReset(licensing, MetricsRecorder(settings.metrics_namespace, settings.service_name))
