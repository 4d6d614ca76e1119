"""Where the status page plots a datapoint: at the start of the CloudWatch period it fell in."""

from __future__ import annotations

import datetime as dt

from devtools.alarm_evaluator import MetricKey, MetricStore
from devtools.local_dashboards import DASHBOARD_HOURS, dashboard_series
from tests.unit.test_local_dashboards import metric_widget, template_with

KEY = MetricKey.of("Billwatch", "SubscriptionCreated", service="billwatch")
HOURLY = metric_widget(
    [["Billwatch", "SubscriptionCreated", "service", "billwatch"]], period=3600, stat="Sum"
)


def at(hhmmss: str, day: int = 2) -> float:
    return dt.datetime.fromisoformat(f"2026-03-0{day}T{hhmmss}+00:00").timestamp()


def plotted(store: MetricStore, widget: dict, end: float) -> list[list[float]]:
    (dashboard,) = dashboard_series(template_with(widget), store, end - DASHBOARD_HOURS * 3600, end)
    (shown,) = dashboard["widgets"]
    (line,) = shown["series"]
    return line["points"]


def test_an_event_at_00_31_is_plotted_in_the_hour_from_00_00_not_at_23_31() -> None:
    store = MetricStore()
    store.put(KEY, at("00:31:00"), 1)

    # Three hours back from 02:31:30 is 23:31:30 the day before, which is not where periods start.
    points = plotted(store, HOURLY, end=at("02:31:30"))

    assert points == [[at("00:00:00"), 1]]


def test_every_point_is_the_start_of_the_period_that_holds_its_data_whatever_the_time_of_asking() -> None:
    store = MetricStore()
    events = [at("22:05:00", day=1), at("23:59:59", day=1), at("00:31:00"), at("01:00:00")]
    for moment in events:
        store.put(KEY, moment, 1)

    for seconds_past in range(0, 3600, 457):
        end = at("01:30:00") + seconds_past
        points = plotted(store, HOURLY, end=end)
        first_hour = end - DASHBOARD_HOURS * 3600 - (end - DASHBOARD_HOURS * 3600) % 3600
        assert sum(count for _, count in points) == sum(1 for moment in events if first_hour <= moment < end)
        for start, count in points:
            assert start % 3600 == 0
            assert count == sum(1 for moment in events if start <= moment < start + 3600)


def test_a_whole_range_view_keeps_one_period_from_the_ranges_start() -> None:
    store = MetricStore()
    store.put(KEY, at("00:31:00"), 4)
    widget = metric_widget(
        [["Billwatch", "SubscriptionCreated", "service", "billwatch"]],
        period=3600,
        stat="Sum",
        view="bar",
        setPeriodToTimeRange=True,
    )

    end = at("02:31:30")
    assert plotted(store, widget, end) == [[end - DASHBOARD_HOURS * 3600, 4]]
