"""The local stack's stand-in for CloudWatch's EMF ingestion: printed metrics land in moto.

In Lambda, CloudWatch reads the EMF documents a function prints to stdout and stores their
metrics. Locally the handlers print the same lines, so :func:`install_emf_sink` wraps
``sys.stdout``: every line still goes to the real stdout, untouched, and each EMF document among
them (a JSON object with ``_aws.CloudWatchMetrics``) also becomes PutMetricData calls on the client
given, usually moto's CloudWatch: one datum per metric per dimension set, at the document's
``Timestamp``, with the metric's unit.

    undo = install_emf_sink(cloudwatch_client)
    ...
    undo()

Forwarding is synchronous, in the thread that prints: a request's metrics are in moto before its
response goes out (a few milliseconds per request on loopback). A document that cannot be
forwarded is logged at warning and otherwise ignored: the handler that printed it never sees the
failure.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["install_emf_sink"]

log = logging.getLogger("devtools.local_metrics")

# Most lines are logs: this spares them a json.loads.
_EMF_KEY = '"_aws"'


def _metric_data(document: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Namespace -> PutMetricData ``MetricData`` for one EMF document.

    Raises KeyError, TypeError or ValueError for a document that is not EMF as CloudWatch reads it.
    """
    directives = document["_aws"]
    timestamp = datetime.fromtimestamp(directives["Timestamp"] / 1000, tz=UTC)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for directive in directives["CloudWatchMetrics"]:
        data = by_namespace.setdefault(directive["Namespace"], [])
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            values = [float(v) for v in value] if isinstance(value, list) else [float(value)]
            for dimension_set in directive["Dimensions"]:
                datum = {
                    "MetricName": metric["Name"],
                    "Dimensions": [{"Name": name, "Value": document[name]} for name in dimension_set],
                    "Timestamp": timestamp,
                    "Values": values,
                }
                if "Unit" in metric:
                    datum["Unit"] = metric["Unit"]
                data.append(datum)
    return by_namespace


class _EmfStdout:
    """Writes through to ``stream`` and forwards the EMF lines among what is written."""

    def __init__(self, stream: TextIO, cloudwatch_client: Any) -> None:
        self._stream = stream
        self._cloudwatch = cloudwatch_client
        self._forwarding = True
        # print() writes the text and its newline separately, so the lines of handlers printing at
        # once on several threads would interleave in a shared buffer.
        self._pending = threading.local()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if self._forwarding:
            for line in self._complete_lines(text):
                self._forward(line)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def stop_forwarding(self) -> None:
        # Whatever kept a reference to this wrapper (a log handler, say) keeps a plain stdout.
        self._forwarding = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _complete_lines(self, text: str) -> list[str]:
        *lines, rest = (getattr(self._pending, "text", "") + text).split("\n")
        self._pending.text = rest
        return lines

    def _forward(self, line: str) -> None:
        if _EMF_KEY not in line:
            return
        try:
            document = json.loads(line)
        except ValueError:
            return
        if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
            return
        try:
            for namespace, data in _metric_data(document).items():
                self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
        except Exception as exc:
            log.warning("an EMF document was not forwarded to CloudWatch: %s: %s", type(exc).__name__, exc)


def install_emf_sink(cloudwatch_client: Any) -> Callable[[], None]:
    """Forward the EMF documents printed to ``sys.stdout`` to ``cloudwatch_client``; returns the undo.

    The undo stops the forwarding and puts the previous ``sys.stdout`` back, unless something has
    replaced the wrapper since (then that replacement stays).
    """
    original = sys.stdout
    wrapper = _EmfStdout(original, cloudwatch_client)
    sys.stdout = wrapper

    def undo() -> None:
        wrapper.stop_forwarding()
        if sys.stdout is wrapper:
            sys.stdout = original

    return undo
