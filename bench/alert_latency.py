"""How long an alarm takes from CloudWatch's SNS notification to the receiver's HTTP server.

The real AlertDispatch handler, on moto's server (loopback), gets SNS records of alarm state changes
(each a new alarm, so none is deduplicated) routed to a Slack channel whose webhook is a local HTTP
server; the figure is the time from the handler's invocation to the moment the server has read the
request, and, beside it, the same POST made directly with urllib (the floor of one delivery). Run
as ``python -m bench.alert_latency``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import summary_ms
from bench.environment import moto_on_loopback, print_figures

ROOT = Path(__file__).resolve().parent.parent
ALARMS = 40


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrivals: list[float] = []
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/slack"


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.arrivals.append(time.perf_counter())
        self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


def _alarm_record(n: int) -> dict[str, Any]:
    name = f"billwatch-bench-BenchAlarm{n:03d}"
    message = {
        "AlarmName": name,
        "AlarmDescription": "[critical] A benchmark alarm. Runbook: https://runbooks.example/platform.md",
        "AWSAccountId": "123456789012",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [9.0] was greater than"
        " the threshold (5.0).",
        "StateChangeTime": "2026-12-01T15:00:00.000+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}",
        "OldStateValue": "OK",
        "Trigger": {"Threshold": 5.0, "ComparisonOperator": "GreaterThanThreshold"},
    }
    topic = "arn:aws:sns:us-east-1:123456789012:billwatch-bench-alarms-critical"
    sns = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Subject": "ALARM"}
    sns.update(Message=json.dumps(message), Timestamp="2026-12-01T15:00:00.000Z", MessageAttributes={})
    return {"Records": [{"EventSource": "aws:sns", "EventSubscriptionArn": f"{topic}:sub", "Sns": sns}]}


class _Context:
    function_name = "AlertDispatchFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:AlertDispatchFunction"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def measure() -> dict[str, Any]:
    import boto3

    from devtools.template import create_tables, load_template

    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    routes = {
        "repeat_interval_seconds": {"critical": 7200, "warning": 14400, "info": 43200},
        "stale_after_seconds": 86400,
        "route": {"receiver": "oncall"},
        "receivers": {"oncall": {"channels": [{"type": "slack", "webhook_url_secret": "slack"}]}},
    }
    with moto_on_loopback(ROOT), tempfile.TemporaryDirectory() as folder:
        tables = create_tables(
            boto3.client("dynamodb"), load_template(ROOT / "template.yaml"), prefix="bench-"
        )
        path = Path(folder) / "routes.json"
        path.write_text(json.dumps(routes))
        os.environ.update(
            ALERT_STATE_TABLE_NAME=tables["AlertStateTable"],
            BILLING_TABLE_NAME=tables["BillingStateTable"],
            IDEMPOTENCY_TABLE_NAME=tables["IdempotencyTable"],
            ALERT_ROUTES_PATH=str(path),
            ALERT_SECRETS=json.dumps({"slack": receiver.url}),
        )
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "bench_alert_dispatch", ROOT / "functions" / "alert_dispatch" / "app.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.lambda_handler(_alarm_record(999), _Context())  # warm: clients made, routes read
        through_dispatcher = []
        for n in range(ALARMS):
            started = time.perf_counter()
            module.lambda_handler(_alarm_record(n), _Context())
            through_dispatcher.append(receiver.arrivals[-1] - started)
        body = receiver.bodies[-1]
        direct = []
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(ALARMS):
            started = time.perf_counter()
            request = urllib.request.Request(
                receiver.url, data=body, headers={"Content-Type": "application/json"}
            )
            with opener.open(request, timeout=10) as answer:
                answer.read()
            direct.append(receiver.arrivals[-1] - started)
    receiver.shutdown()
    dispatched = summary_ms(through_dispatcher)
    floor = summary_ms(direct)
    return {
        "alarms": ALARMS,
        "dispatcher": dispatched,
        "direct_post": floor,
        "ratio_median": round(dispatched["median_ms"] / floor["median_ms"], 2),
    }


def render(figures: dict[str, Any]) -> list[str]:
    dispatched, floor = figures["dispatcher"], figures["direct_post"]
    return [
        f"alert dispatch, SNS alarm record -> local Slack receiver ({figures['alarms']} alarms):",
        f"  through the dispatcher: median {dispatched['median_ms']:.1f} ms,"
        f" p90 {dispatched['p90_ms']:.1f} ms",
        f"  the same POST directly: median {floor['median_ms']:.1f} ms ({figures['ratio_median']}x)",
    ]


if __name__ == "__main__":
    print_figures(measure, render)
