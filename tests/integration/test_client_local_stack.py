"""clients/python against `make run`: the real handler over HTTP on 127.0.0.1, DynamoDB and SNS in moto.

Between the client and the stack a proxy forwards every request and, when told, answers 503 after
the stack has answered: the use was counted, and only the retry can learn the decision.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from billwatch_client import BillwatchClient, QuotaExceeded

from devtools.emulator import LocalEmulator
from devtools.openapi import operations


class LossyProxy(ThreadingHTTPServer):
    """Forwards to ``target``; the next ``lose`` requests are forwarded, then answered 503."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target = target
        self.lose = 0
        self.forwarded: list[tuple[str, str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: LossyProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
        request = urllib.request.Request(self.server.target + self.path, body, headers, method=self.command)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        try:
            with opener.open(request, timeout=10) as answered:
                status, data = answered.status, answered.read()
        except urllib.error.HTTPError as refused:
            status, data = refused.code, refused.read()
        self.server.forwarded.append((self.command, self.path, body or b""))
        if self.server.lose > 0:
            self.server.lose -= 1
            status, data = 503, b'{"message":"Service Unavailable"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalEmulator]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LOCAL_CALLER_ARN", raising=False)
        patch.delenv("ADMIN_ROLE_ARNS", raising=False)
        with LocalEmulator(autorun=False).start(port=0) as running:
            yield running


@pytest.fixture
def proxy(stack: LocalEmulator) -> Iterator[LossyProxy]:
    server = LossyProxy(stack.url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def unsigned(url: str, **options: Any) -> BillwatchClient:
    return BillwatchClient(url, sign=False, backoff=0.01, **options)


def used(stack: LocalEmulator, account: str, feature: str) -> int:
    return unsigned(stack.url, cache_ttl=0).entitlements(account)["features"][feature]["used"]


def test_a_check_lost_after_it_counted_counts_once_when_retried(stack: LocalEmulator, proxy) -> None:
    proxy.lose = 2
    decision = unsigned(proxy.url).check("acct_client_retry", "api_calls", 3)
    assert (decision["allowed"], decision["used"]) == (True, 3)
    usage_posts = [body for method, _, body in proxy.forwarded if method == "POST"]
    assert len(usage_posts) == 3 and len({json.loads(body)["idempotency_key"] for body in usage_posts}) == 1
    assert used(stack, "acct_client_retry", "api_calls") == 3


def test_a_refusal_reaches_the_caller_typed_and_counts_nothing(stack: LocalEmulator) -> None:
    client = unsigned(stack.url)
    with pytest.raises(QuotaExceeded) as refused:
        client.check("acct_client_quota", "exports", 11)
    assert refused.value.body["limit"] == 10
    assert used(stack, "acct_client_quota", "exports") == 0


def test_entitlements_are_cached_until_a_usage_threshold_event_invalidates_them(stack: LocalEmulator) -> None:
    sns, sqs = stack.client("sns"), stack.client("sqs")
    topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if "UsageEvents" in t["TopicArn"])
    queue = sqs.create_queue(QueueName="client-cache-invalidation")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    queue_arn = attributes["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    client = unsigned(stack.url, cache_ttl=3600)
    account = "acct_client_cache"
    assert client.entitlements(account)["features"]["exports"]["used"] == 0
    client.check(account, "exports", 8)  # 80% of FREE's 10: the stack publishes the crossing
    assert client.entitlements(account)["features"]["exports"]["used"] == 0  # still the cached answer
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5, MaxNumberOfMessages=10)["Messages"]
    # What an SNS subscription hands a Lambda: each record's Sns.Message is the business event.
    lambda_event = {"Records": [{"Sns": json.loads(message["Body"])} for message in messages]}
    assert client.handle_business_event(lambda_event) == {account}
    assert client.entitlements(account)["features"]["exports"]["used"] == 8


def test_the_stack_serves_the_openapi_document_of_its_routes(stack: LocalEmulator) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    with opener.open(stack.url + "/_local/openapi.json", timeout=10) as answer:
        served = json.loads(answer.read())
    assert served["info"]["title"] == "billwatch licensing and admin API"
    usage = served["paths"]["/v1/accounts/{account_id}/usage"]["post"]
    assert {"200", "403", "429"} <= set(usage["responses"])
    assert ("DELETE", "/admin/silences/{silence_id}") in operations(served)
