"""`make run` end to end: real HTTP on 127.0.0.1 into the real handler, DynamoDB in moto's server.

Nothing here leaves loopback. One stack serves the module; a subprocess checks the CLI itself.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devtools import send_event
from devtools import stripe_events as se
from devtools.emulator import EmulatorError, LocalEmulator
from devtools.emulator.banner import banner
from devtools.emulator.http_front import Route, http_api_event, iam_authorizer
from devtools.emulator.settings import MAX_BODY_BYTES
from devtools.signing import LOCAL_DEV_SECRET, stripe_signature_header
from devtools.template import dynamodb_tables, http_routes, iam_routes
from tests.support import ROOT

NOW = int(time.time())
FUNCTION = "WebhookIntakeFunction"
LICENSING = "LicensingApiFunction"
NOT_FOUND = {"message": "Not Found"}
DEFAULT_CALLER = "arn:aws:sts::123456789012:assumed-role/billwatch-local-admin/local"
DEFAULT_ADMINS = "arn:aws:iam::123456789012:role/billwatch-local-admin"
OTHER_CALLER = "arn:aws:sts::123456789012:assumed-role/Reader/alice"


def environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalEmulator]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)  # -> the built-in local dev secret
        patch.delenv("LOCAL_CALLER_ARN", raising=False)  # -> the default (admin) caller
        patch.delenv("ADMIN_ROLE_ARNS", raising=False)  # -> the local admin role
        environ, path, modules = environment(), list(sys.path), set(sys.modules)
        # The schedules and alarms stay still: these tests ask for what they run.
        with LocalEmulator(autorun=False).start(port=0) as running:
            assert os.environ["AWS_ENDPOINT_URL"] == running.moto_endpoint
            yield running
        # Other tests in this process use mock_aws: nothing may keep pointing them at a dead server.
        assert environment() == environ
        assert sys.path == path
        assert not {name for name in set(sys.modules) - modules if name.startswith("_emulated_")}


@pytest.fixture(scope="module")
def dynamodb(stack: LocalEmulator) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def webhook_url(stack: LocalEmulator) -> str:
    (path,) = [path for method, path, function in stack.routes if function == FUNCTION and method == "POST"]
    return stack.url + path


def call(
    url: str, body: bytes | None = None, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def post_signed(url: str, stripe_event: dict[str, Any], secrets: list[str]) -> tuple[int, dict[str, Any]]:
    status, body = send_event.send(json.dumps(stripe_event).encode(), url, secrets, timeout=10)
    return status, json.loads(body)


def subscription_created(account: str, event_id: str) -> dict[str, Any]:
    sub = se.subscription(id=f"sub_{account}", customer=f"cus_{account}", metadata={"account_id": account})
    return se.event("customer.subscription.created", sub, id=event_id, created=NOW)


def billing_item(dynamodb: Any, stack: LocalEmulator, pk: str) -> dict[str, Any] | None:
    table = stack.table_names["BillingStateTable"]
    return dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")


def item_count(dynamodb: Any, table: str) -> int:
    return dynamodb.scan(TableName=table, Select="COUNT", ConsistentRead=True)["Count"]


# --- the stack follows the template --------------------------------------------------------------


def test_serves_exactly_the_template_routes_and_tables(stack: LocalEmulator, dynamodb, template) -> None:
    assert stack.routes == http_routes(template)
    assert set(stack.table_names) == set(dynamodb_tables(template))
    assert set(stack.table_names.values()) <= set(dynamodb.list_tables()["TableNames"])
    for method, path, _function in stack.routes:
        concrete = "/anything" if path == "$default" else re.sub(r"\{[^}]+\}", "x", path)
        status, _, body = call(stack.url + concrete, b"{}", "POST" if method == "ANY" else method)
        assert (status, json.loads(body or b"null")) != (404, NOT_FOUND), f"{method} {path} is not served"


def test_uses_the_built_in_local_dev_secret(stack: LocalEmulator) -> None:
    assert stack.webhook_secrets == (LOCAL_DEV_SECRET,)
    assert stack.secret_source == f"the built-in local dev secret {LOCAL_DEV_SECRET}"


@pytest.mark.parametrize(
    ("value", "source"),
    [
        (None, f"the built-in local dev secret {LOCAL_DEV_SECRET}"),
        (LOCAL_DEV_SECRET, f"the built-in local dev secret {LOCAL_DEV_SECRET}"),  # what `make run` passes
        ("whsec_from_stripe_listen", "STRIPE_WEBHOOK_SECRET from your environment"),
    ],
)
def test_the_secret_source(monkeypatch, value: str | None, source: str) -> None:
    if value is None:
        monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    else:
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", value)
    local = LocalEmulator()  # not started
    assert local.secret_source == source
    assert local.webhook_secrets == (value or LOCAL_DEV_SECRET,)
    assert "whsec_from_stripe_listen" not in repr(local)


def test_only_one_stack_per_process(stack: LocalEmulator) -> None:
    with pytest.raises(EmulatorError, match="already running"):
        LocalEmulator().start(port=0)
    assert stack.running


# --- the webhook, through the real handler ----------------------------------------------------------


def test_signed_subscription_created_is_applied(stack: LocalEmulator, dynamodb, webhook_url: str) -> None:
    event = subscription_created("acct_local_1", "evt_local_created")
    assert post_signed(webhook_url, event, list(stack.webhook_secrets)) == (
        200,
        {"received": True, "event_id": "evt_local_created", "outcome": "applied"},
    )
    item = billing_item(dynamodb, stack, "acct_local_1")
    assert item is not None
    assert item["tier"] == {"S": "PRO"}
    assert item["subscription_status"] == {"S": "active"}
    assert item["subscription_id"] == {"S": "sub_acct_local_1"}

    status, body = post_signed(webhook_url, event, list(stack.webhook_secrets))
    assert (status, body["outcome"]) == (200, "duplicate")


def test_bad_signature_is_400_and_writes_nothing(stack: LocalEmulator, dynamodb, webhook_url: str) -> None:
    tables = stack.table_names.values()
    before = {table: item_count(dynamodb, table) for table in tables}

    status, body = post_signed(
        webhook_url, subscription_created("acct_forged", "evt_forged"), ["whsec_wrong"]
    )

    assert status == 400
    assert body["error"] == "invalid_signature"
    assert billing_item(dynamodb, stack, "acct_forged") is None
    assert {table: item_count(dynamodb, table) for table in tables} == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/nope"), ("GET", "/webhooks/stripe"), ("POST", "/webhooks/stripe/extra")],
)
def test_unknown_routes_are_404_like_api_gateway(stack: LocalEmulator, method: str, path: str) -> None:
    status, headers, body = call(stack.url + path, b"{}" if method == "POST" else None, method)
    assert (status, headers["content-type"], json.loads(body)) == (404, "application/json", NOT_FOUND)


def test_send_event_cli_works_against_the_stack(
    stack: LocalEmulator, dynamodb, webhook_url: str, monkeypatch, capsys
) -> None:
    # What `make send` runs, with the secret taken from the environment as the Makefile passes it.
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", ",".join(stack.webhook_secrets))
    event_file = ROOT / "events" / "customer.subscription.updated.json"

    assert send_event.main([str(event_file), "--url", webhook_url]) == 0

    out = capsys.readouterr().out
    assert "HTTP 200" in out
    assert '"outcome": "applied"' in out
    item = billing_item(dynamodb, stack, "acct_demo")
    assert item is not None
    assert item["tier"] == {"S": "PRO"}
    assert item["cancel_at_period_end"] == {"BOOL": True}


# --- HTTP <-> API Gateway payload 2.0 ----------------------------------------------------------------


class Recorder:
    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.result, self.error = result, error

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        if self.error:
            raise self.error
        return self.result


def test_the_handler_gets_an_http_api_v2_event_and_its_response_is_mapped(
    stack: LocalEmulator, monkeypatch
) -> None:
    recorder = Recorder({"statusCode": 202, "headers": {"x-handler": "yes"}, "body": "accepted"})
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", recorder)
    host, port = urllib.parse.urlsplit(stack.url).hostname, urllib.parse.urlsplit(stack.url).port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    body = '{"hello": "wörld"}'.encode()
    connection.putrequest("POST", "/webhooks/stripe?a=1&b=2&b=3")
    for name, value in [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Repeated", "one"),
        ("X-Repeated", "two"),
        ("Stripe-Signature", "t=1,v1=abc"),
        ("User-Agent", "Stripe/1.0"),
    ]:
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    assert (response.status, response.getheader("x-handler"), response.read()) == (202, "yes", b"accepted")
    connection.close()

    (event,) = recorder.events
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /webhooks/stripe"
    assert (event["rawPath"], event["rawQueryString"]) == ("/webhooks/stripe", "a=1&b=2&b=3")
    assert event["queryStringParameters"] == {"a": "1", "b": "2,3"}
    assert event["headers"]["x-repeated"] == "one,two"
    assert event["headers"]["stripe-signature"] == "t=1,v1=abc"
    assert all(name == name.lower() for name in event["headers"])
    assert (event["body"], event["isBase64Encoded"]) == (body.decode(), False)
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/webhooks/stripe",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "Stripe/1.0",
    }
    assert (context["routeKey"], context["stage"]) == ("POST /webhooks/stripe", "$default")
    assert "authorizer" not in context  # the webhook route has no authorizer
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 60
    assert len(context["requestId"]) == 36
    (lambda_context,) = recorder.contexts
    assert lambda_context.function_name == FUNCTION
    assert lambda_context.memory_limit_in_mb == 512
    assert lambda_context.invoked_function_arn.endswith(f":function:{FUNCTION}")
    assert 0 < lambda_context.get_remaining_time_in_millis() <= 15_000


def test_binary_bodies_travel_base64_both_ways(stack: LocalEmulator, webhook_url: str, monkeypatch) -> None:
    payload = bytes(range(256))
    recorder = Recorder(
        {"statusCode": 200, "body": base64.b64encode(payload[::-1]).decode(), "isBase64Encoded": True}
    )
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", recorder)

    status, _, body = call(webhook_url, payload)

    assert (status, body) == (200, payload[::-1])
    (event,) = recorder.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_a_handler_crash_is_a_500_with_a_logged_traceback(
    stack: LocalEmulator, webhook_url: str, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", Recorder(error=RuntimeError("boom")))

    status, _, body = call(webhook_url, b"{}")

    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    (record,) = [r for r in caplog.records if r.name == "devtools.emulator.http_front" and r.exc_info]
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_body_over_10_mb_is_413_and_never_reaches_the_handler(
    stack: LocalEmulator, webhook_url: str, monkeypatch
) -> None:
    recorder = Recorder({"statusCode": 200, "body": ""})
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", recorder)

    status, _, body = call(webhook_url, b"x" * (MAX_BODY_BYTES + 1))

    assert (status, json.loads(body)) == (413, {"message": "Request Entity Too Large"})
    assert recorder.events == []


def test_route_matching_and_event_helpers() -> None:
    routes = sorted(
        [
            Route("ANY", "$default", "Fallback"),
            Route("GET", "/items/{proxy+}", "Greedy"),
            Route("GET", "/items/{id}", "One"),
            Route("GET", "/items/new", "New"),
        ],
        key=Route.specificity,
    )

    def resolve(method: str, path: str) -> tuple[str, dict[str, str]]:
        for route in routes:
            params = route.match(method, path)
            if params is not None:
                return route.function, params
        raise AssertionError("the $default route takes everything")

    assert resolve("GET", "/items/new") == ("New", {})
    assert resolve("GET", "/items/a%20b") == ("One", {"id": "a b"})
    assert resolve("GET", "/items/a/b") == ("Greedy", {"proxy": "a/b"})
    assert resolve("POST", "/items/new") == ("Fallback", {})

    event = http_api_event(
        method="GET",
        target="/items/7",
        headers=[("Cookie", "a=1; b=2")],
        body=b"",
        route_key="GET /items/{id}",
        path_parameters={"id": "7"},
    )
    assert event["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in event["headers"]
    assert event["pathParameters"] == {"id": "7"}
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert "queryStringParameters" not in event
    assert "authorizer" not in event["requestContext"]
    assert Route("GET", "/items/{id}", "One").iam_auth is False

    signed = http_api_event(
        method="GET",
        target="/x",
        headers=[],
        body=b"",
        route_key="GET /x",
        authorizer=iam_authorizer("arn:x"),
    )
    assert signed["requestContext"]["authorizer"]["iam"]["userArn"] == "arn:x"


# --- IAM-authorized routes: a configurable caller instead of SigV4 ------------------------------------


def iam_events_of(template: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Independently of the module: the routes whose HttpApi event says Auth.Authorizer AWS_IAM."""
    found = set()
    for logical_id, resource in template["Resources"].items():
        for event in (resource.get("Properties") or {}).get("Events", {}).values():
            props = event.get("Properties") or {}
            if event.get("Type") == "HttpApi" and (props.get("Auth") or {}).get("Authorizer") == "AWS_IAM":
                found.add((props["Method"].upper(), props["Path"], logical_id))
    return found


def test_the_iam_routes_are_the_templates(stack: LocalEmulator, template) -> None:
    expected = iam_events_of(template)
    assert ("GET", "/v1/accounts/{account_id}/entitlements", LICENSING) in expected
    assert stack.iam_routes == expected
    assert not [route for route in stack.iam_routes if route[2] == FUNCTION]  # Stripe signs the webhook


def test_iam_routes_follow_a_default_authorizer_and_authorizer_none() -> None:
    def function(*events: dict[str, Any]) -> dict[str, Any]:
        return {
            "Type": "AWS::Serverless::Function",
            "Properties": {"Events": {f"E{i}": event for i, event in enumerate(events)}},
        }

    def http(path: str, auth: dict[str, str] | None = None, api: str | None = "Api") -> dict[str, Any]:
        props: dict[str, Any] = {"Method": "get", "Path": path}
        if api:
            props["ApiId"] = {"Ref": api}
        if auth is not None:
            props["Auth"] = auth
        return {"Type": "HttpApi", "Properties": props}

    template = {
        "Resources": {
            "Api": {
                "Type": "AWS::Serverless::HttpApi",
                "Properties": {"Auth": {"EnableIamAuthorizer": True, "DefaultAuthorizer": "AWS_IAM"}},
            },
            "Other": {"Type": "AWS::Serverless::HttpApi", "Properties": {}},
            "Fn": function(
                http("/default"),
                http("/public", {"Authorizer": "NONE"}),
                http("/other", api="Other"),
                http("/explicit", {"Authorizer": "AWS_IAM"}, api="Other"),
                http("/implicit-api", api=None),
            ),
        }
    }
    assert iam_routes(template) == {("GET", "/default", "Fn"), ("GET", "/explicit", "Fn")}
    template["Globals"] = {"HttpApi": {"Auth": {"DefaultAuthorizer": "AWS_IAM"}}}
    assert iam_routes(template) == {
        ("GET", "/default", "Fn"),
        ("GET", "/other", "Fn"),
        ("GET", "/explicit", "Fn"),
        ("GET", "/implicit-api", "Fn"),
    }


def test_an_iam_route_gets_the_default_local_caller(stack: LocalEmulator, monkeypatch) -> None:
    recorder = Recorder({"statusCode": 200, "body": "{}"})
    monkeypatch.setattr(stack.functions[LICENSING], "handler", recorder)

    status, _, _ = call(stack.url + "/v1/accounts/acct_iam/entitlements", method="GET")

    assert status == 200
    (event,) = recorder.events
    assert event["routeKey"] == "GET /v1/accounts/{account_id}/entitlements"
    # The shape API Gateway HTTP APIs send for a SigV4-signed request to an AWS_IAM route.
    assert event["requestContext"]["authorizer"] == {
        "iam": {
            "accessKey": "ASIALOCAL",
            "accountId": "123456789012",
            "callerId": "AROALOCAL:local",
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": DEFAULT_CALLER,
            "userId": "AROALOCAL:local",
        }
    }
    assert stack.caller_arn == DEFAULT_CALLER


def test_the_caller_header_overrides_the_caller_for_one_request(stack: LocalEmulator, monkeypatch) -> None:
    recorder = Recorder({"statusCode": 200, "body": "{}"})
    monkeypatch.setattr(stack.functions[LICENSING], "handler", recorder)
    url = stack.url + "/v1/accounts/acct_iam/entitlements"

    assert call(url, method="GET", headers={"X-Billwatch-Caller-Arn": OTHER_CALLER})[0] == 200
    assert call(url, method="GET")[0] == 200

    overridden, default = recorder.events
    assert overridden["requestContext"]["authorizer"]["iam"]["userArn"] == OTHER_CALLER
    assert "x-billwatch-caller-arn" not in overridden["headers"]  # meant for the stack, not the handler
    assert default["requestContext"]["authorizer"]["iam"]["userArn"] == DEFAULT_CALLER


def test_a_caller_header_that_is_no_arn_is_400(stack: LocalEmulator, monkeypatch) -> None:
    recorder = Recorder({"statusCode": 200, "body": "{}"})
    monkeypatch.setattr(stack.functions[LICENSING], "handler", recorder)

    status, _, body = call(
        stack.url + "/v1/accounts/acct_iam/entitlements",
        method="GET",
        headers={"x-billwatch-caller-arn": "alice"},
    )

    assert status == 400
    assert "x-billwatch-caller-arn" in json.loads(body)["message"]
    assert recorder.events == []


def test_the_webhook_route_gets_no_authorizer_even_with_the_caller_header(
    stack: LocalEmulator, webhook_url: str, monkeypatch
) -> None:
    recorder = Recorder({"statusCode": 200, "body": ""})
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", recorder)

    assert call(webhook_url, b"{}", headers={"x-billwatch-caller-arn": OTHER_CALLER})[0] == 200

    (event,) = recorder.events
    assert "authorizer" not in event["requestContext"]
    assert "x-billwatch-caller-arn" not in event["headers"]


def test_entitlements_of_an_unknown_account_through_the_stack(stack: LocalEmulator) -> None:
    status, headers, body = call(stack.url + "/v1/accounts/acct_local/entitlements", method="GET")
    assert (status, headers["content-type"]) == (200, "application/json")
    entitlements = json.loads(body)
    assert (entitlements["account_id"], entitlements["tier"]) == ("acct_local", "FREE")


def test_a_usage_report_through_the_stack(stack: LocalEmulator) -> None:
    report = stack.url + "/v1/accounts/acct_local_report/usage-report"
    status, _, body = call(report, method="GET")
    assert (status, json.loads(body)["error"]) == (404, "account_not_found")
    usage = b'{"feature": "api_calls", "quantity": 3}'
    json_body = {"content-type": "application/json"}
    assert call(stack.url + "/v1/accounts/acct_local_report/usage", usage, headers=json_body)[0] == 200
    status, _, body = call(report + "?from=2020-01-01", method="GET")
    assert status == 400 and json.loads(body)["message"].startswith("from: the range from..to may span")
    status, _, body = call(report, method="GET")
    [current] = json.loads(body)["periods"]
    assert status == 200 and current["open"] and current["features"]["api_calls"]["used"] == 3


def test_admin_actions_are_in_the_audit_trail_of_the_stack(stack: LocalEmulator) -> None:
    json_body = {"content-type": "application/json"}
    override = stack.url + "/admin/accounts/acct_local_audit/tier-override"
    assert call(override, b'{"tier": "PRO"}', method="PUT", headers=json_body)[0] == 200
    refused = {**json_body, "x-billwatch-caller-arn": OTHER_CALLER}
    assert call(override, b'{"tier": "FREE"}', method="PUT", headers=refused)[0] == 403
    status, _, body = call(stack.url + "/admin/audit?account=acct_local_audit", method="GET")
    assert status == 200
    records = json.loads(body)["records"]  # newest first
    assert [(r["caller"], r["outcome"], r["after"]) for r in records] == [
        (OTHER_CALLER, "refused", None),
        (DEFAULT_CALLER, "recorded", {"tier": "PRO", "tier_override": "PRO"}),
    ]
    assert all(r["request_id"] and r["lambda_request_id"] for r in records)
    status, _, body = call(stack.url + "/admin/audit?from=tomorrow", method="GET")
    assert status == 400 and json.loads(body)["message"].startswith("from:")


def test_the_functions_get_the_local_admin_role_by_default(stack: LocalEmulator) -> None:
    assert {FUNCTION, LICENSING} <= set(stack.functions)
    for function in stack.functions:
        assert stack.function_env(function)["ADMIN_ROLE_ARNS"] == DEFAULT_ADMINS
    assert stack.admin_role_arns == DEFAULT_ADMINS


def test_the_default_caller_is_an_admin_and_the_header_makes_another_caller(stack: LocalEmulator) -> None:
    url = stack.url + "/admin/accounts/acct_local_admin/usage-reset"
    assert call(url, b"")[0] == 200
    status, _, body = call(url, b"", headers={"x-billwatch-caller-arn": OTHER_CALLER})
    assert (status, json.loads(body)["error"]) == (403, "forbidden")


def test_admin_role_arns_and_the_caller_from_the_environment_win(monkeypatch) -> None:
    admins = "arn:aws:iam::111122223333:role/Ops,arn:aws:iam::111122223333:role/Finance"
    monkeypatch.setenv("ADMIN_ROLE_ARNS", admins)
    monkeypatch.setenv("LOCAL_CALLER_ARN", OTHER_CALLER)

    local = LocalEmulator()  # not started

    for function in (FUNCTION, LICENSING):
        assert local.function_env(function)["ADMIN_ROLE_ARNS"] == admins
    assert (local.admin_role_arns, local.admin_source) == (admins, "ADMIN_ROLE_ARNS from your environment")
    assert (local.caller_arn, local.caller_source) == (OTHER_CALLER, "LOCAL_CALLER_ARN from your environment")
    assert LocalEmulator(caller_arn=DEFAULT_CALLER).caller_arn == DEFAULT_CALLER


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_variables_mean_the_defaults(monkeypatch, value: str) -> None:
    monkeypatch.setenv("ADMIN_ROLE_ARNS", value)
    monkeypatch.setenv("LOCAL_CALLER_ARN", value)
    local = LocalEmulator()
    assert (local.caller_arn, local.function_env(LICENSING)["ADMIN_ROLE_ARNS"]) == (
        DEFAULT_CALLER,
        DEFAULT_ADMINS,
    )


def test_a_local_caller_arn_that_is_no_arn_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_CALLER_ARN", "alice")
    with pytest.raises(EmulatorError, match="LOCAL_CALLER_ARN must be an IAM or STS ARN"):
        LocalEmulator()


def test_the_banner_explains_the_local_caller(stack: LocalEmulator) -> None:
    text = banner(stack)
    assert DEFAULT_CALLER in text
    assert DEFAULT_ADMINS in text
    assert "curl -H 'x-billwatch-caller-arn: " in text
    assert f"{stack.url}/v1/accounts/acct_local/entitlements" in text
    assert f"{stack.url}/webhooks/stripe  -> {FUNCTION}\n" in text  # not marked (IAM)
    assert f"{stack.url}/v1/accounts/{{account_id}}/entitlements  -> {LICENSING}  (IAM)" in text


# --- the CLI (`make run`) ------------------------------------------------------------------------------


def test_make_run_entry_point_serves_and_stops_on_sigterm() -> None:
    user_secret = "whsec_user_provided_for_test_only"
    env = {
        **os.environ,
        "PORT": "0",
        "STRIPE_WEBHOOK_SECRET": user_secret,
        "LOCAL_CALLER_ARN": OTHER_CALLER,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("ADMIN_ROLE_ARNS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.emulator"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        webhook = None
        deadline = time.monotonic() + 30
        while webhook is None and time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            output.append(line)
            if line.strip().startswith("Webhook URL:"):
                webhook = line.split("Webhook URL:", 1)[1].strip()
        assert webhook, "no banner:\n" + "".join(output)
        status, body = post_signed(webhook, subscription_created("acct_cli", "evt_cli"), [user_secret])
        assert (status, body["outcome"]) == (200, "applied")
        entitlements = webhook.replace("/webhooks/stripe", "/v1/accounts/acct_cli/entitlements")
        status, _, raw = call(entitlements, method="GET")
        assert (status, json.loads(raw)["tier"]) == (200, "PRO")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        reader.join(timeout=5)
    while not lines.empty():
        line = lines.get_nowait()
        if line is not None:
            output.append(line)
    text = "".join(output)
    assert returncode == 0, text
    assert "STRIPE_WEBHOOK_SECRET from your environment" in text
    assert user_secret not in text
    assert "stripe listen --forward-to localhost:" in text
    assert "stopping the local emulator" in text
    assert f"Caller:         {OTHER_CALLER}   (LOCAL_CALLER_ARN from your environment)" in text
    assert "arn:aws:iam::123456789012:role/billwatch-local-admin" in text


def test_health_answers_on_the_local_stack(stack: LocalEmulator) -> None:
    # No Stripe key locally: the Stripe checks are skipped, saying what goes unseen; the rest run on moto.
    status, headers, body = call(stack.url + "/health", method="GET")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body)["checks"]["probe"] == {"status": "failed", "reason": "never_ran"}

    status, _, body = call(stack.url + "/health?deep=1", method="GET")
    checks = json.loads(body)["checks"]
    assert status == 200
    for stripe_check in ("stripe_api", "stripe_webhook_endpoint"):
        assert (checks[stripe_check]["status"], checks[stripe_check]["reason"]) == (
            "skipped",
            "no_stripe_key",
        )
    assert checks["dead_letter_queues"]["messages"] == {"quota_reset": 0, "webhook": 0}
    assert checks["dynamodb"]["status"] == "ok"

    assert call(stack.url + "/health?deep=yes", method="GET")[0] == 400


def test_two_routing_functions_answer_their_own_requests_at_once(stack: LocalEmulator, monkeypatch) -> None:
    # Each function routes its own requests (the alert dispatch with Powertools' resolver, whose
    # routing state is a class attribute); a pause inside routing, as a busy machine's thread switch
    # makes, must not let one function's request be answered by the other.
    licensing_app = stack.functions[LICENSING].module.app
    route = licensing_app.resolve

    def slow_route(event: dict[str, Any]) -> Any:
        time.sleep(0.005)
        return route(event)

    monkeypatch.setattr(licensing_app, "resolve", slow_route)

    def entitlements() -> None:
        for n in range(30):
            status, _, body = call(f"{stack.url}/v1/accounts/acct_routing_{n}/entitlements", method="GET")
            assert (status, json.loads(body).get("account_id")) == (200, f"acct_routing_{n}"), body

    def silences() -> None:
        for _ in range(60):
            status, _, body = call(stack.url + "/admin/silences", method="GET")
            assert (status, "silences" in json.loads(body)) == (200, True), body

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(entitlements), pool.submit(silences)]:
            future.result()


# --- bursts, faults, and what the public port serves ------------------------------------------------

BURST = 64  # at least the 32 webhooks that were reset, twice over


def test_a_burst_of_concurrent_connections_is_queued_and_every_request_answered(
    stack: LocalEmulator, dynamodb, webhook_url: str, monkeypatch
) -> None:
    # The accepting thread held still, as the GIL holds it while handlers run: every connection of
    # the burst must wait in the listen backlog rather than be dropped or reset.
    accepting = threading.Event()
    accept = stack._http.get_request
    monkeypatch.setattr(stack._http, "get_request", lambda: (accepting.wait(30), accept())[1])
    port = int(stack.url.rsplit(":", 1)[1])
    events = [subscription_created(f"acct_burst_{n:03d}", f"evt_burst_{n:03d}") for n in range(BURST)]
    requests = []
    for event in events:
        payload = json.dumps(event).encode()
        header = stripe_signature_header(payload, list(stack.webhook_secrets))
        requests.append(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Stripe-Signature: {header}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    def connect_and_send(request: bytes) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", port), timeout=2)
        connection.sendall(request)
        return connection

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        connections = list(pool.map(connect_and_send, requests))
    accepting.set()

    def answer(connection: socket.socket) -> tuple[int, dict[str, Any]]:
        with connection:
            connection.settimeout(30)
            response = http.client.HTTPResponse(connection)
            response.begin()
            return response.status, json.loads(response.read())

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(answer, connections))
    assert [status for status, _ in answers] == [200] * BURST
    assert {body["outcome"] for _, body in answers} == {"applied"}
    assert billing_item(dynamodb, stack, f"acct_burst_{BURST - 1:03d}") is not None


def test_a_handler_that_exits_is_a_500_and_the_stack_keeps_serving(
    stack: LocalEmulator, webhook_url: str, monkeypatch
) -> None:
    monkeypatch.setattr(stack.functions[FUNCTION], "handler", Recorder(error=SystemExit(1)))

    status, _, body = call(webhook_url, b"{}")

    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    monkeypatch.undo()
    assert call(webhook_url, b"{}")[0] == 400  # served again: the real handler wants a signature


def test_a_fault_of_the_stack_itself_is_a_500_with_a_message_and_the_stack_keeps_serving(
    stack: LocalEmulator, webhook_url: str, monkeypatch, caplog
) -> None:
    def broken(*_args: Any) -> None:
        raise OSError("the metrics store is gone")

    monkeypatch.setattr(stack, "record_request", broken)

    status, headers, body = call(webhook_url, b"{}")

    assert (status, headers["content-type"], json.loads(body)) == (
        500,
        "application/json",
        {"message": "Internal Server Error"},
    )
    assert any(r.exc_info and "metrics store is gone" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    assert call(webhook_url, b"{}")[0] == 400


def eventbridge_event(stripe_event: dict[str, Any]) -> dict[str, Any]:
    """Stripe's event as its Amazon EventBridge destination delivers it: unsigned."""
    return {
        "version": "0",
        "id": "c5d541dd-f197-5ede-a913-f54d9d22121f",
        "detail-type": stripe_event["type"],
        "source": "aws.partner/stripe.com/ed_test_123",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": stripe_event,
    }


@pytest.mark.parametrize("invocation_type", ["RequestResponse", "Event"])
def test_the_public_port_refuses_lambdas_invoke_api(
    stack: LocalEmulator, dynamodb, invocation_type: str
) -> None:
    # What a tunnel to $PORT could otherwise do: apply an unsigned event through the intake.
    forged = eventbridge_event(subscription_created("acct_invoke_forged", f"evt_invoke_{invocation_type}"))
    for name in (FUNCTION, f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"):
        path = f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations"
        status, _, body = call(
            stack.url + path, json.dumps(forged).encode(), headers={"X-Amz-Invocation-Type": invocation_type}
        )
        assert (status, json.loads(body)) == (404, NOT_FOUND)
    time.sleep(0.2)  # an asynchronous invocation, had one been queued, would have run by now
    assert billing_item(dynamodb, stack, "acct_invoke_forged") is None


def test_the_functions_invoke_lambda_on_the_internal_loopback_port(stack: LocalEmulator, monkeypatch) -> None:
    assert os.environ["AWS_ENDPOINT_URL_LAMBDA"] == stack.internal_url != stack.url
    assert stack.internal_url.startswith("http://127.0.0.1:")
    recorder = Recorder({"handed": "over"})
    monkeypatch.setattr(stack.functions["QuotaResetFunction"], "handler", recorder)
    # What SelfInvoker does: boto3's Lambda client, its endpoint from the environment.
    lambda_client = boto3.client("lambda")

    answer = lambda_client.invoke(FunctionName="QuotaResetFunction", Payload=b'{"segment": 1}')
    queued = lambda_client.invoke(
        FunctionName="QuotaResetFunction", InvocationType="Event", Payload=b'{"segment": 2}'
    )

    assert json.loads(answer["Payload"].read()) == {"handed": "over"}
    assert queued["StatusCode"] == 202
    deadline = time.monotonic() + 10
    while len(recorder.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.events == [{"segment": 1}, {"segment": 2}]
    # The internal port serves nothing else: no route of the template.
    assert call(stack.internal_url + "/webhooks/stripe", b"{}")[0] == 404


# --- what a newcomer runs first ------------------------------------------------------------------------


def test_make_send_of_a_sample_gives_entitlements_that_reset_in_the_future(
    stack: LocalEmulator, webhook_url: str, monkeypatch
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", ",".join(stack.webhook_secrets))
    sample = ROOT / "events" / "customer.subscription.created.json"
    account = json.loads(sample.read_bytes())["data"]["object"]["metadata"]["account_id"]

    assert send_event.main([str(sample), "--url", webhook_url]) == 0

    status, _, body = call(f"{stack.url}/v1/accounts/{account}/entitlements", method="GET")
    resets = {feature["resets_at"] for feature in json.loads(body)["features"].values()} - {None}
    assert status == 200 and resets
    now = datetime.datetime.now(datetime.UTC)
    for resets_at in resets:
        assert now < datetime.datetime.fromisoformat(resets_at) <= now + datetime.timedelta(days=32)


def test_make_send_with_another_secret_than_make_run_names_the_variable_to_check(
    stack: LocalEmulator, webhook_url: str, capsys
) -> None:
    sample = ROOT / "events" / "invoice.paid.json"

    assert send_event.main([str(sample), "--url", webhook_url, "--secret", "whsec_not_the_stacks"]) == 1

    captured = capsys.readouterr()
    assert "HTTP 400" in captured.out and "invalid_signature" in captured.out
    assert "check STRIPE_WEBHOOK_SECRET" in captured.err
    assert "`make run` and `make send` must share the same STRIPE_WEBHOOK_SECRET" in captured.err


# Local paths as the READMEs write them; "[?period=weekly]" is an optional query.
_LOCAL_PATH = re.compile(r"/_local/[\w/.-]*(?:\[(\?[^\]\s]*)\])?")


def test_every_local_path_the_readmes_name_answers(stack: LocalEmulator) -> None:
    named = set()
    for readme in (ROOT / "README.md", ROOT / "devtools" / "status_page" / "README.md"):
        for found in _LOCAL_PATH.finditer(readme.read_text(encoding="utf-8")):
            path = found.group(0).split("[", 1)[0]
            named.add(path)
            if found.group(1):
                named.add(path + found.group(1))
    assert {"/_local/", "/_local/api/status", "/_local/report?period=weekly"} <= named

    answers = {path: call(stack.url + path, method="GET")[0] for path in sorted(named)}

    assert answers == dict.fromkeys(answers, 200)


def test_a_body_nested_past_pythons_recursion_limit_gets_the_handlers_400(
    stack: LocalEmulator, webhook_url: str
) -> None:
    status, _, body = call(webhook_url, b"[" * 100_000)
    assert (status, json.loads(body)["error"]) == (400, "invalid_signature")


@pytest.mark.parametrize("size_line", [b"-1", b"+10", b"0x10", b"1 0", b"\xff"])
def test_a_chunk_size_that_is_not_hex_digits_is_a_400_at_once(stack: LocalEmulator, size_line: bytes) -> None:
    # "-1" was read as "to the end of the stream", past the body limit, until the client hung up.
    host, port = urllib.parse.urlsplit(stack.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: local\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n" + size_line + b"\r\n" + b"x" * 4096
        )
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"400"
