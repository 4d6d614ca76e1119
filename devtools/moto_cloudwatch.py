"""What moto's CloudWatch lacks for the billing report, filled in from moto's own in-process state.

moto 5.2.5 computes no percentiles in GetMetricData (its statistics know Sum, Average, Minimum,
Maximum and SampleCount only) and does not implement DescribeAlarmHistory. The local stack and
the tests of ``CloudWatchReportSource`` use these two shims instead:

    undo = install_percentiles()          # pNN statistics, nearest rank, until undo()
    answer_alarm_history(client, region)  # that client's DescribeAlarmHistory, from moto's alarms

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

from botocore.awsrequest import AWSResponse
from moto.cloudwatch import models as moto_cloudwatch
from moto.core import DEFAULT_ACCOUNT_ID

__all__ = ["answer_alarm_history", "install_percentiles"]

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")
_ASKED = "billwatch_alarm_history_params"


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


def answer_alarm_history(client: Any, region: str) -> None:
    """Answer the client's DescribeAlarmHistory calls with the state changes of moto's alarms.

    Only ``StartDate`` and ``EndDate`` are honoured; every item is a MetricAlarm StateUpdate, newest
    first, in one page. ``region`` is the moto backend the alarms live in (the client's region).
    """

    # botocore hands both events the same per-call context: concurrent calls keep their own dates.
    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_ASKED] = params

    def answer(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        asked = context[_ASKED]
        items = _history_items(region, asked["StartDate"], asked["EndDate"])
        return AWSResponse("https://monitoring", 200, {}, None), {"AlarmHistoryItems": items}

    client.meta.events.register("before-parameter-build.cloudwatch.DescribeAlarmHistory", remember)
    client.meta.events.register("before-call.cloudwatch.DescribeAlarmHistory", answer)
