"""The audit trail of admin actions (issue 18.5): every action the licensing API and the alert
dispatcher take by hand leaves exactly one record, with its change or not at all; refused callers
are recorded too; records are never rewritten; GET /admin/audit reads them back."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from pynamodb.exceptions import PutError

from billwatch.core.audit import AuditTrail, Target
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.self_invoke import SelfInvoker
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.service import Licensing
from devtools.template import DASHBOARD_TYPE, QUERY_DEFINITION_TYPE, resolved_properties
from tests.alert_events import dispatcher_environment, sns_event, usage_event
from tests.alert_receivers import alert_receivers
from tests.scenarios import ADMIN_CALLER, ADMIN_ROLE, OUTSIDER, iam_api_event, throughput_exceeded
from tests.support import Clock, LambdaContext, load_handler

T0 = 1_796_137_200  # Tuesday 2026-12-01 15:00 UTC


@pytest.fixture
def licensing_api(aws, monkeypatch) -> Any:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    return load_handler("licensing_api")


@pytest.fixture
def dispatch(aws, monkeypatch, tmp_path, metrics) -> Any:
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        module = load_handler("alert_dispatch")
        module.dispatcher.clock = Clock(T0)
        yield module


def call(
    handler: Any, method: str, path: str, body: Any = None, caller: str = ADMIN_CALLER, **query: str
) -> tuple[int, Any]:
    event = iam_api_event(method, path, body, caller)
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = urllib.parse.urlencode(query)
    result = handler.lambda_handler(event, LambdaContext())
    answer = json.loads(result["body"]) if result.get("body") else None
    return result["statusCode"], (answer, event["requestContext"]["requestId"])


def records(aws: dict[str, str]) -> list[dict[str, Any]]:
    """Every record in the table, oldest first, as GET /admin/audit shows them."""
    items = boto3.client("dynamodb").scan(TableName=aws["AuditTable"])["Items"]
    plain = [{name: next(iter(value.values())) for name, value in item.items()} for item in items]
    return sorted(plain, key=lambda item: item["sk"])


def only_record(aws: dict[str, str]) -> dict[str, Any]:
    (record,) = records(aws)
    return {
        **record,
        "before": json.loads(record["before"]) if "before" in record else None,
        "after": json.loads(record["after"]) if "after" in record else None,
    }


def audit_failing(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """Every request that writes the audit table is throttled, as an outage of it would be."""
    original = BaseClient._make_api_call

    def failing(client: BaseClient, operation: str, params: dict) -> Any:
        if table in json.dumps(params, default=str) and operation in ("PutItem", "TransactWriteItems"):
            raise throughput_exceeded(operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", failing)


# ------------------------------------------------------------------ licensing


@pytest.mark.parametrize(
    ("method", "path", "body", "action", "before", "after"),
    [
        (
            "PUT",
            "tier-override",
            {"tier": "PRO"},
            "tier_override",
            {"tier": "FREE", "tier_override": None},
            {"tier": "PRO", "tier_override": "PRO"},
        ),
        (
            "POST",
            "grants",
            {"feature": "exports", "quantity": 5},
            "grant",
            {"feature": "exports", "granted": 0},
            {"feature": "exports", "granted": 5},
        ),
        ("POST", "usage-reset", None, "usage_reset", {"used": {"exports": 3}}, {"used": {}}),
    ],
    ids=["tier override", "grant", "usage reset"],
)
def test_each_account_action_leaves_one_record_with_before_after_and_request_id(
    licensing_api, aws, metrics, method, path, body, action, before, after
) -> None:
    usage = {"feature": "exports", "quantity": 3}
    assert call(licensing_api, "POST", "/v1/accounts/acct_1/usage", usage)[0] == 200
    status, (_, request_id) = call(licensing_api, method, f"/admin/accounts/acct_1/{path}", body)
    assert status == 200
    record = only_record(aws)
    assert (record["pk"], record["action"], record["outcome"]) == ("account#acct_1", action, "recorded")
    assert (record["caller"], record["target_kind"], record["target"]) == (ADMIN_CALLER, "account", "acct_1")
    assert record["api_request_id"] == request_id and record["lambda_request_id"]
    assert before.items() <= record["before"].items() and after.items() <= record["after"].items()
    assert metrics.total("AdminAction", Action=action, Outcome="recorded") == 1
    (logged,) = [log for log in metrics.logs() if log["message"] == "Admin action"]
    assert logged["audit"]["action"] == action and logged["audit"]["request_id"] == request_id
    assert logged["audit"]["on_behalf_of"] is None  # only an operator's CLI note (--by) fills it


def test_a_grant_that_starts_a_new_period_is_recorded_with_the_period_it_closes(
    aws, monkeypatch, metrics
) -> None:
    clock, recorder = Clock(T0), MetricsRecorder("Billwatch", "billwatch")
    licensing = Licensing(
        load_catalog_text(shipped_catalog_text(), "plans.json"),
        recorder,
        clock,
        audit=AuditTrail(aws["AuditTable"], 400, recorder, clock),
    )
    licensing.use("acct_1", "exports", 4)
    clock.now = T0 + 40 * 86400  # the month is over: the grant starts the next one
    licensing.grant("acct_1", "exports", 5)
    record = only_record(aws)
    assert record["before"]["granted"] == 0 and record["after"]["granted"] == 5
    assert record["before"]["period_since"] < record["after"]["period_since"]


def test_a_non_admin_is_refused_and_recorded(licensing_api, aws, metrics) -> None:
    status, (answer, request_id) = call(
        licensing_api, "POST", "/admin/accounts/acct_1/usage-reset", caller=OUTSIDER
    )
    assert status == 403 and "admin" in answer["message"]
    record = only_record(aws)
    assert (record["action"], record["outcome"], record["caller"]) == ("usage_reset", "refused", OUTSIDER)
    assert (record["pk"], record["target"], record["api_request_id"]) == (
        "account#acct_1",
        "acct_1",
        request_id,
    )
    assert record["reason"] == "not in the admin roles"
    assert metrics.total("AdminAction", Action="usage_reset", Outcome="refused") == 1
    assert metrics.total("UnauthorizedAdminAccess") == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "tier-override", {"tier": "PRO"}),
        ("POST", "grants", {"feature": "exports", "quantity": 5}),
        ("POST", "usage-reset", None),
    ],
)
def test_an_action_the_trail_cannot_record_is_not_done(
    licensing_api, aws, monkeypatch, method, path, body
) -> None:
    assert (
        call(licensing_api, "POST", "/v1/accounts/acct_1/usage", {"feature": "exports", "quantity": 3})[0]
        == 200
    )
    audit_failing(monkeypatch, aws["AuditTable"])
    status, (answer, _) = call(licensing_api, method, f"/admin/accounts/acct_1/{path}", body)
    assert status == 503 and answer["error"] == "temporarily_unavailable"
    _, (entitlements, _) = call(licensing_api, "GET", "/v1/accounts/acct_1/entitlements")
    assert entitlements["tier"] == "FREE"
    assert (
        entitlements["features"]["exports"]["used"] == 3
        and entitlements["features"]["exports"]["limit"] == 10
    )
    assert records(aws) == []


def test_a_record_is_never_overwritten(aws) -> None:
    trail = AuditTrail(aws["AuditTable"], 400, MetricsRecorder("Billwatch", "billwatch"), Clock(T0))
    record = trail.entry("tier_override", Target("account", "acct_1"), {"tier": "FREE"}, {"tier": "PRO"})
    item, condition = trail.put(record)
    item.save(condition=condition)
    forged = trail.entry("tier_override", Target("account", "acct_1"), {"tier": "FREE"}, {"tier": "FREE"})
    forged.sk = record.sk
    with pytest.raises(PutError, match="ConditionalCheckFailed"):
        forged.save(condition=condition)
    assert only_record(aws)["after"] == {"tier": "PRO"}


# ------------------------------------------------------------------ alerts and silences


def test_silences_created_and_removed_are_recorded(dispatch, aws) -> None:
    window = {
        "matchers": ["alertname=HighQuotaDenialRate"],
        "ends_at": "2026-12-01T16:00:00Z",
        "comment": "pricing",
    }
    status, (silence, created_in) = call(dispatch, "POST", "/admin/silences", window)
    assert status == 201
    status, (_, removed_in) = call(dispatch, "DELETE", f"/admin/silences/{silence['id']}")
    assert status == 204
    assert call(dispatch, "DELETE", f"/admin/silences/{silence['id']}")[0] == 404  # nothing done: no record
    created, removed = records(aws)
    assert (created["action"], created["target"], created["api_request_id"]) == (
        "silence_create",
        silence["id"],
        created_in,
    )
    assert json.loads(created["after"])["comment"] == "pricing" and "before" not in created
    assert (removed["action"], removed["api_request_id"]) == ("silence_remove", removed_in)
    assert json.loads(removed["before"])["id"] == silence["id"] and "after" not in removed
    assert {created["pk"], removed["pk"]} == {"stack"} and {created["caller"], removed["caller"]} == {
        ADMIN_CALLER
    }


def firing_alert_id(dispatch: Any) -> str:
    """A business alert (95 % of a quota) fires; its id, as GET /admin/alerts lists it."""
    dispatch.lambda_handler(sns_event(usage_event("acct_1", 95, T0), topic="usage-events"), LambdaContext())
    _, (listed, _) = call(dispatch, "GET", "/admin/alerts")
    (alert,) = listed["alerts"]
    return alert["id"]


@pytest.mark.parametrize(
    ("verb", "action", "status_after"),
    [("ack", "alert_ack", "firing"), ("resolve", "alert_resolve", "resolved")],
)
def test_an_alert_acknowledged_or_resolved_by_hand_is_recorded(
    dispatch, aws, metrics, verb, action, status_after
) -> None:
    alert_id = firing_alert_id(dispatch)
    status, (_, request_id) = call(dispatch, "POST", f"/admin/alerts/{alert_id}/{verb}", {"reason": "INC-42"})
    assert status == 200
    record = only_record(aws)
    assert (record["action"], record["target_kind"], record["target"]) == (action, "alert", alert_id)
    assert (record["reason"], record["api_request_id"]) == ("INC-42", request_id)
    assert record["before"]["status"] == "firing" and record["after"]["status"] == status_after
    assert metrics.total("AdminAction", Action=action, Outcome="recorded") == 1


def test_an_alert_action_the_trail_cannot_record_is_not_done(dispatch, aws, monkeypatch) -> None:
    alert_id = firing_alert_id(dispatch)
    audit_failing(monkeypatch, aws["AuditTable"])
    status, (answer, _) = call(dispatch, "POST", f"/admin/alerts/{alert_id}/resolve", {"reason": "paid"})
    assert status == 503 and answer["error"] == "temporarily_unavailable"
    status, _ = call(
        dispatch,
        "POST",
        "/admin/silences",
        {"matchers": ["a=b"], "ends_at": "2026-12-01T16:00:00Z", "comment": "c"},
    )
    assert status == 503
    monkeypatch.undo()
    _, (listed, _) = call(dispatch, "GET", "/admin/alerts")
    assert [alert["id"] for alert in listed["alerts"]] == [alert_id]  # still firing, not resolved
    assert call(dispatch, "GET", "/admin/silences")[1][0] == {"silences": []}


def test_a_non_admin_alert_call_is_refused_and_recorded(dispatch, aws) -> None:
    assert call(dispatch, "POST", "/admin/alerts/abc/ack", {"reason": "x"}, caller=OUTSIDER)[0] == 403
    assert call(dispatch, "GET", "/admin/silences", caller=OUTSIDER)[0] == 403
    ack, listing = records(aws)
    assert (ack["action"], ack["target_kind"], ack["target"], ack["outcome"]) == (
        "alert_ack",
        "alert",
        "abc",
        "refused",
    )
    assert (listing["action"], listing["target_kind"], listing["caller"]) == (
        "silences_list",
        "none",
        OUTSIDER,
    )


# ------------------------------------------------------------------ reconciliation on demand


@pytest.fixture
def reconcile_api(aws, stripe_api, monkeypatch) -> Any:
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_reconcile")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    monkeypatch.setenv("ADMIN_ROLE_ARNS", ADMIN_ROLE)
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(SelfInvoker, "start", lambda self, payload: started.append(payload))
    module = load_handler("reconcile")
    module.started = started
    return module


def test_a_reconciliation_started_by_hand_is_recorded_before_it_starts(
    reconcile_api, aws, monkeypatch
) -> None:
    status, (answer, request_id) = call(reconcile_api, "POST", "/admin/reconcile")
    assert status == 202 and reconcile_api.started == [{"run_id": answer["run_id"]}]
    record = only_record(aws)
    assert (record["action"], record["target_kind"], record["target"]) == (
        "reconcile",
        "run",
        answer["run_id"],
    )
    assert (record["caller"], record["api_request_id"], record["pk"]) == (ADMIN_CALLER, request_id, "stack")
    assert call(reconcile_api, "POST", "/admin/reconcile", caller=OUTSIDER)[0] == 403
    assert [r["outcome"] for r in records(aws)] == ["recorded", "refused"]
    audit_failing(monkeypatch, aws["AuditTable"])
    status, (answer, _) = call(reconcile_api, "POST", "/admin/reconcile")
    assert status == 503 and answer["error"] == "temporarily_unavailable"
    assert len(reconcile_api.started) == 1  # not started: it could not be recorded


# ------------------------------------------------------------------ GET /admin/audit


def seed(aws: dict[str, str], moments: dict[str, list[int]]) -> None:
    """Records of tier overrides, account -> the moments they were made."""
    clock = Clock(0)
    trail = AuditTrail(aws["AuditTable"], 400, MetricsRecorder("Billwatch", "billwatch"), clock)
    for account, times in moments.items():
        for moment in times:
            clock.now = moment
            item, condition = trail.put(
                trail.entry("tier_override", Target("account", account), None, {"n": moment})
            )
            item.save(condition=condition)


def iso(moment: int) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


def test_the_audit_is_read_by_account_and_time_newest_first(licensing_api, aws) -> None:
    day = 86400
    seed(aws, {"acct_1": [T0 - 3 * day, T0 - day, T0], "acct_2": [T0 - 2 * day]})
    status, (page, _) = call(
        licensing_api, "GET", "/admin/audit", account="acct_1", **{"from": iso(T0 - 2 * day), "to": iso(T0)}
    )
    assert status == 200
    assert [r["after"]["n"] for r in page["records"]] == [T0, T0 - day] and page["next_cursor"] is None
    status, (page, _) = call(
        licensing_api, "GET", "/admin/audit", **{"from": iso(T0 - 40 * day), "to": iso(T0)}
    )
    assert [r["after"]["n"] for r in page["records"]] == [T0, T0 - day, T0 - 2 * day, T0 - 3 * day]
    # A date is a whole UTC day.
    status, (page, _) = call(
        licensing_api, "GET", "/admin/audit", **{"from": "2026-11-29", "to": "2026-11-29"}
    )
    assert [(r["target"]["id"], r["after"]["n"]) for r in page["records"]] == [("acct_2", T0 - 2 * day)]


def test_the_audit_comes_a_page_at_a_time_across_months(licensing_api, aws) -> None:
    day = 86400
    moments = [T0 - n * 5 * day for n in range(7)]  # from December back into October
    seed(aws, {"acct_1": moments[:4], "acct_2": moments[4:]})
    for account, expected in ((None, moments), ("acct_1", moments[:4])):
        query = {
            "from": iso(T0 - 60 * day),
            "to": iso(T0),
            "limit": "3",
            **({"account": account} if account else {}),
        }
        seen, cursor = [], None
        while True:
            status, (page, _) = call(
                licensing_api, "GET", "/admin/audit", **query, **({"cursor": cursor} if cursor else {})
            )
            assert status == 200 and len(page["records"]) <= 3
            seen += [r["after"]["n"] for r in page["records"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"account": "acct 1"}, "account"),
        ({"account": "cus_NffrFeUfNV2Hib"}, "account"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-12-01T10:00:00"}, "from"),  # no offset
        ({"to": "0001-01-02"}, "to"),  # 7 days before it is no date
        ({"from": "0001-01-01T00:00:00+05:00"}, "from"),
        ({"to": "9999-12-31"}, "to"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, "from"),
        ({"from": "2026-01-01", "to": "2026-12-01"}, "92 days"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"acount": "acct_1"}, "acount"),
    ],
)
def test_a_bad_audit_query_is_a_400_naming_the_problem(licensing_api, aws, query, names) -> None:
    status, (answer, _) = call(licensing_api, "GET", "/admin/audit", **query)
    assert status == 400 and names in answer["message"], answer


def test_a_cursor_of_another_account_is_refused(licensing_api, aws) -> None:
    seed(aws, {"acct_1": [T0 - 2, T0 - 1]})
    window = {"from": iso(T0 - 60), "to": iso(T0)}
    _, (page, _) = call(licensing_api, "GET", "/admin/audit", account="acct_1", limit="1", **window)
    status, (answer, _) = call(
        licensing_api, "GET", "/admin/audit", account="acct_2", cursor=page["next_cursor"], **window
    )
    assert status == 400 and "cursor" in answer["message"]


def test_the_audit_is_for_admins_only_and_a_refused_read_is_recorded(licensing_api, aws) -> None:
    status, _ = call(licensing_api, "GET", "/admin/audit", caller=OUTSIDER)
    assert status == 403
    record = only_record(aws)
    assert (record["action"], record["outcome"], record["pk"]) == ("audit_read", "refused", "stack")


# ------------------------------------------------------------------ the log search and the dashboard


def _fields(query: str) -> list[str]:
    listed = re.search(r"fields (.*?)(?:\||$)", query, flags=re.MULTILINE)[1]
    return [field.strip() for field in listed.split(",") if not field.strip().startswith("@")]


def test_the_saved_query_and_the_dashboard_find_what_the_code_logs(licensing_api, template, metrics) -> None:
    assert call(licensing_api, "PUT", "/admin/accounts/acct_1/tier-override", {"tier": "PRO"})[0] == 200
    assert call(licensing_api, "POST", "/admin/accounts/acct_1/usage-reset", caller=OUTSIDER)[0] == 403
    saved = resolved_properties(template, QUERY_DEFINITION_TYPE)["AdminActionsQuery"]
    assert saved["LogGroupNames"] == ["LicensingApiLogGroup", "AlertDispatchLogGroup"]
    level, message = re.search(r'level = "([A-Z]+)" and message = "([^"]+)"', saved["QueryString"]).groups()
    logged = [log for log in metrics.logs() if log.get("message") == message and log["level"] == level]
    assert sorted(log["audit"]["outcome"] for log in logged) == ["recorded", "refused"]
    for field in _fields(saved["QueryString"]):
        for log in logged:
            value: Any = log
            for part in field.split("."):
                assert part in value, (field, log)
                value = value[part]
    body = json.loads(resolved_properties(template, DASHBOARD_TYPE)["LicensingDashboard"]["DashboardBody"])
    (widget,) = [w for w in body["widgets"] if w["type"] == "log"]
    assert _fields(widget["properties"]["query"]) == _fields(saved["QueryString"])
    assert f'message = "{message}"' in widget["properties"]["query"]
    assert "SOURCE 'LicensingApiLogGroup' | SOURCE 'AlertDispatchLogGroup'" in widget["properties"]["query"]
