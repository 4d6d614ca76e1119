"""The template's CloudWatch dashboards as the local status page draws them, from the local metrics.

:func:`dashboard_series` reads every ``AWS::CloudWatch::Dashboard`` of the template and gives each
widget with its place on the dashboard's 24-column grid (x, y, width, height) and its title:

* ``text`` widgets: their markdown;
* ``alarm`` widgets: the names of the alarms they list (the page colours them by state);
* ``metric`` widgets: one series per line drawn, computed from the evaluator's
  :class:`~devtools.alarm_evaluator.MetricStore` over ``[start, end)`` at the widget's period (or
  a metric's own). As in CloudWatch, periods are aligned to multiples of their length since the
  epoch (hourly ones start on the hour), the first being the one that holds ``start``, so a point's
  time is the start of the period its data fell in; the last is cut short at ``end``. A view
  with ``setPeriodToTimeRange`` has one period, ``[start, end)``. Supported: metric
  arrays ``[Namespace, MetricName, dimension, value, ..., {options}]`` with the ``"."`` and
  ``"..."`` shorthands, the statistics of alarms (Sum, Average, Minimum, Maximum, SampleCount,
  pNN), metric math expressions over the metrics' ids (as the alarm evaluator computes them), and
  ``SEARCH('{Namespace,dimension,...} MetricName="X" dimension="value"', 'Stat'[, period])``,
  which draws a line per metric with exactly those dimensions, and ``SORT(SEARCH(...), SUM|AVG|MIN|
  MAX, ASC|DESC[, limit])`` over one. ``visible: false`` series are only inputs to expressions.
  Horizontal annotations keep their ``color`` and ``fill`` (``above`` or ``below``: the colour
  thresholds of KPI widgets).

The dashboard's property ``variables`` are applied as the console opens the dashboard: each
replaces the value of its dimension in every metric row with its ``defaultValue`` (``__FIRST``:
the first of its ``values``, or of the values its ``search`` finds in the store). The page lists
each variable with the value it drew. Pattern variables are listed and not applied.

What cannot be computed here (Metrics Insights ``SELECT`` queries, SEARCH with partial-match
terms, functions the evaluator lacks, ...) gives the widget a ``note`` saying so instead of series:
a wrong chart would be worse than none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devtools.alarm_evaluator import MetricKey, MetricStore, Series, evaluate_math, statistic
from devtools.local_alarms import alarm_definitions
from devtools.template import DASHBOARD_TYPE, resolved_properties

__all__ = ["DASHBOARD_HOURS", "dashboard_series"]

DASHBOARD_HOURS = 3

# CloudWatch's defaults for a metric widget that names neither.
DEFAULT_PERIOD = 300
DEFAULT_STAT = "Average"

# The console's default value that means "the first of the variable's values".
FIRST_VALUE = "__FIRST"
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

# Views whose setPeriodToTimeRange makes one value of the whole time range.
_WHOLE_RANGE_VIEWS = ("bar", "pie", "singleValue")

_SEARCH = re.compile(
    r"\s*SEARCH\(\s*'(?P<query>[^']*)'\s*,\s*'(?P<stat>[^']+)'\s*(?:,\s*(?P<period>\d+)\s*)?\)\s*"
)
_SORT = re.compile(
    r"\s*SORT\(\s*(?P<search>.+)\s*,\s*(?P<function>AVG|MIN|MAX|SUM)\s*,"
    r"\s*(?P<order>ASC|DESC)\s*(?:,\s*(?P<limit>\d+)\s*)?\)\s*",
    re.IGNORECASE,
)
_SORT_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "AVG": lambda values: sum(values) / len(values),
    "MIN": min,
    "MAX": max,
    "SUM": sum,
}
_SEARCH_SCHEMA = re.compile(r"\s*\{(?P<schema>[^{}]*)\}")
_SEARCH_TERM = re.compile(r'\s*(?P<name>[A-Za-z0-9_.:/#-]+)\s*=\s*"(?P<value>[^"]*)"')


class NotShownLocally(ValueError):
    """A widget asks for something this module does not compute; the message says what."""


@dataclass(frozen=True)
class _Query:
    """One row of a metric widget's ``metrics``: a metric, an expression or a SEARCH."""

    query_id: str | None
    label: str
    visible: bool
    y_axis: str
    period: int
    key: MetricKey | None = None
    stat: str = DEFAULT_STAT
    expression: str | None = None
    search: _Search | None = None
    sort: _Sort | None = None


@dataclass(frozen=True)
class _Sort:
    """SORT(lines, function, order, limit): the lines ordered by ``function`` of their values."""

    function: str
    descending: bool
    limit: int | None

    def applied(self, lines: list[tuple[str, list[list[float]]]]) -> list[tuple[str, list[list[float]]]]:
        compute = _SORT_FUNCTIONS[self.function]
        # Lines sort by label first, so equal values keep one order.
        ranked = sorted(
            lines,
            key=lambda line: compute([value for _, value in line[1]]),
            reverse=self.descending,
        )
        return ranked[: self.limit] if self.limit is not None else ranked


@dataclass(frozen=True)
class _Search:
    namespace: str
    dimensions: tuple[str, ...]  # in the schema's order, which is also the label's
    metric_name: str | None
    values: Mapping[str, str]  # dimension name -> the value it must have

    def matches(self, key: MetricKey) -> bool:
        dimensions = dict(key.dimensions)
        return (
            key.namespace == self.namespace
            and set(dimensions) == set(self.dimensions)
            and self.metric_name in (None, key.name)
            and all(dimensions[name] == value for name, value in self.values.items())
        )


def dashboard_series(
    template: Mapping[str, Any], store: MetricStore, start: float, end: float
) -> list[dict[str, Any]]:
    """Every dashboard of the template: its name, the time range (epoch seconds) and its widgets."""
    alarm_names = {logical_id: d.name for logical_id, d in alarm_definitions(template).items()}
    dashboards = []
    for logical_id, properties in resolved_properties(template, DASHBOARD_TYPE).items():
        body = json.loads(properties["DashboardBody"])
        variables = [_variable(variable, store) for variable in body.get("variables") or []]
        widgets = [
            _widget(_with_variables(widget, variables), store, start, end, alarm_names)
            for widget in body.get("widgets") or []
        ]
        name = properties.get("DashboardName") or logical_id
        dashboard = {"name": name, "start": start, "end": end, "widgets": widgets}
        if variables:
            dashboard["variables"] = variables
        dashboards.append(dashboard)
    return dashboards


def _variable(variable: Mapping[str, Any], store: MetricStore) -> dict[str, Any]:
    """A dashboard variable as the page shows it: the value it takes when the dashboard opens."""
    kind = str(variable.get("type") or "")
    shown: dict[str, Any] = {
        "id": str(variable.get("id") or ""),
        "label": str(variable.get("label") or variable.get(kind) or ""),
        "type": kind,
        "property": variable.get("property") if kind == "property" else None,
        "value": None,
    }
    if kind != "property" or not isinstance(variable.get("property"), str):
        shown["note"] = f"{kind or 'untyped'} variables are not applied locally"
        return shown
    default = variable.get("defaultValue")
    if default is None or default == FIRST_VALUE:
        choices = _variable_values(variable, store)
        default = choices[0] if choices else None
    shown["value"] = None if default is None else str(default)
    return shown


def _variable_values(variable: Mapping[str, Any], store: MetricStore) -> list[str]:
    listed = variable.get("values")
    if isinstance(listed, list):
        return [str(item["value"]) for item in listed if isinstance(item, Mapping) and "value" in item]
    search, dimension = variable.get("search"), variable.get("populateFrom")
    if not isinstance(search, str) or not isinstance(dimension, str):
        return []
    try:
        parsed = _parse_search(search)
    except NotShownLocally:
        return []
    return sorted({dict(key.dimensions)[dimension] for key in filter(parsed.matches, store.keys())})


def _with_variables(widget: Mapping[str, Any], variables: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The widget with each property variable's value in place of its dimension's value in the
    metric rows (what the console does when it opens the dashboard)."""
    values = {v["property"]: v["value"] for v in variables if v["property"] and v["value"] is not None}
    properties = widget.get("properties") or {}
    rows = properties.get("metrics")
    if not values or widget.get("type") != "metric" or not isinstance(rows, list):
        return widget
    return {**widget, "properties": {**properties, "metrics": [_row_with(row, values) for row in rows]}}


def _row_with(row: Any, values: Mapping[str, str]) -> Any:
    if not isinstance(row, list):
        return row
    replaced = list(row)
    # Dimension names sit at 2, 4, ... after the namespace and the metric name; the options last.
    for position in range(2, len(row) - 1, 2):
        name = row[position]
        if isinstance(name, str) and name in values and not isinstance(row[position + 1], Mapping):
            replaced[position + 1] = values[name]
    return replaced


def _widget(
    widget: Mapping[str, Any], store: MetricStore, start: float, end: float, alarm_names: Mapping[str, str]
) -> dict[str, Any]:
    properties = widget.get("properties") or {}
    kind = widget.get("type")
    shown: dict[str, Any] = {key: widget.get(key) for key in ("type", "x", "y", "width", "height")}
    shown["title"] = properties.get("title") or ""
    if kind == "text":
        shown["markdown"] = properties.get("markdown") or ""
    elif kind == "alarm":
        shown["alarms"] = [
            _alarm_name(reference, alarm_names) for reference in properties.get("alarms") or []
        ]
    elif kind == "metric":
        shown["view"] = properties.get("view") or "timeSeries"
        shown["stacked"] = bool(properties.get("stacked"))
        shown["yRange"] = _y_ranges(properties.get("yAxis"))
        shown["annotations"] = _horizontal_annotations(properties.get("annotations"))
        try:
            shown["series"] = _metric_series(properties, store, start, end)
        except ValueError as unsupported:
            shown["note"] = f"not shown locally: {unsupported}"
    else:
        shown["note"] = f"not shown locally: {kind} widgets are not drawn"
    return shown


def _alarm_name(reference: str, alarm_names: Mapping[str, str]) -> str:
    # The template names alarms by !GetAtt Alarm.Arn, which resolves to "LogicalId.Arn".
    logical_id = reference.removesuffix(".Arn")
    if logical_id in alarm_names:
        return alarm_names[logical_id]
    return reference.rpartition(":alarm:")[2]  # an ARN's name; a bare name stays as it is


def _y_ranges(y_axis: Any) -> dict[str, dict[str, float]]:
    ranges: dict[str, dict[str, float]] = {}
    for side, limits in (y_axis or {}).items():
        if side in ("left", "right") and isinstance(limits, Mapping):
            ranges[side] = {
                bound: float(limits[bound]) for bound in ("min", "max") if _is_number(limits.get(bound))
            }
    return ranges


def _horizontal_annotations(annotations: Any) -> list[dict[str, Any]]:
    # Bands (a pair of values) are CloudWatch's too, but the page draws only lines, and their fills.
    return [
        {
            "label": str(line.get("label") or ""),
            "value": float(line["value"]),
            "yAxis": "right" if line.get("yAxis") == "right" else "left",
            "color": line["color"] if _COLOR.match(str(line.get("color") or "")) else None,
            "fill": line["fill"] if line.get("fill") in ("above", "below") else None,
        }
        for line in (annotations or {}).get("horizontal") or []
        if isinstance(line, Mapping) and _is_number(line.get("value"))
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------ series


def _metric_series(
    properties: Mapping[str, Any], store: MetricStore, start: float, end: float
) -> list[dict[str, Any]]:
    period = _period(properties.get("period", DEFAULT_PERIOD))
    whole_range = (
        bool(properties.get("setPeriodToTimeRange")) and properties.get("view") in _WHOLE_RANGE_VIEWS
    )
    if whole_range:
        period = max(1, math.ceil(end - start))
    queries = _queries(properties.get("metrics") or [], str(properties.get("stat") or DEFAULT_STAT), period)

    if whole_range:  # the time range is every row's one period, whatever the row or SEARCH says
        queries = [dataclasses.replace(query, period=period) for query in queries]

    computed: dict[int, list[tuple[str, list[list[float]]]]] = {}  # query index -> its lines
    by_id: dict[str, Series] = {}
    for index, query in enumerate(queries):
        if query.key is not None:
            starts = _period_starts(start, end, query.period, aligned=not whole_range)
            series = _statistic_series(store, query.key, query.stat, starts, query.period, end)
            computed[index] = [(query.label, _points(series, starts))]
            if query.query_id:
                by_id[query.query_id] = series
        elif query.search is not None:
            starts = _period_starts(start, end, query.period, aligned=not whole_range)
            lines = _search_lines(store, query, starts, end)
            computed[index] = query.sort.applied(lines) if query.sort else lines

    # CloudWatch names an expression without an id itself; nothing can refer to it.
    expression_ids = {
        index: query.query_id or f"unnamed{index}"
        for index, query in enumerate(queries)
        if query.expression is not None
    }
    if expression_ids:
        metric_periods = {q.period for q in queries if q.key is not None}
        if len(metric_periods) > 1:
            raise NotShownLocally(f"metric math over metrics of different periods {sorted(metric_periods)}")
        metric_period = metric_periods.pop() if metric_periods else period
        starts = _period_starts(start, end, metric_period, aligned=not whole_range)
        expressions = {expression_ids[index]: str(queries[index].expression) for index in expression_ids}
        values = evaluate_math(expressions, by_id, len(starts))
        for index, expression_id in expression_ids.items():
            value = values[expression_id]
            if not isinstance(value, dict):
                raise NotShownLocally(
                    f"expression {expressions[expression_id]!r} gives a number, not a series"
                )
            computed[index] = [(queries[index].label, _points(value, starts))]

    return [
        {"label": label, "points": points, "yAxis": query.y_axis}
        for index, query in enumerate(queries)
        if query.visible
        for label, points in computed.get(index, [])
    ]


def _queries(rows: Sequence[Any], default_stat: str, default_period: int) -> list[_Query]:
    queries = []
    previous: list[str] = []
    for row in rows:
        if not isinstance(row, list) or not row:
            raise NotShownLocally(f"metric row {row!r} is not a non-empty array")
        *names, options = row if isinstance(row[-1], Mapping) else (*row, {})
        common = {
            "query_id": options.get("id"),
            "visible": options.get("visible", True) is not False,
            "y_axis": "right" if options.get("yAxis") == "right" else "left",
        }
        if "expression" in options:
            if names:
                raise NotShownLocally(f"metric row {row!r} has both a metric and an expression")
            queries.append(_expression_query(str(options["expression"]), options, common, default_period))
            continue
        names = _expand_shorthand([str(name) for name in names], previous)
        previous = names
        if len(names) < 2 or len(names) % 2:
            raise NotShownLocally(f"metric row {row!r} is not [Namespace, MetricName, name, value, ...]")
        namespace, metric_name, *pairs = names
        dimensions = frozenset(zip(pairs[::2], pairs[1::2], strict=True))
        queries.append(
            _Query(
                **common,
                label=str(options.get("label") or metric_name),
                period=_period(options.get("period", default_period)),
                key=MetricKey(namespace, metric_name, dimensions),
                stat=str(options.get("stat") or default_stat),
            )
        )
    return queries


def _expand_shorthand(names: list[str], previous: list[str]) -> list[str]:
    """CloudWatch's ``"."`` (the previous row's item at this place) and ``"..."`` (as many of the
    previous row's items as the rest of this row leaves room for)."""
    if "..." in names:
        cut = names.index("...")
        after = names[cut + 1 :]
        names = [*names[:cut], *previous[cut : max(cut, len(previous) - len(after))], *after]
    expanded = []
    for position, name in enumerate(names):
        if name == ".":
            if position >= len(previous):
                raise NotShownLocally("'.' in a metric row with nothing above it at that place")
            name = previous[position]
        expanded.append(name)
    return expanded


def _expression_query(
    expression: str, options: Mapping[str, Any], common: dict[str, Any], default_period: int
) -> _Query:
    label = str(options.get("label") or "")
    if expression.lstrip().upper().startswith("SELECT"):
        raise NotShownLocally("Metrics Insights queries (SELECT ...) run only in CloudWatch")
    sort = None
    if sorted_search := _SORT.fullmatch(expression):
        limit = sorted_search["limit"]
        sort = _Sort(
            sorted_search["function"].upper(),
            sorted_search["order"].upper() == "DESC",
            int(limit) if limit is not None else None,
        )
        expression = sorted_search["search"]
    search = _SEARCH.fullmatch(expression)
    if sort is not None and search is None:
        raise NotShownLocally(f"SORT over {expression!r}: only SORT over one SEARCH is computed locally")
    if search is None:
        return _Query(**common, label=label or expression, period=default_period, expression=expression)
    statistic(search["stat"])  # an unsupported statistic is refused now, with its name
    return _Query(
        **common,
        label=label,
        period=_period(search["period"] or default_period),
        stat=search["stat"],
        search=_parse_search(search["query"]),
        sort=sort,
    )


def _parse_search(query: str) -> _Search:
    schema = _SEARCH_SCHEMA.match(query)
    if schema is None:
        raise NotShownLocally(f"SEARCH {query!r} has no {{Namespace,dimension,...}} schema")
    namespace, *dimensions = [part.strip().strip('"') for part in schema["schema"].split(",")]
    terms: dict[str, str] = {}
    position = schema.end()
    while query[position:].strip():
        term = _SEARCH_TERM.match(query, position)
        if term is None:
            raise NotShownLocally(
                f'SEARCH term {query[position:].strip()!r}: only exact Name="value" terms are matched locally'
            )
        terms[term["name"]] = term["value"]
        position = term.end()
    metric_name = terms.pop("MetricName", None)
    return _Search(namespace, tuple(dimensions), metric_name, terms)


def _search_lines(
    store: MetricStore, query: _Query, starts: list[float], end: float
) -> list[tuple[str, list[list[float]]]]:
    assert query.search is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
    lines = []
    for key in filter(query.search.matches, store.keys()):
        series = _statistic_series(store, key, query.stat, starts, query.period, end)
        if not series:
            continue  # like CloudWatch, SEARCH finds only metrics with data in the time range
        dimensions = dict(key.dimensions)
        values = " ".join(dimensions[name] for name in query.search.dimensions)
        lines.append((f"{query.label} {values}" if query.label else values, _points(series, starts)))
    return sorted(lines)


def _period(value: Any) -> int:
    try:
        period = float(value)
    except (TypeError, ValueError):
        raise NotShownLocally(f"period {value!r} is not a number of seconds") from None
    if not period.is_integer() or period < 1:
        raise NotShownLocally(f"period {value!r} is not a positive whole number of seconds")
    return int(period)


def _period_starts(start: float, end: float, period: int, *, aligned: bool) -> list[float]:
    first = start - start % period if aligned else start
    return [first + index * period for index in range(max(0, math.ceil((end - first) / period)))]


def _statistic_series(
    store: MetricStore, key: MetricKey, stat: str, starts: list[float], period: int, end: float
) -> Series:
    compute = statistic(stat)
    series: Series = {}
    for index, period_start in enumerate(starts):
        values = store.values(key, period_start, min(period_start + period, end))
        if values:
            series[index] = compute(values)
    return series


def _points(series: Series, starts: list[float]) -> list[list[float]]:
    return [[starts[index], value] for index, value in sorted(series.items())]
