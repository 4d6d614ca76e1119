"""The one reader of CloudWatch Embedded Metric Format (EMF) here: what a function prints to stdout.

CloudWatch takes every metric of a document under each of its dimension sets. The local stand-in
for CloudWatch (:mod:`devtools.local_metrics`), the alarm evaluator's store and the tests read the
printed documents through this module, so they agree on what was emitted:

    for document in emf_documents(printed):
        for metric in emf_metrics(document):
            metric.namespace, metric.name, metric.dimensions, metric.unit, metric.values
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EmfMetric", "emf_document", "emf_documents", "emf_metrics", "emf_timestamp"]

# Most printed lines are logs: this spares them a json.loads.
_EMF_KEY = '"_aws"'


@dataclass(frozen=True)
class EmfMetric:
    """One metric of a document under one of its dimension sets."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # (name, value) in the order of the dimension set
    unit: str | None
    values: tuple[float, ...]


def emf_document(line: str) -> dict[str, Any] | None:
    """The EMF document a printed line holds, or None for any other line (a log, a partial line)."""
    if _EMF_KEY not in line:
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
        return None
    return document


def emf_documents(output: str) -> Iterator[dict[str, Any]]:
    """The EMF documents among everything printed."""
    for line in output.splitlines():
        if (document := emf_document(line)) is not None:
            yield document


def emf_timestamp(document: Mapping[str, Any]) -> float:
    """The document's ``_aws.Timestamp`` (epoch milliseconds) in epoch seconds."""
    timestamp = _metadata(document).get("Timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise ValueError("EMF document has no numeric _aws.Timestamp")
    return float(timestamp) / 1000


def emf_metrics(document: Mapping[str, Any]) -> list[EmfMetric]:
    """Every metric of the document under each of its dimension sets.

    Raises ValueError for a document CloudWatch would not take (a missing member, a value that is
    not a number, a dimension that is not a string).
    """
    directives = _metadata(document).get("CloudWatchMetrics")
    if not isinstance(directives, list):
        raise ValueError("EMF document has no _aws.CloudWatchMetrics array")
    found = []
    for directive in directives:
        namespace = directive.get("Namespace") if isinstance(directive, Mapping) else None
        if (
            not isinstance(namespace, str)
            or not directive.get("Dimensions")
            or not isinstance(directive.get("Metrics"), list)
        ):
            raise ValueError(f"EMF directive {directive!r} needs a Namespace, dimension sets and Metrics")
        for metric in directive["Metrics"]:
            values = _values(document, metric["Name"])
            for dimension_set in directive["Dimensions"]:
                found.append(
                    EmfMetric(
                        namespace,
                        metric["Name"],
                        _dimensions(document, dimension_set),
                        metric.get("Unit"),
                        values,
                    )
                )
    return found


def _metadata(document: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = document.get("_aws")
    if not isinstance(metadata, Mapping):
        raise ValueError("not an EMF document: it has no _aws object")
    return metadata


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _values(document: Mapping[str, Any], name: str) -> tuple[float, ...]:
    if name not in document:
        raise ValueError(f"EMF document declares metric {name!r} but has no {name!r} member")
    value = document[name]
    values = value if isinstance(value, list) else [value]
    if not all(_is_number(item) for item in values):
        raise ValueError(f"EMF metric {name!r} must be a number or an array of numbers, got {value!r}")
    return tuple(float(item) for item in values)


def _dimensions(document: Mapping[str, Any], dimension_set: Sequence[str]) -> tuple[tuple[str, str], ...]:
    dimensions = []
    for dimension in dimension_set:
        value = document.get(dimension)
        if not isinstance(value, str):
            raise ValueError(f"EMF dimension {dimension!r} must be a string member of the document")
        dimensions.append((dimension, value))
    return tuple(dimensions)
