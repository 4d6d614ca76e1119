"""A recording HTTP server on 127.0.0.1 that stands in for Slack, PagerDuty and webhook receivers.

Each path answers from a script of :class:`Answer`s, one per request, the last one repeating
(``[Answer(500)]`` fails forever; ``[Answer(429, retry_after=1), Answer(200)]`` rate-limits once).
A path without a script answers 200 ``ok``, as a Slack webhook does. Every request is recorded.

    with alert_receivers() as receivers:
        receivers.respond("/slack", [Answer(429, retry_after=1), Answer(200)])
        ...post to receivers.url("/slack")...
        assert [r.json["text"] for r in receivers.requests("/slack")] == [...]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from billwatch.alerting.inputs import Alert, AlertStatus
from billwatch.core.severities import Severity


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes | str | Mapping[str, Any] | None = None  # None: "ok" for a 2xx, else empty
    retry_after: float | str | None = None  # seconds, or an HTTP date as text
    delay: float = 0.0  # seconds to wait before answering: longer than the client's timeout = slow
    headers: Mapping[str, str] = field(default_factory=dict)

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, Mapping):
            return json.dumps(self.body).encode(), "application/json"
        if self.body is None:
            return (b"ok" if 200 <= self.status < 300 else b""), "text/plain"
        raw = self.body.encode() if isinstance(self.body, str) else self.body
        return raw, "text/plain"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Message  # case-insensitive: headers["billwatch-signature"]
    raw_body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body else None


class AlertReceivers(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self._recorded: list[RecordedRequest] = []
        self.stopping = threading.Event()  # wakes the slow answers when the server stops

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def respond(self, path: str, answers: Sequence[Answer]) -> None:
        """Scripts the answers to the next requests to ``path``; the last one repeats."""
        if not answers:
            raise ValueError("a script needs at least one answer")
        with self._lock:
            self._scripts[path] = list(answers)

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self._recorded if path is None or request.path == path]

    def record(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self._recorded.append(request)
            script = self._scripts.get(request.path)
            if not script:
                return Answer()
            return script.pop(0) if len(script) > 1 else script[0]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its end by the time a slow answer is written.
        pass


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: AlertReceivers

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=self.headers,
            raw_body=self.rfile.read(length),
            at=time.monotonic(),
        )
        answer = self.server.record(request)
        if answer.delay and self.server.stopping.wait(answer.delay):
            return
        body, content_type = answer.payload()
        self.send_response(answer.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if answer.retry_after is not None:
            wait = answer.retry_after
            self.send_header("Retry-After", wait if isinstance(wait, str) else f"{wait:g}")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def alert_receivers() -> Iterator[AlertReceivers]:
    server = AlertReceivers()
    # A short poll lets shutdown() return at once rather than after serve_forever's default 0.5 s.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


ALARM_ARN = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:billwatch-prod-HighWebhookFailureRate"
BILLING_DASHBOARD_URL = (
    "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
    "#dashboards/dashboard/billwatch-prod-billing"
)


def alarm_alert(**changes: Any) -> Alert:
    """A CloudWatch alarm's alert with every field known; ``changes`` replace fields."""
    fields: dict[str, Any] = {
        "fingerprint": ALARM_ARN,
        "name": "HighWebhookFailureRate",
        "severity": Severity.CRITICAL,
        "status": AlertStatus.FIRING,
        "summary": "More than 5% of Stripe webhooks failed over the last 600 s.",
        "reason": "Threshold Crossed: 1 datapoint [7.5 (01/03/25 10:00:00)] was greater than 5.0",
        "since": "2025-03-01T10:00:00.000Z",
        "version": "2025-03-01T10:00:00.000Z|firing",
        "labels": {"source": "cloudwatch", "group": "webhook-failures"},
        "value": 7.5,
        "threshold": 5.0,
        "comparison": "GreaterThanThreshold",
        "runbook": "https://example.com/runbooks/webhook-failures.md",
        "console_url": "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        "#alarmsV2:alarm/billwatch-prod-HighWebhookFailureRate",
        "dashboard_url": BILLING_DASHBOARD_URL,
    }
    return Alert(**{**fields, **changes})


def usage_alert(**changes: Any) -> Alert:
    """A business alert as its event reads: an account crossed 95 % of a quota; no console page, and
    no dashboard or runbook until the dispatcher links them (billwatch.alerting.links)."""
    fields: dict[str, Any] = {
        "fingerprint": "usage#acct_42#api_calls#95#2025-03-01",
        "name": "UsageThresholdCrossed",
        "severity": Severity.WARNING,
        "status": AlertStatus.FIRING,
        "summary": "Account acct_42 has used 95% of its api_calls quota (950 of 1000)",
        "reason": "usage of api_calls crossed 95% of the quota",
        "since": "2025-03-02T08:30:00.000Z",
        "version": "2025-03-02T08:30:00.000Z|firing",
        "labels": {"source": "licensing", "group": "usage", "account_id": "acct_42", "feature": "api_calls"},
        "value": 950.0,
        "threshold": 950.0,
        "comparison": "GreaterThanOrEqualToThreshold",
    }
    return Alert(**{**fields, **changes})
