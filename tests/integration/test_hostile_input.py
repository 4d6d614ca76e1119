"""Issue 9: hostile requests against the webhook endpoint and the licensing API.

Whatever arrives, the answer is never a 5xx (no AWS failure is injected here), and nothing is
stored unless the request was validly signed (webhooks) or authorized (licensing); when it was,
only the items the request names may change. The state is compared by scanning both tables
before and after every example.

Varied: headers, signatures, encodings, sizes, the content of signed events (well-formed, or
with any one field replaced by any JSON value), and the licensing API's paths, bodies and callers.
A valid signature only says who sent the bytes, so validly signed bodies are fuzzed too, with what
no Stripe event holds: nesting up to 100,000 deep,
numbers of thousands of digits, 1e999, NaN and Infinity, encodings other than UTF-8, times and
amounts out of range (each refused as ``malformed_event``, by name, storing nothing), and ids that
could address the stack's own items (left ``unattributed``, counted as ``WebhookIdRefused``,
touching no item).
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from billwatch.billing.stripe_events import HANDLED_EVENT_TYPES
from billwatch.billing.velocity import KEY_PREFIX as VELOCITY_KEY_PREFIX
from billwatch.billing.webhook_marker import MARKER_KEY
from devtools import stripe_events as se
from devtools.signing import stripe_signature_header
from tests.scenarios import ADMIN_CALLER, ADMIN_ROLE, OUTSIDER
from tests.support import WEBHOOK_SECRET, EmittedMetric, LambdaContext, load_handler, parse_emf

MAX_BODY_BYTES = 256 * 1024  # the WEBHOOK_MAX_BODY_BYTES default, which these tests leave in place
# Examples share one moto account per test (the fixtures are function-scoped), which is harmless
# here: every example compares the state just before and just after itself.
FUZZ_CHEAP = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FUZZ_STATEFUL = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Each example signs and sends a body of 256 KiB or more; the sizes vary little past the limit.
FUZZ_HUGE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- observing state ----------------------------------------------------------------------------

Snapshot = dict[str, dict[str, Any]]


def snapshot(tables: dict[str, str]) -> Snapshot:
    """Every item of both tables, by table logical id and then by key."""
    client = boto3.client("dynamodb")
    state: Snapshot = {}
    for logical_id, key in (("BillingStateTable", "pk"), ("IdempotencyTable", "id")):
        items: dict[str, Any] = {}
        for page in client.get_paginator("scan").paginate(TableName=tables[logical_id], ConsistentRead=True):
            items.update({item[key]["S"]: item for item in page["Items"]})
        state[logical_id] = items
    return state


def changed_keys(before: Snapshot, after: Snapshot) -> dict[str, set[str]]:
    """Per table, the keys of items that appeared, went or differ."""
    return {
        table: {
            key
            for key in before[table].keys() | after[table].keys()
            if before[table].get(key) != after[table].get(key)
        }
        for table in before
    }


def nothing_changed(before: Snapshot, after: Snapshot) -> bool:
    return not any(changed_keys(before, after).values())


def invoke(handler: Any, request: dict[str, Any]) -> tuple[int, Any]:
    """The status and parsed body; an exception escaping the handler is API Gateway's 500."""
    try:
        result = handler.lambda_handler(request, LambdaContext())
    except Exception as escaped:  # reported as the 5xx it would be in production
        return 500, {"escaped": repr(escaped)}
    body = result.get("body")
    try:
        parsed = json.loads(body) if body else None
    except json.JSONDecodeError:
        parsed = body
    if hypothesis.currently_in_test_context():  # --hypothesis-show-statistics counts the answers
        hypothesis.event(f"status {result['statusCode']}")
    return result["statusCode"], parsed


def names_the_problem(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("error")) and bool(body.get("message"))


# --- webhook requests ---------------------------------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
SAMPLE_EVENT_TYPES = sorted(HANDLED_EVENT_TYPES)


@st.composite
def webhook_bodies(draw: st.DrawFn) -> bytes:
    """Raw bytes, JSON-ish text, a real-looking event, nothing, or a body near the size limit."""
    kind = draw(st.sampled_from(["bytes", "json", "event", "empty", "near_limit"]))
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "empty":
        return b""
    event = se.event(
        draw(st.sampled_from(SAMPLE_EVENT_TYPES)),
        se.subscription(id="sub_hostile", customer="cus_hostile", metadata={"account_id": "acct_hostile"}),
        id=f"evt_{uuid.uuid4().hex}",
        created=int(time.time()),
    )
    if kind == "event":
        return json.dumps(event).encode()
    # Padding inside the event keeps it JSON, so only the size can be what is wrong with it.
    size = draw(st.sampled_from([MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES]))
    event["data"]["object"]["metadata"]["padding"] = ""
    shell = len(json.dumps(event).encode())
    event["data"]["object"]["metadata"]["padding"] = "x" * max(0, size - shell)
    return json.dumps(event).encode()


SIGNATURE_FORGERIES = [
    "absent",
    "empty",
    "garbage",
    "garbage_fields",
    "wrong_secret",
    "other_body",
    "stale",
    "future",
    "signed_base64_text",
]


@st.composite
def forged_signature(draw: st.DrawFn, body: bytes, delivered_as_base64: bool) -> str | None:
    """A Stripe-Signature header that does not vouch for ``body`` as the handler decodes it."""
    kind = draw(st.sampled_from(SIGNATURE_FORGERIES))
    if kind == "absent":
        return None
    if kind == "empty":
        return ""
    if kind == "garbage":
        return draw(st.text(max_size=120))
    if kind == "garbage_fields":
        fields = st.sampled_from(["t", "v1", "v0", "", "T", "V1"])
        values = st.integers(-(2**63), 2**63).map(str) | st.text(alphabet="0123456789abcdef=", max_size=70)
        pairs = draw(st.lists(st.tuples(fields, values), max_size=5))
        return ",".join(f"{name}={value}" for name, value in pairs)
    if kind == "wrong_secret":
        secret = draw(st.text(min_size=1, max_size=40).filter(lambda s: s != WEBHOOK_SECRET))
        return stripe_signature_header(body, [secret, "whsec_attacker"][: draw(st.integers(1, 2))])
    if kind == "other_body":
        return stripe_signature_header(body + b" ", WEBHOOK_SECRET)
    # Well outside the 300 s tolerance, which applies both ways: a loaded machine may take seconds
    # between drawing the header and the handler's check (the boundary itself is tested exactly in
    # test_unsigned_junk.py).
    if kind == "stale":
        return stripe_signature_header(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 900)
    if kind == "future":
        return stripe_signature_header(body, WEBHOOK_SECRET, timestamp=int(time.time()) + 900)
    # The header is over what API Gateway passed (the base64 text), not over the bytes it encodes
    # (which only differ when there are any).
    if delivered_as_base64 and body:
        return stripe_signature_header(base64.b64encode(body), WEBHOOK_SECRET)
    return stripe_signature_header(body, WEBHOOK_SECRET, timestamp=0)


HEADER_NAMES = st.sampled_from(["stripe-signature", "Stripe-Signature", "STRIPE-SIGNATURE"])
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
) | st.text(max_size=30)
OTHER_HEADERS = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).filter(
        lambda name: name != "stripe-signature"
    ),
    st.text(max_size=40),
    max_size=4,
)
INVALID_BASE64 = st.sampled_from(["%%%not-base64%%%", "abc", "ab=c", "====", "eyJ9\n!", "e30"]) | st.text(
    alphabet="!@#$%^&*()<>?~`", min_size=1, max_size=30
)


def http_event(
    body: bytes, headers: dict[str, str], encoding: str, invalid_base64: str | None = None
) -> dict[str, Any]:
    """API Gateway's v2 event; non-UTF-8 bytes go base64-encoded, as API Gateway sends them."""
    if encoding == "text":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "base64"
    event = se.api_gateway_event(body, headers=headers, base64=encoding != "text")
    if encoding == "text":
        event["body"] = body.decode("utf-8")
    elif encoding == "invalid_base64":
        event["body"] = invalid_base64
    elif encoding == "missing_body":
        event.pop("body", None)
        event["isBase64Encoded"] = False
    return event


@pytest.fixture
def webhook_api(aws, monkeypatch) -> Any:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.delenv("WEBHOOK_MAX_BODY_BYTES", raising=False)
    return load_handler("webhook_intake")


@FUZZ_CHEAP
@given(
    data=st.data(),
    body=webhook_bodies(),
    encoding=st.sampled_from(["text", "base64", "invalid_base64", "missing_body"]),
    header_name=HEADER_NAMES,
    content_type=CONTENT_TYPES,
    other_headers=OTHER_HEADERS,
)
def test_a_webhook_without_a_valid_signature_gets_a_4xx_and_changes_nothing(
    webhook_api, aws, data, body, encoding, header_name, content_type, other_headers
) -> None:
    signature = data.draw(forged_signature(body, delivered_as_base64=encoding == "base64"), label="signature")
    headers = {**other_headers, "content-type": content_type}
    if signature is not None:
        headers[header_name] = signature
    event = http_event(body, headers, encoding, data.draw(INVALID_BASE64, label="invalid base64"))
    before = snapshot(aws)
    status, answer = invoke(webhook_api, event)
    assert 400 <= status < 500, answer
    assert names_the_problem(answer), answer
    assert nothing_changed(before, snapshot(aws)), changed_keys(before, snapshot(aws))


@FUZZ_HUGE
@given(
    size=st.integers(MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES),
    encoding=st.sampled_from(["text", "base64"]),
    header_name=HEADER_NAMES,
)
def test_a_validly_signed_body_over_the_limit_gets_413_and_changes_nothing(
    webhook_api, aws, size, encoding, header_name
) -> None:
    event_body = se.event(
        "customer.subscription.created",
        se.subscription(metadata={"account_id": "acct_big", "padding": ""}),
        id=f"evt_{uuid.uuid4().hex}",
        created=int(time.time()),
    )
    shell = len(json.dumps(event_body).encode())
    event_body["data"]["object"]["metadata"]["padding"] = "x" * max(0, size - shell)
    body = json.dumps(event_body).encode()
    event = http_event(body, {header_name: stripe_signature_header(body, WEBHOOK_SECRET)}, encoding)
    before = snapshot(aws)
    status, answer = invoke(webhook_api, event)
    assert status == 413 and names_the_problem(answer) and "limit" in answer["message"], answer
    assert nothing_changed(before, snapshot(aws))


# --- validly signed, well-formed, random events -------------------------------------------------

STRIPE_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=24)
FREE_TEXT = st.text(max_size=40)
EPOCHS = st.integers(0, 4_102_444_800)  # up to 2100
SUBSCRIPTION_STATUSES = (
    st.sampled_from(
        ["active", "trialing", "past_due", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused"]
    )
    | FREE_TEXT
)
LOOKUP_KEYS = st.none() | st.sampled_from(["pro_monthly", "pro_yearly", "free"]) | FREE_TEXT
METADATA = st.dictionaries(
    st.sampled_from(["account_id", "tier", "note"]) | st.text(max_size=10), FREE_TEXT | STRIPE_IDS, max_size=3
)


@st.composite
def stripe_objects(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    customer = "cus_" + draw(STRIPE_IDS)
    legacy = draw(st.booleans())
    if event_type.startswith("customer.subscription."):
        start = draw(EPOCHS)
        return se.subscription(
            id="sub_" + draw(STRIPE_IDS),
            customer=customer,
            status=draw(SUBSCRIPTION_STATUSES),
            lookup_key=draw(LOOKUP_KEYS),
            price_metadata=draw(METADATA),
            interval=draw(st.sampled_from(["month", "year", "week", "day"])),
            metadata=draw(METADATA),
            cancel_at_period_end=draw(st.booleans()),
            current_period_start=start,
            current_period_end=start + draw(st.integers(-86_400, 400 * 86_400)),
            trial_end=draw(st.none() | EPOCHS),
            legacy=legacy,
        )
    if event_type.startswith("invoice."):
        return se.invoice(
            customer=customer,
            subscription=draw(st.none() | STRIPE_IDS.map("sub_".__add__)),
            billing_reason=draw(
                st.sampled_from(
                    ["subscription_cycle", "subscription_create", "manual", "subscription_update"]
                )
                | FREE_TEXT
            ),
            status=draw(st.sampled_from(["paid", "open", "void", "uncollectible", "draft"])),
            amount_due=draw(st.integers(0, 10**9)),
            currency=draw(st.sampled_from(["usd", "eur", "jpy"]) | FREE_TEXT),
            subscription_metadata=draw(METADATA),
            legacy=legacy,
        )
    if event_type.startswith("checkout.session."):
        return se.checkout_session(
            customer=draw(st.none() | st.just(customer)),
            client_reference_id=draw(st.none() | FREE_TEXT),
            status=draw(st.sampled_from(["complete", "expired", "open"])),
            mode=draw(st.sampled_from(["subscription", "payment", "setup"])),
            subscription=draw(st.none() | STRIPE_IDS.map("sub_".__add__)),
            metadata=draw(METADATA),
            amount_total=draw(st.integers(0, 10**9)),
        )
    if event_type == "customer.deleted":
        return se.customer(id=customer, metadata=draw(METADATA))
    if event_type == "charge.refunded":
        return se.charge(
            customer=draw(st.none() | st.just(customer)),
            amount_refunded=draw(st.integers(0, 10**9)),
            currency=draw(st.sampled_from(["usd", "eur", "jpy"]) | FREE_TEXT),
            metadata=draw(METADATA),
        )
    if event_type == "payment_intent.payment_failed":
        return se.payment_intent(
            customer=customer,
            decline_code=draw(st.none() | st.sampled_from(["insufficient_funds", "lost_card"]) | FREE_TEXT),
            error_code=draw(st.none() | st.sampled_from(["card_declined", "expired_card"]) | FREE_TEXT),
        )
    if event_type == "charge.dispute.created":
        return se.dispute(reason=draw(st.sampled_from(["fraudulent", "general"]) | FREE_TEXT))
    if event_type == "radar.early_fraud_warning.created":
        return se.early_fraud_warning(fraud_type=draw(st.sampled_from(["misc"]) | FREE_TEXT))
    if event_type == "entitlements.active_entitlement_summary.updated":
        return se.entitlement_summary(
            customer=customer, lookup_keys=tuple(draw(st.lists(FREE_TEXT | STRIPE_IDS, max_size=4)))
        )
    return {"id": draw(STRIPE_IDS), "object": draw(FREE_TEXT), "metadata": draw(METADATA)}


def field_paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every value inside an object, nested objects' own values included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from field_paths(value, (*prefix, key))


def accounts_linked_to(names: set[str], before: Snapshot) -> set[str]:
    """Accounts that earlier examples linked to a customer the event names, either way round."""
    linked = set()
    for key, item in before["BillingStateTable"].items():
        if item.get("stripe_customer_id", {}).get("S") in names:
            linked.add(key)
        if key in names and "merged_into" in item:
            linked.add(item["merged_into"]["S"])
    return linked


def string_leaves(node: Any) -> set[str]:
    """Every string in the event, also as the intake normalises ids (surrounding whitespace off)."""
    if isinstance(node, str):
        return {node, node.strip()}
    if isinstance(node, dict):
        return set().union(*(string_leaves(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(string_leaves(value) for value in node))
    return set()


@FUZZ_STATEFUL
@given(
    data=st.data(),
    event_type=st.sampled_from(SAMPLE_EVENT_TYPES) | st.sampled_from(["charge.refunded", "payout.paid"]),
    created=st.integers(int(time.time()) - 400 * 86_400, int(time.time()) + 86_400),
    encoding=st.sampled_from(["text", "base64"]),
    header_name=HEADER_NAMES,
    content_type=CONTENT_TYPES,
    also_signed_with_an_old_secret=st.booleans(),
    mangled=st.booleans(),
)
def test_a_validly_signed_event_well_formed_or_mangled_gets_200_or_a_4xx_naming_the_problem(
    webhook_api,
    aws,
    data,
    event_type,
    created,
    encoding,
    header_name,
    content_type,
    also_signed_with_an_old_secret,
    mangled,
) -> None:
    stripe_event = se.event(
        event_type,
        data.draw(stripe_objects(event_type), label="object"),
        id=f"evt_{uuid.uuid4().hex}",
        created=created,
    )
    if mangled:  # any one field, at any depth, holds any JSON value: a type no reader expects
        path = data.draw(st.sampled_from(list(field_paths(stripe_event))), label="mangled field")
        holder = stripe_event
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = data.draw(JSON_VALUES, label="its value")
    body = json.dumps(stripe_event).encode()
    # During a secret roll Stripe sends one v1 per active secret; the one we hold must be enough.
    secrets = ["whsec_retired", WEBHOOK_SECRET] if also_signed_with_an_old_secret else WEBHOOK_SECRET
    headers = {header_name: stripe_signature_header(body, secrets), "content-type": content_type}
    before = snapshot(aws)
    status, answer = invoke(webhook_api, http_event(body, headers, encoding))
    assert status == 200 or (400 <= status < 500 and names_the_problem(answer)), (status, answer)
    changed = changed_keys(before, snapshot(aws))
    # Only the accounts and customers the event names (or that they are linked to), and the
    # intake's own arrival marker.
    named = string_leaves(stripe_event)
    intended = named | accounts_linked_to(named, before) | {MARKER_KEY}
    assert changed["BillingStateTable"] <= intended, changed
    # This event's own record, and a checkout's counts of its buyer (billing.velocity).
    velocity = {key for key in changed["IdempotencyTable"] if key.startswith(VELOCITY_KEY_PREFIX)}
    assert len(changed["IdempotencyTable"] - velocity) <= 1 and len(velocity) <= 2, changed
    if status != 200:
        assert changed["BillingStateTable"] <= {MARKER_KEY} and not changed["IdempotencyTable"], changed


# --- validly signed, but what no reader may take ------------------------------------------------
# A signature only says who sent the bytes. Whatever they hold beyond what a Stripe event can be
# (nesting no object has, numbers no field can hold, another encoding, times and amounts outside
# what Stripe can send, ids that would address the stack's own items) is refused by name, or left
# unattributed, and never stored.

# A failure is reported as drawn: shrinking would replay signed webhooks hundreds of times.
FUZZ_SIGNED = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
STRIPE_EPOCH = 1_293_840_000  # 2011-01-01T00:00:00Z: Stripe sent no event before
YEAR = 366 * 86_400


def signed_request(body: bytes, encoding: str = "text") -> dict[str, Any]:
    """API Gateway's event for a body signed with the endpoint's secret now."""
    return http_event(body, {"stripe-signature": stripe_signature_header(body, WEBHOOK_SECRET)}, encoding)


def invoke_capturing(handler: Any, request: dict[str, Any]) -> tuple[int, Any, list[EmittedMetric]]:
    """As ``invoke``, and every metric the invocation emitted."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status, answer = invoke(handler, request)
    return status, answer, parse_emf(printed.getvalue())


def stored_nothing(before: Snapshot, after: Snapshot) -> bool:
    """No item changed but the arrival marker, which says only that a signed request came in."""
    changed = changed_keys(before, after)
    marker = after["BillingStateTable"].get(MARKER_KEY, {})
    return (
        changed["BillingStateTable"] <= {MARKER_KEY}
        and set(marker) <= {"pk", "received_at"}
        and not changed["IdempotencyTable"]
    )


def refused_as_malformed(status: int, answer: Any) -> bool:
    return status == 400 and isinstance(answer, dict) and answer.get("error") == "malformed_event"


def live_subscription_event(
    event_type: str = "customer.subscription.updated", **fields: Any
) -> dict[str, Any]:
    subscription = se.subscription(
        id="sub_hostile", customer="cus_hostile", metadata={"account_id": "acct_hostile"}, **fields
    )
    return se.event(event_type, subscription, id=f"evt_{uuid.uuid4().hex}", created=int(time.time()) - 60)


# What opens and closes each kind of nesting (a mixed pair is two levels).
NESTINGS = {"list": (b"[", b"]"), "object": (b'{"a":', b"}"), "mixed": (b'[{"a":', b"}]")}


def nested(kind: str, depth: int) -> tuple[bytes, int]:
    """``depth`` levels of ``kind`` around 0, as many as fit under the body limit with an event
    around them (100,000 lists do); and the depth used."""
    opening, closing = NESTINGS[kind]
    levels = 2 if kind == "mixed" else 1
    fits = (MAX_BODY_BYTES - 8 * 1024) // ((len(opening) + len(closing)) // levels)
    depth = min(depth, fits)
    repeats = depth // levels
    return opening * repeats + b"0" + closing * repeats, repeats * levels


@FUZZ_SIGNED
@given(
    depth=st.sampled_from([200, 1_000, 5_000, 100_000]) | st.integers(200, 100_000),
    kind=st.sampled_from(list(NESTINGS)),
    inside_an_event=st.booleans(),
    encoding=st.sampled_from(["text", "base64"]),
)
def test_a_validly_signed_body_nested_deeper_than_any_event_gets_400_naming_the_nesting(
    webhook_api, aws, depth, kind, inside_an_event, encoding
) -> None:
    deep, depth = nested(kind, depth)
    if inside_an_event:
        event = live_subscription_event()
        event["data"]["object"]["metadata"]["note"] = "__DEEP__"
        body = json.dumps(event).encode().replace(b'"__DEEP__"', deep)
    else:
        body = deep
    assert depth >= 200 and len(body) <= MAX_BODY_BYTES
    before = snapshot(aws)
    status, answer = invoke(webhook_api, signed_request(body, encoding))
    assert refused_as_malformed(status, answer), (status, answer)
    assert "nest" in answer["message"].lower(), answer
    assert stored_nothing(before, snapshot(aws)), changed_keys(before, snapshot(aws))


HUGE_NUMBERS = (
    st.sampled_from(["1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity"])
    | st.integers(5_000, 20_000).map(lambda digits: "9" * digits)
    | st.integers(5_000, 20_000).map(lambda digits: "-1" + "0" * (digits - 1))
    | st.integers(5_000, 20_000).map(lambda digits: "0." + "1" * digits + "e99999")
)
# Where the number goes (the object holding it, and its key): fields the intake reads, and
# places it ignores.
NUMBER_PLACES = {
    "created": (lambda event: event, "created"),
    "current_period_start": (
        lambda event: event["data"]["object"]["items"]["data"][0],
        "current_period_start",
    ),
    "quantity": (lambda event: event["data"]["object"]["items"]["data"][0], "quantity"),
    "metadata.note": (lambda event: event["data"]["object"]["metadata"], "note"),
    "pending_webhooks": (lambda event: event, "pending_webhooks"),
    "an unknown field": (lambda event: event["data"], "unknown"),
    "inside a list": (lambda event: event["data"]["object"]["items"]["data"][0]["price"], "tiers"),
}


@FUZZ_SIGNED
@given(number=HUGE_NUMBERS, place=st.sampled_from(list(NUMBER_PLACES)))
def test_a_validly_signed_body_with_a_number_no_field_can_hold_gets_400_malformed_event(
    webhook_api, aws, number, place
) -> None:
    event = live_subscription_event()
    holder, key = NUMBER_PLACES[place]
    holder(event)[key] = ["__NUMBER__"] if place == "inside a list" else "__NUMBER__"
    body = json.dumps(event).encode().replace(b'"__NUMBER__"', number.encode())
    before = snapshot(aws)
    status, answer = invoke(webhook_api, signed_request(body))
    assert refused_as_malformed(status, answer), (status, answer)
    assert stored_nothing(before, snapshot(aws)), changed_keys(before, snapshot(aws))


def accented_event() -> dict[str, Any]:
    event = live_subscription_event()
    event["data"]["object"]["metadata"]["note"] = "Crème brûlée, 5 €"
    return event


ENCODINGS = {
    "latin-1": lambda: json.dumps(accented_event(), ensure_ascii=False).replace("€", "EUR").encode("latin-1"),
    "cp1252": lambda: json.dumps(accented_event(), ensure_ascii=False).encode("cp1252"),
    "utf-16": lambda: json.dumps(accented_event()).encode("utf-16"),
    "utf-16-le": lambda: json.dumps(accented_event()).encode("utf-16-le"),
    "utf-16-be": lambda: json.dumps(accented_event()).encode("utf-16-be"),
    "utf-32": lambda: json.dumps(accented_event()).encode("utf-32"),
    "lone surrogate": lambda: json.dumps(
        {**live_subscription_event(), "note": "\ud800 and \udfff"}, ensure_ascii=False
    ).encode("utf-8", "surrogatepass"),
    "utf-8 with a BOM": lambda: b"\xef\xbb\xbf" + json.dumps(accented_event()).encode(),
    "utf-16 BOM on utf-8": lambda: b"\xff\xfe" + json.dumps(accented_event()).encode(),
    "overlong utf-8": lambda: json.dumps(live_subscription_event()).encode().replace(b"{", b"\xc0\xbb", 1),
}


@pytest.mark.parametrize("delivered_as", ["text", "base64"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_validly_signed_body_that_is_not_utf8_gets_400_malformed_event(
    webhook_api, aws, encoding, delivered_as
) -> None:
    body = ENCODINGS[encoding]()
    before = snapshot(aws)
    status, answer = invoke(webhook_api, signed_request(body, delivered_as))
    assert status < 500, (status, answer)
    assert refused_as_malformed(status, answer), (status, answer)
    assert stored_nothing(before, snapshot(aws)), changed_keys(before, snapshot(aws))


NOW = int(time.time())
LATER = itertools.count(NOW)  # follow-ups: each later than the refused events and the one before
OUT_OF_RANGE_TIMES = st.sampled_from(
    [-1, -NOW, 0, 1, 1_000_000_000, STRIPE_EPOCH - 1, NOW + 6 * YEAR, NOW + 100 * YEAR, 10**13, 2**63, 2**64]
) | (st.integers(-(2**63), STRIPE_EPOCH - 1) | st.integers(NOW + 6 * YEAR, 2**64))
OUT_OF_RANGE_AMOUNTS = st.sampled_from([-1, -2000, 10**13, 2**63, 2**64]) | (
    st.integers(-(2**63), -1) | st.integers(10**13, 2**64)
)


def subscription_with(field: str, value: int, legacy: bool) -> dict[str, Any]:
    event = live_subscription_event(legacy=legacy)
    subscription = event["data"]["object"]
    if field == "trial_end":
        subscription.update(trial_end=value, trial_start=NOW - 86_400, status="trialing")
    elif legacy:
        subscription[field] = value
    else:
        subscription["items"]["data"][0][field] = value
    return event


def invoice_event(**fields: Any) -> dict[str, Any]:
    invoice = se.invoice(
        customer="cus_hostile",
        subscription="sub_hostile",
        subscription_metadata={"account_id": "acct_hostile"},
    )
    invoice.update(fields)
    return se.event("invoice.paid", invoice, id=f"evt_{uuid.uuid4().hex}", created=int(time.time()) - 30)


# field -> (the event carrying the value there, the field's name in the answer, the values)
OUT_OF_RANGE = {
    "event created": (
        lambda value, legacy: {**live_subscription_event(legacy=legacy), "created": value},
        "created",
        OUT_OF_RANGE_TIMES,
    ),
    "current_period_start": (
        lambda value, legacy: subscription_with("current_period_start", value, legacy),
        "current_period_start",
        OUT_OF_RANGE_TIMES,
    ),
    "current_period_end": (
        lambda value, legacy: subscription_with("current_period_end", value, legacy),
        "current_period_end",
        OUT_OF_RANGE_TIMES,
    ),
    "trial_end": (
        lambda value, legacy: subscription_with("trial_end", value, legacy),
        "trial_end",
        OUT_OF_RANGE_TIMES,
    ),
    "invoice created": (
        lambda value, legacy: invoice_event(created=value),
        "data.object.created",
        OUT_OF_RANGE_TIMES,
    ),
    "invoice amount_due": (
        lambda value, legacy: invoice_event(amount_due=value),
        "amount_due",
        OUT_OF_RANGE_AMOUNTS,
    ),
    "invoice amount_paid": (
        lambda value, legacy: invoice_event(amount_paid=value),
        "amount_paid",
        OUT_OF_RANGE_AMOUNTS,
    ),
}


def refused_by_name_and_forgotten(
    handler: Any, tables: dict[str, str], field: str, value: int, legacy: bool
) -> None:
    build, name, _ = OUT_OF_RANGE[field]
    before = snapshot(tables)
    status, answer = invoke(handler, signed_request(json.dumps(build(value, legacy)).encode()))
    assert refused_as_malformed(status, answer), (field, value, status, answer)
    assert name in answer["message"], answer
    assert stored_nothing(before, snapshot(tables)), changed_keys(before, snapshot(tables))
    # Nothing of it was kept to order later events by: the next real one of the account applies.
    valid = invoice_event() if field.startswith("invoice") else live_subscription_event()
    valid["created"] = next(LATER)
    status, answer = invoke(handler, signed_request(json.dumps(valid).encode()))
    assert (status, answer.get("outcome")) == (200, "applied"), (field, value, status, answer)


SPEC_TIMES = {
    "negative": -1,
    "zero": 0,
    "before 2011": STRIPE_EPOCH - 1,
    "6 years ahead": NOW + 6 * YEAR,
    "10**13": 10**13,
    "2**63": 2**63,
}
SPEC_AMOUNTS = {"negative": -1, "10**13": 10**13, "2**63": 2**63}


@pytest.mark.parametrize("field", list(OUT_OF_RANGE))
def test_a_signed_event_with_a_time_or_amount_out_of_range_is_refused_by_name_and_stores_nothing(
    webhook_api, aws, field
) -> None:
    values = SPEC_AMOUNTS if OUT_OF_RANGE[field][2] is OUT_OF_RANGE_AMOUNTS else SPEC_TIMES
    problems = []
    for label, value in values.items():  # one handler for all: each value is judged on its own
        try:
            refused_by_name_and_forgotten(webhook_api, aws, field, value, legacy=False)
        except AssertionError as problem:
            problems.append(f"{label}: {str(problem).splitlines()[0]}")
    assert not problems, "\n".join(problems)


@FUZZ_SIGNED
@given(data=st.data(), field=st.sampled_from(list(OUT_OF_RANGE)), legacy=st.booleans())
def test_any_time_or_amount_out_of_range_in_either_api_shape_is_refused_by_name(
    webhook_api, aws, data, field, legacy
) -> None:
    refused_by_name_and_forgotten(
        webhook_api, aws, field, data.draw(OUT_OF_RANGE[field][2], label="value"), legacy
    )


# Items of the stack's own, under the keys an id from outside must never reach.
INTERNAL_ITEMS = {
    "health#last-probe": {"status": {"S": "healthy"}, "checked_at": {"N": "1796137200"}},
    "health#reachability": {"stripe": {"S": "reachable"}},
    "job#quota-reset": {"cursor": {"S": '{"pk": "acct_1"}'}, "scanned": {"N": "7"}},
    "job#quota-reset#run-1#0": {"finished": {"BOOL": True}},
    "reconcile#last-run": {"finished_at": {"N": "1796137200"}},
    "usage#acct_seeded#key-1": {"quantity": {"N": "1"}},
    "cus_seeded": {"merged_into": {"S": "acct_seeded"}},
}
INTERNAL_KEYS = [*INTERNAL_ITEMS, MARKER_KEY]
ID_ALPHABET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
HOSTILE_SHAPES = st.sampled_from(
    [
        "acct#1",
        "#",
        "acct 1",
        "acct\t1",
        "acct\n1",
        "acct\r\n1",
        "acct\x00",
        "acct\x1b[2J",
        "acct\x7f1",
        "a" * 10_000,
        "",
        "   ",
        "\u0430cct_seeded",  # Cyrillic a
        "acct_seeded\u200b",  # zero-width space
        "\uff41\uff43\uff43\uff54_seeded",  # fullwidth letters
        "acct_seed\u0435d",  # Cyrillic e
        "acct_seeded\u202e",  # right-to-left override
        "acct/../seeded",
        "cus_seeded",  # a customer's provisional item, not an account
    ]
)
HOSTILE_IDS = (
    st.sampled_from(INTERNAL_KEYS)
    | HOSTILE_SHAPES
    | st.builds(lambda a, b: f"{a}#{b}", ID_ALPHABET, ID_ALPHABET)
    | st.builds(lambda a, c, b: f"{a}{c}{b}", ID_ALPHABET, st.characters(categories=["Cc"]), ID_ALPHABET)
)
HOSTILE_CUSTOMER_IDS = (
    st.sampled_from([key for key in INTERNAL_KEYS if "#" in key])
    | st.sampled_from(
        [
            "cus_#1",
            "cus_seeded#x",
            "cus_ 1",
            "cus_\x00",
            "cus_" + "a" * 9_996,
            "",
            "\u0441us_seeded",
            "cus_\uff11",
        ]
    )
    | st.builds(lambda a, b: f"cus_{a}#{b}", ID_ALPHABET, ID_ALPHABET)
)


def hostile_subscription(account_id: str = "acct_seeded", customer: str = "cus_seeded") -> dict[str, Any]:
    subscription = se.subscription(id="sub_seeded", customer=customer, metadata={"account_id": account_id})
    return se.event("customer.subscription.updated", subscription, id=f"evt_{uuid.uuid4().hex}", created=NOW)


def hostile_invoice(account_id: str = "acct_seeded", customer: str = "cus_seeded") -> dict[str, Any]:
    invoice = se.invoice(
        customer=customer, subscription="sub_seeded", subscription_metadata={"account_id": account_id}
    )
    return se.event("invoice.paid", invoice, id=f"evt_{uuid.uuid4().hex}", created=NOW)


def hostile_checkout(
    metadata: dict[str, str], reference: str | None, customer: str = "cus_seeded"
) -> dict[str, Any]:
    session = se.checkout_session(customer=customer, client_reference_id=reference, metadata=metadata)
    return se.event("checkout.session.completed", session, id=f"evt_{uuid.uuid4().hex}", created=NOW)


# where the id goes -> (the event with the id there, the field WebhookIdRefused must name, ids)
HOSTILE_PLACES = {
    "subscription metadata.account_id": (
        lambda v: hostile_subscription(account_id=v),
        "metadata.account_id",
        HOSTILE_IDS,
    ),
    "invoice metadata.account_id": (
        lambda v: hostile_invoice(account_id=v),
        "metadata.account_id",
        HOSTILE_IDS,
    ),
    "checkout metadata.account_id": (
        lambda v: hostile_checkout({"account_id": v}, None),
        "metadata.account_id",
        HOSTILE_IDS,
    ),
    "checkout client_reference_id": (lambda v: hostile_checkout({}, v), "client_reference_id", HOSTILE_IDS),
    "subscription customer": (lambda v: hostile_subscription(customer=v), "customer", HOSTILE_CUSTOMER_IDS),
    "invoice customer": (lambda v: hostile_invoice(customer=v), "customer", HOSTILE_CUSTOMER_IDS),
    "checkout customer": (
        lambda v: hostile_checkout({}, "acct_seeded", customer=v),
        "customer",
        HOSTILE_CUSTOMER_IDS,
    ),
}


@pytest.fixture
def seeded_billing_table(webhook_api, aws, monkeypatch) -> Any:
    """An account of a real customer, the stack's own items, and a frozen arrival marker."""
    names = boto3.client("dynamodb")
    for key, attributes in INTERNAL_ITEMS.items():
        names.put_item(TableName=aws["BillingStateTable"], Item={"pk": {"S": key}, **attributes})
    body = json.dumps(hostile_subscription() | {"created": NOW - 3600}).encode()
    status, answer = invoke(webhook_api, signed_request(body))
    assert (status, answer.get("outcome")) == (200, "applied"), answer
    # The marker is written once a minute; pinned so that no example happens to be its minute.
    monkeypatch.setattr(webhook_api.intake._arrivals, "_monotonic", lambda: 0.0)
    return webhook_api


@FUZZ_SIGNED
@given(data=st.data(), place=st.sampled_from(list(HOSTILE_PLACES)))
def test_a_validly_signed_event_with_a_hostile_id_is_left_unattributed_and_touches_no_item(
    seeded_billing_table, aws, data, place
) -> None:
    build, field, ids = HOSTILE_PLACES[place]
    hostile = data.draw(ids, label="id")
    before = snapshot(aws)
    status, answer, emitted = invoke_capturing(
        seeded_billing_table, signed_request(json.dumps(build(hostile)).encode())
    )
    assert (status, answer.get("outcome") if isinstance(answer, dict) else answer) == (200, "unattributed"), (
        place,
        hostile[:80],
        status,
        answer,
    )
    refused = [m.dimensions.get("Field", "") for m in emitted if m.name == "WebhookIdRefused"]
    assert any(name.endswith(field) for name in refused), (place, refused)
    after = snapshot(aws)
    assert after["BillingStateTable"] == before["BillingStateTable"], changed_keys(before, after)
    assert {key: after["BillingStateTable"][key] for key in INTERNAL_KEYS} == {
        key: before["BillingStateTable"][key] for key in INTERNAL_KEYS
    }


# --- the licensing API --------------------------------------------------------------------------

ACCOUNT_IDS = (
    st.from_regex(r"[A-Za-z0-9_.:@-]{1,128}", fullmatch=True)
    | st.sampled_from(["acct_1", "acct_2", "", "a" * 129, "acct/../../admin", "acct%2F1", "acct 1", "ácct"])
    | st.text(max_size=40)
)
FEATURES = st.sampled_from(["api_calls", "exports", "sso", "teleport", "", "x" * 65]) | st.text(max_size=20)
# Half valid, so that requests get past validation and reach the store often enough.
QUANTITIES = st.integers(1, 50) | (
    st.integers(-5, 0)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([1_000_000, 1_000_001, 0])
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.text(max_size=6)
    | st.none()
)
IDEMPOTENCY_KEYS = st.none() | st.text(max_size=20) | st.just("k" * 256) | st.integers()
TIERS = st.sampled_from(["FREE", "PRO", "ENTERPRISE", "pro", ""]) | st.none() | st.integers()


@st.composite
def licensing_bodies(draw: st.DrawFn) -> Any:
    """A request body close to what a route expects, random JSON, raw text, or none at all."""
    kind = draw(st.sampled_from(["usage", "grant", "tier", "json", "text", "none"]))
    fields: dict[str, Any]
    if kind == "usage":
        fields = {
            "feature": draw(FEATURES),
            "quantity": draw(QUANTITIES),
            "idempotency_key": draw(IDEMPOTENCY_KEYS),
        }
    elif kind == "grant":
        fields = {"feature": draw(FEATURES), "quantity": draw(QUANTITIES)}
    elif kind == "tier":
        fields = {"tier": draw(TIERS)}
    elif kind == "json":
        return draw(JSON_VALUES)
    elif kind == "text":
        return draw(st.text(max_size=80))
    else:
        return None
    # Drop some fields and now and then add strangers, so missing and unexpected fields both occur
    # while most bodies stay close enough to reach the store.
    kept = {name: value for name, value in fields.items() if draw(st.booleans()) or name == "feature"}
    strangers = st.dictionaries(st.text(max_size=8), JSON_LEAVES, min_size=1, max_size=2)
    return {**kept, **(draw(strangers) if draw(st.integers(0, 3)) == 0 else {})}


ROUTES = {
    "entitlements": ("GET", "/v1/accounts/{}/entitlements"),
    "usage-report": ("GET", "/v1/accounts/{}/usage-report"),
    "usage": ("POST", "/v1/accounts/{}/usage"),
    "tier-override": ("PUT", "/admin/accounts/{}/tier-override"),
    "grants": ("POST", "/admin/accounts/{}/grants"),
    "usage-reset": ("POST", "/admin/accounts/{}/usage-reset"),
}
METHOD_NAMES = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
METHODS = st.sampled_from(METHOD_NAMES)
CALLERS = {
    "no authorizer": None,
    "empty authorizer": {},
    "iam without caller": {"iam": {}},
    "empty caller": {"iam": {"userArn": ""}},
    "outsider": {"iam": {"userArn": OUTSIDER}},
    "admin role name in another account": {
        "iam": {"userArn": "arn:aws:sts::999999999999:assumed-role/billwatch-admin/ops"}
    },
    "admin look-alike role": {
        "iam": {"userArn": "arn:aws:sts::123456789012:assumed-role/billwatch-admin2/x"}
    },
    "jwt instead of iam": {"jwt": {"claims": {"sub": ADMIN_CALLER}}},
    "admin": {"iam": {"userArn": ADMIN_CALLER}},
}


@pytest.fixture
def licensing_api(aws, monkeypatch) -> Any:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("PLAN_CATALOG_PATH", raising=False)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    return load_handler("licensing_api")


def licensing_event(
    method: str, path: str, body: Any, content_type: str | None, as_base64: str, caller: dict | None
) -> dict[str, Any]:
    raw = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    event = se.api_gateway_event(raw, headers={}, path=path, method=method, base64=as_base64 == "valid")
    if content_type is None:
        event["headers"].pop("content-type")
    else:
        event["headers"]["content-type"] = content_type
    if body is None:
        event.pop("body")
    elif as_base64 == "invalid":
        event.update(body="%%%not-base64%%%", isBase64Encoded=True)
    if caller is not None:
        event["requestContext"]["authorizer"] = caller
    return event


def may_change(
    route: str | None, method: str, account_id: str, body: Any, caller: str
) -> dict[str, set[str]]:
    """What a request may store: nothing, unless it is authorized for a route that stores."""
    nothing: dict[str, set[str]] = {"BillingStateTable": set(), "IdempotencyTable": set()}
    if route is None or method != ROUTES[route][0]:
        return nothing
    if route in ("tier-override", "grants", "usage-reset"):
        return {**nothing, "BillingStateTable": {account_id}} if caller == "admin" else nothing
    if route == "usage" and caller in AUTHENTICATED_CALLERS:
        key = body.get("idempotency_key") if isinstance(body, dict) else None
        receipts = {f"usage#{account_id}#{key}"} if isinstance(key, str) else set()
        return {"BillingStateTable": {account_id}, "IdempotencyTable": receipts}
    return nothing


AUTHENTICATED_CALLERS = {
    name for name, caller in CALLERS.items() if caller and caller.get("iam", {}).get("userArn")
}
# Invocations that did not come through the AWS_IAM authorizer: the handler refuses them itself.
UNAUTHENTICATED_CALLERS = set(CALLERS) - AUTHENTICATED_CALLERS


@FUZZ_CHEAP
@given(
    data=st.data(),
    route=st.sampled_from([*ROUTES, None]),
    account_id=ACCOUNT_IDS,
    body=licensing_bodies(),
    content_type=st.sampled_from(
        ["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain", None]
    ),
    as_base64=st.sampled_from(["no", "no", "valid", "invalid"]),
    # The admin and an ordinary caller come up more often, so authorized writes are exercised too.
    caller=st.sampled_from(["admin"] * 4 + ["outsider"] * 4 + list(CALLERS)),
)
def test_the_licensing_api_never_fails_and_stores_only_what_an_authorized_caller_asked_for(
    licensing_api, aws, data, route, account_id, body, content_type, as_base64, caller
) -> None:
    if route is None:
        method, path = (
            data.draw(METHODS, label="method"),
            data.draw(
                st.sampled_from(
                    ["/", "/v1", "/admin", "/admin/", "/v1/accounts//usage", "/ADMIN/accounts/a/grants"]
                )
                | st.text(max_size=40).map("/".__add__),
                label="path",
            ),
        )
    else:
        # Mostly the route's own method, so that most requests are routed and not refused as 404s.
        method = data.draw(st.sampled_from([ROUTES[route][0]] * 8 + METHOD_NAMES), label="method")
        path = ROUTES[route][1].format(account_id)
    event = licensing_event(method, path, body, content_type, as_base64, CALLERS[caller])
    before = snapshot(aws)
    status, answer = invoke(licensing_api, event)
    assert status < 500, (status, answer)
    if status >= 400:
        # Powertools' own 404 carries only a message; a usage denial names its reason.
        assert isinstance(answer, dict) and (answer.get("message") or answer.get("reason")), (status, answer)
    changed = changed_keys(before, snapshot(aws))
    allowed = may_change(route, method, account_id, body, caller)
    assert all(changed[table] <= allowed[table] for table in changed), (status, answer, changed, allowed)
    if path.startswith("/admin/") and caller != "admin":
        assert status == 403, (status, answer)


@pytest.mark.parametrize("caller", sorted(UNAUTHENTICATED_CALLERS))
def test_usage_without_an_iam_caller_changes_nothing(licensing_api, aws, caller) -> None:
    event = licensing_event(
        "POST", "/v1/accounts/acct_1/usage", {"feature": "exports"}, "application/json", "no", CALLERS[caller]
    )
    before = snapshot(aws)
    status, answer = invoke(licensing_api, event)
    assert nothing_changed(before, snapshot(aws)), status
    assert (status, answer["error"]) == (403, "forbidden")


@pytest.mark.parametrize("route", ["usage", "tier-override", "grants"])
def test_a_body_marked_base64_that_is_not_gets_a_4xx(licensing_api, aws, route) -> None:
    method, path = ROUTES[route]
    event = licensing_event(
        method, path.format("acct_1"), {"feature": "exports"}, "application/json", "invalid", CALLERS["admin"]
    )
    before = snapshot(aws)
    status, answer = invoke(licensing_api, event)
    assert nothing_changed(before, snapshot(aws))
    assert 400 <= status < 500, (status, answer)
