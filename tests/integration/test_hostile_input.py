"""Issue 9: hostile requests against the webhook endpoint and the licensing API.

Whatever arrives, the answer is never a 5xx (no AWS failure is injected here), and nothing is
stored unless the request was validly signed (webhooks) or authorized (licensing); when it was,
only the items the request names may change. The state is compared by scanning both tables
before and after every example.

The intake's mangled-event fuzz test (test_webhook_intake.py) already varies the content of
signed events; this file varies what it does not: headers, signatures, encodings, sizes, and the
licensing API's paths, bodies and callers.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import boto3
import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billwatch.stripe_events import HANDLED_EVENT_TYPES
from billwatch.webhook_marker import MARKER_KEY
from devtools import stripe_events as se
from devtools.signing import stripe_signature_header
from tests.scenarios import ADMIN_CALLER, ADMIN_ROLE, OUTSIDER
from tests.support import WEBHOOK_SECRET, LambdaContext, load_handler

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
    if kind == "stale":
        return stripe_signature_header(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
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
    assert status == 413 and names_the_problem(answer), answer
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
    if event_type == "entitlements.active_entitlement_summary.updated":
        return se.entitlement_summary(
            customer=customer, lookup_keys=tuple(draw(st.lists(FREE_TEXT | STRIPE_IDS, max_size=4)))
        )
    return {"id": draw(STRIPE_IDS), "object": draw(FREE_TEXT), "metadata": draw(METADATA)}


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
)
def test_a_validly_signed_well_formed_event_gets_200_or_a_4xx_naming_the_problem(
    webhook_api,
    aws,
    data,
    event_type,
    created,
    encoding,
    header_name,
    content_type,
    also_signed_with_an_old_secret,
) -> None:
    stripe_event = se.event(
        event_type,
        data.draw(stripe_objects(event_type), label="object"),
        id=f"evt_{uuid.uuid4().hex}",
        created=created,
    )
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
    assert len(changed["IdempotencyTable"]) <= 1, changed  # this event's own record
    if status != 200:
        assert changed["BillingStateTable"] <= {MARKER_KEY} and not changed["IdempotencyTable"], changed


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
