"""Every change the local tools make to moto, in one place, for the one moto version they were written for.

moto 5.2.5 computes no percentiles in GetMetricData (its statistics know Sum, Average, Minimum,
Maximum and SampleCount only), does not implement DescribeAlarmHistory, and stamps alarm state
changes with the wall clock. The local emulator and the tests of ``CloudWatchReportSource`` fill
those in:

    undo = install_percentiles()          # pNN statistics, nearest rank, until undo()
    undo = install_alarm_history()        # DescribeAlarmHistory from moto's alarms, until undo()
    undo = install_alarm_clock(now)       # alarm state changes stamped at now() (epoch seconds)

and the tests, the local emulator and the benchmarks make moto's TransactWriteItems cost what
DynamoDB's does, not the size of the tables it touches:

    undo = install_item_rollback_transactions()

and they make moto do once what it redoes on every request, for the same answer:

    undo = install_parse_once()

Each reaches into moto's internals, so each refuses (MotoVersionError) to patch another moto
version than :data:`WRITTEN_FOR`: moving the pin in requirements/constraints.txt means checking
these patches against the new moto first. All of them read or change moto's backends in this
process: with ``mock_aws`` or a ``ThreadedMotoServer`` started here, not a moto server elsewhere.
The patches are process-wide, so undo in the reverse order of installing.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import json
from collections.abc import Callable
from typing import Any

import moto
from moto import backends as moto_backends
from moto.cloudwatch import models as moto_cloudwatch
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, DynamoType, Table
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

from devtools.percentiles import nearest_rank, percentile_statistic

__all__ = [
    "WRITTEN_FOR",
    "MotoVersionError",
    "install_alarm_clock",
    "install_alarm_history",
    "install_item_rollback_transactions",
    "install_parse_once",
    "install_percentiles",
]

# The moto version these patches were written against and checked with (requirements/constraints.txt).
WRITTEN_FOR = "5.2.5"


class MotoVersionError(RuntimeError):
    """The installed moto is not the version the patches were written for."""


def _check_moto_version() -> None:
    if moto.__version__ != WRITTEN_FOR:
        raise MotoVersionError(
            f"devtools.moto_patches was written for moto {WRITTEN_FOR}, not the installed moto "
            f"{moto.__version__}: check each patch against moto {moto.__version__} and update WRITTEN_FOR, "
            f"or install moto {WRITTEN_FOR} (the pin in requirements/constraints.txt)"
        )


def install_percentiles() -> Callable[[], None]:
    """Make moto's GetMetricData answer ``pNN`` statistics (nearest rank); returns the undo."""
    _check_moto_version()
    original = moto_cloudwatch.Statistics.get_statistics_for_type

    def statistic(self: Any, stat: str) -> Any:
        percent = percentile_statistic(stat)
        if percent is None:
            return original(self, stat)
        return nearest_rank(self.metric_single_values_list, percent)

    moto_cloudwatch.Statistics.get_statistics_for_type = statistic  # type: ignore[method-assign]

    def undo() -> None:
        moto_cloudwatch.Statistics.get_statistics_for_type = original  # type: ignore[method-assign]

    return undo


def install_alarm_clock(now: Callable[[], float]) -> Callable[[], None]:
    """Stamp moto's alarm state changes at ``now()`` (epoch seconds, a local clock); returns the undo."""
    _check_moto_version()
    original = moto_cloudwatch.utcnow
    moto_cloudwatch.utcnow = lambda: dt.datetime.fromtimestamp(now(), dt.UTC).replace(tzinfo=None)

    def undo() -> None:
        moto_cloudwatch.utcnow = original

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

    _check_moto_version()

    def describe_alarm_history(self: Any) -> ActionResult:
        start, end = (_aware(self._get_param(name)) for name in ("StartDate", "EndDate"))
        return ActionResult({"AlarmHistoryItems": _history_items(self.region, start, end)})

    CloudWatchResponse.describe_alarm_history = describe_alarm_history  # type: ignore[attr-defined]

    def undo() -> None:
        del CloudWatchResponse.describe_alarm_history  # type: ignore[attr-defined]

    return undo


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def install_item_rollback_transactions() -> Callable[[], None]:
    """Roll a cancelled TransactWriteItems back item by item; returns the undo.

    moto rolls a cancelled transaction back by deep-copying every table it touches beforehand: a
    cost that grows with the table, paid by every transaction. That made a replay of thousands of
    events quadratic (its garbage took gigabytes) and a sweep that closes each account's usage
    period in a transaction look 15 times slower than DynamoDB would run it. Copying just the
    items the transaction names, and putting those back, rolls back the same; the tables
    themselves are no longer copied (``Table.__deepcopy__`` is the table itself while installed,
    so moto's own copy costs nothing). Like moto itself, it assumes one request at a time on an
    item: the tests serialize requests, and the local tools send them in sequence.
    """
    _check_moto_version()
    original = DynamoDBBackend.transact_write_items
    had_deepcopy = "__deepcopy__" in Table.__dict__

    def transact_write_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> Any:
        before = []
        for entry in transact_items:
            ((_, operation),) = entry.items()
            table = backend.tables.get(operation.get("TableName"))
            if table is None:
                continue  # moto answers for the missing table itself
            key = operation.get("Key") or operation.get("Item") or {}
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            before.append(
                (table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value)))
            )
        try:
            return original(backend, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(before):
                if item is not None:
                    table.put_item(item.to_json()["Attributes"], overwrite=True)
                elif table.get_item(hash_value, range_value) is not None:
                    table.delete_item(hash_value, range_value)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign,assignment]
    Table.__deepcopy__ = lambda table, memo: table  # type: ignore[attr-defined]

    def undo() -> None:
        DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]
        if not had_deepcopy:
            del Table.__deepcopy__  # type: ignore[attr-defined]

    return undo


def install_parse_once() -> Callable[[], None]:
    """Parse each UpdateExpression once, and list moto's services once; returns the undo.

    moto parses the UpdateExpression of every UpdateItem twice (to check its placeholders, then to
    apply it), though the functions send a handful of expressions over and over: that parsing was
    a fifth of what a webhook costs in the tests. And moto's server lists and stats its own package
    directory on every request to tell a service name from a host name. Both answers depend on
    their input alone: a parsed tree is only read (``UpdateExpressionValidator`` works on its own
    deep copy, the request's checks only search it), a malformed expression still raises each time
    (exceptions are not cached), and moto's services do not change while it runs.
    """
    _check_moto_version()
    original_make = UpdateExpressionParser.__dict__["make"]
    original_modules = moto_backends.list_of_moto_modules
    parse = functools.lru_cache(maxsize=1024)(original_make.__func__)
    UpdateExpressionParser.make = classmethod(parse)  # type: ignore[arg-type,method-assign]
    moto_backends.list_of_moto_modules = functools.cache(lambda: frozenset(original_modules()))

    def undo() -> None:
        UpdateExpressionParser.make = original_make  # type: ignore[method-assign]
        moto_backends.list_of_moto_modules = original_modules

    return undo
