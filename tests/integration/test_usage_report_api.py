"""GET /v1/accounts/{account_id}/usage-report through the LicensingApi handler, on moto's DynamoDB."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, UsagePeriodRecord
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.quota_reset import QuotaReset
from billwatch.licensing.service import Licensing
from billwatch.licensing.usage_history import UsageHistory
from billwatch.licensing.usage_report import UsageReport
from devtools import stripe_events as se
from tests.support import Clock, LambdaContext, load_handler

CATALOG = load_catalog_text(shipped_catalog_text(), "plans.json")
CALLER = "arn:aws:sts::123456789012:assumed-role/BillingService/reports"  # any IAM caller


def at(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


OCT_20, NOV_2, NOV_15, DEC_2 = at(2026, 10, 20), at(2026, 11, 2), at(2026, 11, 15), at(2026, 12, 2)


@pytest.fixture
def clock() -> Clock:
    return Clock(OCT_20)


@pytest.fixture
def api(aws, clock, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    module = load_handler("licensing_api")
    monkeypatch.setattr(module, "usage_reports", UsageReport(module.licensing, clock))
    return module


@pytest.fixture
def licensing(api, clock) -> Licensing:
    """Counts on the tables the handler bound, at the test's clock."""
    return Licensing(CATALOG, MetricsRecorder("Billwatch", "billwatch"), clock)


def report(api, account_id: str = "acct_1", **query: str) -> tuple[int, Any]:
    path = f"/v1/accounts/{account_id}/usage-report"
    event = se.api_gateway_event(b"", headers={}, path=path, method="GET")
    event.pop("body", None)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": CALLER}}  # what AWS_IAM passes on
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = urllib.parse.urlencode(query)
    result = api.lambda_handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"])


def test_closed_periods_and_the_open_one_per_feature(api, licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 500)
    licensing.use("acct_1", "exports", 9)
    licensing.grant("acct_1", "exports", 5)
    licensing.use("acct_1", "exports", 4)
    clock.now = NOV_2
    licensing.use("acct_1", "exports", 1)  # the first use in November keeps October
    clock.now = NOV_15
    status, body = report(api, **{"from": "2026-10-01", "to": "2026-11-30"})
    assert status == 200
    assert (body["account_id"], body["from"], body["to"]) == ("acct_1", "2026-10-01", "2026-11-30")
    october, november = body["periods"]
    assert october == {
        "start": "2026-10-20T00:00:00Z",
        "end": "2026-11-01T00:00:00Z",
        "open": False,
        "closed_by": "usage",
        "tier": "FREE",
        "tier_override": None,
        "features": {
            "api_calls": {"used": 500, "limit": 1000, "granted": 0, "percentage": 50.0, "overage": 0},
            "exports": {"used": 13, "limit": 15, "granted": 5, "percentage": 86.7, "overage": 0},
        },
    }
    assert (november["start"], november["end"], november["open"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
        True,
    )
    assert november["features"]["exports"] == {
        "used": 1,
        "limit": 10,
        "granted": 0,
        "percentage": 10.0,
        "overage": 0,
    }
    # A range that ends before November leaves the open period out; one in September finds nothing.
    assert [p["open"] for p in report(api, **{"from": "2026-10-01", "to": "2026-10-31"})[1]["periods"]] == [
        False
    ]
    assert report(api, **{"from": "2026-09-01", "to": "2026-09-30"})[1]["periods"] == []


def test_a_lowered_tier_shows_its_overage_and_the_sweep_keeps_it(api, licensing, clock) -> None:
    BillingAccount("acct_1", tier="PRO").save()
    licensing.use("acct_1", "exports", 50)
    BillingAccount("acct_1").update(actions=[BillingAccount.tier_override.set("FREE")])
    [now_open] = report(api, **{"from": "2026-10-01", "to": "2026-10-31"})[1]["periods"]
    assert now_open["open"] and now_open["tier_override"] == "FREE"
    assert now_open["features"]["exports"] == {
        "used": 50,
        "limit": 10,
        "granted": 0,
        "percentage": 500.0,
        "overage": 40,
    }
    clock.now = DEC_2
    # Ended, and not closed yet: the item's counters show as a period no write has closed.
    ended, december = report(api, **{"from": "2026-10-01", "to": "2026-12-31"})[1]["periods"]
    assert (ended["open"], ended["closed_by"], ended["features"]["exports"]["overage"]) == (False, None, 40)
    assert december["open"] and december["features"]["exports"]["used"] == 0
    job = QuotaReset(licensing, MetricsRecorder("Billwatch", "billwatch"), clock)
    assert job.run_segment("2026-12-02T00", 0, 1).reset == 1
    kept, december = report(api, **{"from": "2026-10-01", "to": "2026-12-31"})[1]["periods"]
    assert {**kept, "closed_by": None} == ended and kept["closed_by"] == "quota_reset"
    # November had no usage period of its own: the account was idle, its counters October's.
    assert (kept["start"], kept["end"]) == ("2026-10-20T00:00:00Z", "2026-11-01T00:00:00Z")


def test_an_admin_reset_ends_a_period_where_it_happened(api, licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 7)
    clock.now = OCT_20 + 3600
    licensing.reset_usage("acct_1")
    licensing.use("acct_1", "api_calls", 2)
    kept, current = report(api, **{"from": "2026-10-01", "to": "2026-10-31"})[1]["periods"]
    assert (kept["closed_by"], kept["end"], kept["features"]["api_calls"]["used"]) == (
        "admin_reset",
        "2026-10-20T01:00:00Z",
        7,
    )
    assert (current["start"], current["features"]["api_calls"]["used"]) == ("2026-10-20T01:00:00Z", 2)


def test_an_admin_reset_after_the_period_ended_keeps_the_period_to_its_end(api, licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 500)
    clock.now = at(2026, 11, 5)
    licensing.reset_usage("acct_1")
    clock.now = at(2026, 11, 6)
    kept, current = report(api, **{"from": "2026-10-01", "to": "2026-11-30"})[1]["periods"]
    assert (kept["start"], kept["end"], kept["closed_by"], kept["features"]["api_calls"]["used"]) == (
        "2026-10-20T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "admin_reset",
        500,
    )
    # The counters count from the reset, as after a reset within a running period.
    assert (current["start"], current["end"], current["open"]) == (
        "2026-11-05T00:00:00Z",
        "2026-12-01T00:00:00Z",
        True,
    )


def test_a_period_closed_between_the_reports_two_reads_is_listed_once(
    api, licensing, clock, monkeypatch
) -> None:
    licensing.use("acct_1", "api_calls", 500)
    clock.now = NOV_2  # October's counters are on the item, not yet kept
    query = api.licensing.history.periods

    def closed_first(*args: Any, **kwargs: Any) -> Any:
        licensing.use("acct_1", "api_calls", 1)  # keeps October, after the report read the account
        return query(*args, **kwargs)

    monkeypatch.setattr(api.licensing.history, "periods", closed_first)
    periods = report(api, **{"from": "2026-10-01", "to": "2026-11-30"})[1]["periods"]
    assert [(p["start"], p["open"], p["closed_by"]) for p in periods] == [
        ("2026-10-20T00:00:00Z", False, "usage"),
        ("2026-11-01T00:00:00Z", True, None),
    ]
    assert periods[0]["features"]["api_calls"]["used"] == 500


def test_an_account_with_no_usage_answers_an_empty_list(api) -> None:
    BillingAccount("acct_1", tier="PRO", subscription_status="active").save()
    assert report(api) == (
        200,
        {"account_id": "acct_1", "from": "2025-10-01", "to": "2026-10-20", "periods": []},
    )


def test_an_unknown_account_is_not_found(api) -> None:
    status, body = report(api, "acct_nobody")
    assert status == 404 and body["error"] == "account_not_found" and "acct_nobody" in body["message"]


def test_periods_past_their_retention_are_left_out(api, licensing, clock) -> None:
    licensing.use("acct_1", "api_calls", 3)
    clock.now = reset_at = OCT_20 + 60
    licensing.reset_usage("acct_1")
    [record] = UsagePeriodRecord.query("acct_1")
    assert record.expiration == reset_at + 400 * 86400  # the default UsageHistoryRetentionDays
    clock.now = reset_at + 400 * 86400 + 1  # expired; DynamoDB's TTL may take days to delete it
    assert report(api, **{"from": "2026-10-01", "to": "2026-10-31"})[1]["periods"] == []
    shorter = UsageHistory(31).record("acct_2", UsageHistory.periods("acct_1", 0, 2**40, OCT_20)[0])
    assert shorter.expiration == reset_at + 31 * 86400


@pytest.mark.parametrize(
    ("account_id", "query", "names"),
    [
        ("acct_1", {"from": "2026-13-01"}, "from"),
        ("acct_1", {"from": "2026-02-30"}, "from"),
        ("acct_1", {"to": "yesterday"}, "to"),
        ("acct_1", {"to": "2026-11-01T00:00:00Z"}, "to"),
        ("acct_1", {"from": ""}, "from"),
        ("acct_1", {"from": "0000-01-01"}, "from"),
        ("acct_1", {"to": "9999-12-31"}, "to"),
        ("acct_1", {"from": "2026-11-02", "to": "2026-11-01"}, "must not be after to"),
        ("acct_1", {"from": "2024-01-01", "to": "2026-01-01"}, "at most 731 days"),
        ("acct_1", {"limit": "5"}, "limit"),
        ("cus_123", {}, "account_id"),
        ("acct 1", {}, "account_id"),
        ("a" * 129, {}, "account_id"),
    ],
)
def test_bad_input_is_refused_naming_it_and_reads_nothing(api, aws_calls, account_id, query, names) -> None:
    calls_before = len(aws_calls)
    status, body = report(api, account_id, **query)
    assert status == 400 and body["error"] == "invalid_request" and names in body["message"]
    assert aws_calls[calls_before:] == []


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.dictionaries(
        st.sampled_from(["from", "to", "From", "limit", "", "to[]"]),
        st.text(max_size=24)
        | st.dates().map(str)
        | st.sampled_from(["2026-02-29", "1969-12-31", "9998-12-31"]),
        max_size=3,
    )
)
def test_any_query_string_is_answered_never_with_a_5xx(api, licensing, query) -> None:
    licensing.use("acct_1", "api_calls", 1)
    status, body = report(api, **query)
    assert status in (200, 400), body
    assert isinstance(body["periods"], list) if status == 200 else body["message"].split(":")[0] in query
