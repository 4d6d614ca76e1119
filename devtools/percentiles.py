"""The one percentile rule of the local tools, bench and tests: nearest rank, as CloudWatch documents it.

``pNN`` of n sorted values is the value at rank ``ceil(NN / 100 * n)``, at least 1. moto's
CloudWatch (through :mod:`devtools.moto_patches`), the alarm evaluator, the local dashboards and
``make bench`` all read percentiles through :func:`nearest_rank`, so they agree to the datapoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from fractions import Fraction

__all__ = ["nearest_rank", "percentile_statistic"]

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


def percentile_statistic(name: object) -> Fraction | None:
    """The percent a CloudWatch statistic such as ``p99.9`` names (0..100), or None for any other name."""
    match = _PERCENTILE.fullmatch(str(name))
    if match is None:
        return None
    percent = Fraction(match.group(1))
    return percent if percent <= 100 else None


def nearest_rank(values: Iterable[float], percent: Fraction | int | str) -> float:
    """The ``percent`` percentile of ``values`` (not empty) by nearest rank.

    A Fraction (or a decimal string) keeps p99.9 exact: in floats 99.9 / 100 * 1000 is
    999.0000000000001, which would round up to rank 1000.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values to take a percentile of")
    rank = max(1, math.ceil(Fraction(percent) * len(ordered) / 100))
    return ordered[rank - 1]
