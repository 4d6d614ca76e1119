"""`make report`: the metrics the handlers print reach moto's CloudWatch, and the report reads them.

Each test starts its stack in its own body, not in a fixture: pytest puts its own sys.stdout back
between a test's setup and call, which would take the EMF sink of a fixture's stack away.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import sys
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.cloudwatch import models as moto_cloudwatch

from devtools import report
from devtools import stripe_events as se
from devtools.emulator import LocalEmulator
from devtools.local_metrics import LocalMetrics, install_stdout_tap
from tests.integration.test_local_stack import NOW, call, post_signed, subscription_created

REGION = "us-east-1"
NAMESPACE = "Billwatch"
TEXT = "text/plain; charset=utf-8"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def report_of(stack: LocalEmulator, query: str = "") -> tuple[int, str, str]:
    status, headers, body = call(f"{stack.url}/_local/report{query}", method="GET")
    return status, headers["content-type"], body.decode("utf-8")


# --- through the local stack ---------------------------------------------------------------------


def test_the_report_counts_what_the_webhooks_did(capsys: pytest.CaptureFixture[str]) -> None:
    stdout, statistic = sys.stdout, moto_cloudwatch.Statistics.get_statistics_for_type

    with LocalEmulator().start(port=0) as stack:
        webhook, secrets = stack.url + "/webhooks/stripe", list(stack.webhook_secrets)
        failed = se.invoice(id="in_report", customer="cus_acct_report", status="open")
        for event in (
            subscription_created("acct_report", "evt_report_1"),
            se.event("invoice.payment_failed", failed, id="evt_report_2", created=NOW + 1),
        ):
            status, body = post_signed(webhook, event, secrets)
            assert (status, body["outcome"]) == (200, "applied")

        status, content_type, text = report_of(stack)

    assert (status, content_type) == (200, TEXT), text
    assert text.startswith("Billing report ")
    assert "Payments failed: 1 (" in text
    assert "Subscriptions: 1 new," in text
    assert re.search(r"Webhook p95 latency: [\d.]+ ms", text), text  # moto got its percentiles
    assert "Incidents\n  none" in text
    printed = capsys.readouterr().out
    assert '"PaymentFailed":[1.0]' in printed and '"SubscriptionCreated":[1.0]' in printed
    assert sys.stdout is stdout
    assert moto_cloudwatch.Statistics.get_statistics_for_type is statistic


def test_the_report_route_takes_daily_or_weekly_only(capsys: pytest.CaptureFixture[str]) -> None:
    stdout, statistic = sys.stdout, moto_cloudwatch.Statistics.get_statistics_for_type
    stack = LocalEmulator().start(port=0)
    try:
        assert sys.stdout is not stdout
        assert moto_cloudwatch.Statistics.get_statistics_for_type is not statistic

        status, content_type, text = report_of(stack, "?period=monthly")
        assert (status, content_type, text) == (400, TEXT, "period must be daily or weekly, got 'monthly'\n")
        status, _, text = report_of(stack, "?perod=weekly")
        assert (status, text) == (400, "unknown query parameter 'perod': only period is taken\n")
        assert call(f"{stack.url}/_local/report", b"", method="POST")[0] == 404
        assert call(f"{stack.url}/_local/nothing", method="GET")[0] == 404

        status, _, text = report_of(stack, "?period=weekly")
        assert (status, text.startswith("Weekly billing report ")) == (200, True), text

        capsys.readouterr()
        assert report.main(["--url", stack.url, "--period", "weekly"]) == 0
        assert capsys.readouterr().out.startswith("Weekly billing report ")
    finally:
        stack.stop()
    stack.stop()  # a second stop() must not undo anything twice

    assert sys.stdout is stdout
    assert moto_cloudwatch.Statistics.get_statistics_for_type is statistic


def test_make_report_without_a_running_stack(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()

    assert report.main(["--url", f"http://127.0.0.1:{port}"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert f"no local stack answers on http://127.0.0.1:{port}" in captured.err
    assert f"`make run PORT={port}`" in captured.err


# --- the EMF sink on its own ---------------------------------------------------------------------


def values(client: Any, metric: str, unit: str, start: dt.datetime, dimensions: dict[str, str]) -> list:
    answer = client.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": metric,
                        "Dimensions": [{"Name": n, "Value": v} for n, v in dimensions.items()],
                    },
                    "Period": 60,
                    "Stat": "Sum",
                    "Unit": unit,
                },
            }
        ],
        StartTime=start,
        EndTime=start + dt.timedelta(minutes=1),
    )
    return answer["MetricDataResults"][0]["Values"]


def test_the_emf_sink_puts_emf_lines_into_cloudwatch_and_passes_every_line_through(
    aws_credentials: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    moment = dt.datetime(2026, 11, 30, 9, 15, 20, 250_000, tzinfo=dt.UTC)
    document = {
        "_aws": {
            "Timestamp": int(moment.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["service"], ["service", "Tier"]],
                    "Metrics": [
                        {"Name": "SubscriptionCreated", "Unit": "Count"},
                        {"Name": "UpgradeLatency", "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "service": "billwatch",
        "Tier": "PRO",
        "account_id": "acct_1",
        "SubscriptionCreated": [1.0, 1.0],
        "UpgradeLatency": 250.0,
    }
    emf = json.dumps(document, separators=(",", ":"))
    other = 'not a metric, though it mentions "_aws"'
    broken = '{"_aws": {"Timestamp": 1'

    with mock_aws():
        client = boto3.client("cloudwatch", region_name=REGION)
        undo = install_stdout_tap(LocalMetrics(client).on_line)
        try:
            sys.stdout.write(emf[:30])
            sys.stdout.write(emf[30:] + "\n" + other)
            print()
            print(broken)
        finally:
            undo()

        listed = {
            (metric["MetricName"], tuple((d["Name"], d["Value"]) for d in metric["Dimensions"]))
            for metric in client.list_metrics(Namespace=NAMESPACE)["Metrics"]
        }
        assert listed == {
            (name, dimensions)
            for name in ("SubscriptionCreated", "UpgradeLatency")
            for dimensions in ((("service", "billwatch"),), (("service", "billwatch"), ("Tier", "PRO")))
        }
        minute = moment.replace(second=0, microsecond=0)
        service = {"service": "billwatch"}
        assert values(client, "SubscriptionCreated", "Count", minute, service) == [2.0]
        assert values(client, "SubscriptionCreated", "Count", minute, {**service, "Tier": "PRO"}) == [2.0]
        assert values(client, "UpgradeLatency", "Milliseconds", minute, service) == [250.0]
        assert values(client, "UpgradeLatency", "Count", minute, service) == []  # the unit was kept
        earlier = minute - dt.timedelta(minutes=1)
        assert values(client, "SubscriptionCreated", "Count", earlier, service) == []  # at its Timestamp

    assert capsys.readouterr().out == f"{emf}\n{other}\n{broken}\n"
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_an_emf_line_that_cannot_be_forwarded_is_a_warning_and_still_printed(
    aws_credentials: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = boto3.client(
        "cloudwatch",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"total_max_attempts": 1}),
    )
    directive = {"Namespace": NAMESPACE, "Dimensions": [["service"]], "Metrics": [{"Name": "PaymentFailed"}]}
    emf = json.dumps(
        {
            "_aws": {"Timestamp": NOW * 1000, "CloudWatchMetrics": [directive]},
            "service": "billwatch",
            "PaymentFailed": [1.0],
        }
    )

    undo = install_stdout_tap(LocalMetrics(unreachable).on_line)
    try:
        print(emf)
        print("after it")
    finally:
        undo()

    assert capsys.readouterr().out == f"{emf}\nafter it\n"
    (warning,) = [record for record in caplog.records if record.name == "devtools.local_metrics"]
    assert warning.levelname == "WARNING"
    assert "EndpointConnectionError" in warning.getMessage()
