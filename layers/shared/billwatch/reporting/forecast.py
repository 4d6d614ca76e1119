"""The weekly report's MRR forecast: a least-squares line through the last 90 days of daily MRR.

Each currency on its own (amounts of two currencies never add up). The line is fitted on the days
that have a reading; a day without one is left out, never read as 0 (a day the probe read the
gauges without any MRR in a currency is a reading of 0: see the report's source). The horizons are
measured from the report's end, not from the last reading. Its error is measured on the history
already there: a line fitted on the first two thirds of the days forecasts the last third, and the
mean absolute percentage error (MAPE) of that is the backtest error. With fewer than
``MIN_READINGS`` days, or a last reading more than ``STALE_AFTER`` before the report's end (the probe
stopped: the line would extrapolate a past that no longer holds), there is no forecast, and the
report says so.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence

from billwatch.reporting.model import Figure, Forecast, Known, Missing, MrrReading

HISTORY_DAYS = 90
HORIZON_DAYS = (30, 60, 90)  # "the next 3 months", as 30-day months
MIN_READINGS = 28
BACKTEST_FIT_SHARE = 2 / 3
SECONDS_PER_DAY = 86400.0
STALE_AFTER = dt.timedelta(days=7)


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


def forecast(currency: str, readings: Sequence[MrrReading], end: dt.datetime) -> Forecast:
    """``readings`` oldest first; the forecast is of MRR 30, 60 and 90 days after ``end``."""
    last = readings[-1].day if readings else None
    reason = None
    if len(readings) < MIN_READINGS:
        reason = f"{len(readings)} days of MRR readings, a forecast needs {MIN_READINGS}"
    elif last is not None and end - last > STALE_AFTER:
        reason = f"the last MRR reading is more than {STALE_AFTER.days} days before the report's end"
    if reason is not None:
        unknown = Missing(reason)
        return Forecast(currency, len(readings), tuple(unknown for _ in HORIZON_DAYS), unknown, last)
    first = readings[0].day
    days = [(reading.day - first).total_seconds() / SECONDS_PER_DAY for reading in readings]
    values = [reading.mrr for reading in readings]
    slope, intercept = statistics.linear_regression(days, values)
    from_end = (end - first).total_seconds() / SECONDS_PER_DAY
    # A falling line does not take MRR below nothing.
    ahead = tuple(Known(max(0.0, intercept + slope * (from_end + horizon))) for horizon in HORIZON_DAYS)
    return Forecast(currency, len(readings), ahead, _backtest_error(days, values), last)
