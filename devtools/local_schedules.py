"""The local stack's clock, and its EventBridge: the template's schedules fired on that clock.

:class:`LocalClock` is real time, or real time sped up from the moment the stack starts
(``speed=60`` runs an hour in a minute): the schedules fire, the alarms are evaluated and the
metrics are stamped on it. The functions themselves keep reading the real clock, so at a speed
above 1 the health probe's own age checks (the last webhook, the quota reset's last start) judge
by real time; everything CloudWatch and EventBridge would time runs on the local clock.

:class:`Scheduler` fires each ``Schedule`` (an EventBridge rule: the "Scheduled Event" payload, in
UTC) and ``ScheduleV2`` (EventBridge Scheduler: its ``Input``, with the context attributes filled
in, in its time zone) of every function, at the moments :mod:`devtools.schedule_expressions`
computes, in the order they fall due. Lambda would run an asynchronous invocation that raised
twice more; locally the failure is logged and counted, and the schedule goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from devtools.schedule_expressions import next_fire
from devtools.template import ScheduleEvent

log = logging.getLogger("devtools.local_schedules")

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


class LocalClock:
    """Epoch seconds on the local clock: ``speed`` times real time since it was made."""

    def __init__(self, speed: float = 1.0, real: Callable[[], float] = time.time) -> None:
        if not speed > 0:
            raise ValueError(f"the clock speed must be above 0, got {speed}")
        self.speed = speed
        self._real = real
        self._origin = real()

    def now(self) -> float:
        return self.virtual(self._real())

    def virtual(self, real_epoch: float) -> float:
        return self._origin + (real_epoch - self._origin) * self.speed

    def real_seconds(self, local_seconds: float) -> float:
        """How long to wait, really, for ``local_seconds`` to pass on this clock."""
        return max(0.0, local_seconds / self.speed)


class ManualClock:
    """A local clock that moves only when told to: for replays that must not wait for real time.

    Everything stamped while it stands (metrics, alarm changes) is stamped at its current moment.
    """

    speed = 0.0  # not running: it moves by advance_to()

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def virtual(self, real_epoch: float) -> float:
        return self._now

    def real_seconds(self, local_seconds: float) -> float:
        return 0.0

    def advance_to(self, moment: float) -> None:
        if moment < self._now:
            raise ValueError("the clock only moves forward")
        self._now = moment


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_event(schedule: ScheduleEvent, moment: dt.datetime) -> Any:
    """What the schedule's trigger sends the function at ``moment``."""
    if schedule.kind == "ScheduleV2":
        schedule_arn = (
            f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/{schedule.function}{schedule.name}"
        )
        attributes = {
            "<aws.scheduler.scheduled-time>": _iso(moment),
            "<aws.scheduler.execution-id>": str(uuid.uuid4()),
            "<aws.scheduler.schedule-arn>": schedule_arn,
            "<aws.scheduler.attempt-number>": "1",
        }
        text = schedule.input or "{}"
        for attribute, value in attributes.items():
            text = text.replace(attribute, value)
        return json.loads(text)
    if schedule.input is not None:
        return json.loads(schedule.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": _iso(moment),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{schedule.function}-{schedule.name}"],
        "detail": {},
    }


@dataclass(frozen=True)
class FiredSchedule:
    schedule: ScheduleEvent
    at: float  # local clock
    succeeded: bool
    error: str | None = None


class BackgroundLoop:
    """One daemon thread running ``_run`` from start() until stop() sets ``_stopping``."""

    thread_name = "local-stack"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None

    def _run(self) -> None:
        raise NotImplementedError


class Scheduler(BackgroundLoop):
    """Fires the schedules on ``clock``, in a thread of its own between start() and stop()."""

    thread_name = "local-stack-scheduler"

    def __init__(
        self,
        schedules: Sequence[ScheduleEvent],
        invoke: Callable[[str, Any], Any],
        clock: LocalClock | ManualClock,
        on_fired: Callable[[FiredSchedule], None] = lambda fired: None,
    ) -> None:
        self.schedules = list(schedules)
        self._invoke = invoke
        self._clock = clock
        self._on_fired = on_fired
        self._started = dt.datetime.fromtimestamp(clock.now(), dt.UTC)
        self._due = {schedule: self._next(schedule, self._started) for schedule in self.schedules}
        super().__init__()

    def _next(self, schedule: ScheduleEvent, after: dt.datetime) -> dt.datetime:
        return next_fire(schedule.expression, after, schedule.zone, started=self._started)

    def due_at(self, schedule: ScheduleEvent) -> float | None:
        """When ``schedule`` fires next, on the local clock."""
        due = self._due.get(schedule)
        return due.timestamp() if due is not None else None

    def next_due(self) -> tuple[dt.datetime, ScheduleEvent] | None:
        if not self._due:
            return None
        schedule = min(self._due, key=lambda each: (self._due[each], each.function, each.name))
        return self._due[schedule], schedule

    def fire_due(self, until: float) -> list[FiredSchedule]:
        """Fire, in order, every schedule due at or before ``until`` (local epoch seconds)."""
        fired = []
        while (upcoming := self.next_due()) is not None and upcoming[0].timestamp() <= until:
            moment, schedule = upcoming
            self._due[schedule] = self._next(schedule, moment)
            fired.append(self.fire(schedule, moment))
        return fired

    def fire(self, schedule: ScheduleEvent, moment: dt.datetime | None = None) -> FiredSchedule:
        """Invoke the schedule's function as its trigger would at ``moment`` (default: when it is due)."""
        moment = moment or self._due[schedule]
        try:
            self._invoke(schedule.function, scheduled_event(schedule, moment))
            outcome = FiredSchedule(schedule, moment.timestamp(), True)
        except Exception as exc:
            log.exception("%s's %s schedule failed at %s", schedule.function, schedule.name, _iso(moment))
            outcome = FiredSchedule(schedule, moment.timestamp(), False, f"{type(exc).__name__}: {exc}")
        self._on_fired(outcome)
        return outcome

    def _run(self) -> None:
        while not self._stopping.is_set():
            upcoming = self.next_due()
            if upcoming is None:
                return
            wait = self._clock.real_seconds(upcoming[0].timestamp() - self._clock.now())
            # Wake at least every second, so that stop() is never kept waiting for a far schedule.
            if self._stopping.wait(min(wait, 1.0)):
                return
            self.fire_due(self._clock.now())
