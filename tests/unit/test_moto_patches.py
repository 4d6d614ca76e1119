"""The moto patches refuse a moto they were not written for, and the percentile rule is nearest rank."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import moto
import pytest
from moto import backends
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.parsing.ast_nodes import Node
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.parsing.tokens import ExpressionTokenizer

from devtools import moto_patches
from devtools.percentiles import nearest_rank, percentile_statistic
from tests.support import ROOT


def test_the_patches_are_written_for_the_pinned_moto() -> None:
    pin = re.search(r"^moto==(\S+)$", (ROOT / "requirements" / "constraints.txt").read_text(), re.M)
    assert pin is not None and pin.group(1) == moto_patches.WRITTEN_FOR == moto.__version__


@pytest.mark.parametrize(
    "install",
    [
        moto_patches.install_percentiles,
        moto_patches.install_alarm_history,
        lambda: moto_patches.install_alarm_clock(lambda: 0.0),
        moto_patches.install_parse_once,
    ],
)
def test_every_patch_refuses_another_moto_version_and_names_it(monkeypatch, install) -> None:
    monkeypatch.setattr(moto, "__version__", "9.9.9")
    with pytest.raises(moto_patches.MotoVersionError, match=r"written for moto 5\.2\.5.*moto 9\.9\.9"):
        install()


def _shape(node: Node) -> tuple:
    return (type(node).__name__, [_shape(c) if isinstance(c, Node) else c for c in node.children or []])


def test_parsing_once_answers_as_moto_does_until_undone() -> None:
    expression = "SET #a = :a, #n = if_not_exists(#n, :zero) + :one REMOVE #gone"
    # What moto's own make() does, spelled out: conftest has the patch installed for the session.
    unpatched = _shape(UpdateExpressionParser(ExpressionTokenizer.make_list(expression)).parse())
    package = Path(moto.__file__).parent
    services = sorted(p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith("__"))
    before = UpdateExpressionParser.__dict__["make"], backends.list_of_moto_modules

    undo = moto_patches.install_parse_once()
    try:
        first, again = UpdateExpressionParser.make(expression), UpdateExpressionParser.make(expression)
        assert first is again and _shape(first) == unpatched  # parsed once, to the same tree
        for _ in range(2):  # a malformed expression is refused every time, not remembered as a tree
            with pytest.raises(MockValidationException):
                UpdateExpressionParser.make("SET #a = ")
        assert sorted(backends.list_of_moto_modules()) == services and "dynamodb" in services
    finally:
        undo()
    assert (UpdateExpressionParser.__dict__["make"], backends.list_of_moto_modules) == before


def test_nearest_rank_is_cloudwatchs_rule() -> None:
    values = [float(n) for n in range(1, 1001)]
    assert nearest_rank(values, 50) == 500.0
    assert nearest_rank(values, "99.9") == 999.0  # exact: no float rounding up to rank 1000
    assert nearest_rank(values, 0) == 1.0  # rank at least 1
    assert nearest_rank([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile_statistic("p99.9") == Fraction("99.9")
    assert percentile_statistic("p101") is None
    assert percentile_statistic("Sum") is None
    with pytest.raises(ValueError):
        nearest_rank([], 50)
