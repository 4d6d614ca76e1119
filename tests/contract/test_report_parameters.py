"""The report's template parameters accept exactly what the function's configuration accepts: a value
CloudFormation takes and core/config.py refuses deploys cleanly and fails every cold start, so no
report ever goes out."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from billwatch.core.config import ConfigError, load_report_settings

# Template parameter -> the function's environment variable (the BillingReport function's Environment).
REPORT_PARAMETERS = {
    "RevenueDriftPercent": "REVENUE_DRIFT_PERCENT",
    "RevenueDriftMinimum": "REVENUE_DRIFT_MINIMUM",
}
# Spellings around the shapes: signs, exponents, spaces, too many digits, empty.
ODD_VALUES = (
    "",
    "-1",
    "-0",
    "+1",
    "1e2",
    "1.",
    ".5",
    " 1",
    "1 ",
    "abc",
    "1.234",
    "1,5",
    "٣",
    "1_0",
    "9" * 19,
)


def template_accepts(parameter: dict[str, Any], value: str) -> bool:
    """CloudFormation's checks of a parameter value: its type, pattern, bounds and length."""
    if parameter["Type"] == "Number":
        try:
            number = float(value)
        except ValueError:
            return False
        return parameter.get("MinValue", -float("inf")) <= number <= parameter.get("MaxValue", float("inf"))
    pattern = parameter.get("AllowedPattern")
    return (pattern is None or re.fullmatch(pattern, value) is not None) and len(value) <= parameter.get(
        "MaxLength", 4096
    )


def config_accepts(variable: str, value: str) -> bool:
    try:
        load_report_settings({"STAGE": "test", variable: value})
    except ConfigError:
        return False
    return True


def candidates(parameter: str) -> list[str]:
    """Every value of the config's own shape, and the boundaries and odd spellings around it."""
    if parameter == "RevenueDriftPercent":
        integers = [
            "".join(digits) for size in (1, 2, 3) for digits in itertools.product("0123456789", repeat=size)
        ]
        fractions = ["", *(f".{n}" for n in range(10)), *(f".{n:02}" for n in range(100))]
        return [whole + fraction for whole in integers for fraction in fractions] + list(ODD_VALUES)
    return [str(n) for n in range(0, 1001)] + ["0" * 18, "9" * 18, "2.5", "1.0", *ODD_VALUES]


@pytest.mark.parametrize("parameter", sorted(REPORT_PARAMETERS))
def test_the_template_takes_exactly_the_values_the_config_takes(
    template: dict[str, Any], parameter: str
) -> None:
    definition = template["Parameters"][parameter]
    variable = REPORT_PARAMETERS[parameter]
    assert template["Resources"]["BillingReportFunction"]["Properties"]["Environment"]["Variables"][
        variable
    ] == {"Ref": parameter}
    values = candidates(parameter)
    # The config reads an empty value as unset, strips spaces and reads "-0" as 0; the template
    # refusing those spellings costs nothing, so only the other way round must hold for them.
    lenient = {value for value in values if value != value.strip() or value.startswith("-0") or not value}
    template_only = [v for v in values if template_accepts(definition, v) and not config_accepts(variable, v)]
    config_only = [
        v
        for v in values
        if v not in lenient and config_accepts(variable, v) and not template_accepts(definition, v)
    ]
    assert template_only == [] and config_only == []
    assert template_accepts(definition, str(definition["Default"]))
    assert definition["ConstraintDescription"]


@pytest.mark.parametrize(
    ("parameter", "refused"),
    [("RevenueDriftPercent", ["0", "0.00", "150", "100.01"]), ("RevenueDriftMinimum", ["2.5", "-1"])],
)
def test_the_values_the_review_found_are_refused_by_the_template(
    template: dict[str, Any], parameter: str, refused: list[str]
) -> None:
    assert not any(template_accepts(template["Parameters"][parameter], value) for value in refused)
