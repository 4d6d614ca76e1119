"""The fields of a JSON request body, checked strictly, with the problems worded as pydantic words them.

For the HTTP routes whose cold start matters (the licensing API's usage check): pydantic and
Powertools' event handler, which validate the other IAM routes, cost more to import than boto3.
Strict means what pydantic's strict mode means: no coercion, so "2" is not a number, 2.0 and
true are not integers, and 5 is not a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = object()  # a field's default when it has none
MISSING: Any = object()  # a body that is not there (or is JSON null)
Problem = tuple[tuple[str, ...], str]  # where (a pydantic location), what is wrong


@dataclass(frozen=True)
class Text:
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    nullable: bool = False
    default: Any = REQUIRED

    def problem(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str):
            return "Input should be a valid string"
        if len(value) < self.min_length:
            return f"String should have at least {_characters(self.min_length)}"
        if self.max_length is not None and len(value) > self.max_length:
            return f"String should have at most {_characters(self.max_length)}"
        if self.pattern is not None and re.search(self.pattern, value) is None:
            return f"String should match pattern '{self.pattern}'"
        return None


@dataclass(frozen=True)
class Integer:
    minimum: int
    maximum: int
    default: Any = REQUIRED

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return "Input should be a valid integer"
        if value < self.minimum:
            return f"Input should be greater than or equal to {self.minimum}"
        if value > self.maximum:
            return f"Input should be less than or equal to {self.maximum}"
        return None


Field = Text | Integer


def read_fields(
    fields: Mapping[str, Field], given: Any, where: str = "body"
) -> tuple[dict[str, Any], list[Problem]]:
    """The fields' values (defaults filled in) and every problem: each declared field in order,
    then each field that is not declared."""
    if given is MISSING:
        return {}, [((where,), "Field required")]
    if not isinstance(given, dict):
        return {}, [((where,), "Input should be a valid dictionary or object to extract fields from")]
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, field in fields.items():
        if name not in given:
            if field.default is REQUIRED:
                problems.append(((where, name), "Field required"))
            values[name] = field.default
            continue
        problem = field.problem(given[name])
        if problem:
            problems.append(((where, name), problem))
        values[name] = given[name]
    problems += [((where, name), "Extra inputs are not permitted") for name in given if name not in fields]
    return values, problems


def _characters(count: int) -> str:
    return f"{count} character" if count == 1 else f"{count} characters"


def unknown_parameter(parameters: Mapping[str, str], accepted: Sequence[str]) -> str | None:
    """The problem with a query string that carries a parameter the route does not take, named; None
    when it carries only ``accepted`` ones. A GET route refuses what it would otherwise ignore."""
    unknown = sorted(set(parameters) - set(accepted))
    if not unknown:
        return None
    return f"{unknown[0]}: not a parameter of this route (it takes {', '.join(accepted)})"
