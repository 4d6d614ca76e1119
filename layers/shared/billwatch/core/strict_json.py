"""JSON from outside the service, read so that no body can crash the reader.

Python's own reader raises RecursionError past ~1,000 levels, ValueError past 4,300 digits, and
accepts NaN, Infinity and 1e999 (which becomes inf). None of that may turn into a 500: each is
refused here as ``JsonRefused`` with a message that names the problem. Light on purpose: the
webhook intake's cold start imports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, NoReturn

# Stripe's deepest objects (an expanded invoice line's price tiers) sit about 10 levels down.
MAX_DEPTH = 64
# Far beyond any id, amount or timestamp; far below Python's 4,300-digit conversion limit.
MAX_INTEGER_DIGITS = 64


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonRefused(ValueError):
    """The body cannot be read as the JSON this service accepts; the message says why."""


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise JsonRefused(f"a number has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:32]} is out of range")
    return value


def _constant(name: str) -> NoReturn:
    raise JsonRefused(f"{name} is not a JSON number")


def _problem(document: object, max_depth: int, check_strings: bool) -> str | None:
    """What makes a parsed document unacceptable, walked without recursion; None when nothing."""
    pending: list[tuple[object, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if check_strings and not _encodable(value):
                return "a string holds a lone surrogate (\\ud800 to \\udfff), which is not text"
            continue
        if isinstance(value, dict):
            if check_strings and not all(_encodable(key) for key in value):
                return "a key holds a lone surrogate (\\ud800 to \\udfff), which is not text"
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return f"the body is nested more than {max_depth} levels deep"
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list | str))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def loads(body: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The document in ``body`` (UTF-8 bytes, or text already decoded)."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonRefused(f"the body is not UTF-8 text (byte {error.start})") from None
    try:
        document = json.loads(body, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise JsonRefused(f"the body is nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError as error:
        raise JsonRefused(f"the body is not valid JSON ({error.msg} at character {error.pos})") from None
    # An escape can spell half of a surrogate pair ("\\ud800"), which no store or log can encode;
    # bodies without such an escape (nearly all) skip the string check.
    problem = _problem(document, max_depth, check_strings=_SURROGATE_ESCAPE.search(body) is not None)
    if problem:
        raise JsonRefused(problem)
    return document
