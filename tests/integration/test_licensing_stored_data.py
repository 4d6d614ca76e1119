"""Whatever is stored, licensing answers without a 5xx, and a retrying caller is counted once.

Each account is written straight to the table with one absurd value (a hand edit, a bug, a restore
gone wrong): periods ending in the year 318857, before 1970 or at 0, usage counted since a moment no
calendar can show. Every route must still answer, with an out-of-range moment as null, and the
counting routes must never fail after their write committed: the caller would retry and be counted
twice. The caller here retries every 5xx, as the SDKs do.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from devtools import stripe_events as se
from tests.support import LambdaContext, load_handler

ADMIN_ROLE = "arn:aws:iam::123456789012:role/BillingAdmin"
ADMIN = "arn:aws:sts::123456789012:assumed-role/BillingAdmin/alice"
ACCOUNT = "acct_stored"
NOW = int(time.time())  # the handler reads the real clock
DAY = 86400
YEAR_318857 = 10**13
BEFORE_YEAR_1 = -(10**13)
FAR_PAST_ANY_CALENDAR = 10**30
ATTEMPTS = 3
USED_BEFORE = 3
PERIOD_END = NOW + 20 * DAY


def iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def month_end(epoch: int) -> str:
    moment = time.gmtime(epoch)
    year, month = (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


# The absurd value stored, then what the subscription's current_period_end and the quota's
# resets_at render as: null where no calendar has the moment (a period end of 0 means none at all,
# and the calendar month applies).
STORED = {
    "period end in the year 318857": ({"current_period_end": YEAR_318857}, None, None),
    "period end far past any calendar": ({"current_period_end": FAR_PAST_ANY_CALENDAR}, None, None),
    "period end before year 1": ({"current_period_end": BEFORE_YEAR_1}, None, None),
    "period end before 1970": ({"current_period_end": -DAY}, "1969-12-31T00:00:00Z", "1969-12-31T00:00:00Z"),
    "period end at 0": ({"current_period_end": 0}, None, month_end(NOW)),
    "usage since the year 318857": ({"usage_since": YEAR_318857}, iso(PERIOD_END), iso(PERIOD_END)),
    "usage since before year 1": ({"usage_since": BEFORE_YEAR_1}, iso(PERIOD_END), iso(PERIOD_END)),
    "usage since far past any calendar": (
        {"usage_since": FAR_PAST_ANY_CALENDAR},
        iso(PERIOD_END),
        iso(PERIOD_END),
    ),
    "a free account's usage since before year 1": (
        {"tier": "FREE", "usage_since": BEFORE_YEAR_1},
        iso(PERIOD_END),
        month_end(NOW),
    ),
}
OUT_OF_RANGE = (YEAR_318857, FAR_PAST_ANY_CALENDAR, BEFORE_YEAR_1)


@dataclass(frozen=True)
class Stored:
    absurd: dict[str, Any]
    current_period_end: str | None
    resets_at: str | None

    @property
    def tier(self) -> str:
        return self.absurd.get("tier", "PRO")

    @property
    def still_counting(self) -> bool:
        """Whether the stored counters still count: usage since before the period starts a new one."""
        return self.absurd.get("usage_since", NOW) >= NOW - 10 * DAY


@pytest.fixture
def api(aws, monkeypatch, metrics) -> Any:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    return load_handler("licensing_api")


@pytest.fixture(params=STORED)
def stored(request, aws) -> Stored:
    absurd, current_period_end, resets_at = STORED[request.param]
    fields = {
        "tier": "PRO",
        "subscription_status": "active",
        "current_period_start": NOW - 10 * DAY,
        "current_period_end": PERIOD_END,
        "usage_since": NOW - 60,
        "used_exports": USED_BEFORE,
        **absurd,
    }
    item = {"pk": {"S": ACCOUNT}}
    for name, value in fields.items():
        item[name] = {"S": value} if isinstance(value, str) else {"N": str(value)}
    boto3.client("dynamodb").put_item(TableName=aws["BillingStateTable"], Item=item)
    return Stored(absurd, current_period_end, resets_at)


def stored_number(aws, attribute: str) -> int | None:
    item = boto3.client("dynamodb").get_item(
        TableName=aws["BillingStateTable"], Key={"pk": {"S": ACCOUNT}}, ConsistentRead=True
    )["Item"]
    return int(item[attribute]["N"]) if attribute in item else None


def retried(api: Any, method: str, path: str, body: dict | None = None) -> tuple[int, Any, int]:
    """The answer a caller that retries 5xx ends with, and how many 5xx it got on the way."""
    failures = 0
    for _ in range(ATTEMPTS):
        raw = json.dumps(body) if body is not None else b""
        event = se.api_gateway_event(
            raw, headers={"content-type": "application/json"}, path=path, method=method
        )
        if body is None:
            event.pop("body")
        event["requestContext"]["authorizer"] = {"iam": {"userArn": ADMIN}}
        try:
            result = api.lambda_handler(event, LambdaContext())
        except Exception as escaped:  # API Gateway's 500
            status, answer = 500, repr(escaped)
        else:
            status, answer = result["statusCode"], json.loads(result["body"])
        if status < 500:
            return status, answer, failures
        failures += 1
    return status, answer, failures


def test_entitlements_render_an_out_of_range_moment_as_null_and_log_it(api, stored, metrics) -> None:
    status, answer, failures = retried(api, "GET", f"/v1/accounts/{ACCOUNT}/entitlements")
    assert (status, failures) == (200, 0), answer
    assert answer["subscription"]["current_period_end"] == stored.current_period_end
    assert answer["features"]["exports"]["resets_at"] == stored.resets_at
    logged = [log for log in metrics.logs() if log["message"] == "A stored timestamp is out of range"]
    assert bool(logged) == (stored.absurd.get("current_period_end") in OUT_OF_RANGE)


@pytest.mark.parametrize("idempotency_key", [None, "job-7"])
def test_a_retrying_caller_is_counted_once(api, aws, stored, idempotency_key) -> None:
    request = {"feature": "exports", "quantity": 2}
    if idempotency_key:
        request["idempotency_key"] = idempotency_key
    status, answer, failures = retried(api, "POST", f"/v1/accounts/{ACCOUNT}/usage", request)
    expected = (USED_BEFORE if stored.still_counting else 0) + 2
    assert (status, failures, stored_number(aws, "used_exports")) == (200, 0, expected), answer
    assert answer["allowed"] is True and answer["used"] == expected
    assert answer["resets_at"] == stored.resets_at


def test_a_usage_check_of_an_on_off_feature_answers(api, stored) -> None:
    status, answer, failures = retried(api, "POST", f"/v1/accounts/{ACCOUNT}/usage", {"feature": "sso"})
    assert (status, failures) == (403 if stored.tier == "FREE" else 200, 0), answer


def test_a_retried_grant_is_granted_once(api, aws, stored) -> None:
    grant = {"feature": "exports", "quantity": 5}
    status, answer, failures = retried(api, "POST", f"/admin/accounts/{ACCOUNT}/grants", grant)
    assert (status, failures, stored_number(aws, "granted_exports")) == (200, 0, 5), answer
    assert answer["features"]["exports"]["limit"] == (10 if stored.tier == "FREE" else 1000) + 5
    assert answer["features"]["exports"]["resets_at"] == stored.resets_at


@pytest.mark.parametrize("tier", ["PRO", "FREE", None])
def test_a_tier_override_answers(api, stored, tier) -> None:
    status, answer, failures = retried(api, "PUT", f"/admin/accounts/{ACCOUNT}/tier-override", {"tier": tier})
    assert (status, failures, answer["tier"]) == (200, 0, tier or stored.tier), answer
    assert answer["subscription"]["current_period_end"] == stored.current_period_end


def test_a_usage_reset_answers(api, aws, stored) -> None:
    status, answer, failures = retried(api, "POST", f"/admin/accounts/{ACCOUNT}/usage-reset")
    assert (status, failures, stored_number(aws, "used_exports")) == (200, 0, None), answer
    assert answer["features"]["exports"]["used"] == 0
