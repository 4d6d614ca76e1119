"""strict_json: every body is either read as JSON or refused with a message, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billwatch.core.strict_json import MAX_DEPTH, MAX_INTEGER_DIGITS, JsonRefused, loads


def nested(depth: int, opening: str = "[", closing: str = "]") -> str:
    return opening * depth + closing * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "null" + "}" * depth


@pytest.mark.parametrize(
    "text",
    [
        '{"feature": "exports", "quantity": 3, "idempotency_key": null}',
        '[1, -2, 3.5, true, false, null, "\\u00e9t\\u00e9"]',
        "1" * MAX_INTEGER_DIGITS,
        "-" + "9" * MAX_INTEGER_DIGITS,
        "1.7976931348623157e308",
        "0.0000001",
        '"plain text"',
        nested(MAX_DEPTH),
        nested_objects(MAX_DEPTH),
    ],
)
def test_what_the_standard_reader_reads_is_read_the_same(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode("utf-8")) == json.loads(text)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"quantity": ' + "1" + "0" * 5000 + "}", f"more than {MAX_INTEGER_DIGITS} digits"),
        ("1" * (MAX_INTEGER_DIGITS + 1), f"more than {MAX_INTEGER_DIGITS} digits"),
        ("-" + "1" * (MAX_INTEGER_DIGITS + 1), f"more than {MAX_INTEGER_DIGITS} digits"),
        ('{"quantity": 1e999}', "out of range"),
        ("-1e999", "out of range"),
        ('{"quantity": NaN}', "NaN is not a JSON number"),
        ("[Infinity]", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        (nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
        (nested_objects(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
        (nested(100_000), f"nested more than {MAX_DEPTH} levels"),
        (nested(100_000, "[", ""), f"nested more than {MAX_DEPTH} levels"),  # and never closed
        (nested_objects(100_000), f"nested more than {MAX_DEPTH} levels"),
        (b'{"feature": "\xff\xfe"}', "not UTF-8 text (byte 13)"),
        ('{"feature": "\ud800"}'.encode("utf-8", "surrogatepass"), "not UTF-8 text (byte 13)"),
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at character 1)"),
        ("", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON (Extra data at character 9)"),
    ],
)
def test_a_pathological_body_is_refused_naming_the_problem(body: str | bytes, named: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads(body)
    assert named in str(refused.value)
    assert isinstance(refused.value, ValueError)  # callers that catch ValueError keep working


def test_the_depth_limit_can_be_lowered() -> None:
    assert loads(nested(3), max_depth=3) == [[[]]]
    with pytest.raises(JsonRefused, match="nested more than 2 levels"):
        loads(nested(3), max_depth=2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_refused_or_read_as_the_standard_reader_reads_them(body: bytes) -> None:
    try:
        document = loads(body)
    except JsonRefused:
        return
    assert document == json.loads(body.decode("utf-8"))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**63), 10**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_any_document_a_service_would_send_round_trips(document) -> None:
    assert loads(json.dumps(document)) == document


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "\\ud800"}',
        b'{"a": ["x", "\\udfff"]}',
        b'{"\\udc00": 1}',
        b'"\\uD83D"',
        b'{"a": "\\ude00\\ud83d"}',
    ],
)
def test_an_escaped_lone_surrogate_is_refused(body: bytes) -> None:
    with pytest.raises(JsonRefused, match="lone surrogate"):
        loads(body)


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    assert loads(b'{"emoji": "\\ud83d\\ude00", "key\\ud83d\\ude00": 1}') == {"emoji": "😀", "key😀": 1}
