"""What moto's CloudWatch lacks for the billing report, filled in from moto's own in-process state.

moto 5.2.5 computes no percentiles in GetMetricData (its statistics know Sum, Average, Minimum,
Maximum and SampleCount only) and does not implement DescribeAlarmHistory. The local stack and
the tests of ``CloudWatchReportSource`` use these two shims instead:

    undo = install_percentiles()          # pNN statistics, nearest rank, until undo()
    undo = install_alarm_history()        # DescribeAlarmHistory from moto's alarms, until undo()

Both read moto's backends in this process: with ``mock_aws`` or a ``ThreadedMotoServer`` started
here, not with a moto server in another process.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from moto.cloudwatch import models as moto_cloudwatch
from moto.core import DEFAULT_ACCOUNT_ID

__all__ = ["install_alarm_history", "install_percentiles"]

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


def _nearest_rank(original: Any) -> Any:
    def statistic(self: Any, stat: str) -> Any:
        percentile = _PERCENTILE.fullmatch(stat)
        if not percentile:
            return original(self, stat)
        values = sorted(self.metric_single_values_list)
        return values[max(0, math.ceil(float(percentile[1]) / 100 * len(values)) - 1)]

    return statistic


def install_percentiles() -> Callable[[], None]:
    """Make moto's GetMetricData answer ``pNN`` statistics (nearest rank); returns the undo.

    The patch is process-wide (moto's ``Statistics`` class), so undo in the reverse order of
    installing when two are installed at once.
    """
    original = moto_cloudwatch.Statistics.get_statistics_for_type
    moto_cloudwatch.Statistics.get_statistics_for_type = _nearest_rank(original)

    def undo() -> None:
        moto_cloudwatch.Statistics.get_statistics_for_type = original

    return undo


def _history_items(region: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    backend = moto_cloudwatch.cloudwatch_backends[DEFAULT_ACCOUNT_ID][region]
    items = []
    for alarm in backend.alarms.values():
        # Each history entry holds the state an update replaced, with the time that state began.
        states = [(entry[3], entry[1], entry[4]) for entry in alarm.history if entry[0] == "StateUpdate"]
        states.append((alarm.state_value, alarm.state_reason, alarm.state_updated_timestamp))
        for (old, old_reason, _), (new, new_reason, moment) in itertools.pairwise(states):
            timestamp = moment.replace(tzinfo=dt.UTC)
            if start <= timestamp <= end:
                data = {
                    "version": "1.0",
                    "oldState": {"stateValue": old, "stateReason": old_reason},
                    "newState": {"stateValue": new, "stateReason": new_reason},
                }
                items.append(
                    {
                        "AlarmName": alarm.name,
                        "AlarmType": "MetricAlarm",
                        "Timestamp": timestamp,
                        "HistoryItemType": "StateUpdate",
                        "HistorySummary": f"Alarm updated from {old} to {new}",
                        "HistoryData": json.dumps(data),
                    }
                )
    return sorted(items, key=lambda item: item["Timestamp"], reverse=True)


def install_alarm_history() -> Callable[[], None]:
    """Make moto answer DescribeAlarmHistory with the state changes of its alarms; returns the undo.

    It answers every client, in this process (``mock_aws``) or through a moto server started here.
    Only ``StartDate`` and ``EndDate`` are honoured; every item is a MetricAlarm StateUpdate, newest
    first, in one page.
    """
    from moto.cloudwatch.responses import CloudWatchResponse
    from moto.core.responses import ActionResult

    def describe_alarm_history(self: Any) -> ActionResult:
        start, end = (_aware(self._get_param(name)) for name in ("StartDate", "EndDate"))
        return ActionResult({"AlarmHistoryItems": _history_items(self.region, start, end)})

    CloudWatchResponse.describe_alarm_history = describe_alarm_history

    def undo() -> None:
        del CloudWatchResponse.describe_alarm_history

    return undo


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
