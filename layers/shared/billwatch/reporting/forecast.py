"""The weekly report's MRR forecast: a least-squares line through the last 90 days of daily MRR.

Each currency on its own (amounts of two currencies never add up). The line is fitted on the days
that have a reading; a day without one is left out, never read as 0. Its error is measured on the
history already there: a line fitted on the first two thirds of the days forecasts the last third,
and the mean absolute percentage error (MAPE) of that is the backtest error. With fewer than
``MIN_READINGS`` days there is no forecast, and the report says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from billwatch.reporting.model import Figure, Forecast, Known, Missing, MrrReading

HISTORY_DAYS = 90
HORIZON_DAYS = (30, 60, 90)  # "the next 3 months", as 30-day months
MIN_READINGS = 28
BACKTEST_FIT_SHARE = 2 / 3
SECONDS_PER_DAY = 86400.0


def _backtest_error(days: Sequence[float], values: Sequence[float]) -> Figure[float]:
    fitted = int(len(days) * BACKTEST_FIT_SHARE)
    slope, intercept = statistics.linear_regression(days[:fitted], values[:fitted])
    errors = [
        abs(actual - (intercept + slope * day)) / abs(actual)
        for day, actual in zip(days[fitted:], values[fitted:], strict=True)
        if actual
    ]
    # A percentage error of a day with no MRR is undefined: such days are left out of the mean.
    return Known(statistics.fmean(errors)) if errors else Missing("no MRR in the backtest's days")


def forecast(currency: str, readings: Sequence[MrrReading]) -> Forecast:
    if len(readings) < MIN_READINGS:
        unknown = Missing(f"{len(readings)} days of MRR readings, a forecast needs {MIN_READINGS}")
        return Forecast(currency, len(readings), tuple(unknown for _ in HORIZON_DAYS), unknown)
    first = readings[0].day
    days = [(reading.day - first).total_seconds() / SECONDS_PER_DAY for reading in readings]
    values = [reading.mrr for reading in readings]
    slope, intercept = statistics.linear_regression(days, values)
    # A falling line does not take MRR below nothing.
    ahead = tuple(Known(max(0.0, intercept + slope * (days[-1] + horizon))) for horizon in HORIZON_DAYS)
    return Forecast(currency, len(readings), ahead, _backtest_error(days, values))
