"""The local stack's stand-in for CloudWatch's metric ingestion: printed metrics land in moto.

In Lambda, CloudWatch reads the EMF documents a function prints to stdout and stores their
metrics. Locally the handlers print the same lines, so :func:`install_stdout_tap` wraps
``sys.stdout``: every line still goes to the real stdout, untouched, and is also handed to a
callback. :class:`LocalMetrics` is that callback for EMF: each document becomes PutMetricData calls
on moto's CloudWatch (one datum per metric per dimension set, with the metric's unit) and points in
the alarm evaluator's :class:`~devtools.alarm_evaluator.MetricStore`, at the document's
``Timestamp`` as the local clock reads it. The metrics AWS itself publishes (``AWS/Lambda``,
``AWS/ApiGateway``) are put the same way by the local stack, with :meth:`LocalMetrics.put`.

    metrics = LocalMetrics(cloudwatch_client, store, clock)
    undo = install_stdout_tap(metrics.on_line)
    ...
    undo()

Forwarding is synchronous, in the thread that prints: a request's metrics are in moto before its
response goes out (a few milliseconds per request on loopback). A document that cannot be
forwarded is logged at warning and otherwise ignored: the handler that printed it never sees the
failure.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from devtools.alarm_evaluator import MetricKey, MetricStore
from devtools.emf import emf_document, emf_metrics, emf_timestamp

__all__ = ["LocalMetrics", "install_stdout_tap"]

log = logging.getLogger("devtools.local_metrics")


class Clock(Protocol):
    def virtual(self, real_epoch: float) -> float: ...


class _RealTime:
    def virtual(self, real_epoch: float) -> float:
        return real_epoch


def _metric_data(document: Mapping[str, Any], timestamp: datetime) -> dict[str, list[dict[str, Any]]]:
    """Namespace -> PutMetricData ``MetricData`` for one EMF document (ValueError: not EMF)."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for metric in emf_metrics(document):
        datum: dict[str, Any] = {
            "MetricName": metric.name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in metric.dimensions],
            "Timestamp": timestamp,
            "Values": list(metric.values),
        }
        if metric.unit is not None:
            datum["Unit"] = metric.unit
        by_namespace.setdefault(metric.namespace, []).append(datum)
    return by_namespace


class LocalMetrics:
    """Puts metrics into moto's CloudWatch and the alarm evaluator's store, on the local clock."""

    def __init__(
        self, cloudwatch_client: Any, store: MetricStore | None = None, clock: Clock | None = None
    ) -> None:
        self._cloudwatch = cloudwatch_client
        self.store = store or MetricStore()
        self._clock = clock or _RealTime()
        # Held while the store changes: the alarm evaluation thread reads it under the same lock.
        self.lock = threading.Lock()

    def on_line(self, line: str) -> None:
        document = emf_document(line)
        if document is None:
            return
        try:
            moment = self._clock.virtual(emf_timestamp(document))
            for namespace, data in _metric_data(document, datetime.fromtimestamp(moment, UTC)).items():
                self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
            with self.lock:
                self.store.put_emf(document, timestamp=moment)
        except Exception as exc:
            log.warning("an EMF document was not forwarded to CloudWatch: %s: %s", type(exc).__name__, exc)

    def put(self, namespace: str, name: str, dimensions: Mapping[str, str], value: float, unit: str) -> None:
        """One datapoint of a metric AWS publishes itself, at this moment."""
        moment = self._clock.virtual(time.time())
        datum = {
            "MetricName": name,
            "Dimensions": [{"Name": key, "Value": text} for key, text in dimensions.items()],
            "Timestamp": datetime.fromtimestamp(moment, UTC),
            "Value": float(value),
            "Unit": unit,
        }
        try:
            self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=[datum])
            with self.lock:
                self.store.put(MetricKey.of(namespace, name, **dimensions), moment, float(value))
        except Exception as exc:
            log.warning("%s %s was not put into CloudWatch: %s: %s", namespace, name, type(exc).__name__, exc)


class _TappedStdout:
    """Writes through to ``stream`` and hands each complete line written to ``on_line``."""

    def __init__(self, stream: TextIO, on_line: Callable[[str], None]) -> None:
        self._stream = stream
        self._on_line = on_line
        self._tapping = True
        # print() writes the text and its newline separately, so the lines of handlers printing at
        # once on several threads would interleave in a shared buffer.
        self._pending = threading.local()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if self._tapping:
            for line in self._complete_lines(text):
                self._on_line(line)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def stop_tapping(self) -> None:
        # Whatever kept a reference to this wrapper (a log handler, say) keeps a plain stdout.
        self._tapping = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _complete_lines(self, text: str) -> list[str]:
        *lines, rest = (getattr(self._pending, "text", "") + text).split("\n")
        self._pending.text = rest
        return lines


def install_stdout_tap(on_line: Callable[[str], None]) -> Callable[[], None]:
    """Hand every line printed to ``sys.stdout`` to ``on_line`` too; returns the undo.

    The undo stops the tapping and puts the previous ``sys.stdout`` back, unless something has
    replaced the wrapper since (then that replacement stays).
    """
    original = sys.stdout
    wrapper = _TappedStdout(original, on_line)
    sys.stdout = wrapper

    def undo() -> None:
        wrapper.stop_tapping()
        if sys.stdout is wrapper:
            sys.stdout = original

    return undo
