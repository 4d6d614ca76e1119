"""Unsigned junk at the webhook endpoint pages no one and moves no rate, no SLO, no state.

Anyone on the internet can post to ``/webhooks/stripe``. The signature is checked over the raw
bytes before anything else about a request is decoded, parsed or counted, so whatever an
unauthenticated request carries (bytes that are not UTF-8, broken JSON, a perfect-looking event,
huge or deeply nested JSON) and however its ``Stripe-Signature`` is wrong (absent, garbage, made
with another secret, over another body, or with a timestamp more than the 300 s tolerance in the
past or in the future), it gets 400 ``invalid_signature`` and counts only as
``WebhookSignatureInvalid``: never ``WebhookReceived`` or ``WebhookFailed``, which the delivery-rate
alarms and the report's SLOs are made of.

The first test sends each kind of junk alone. The scenario test replays the same signed traffic
twice at the same simulated moments (as tests/integration/test_alarm_scenarios.py drives the
functions): once clean and once with the junk mixed in. The template's alarms are stepped through
both (devtools.alarm_evaluator), their state changes are delivered to the real alert dispatcher on
the shipped route tree, and both runs' metrics go to moto's CloudWatch, where the billing report
reads them (without ``HTTP_API_ID``, so availability is ``WebhookFailed`` / ``WebhookReceived``: the
HTTP API's own request count would include the junk, as API Gateway's does). Only
``WebhookSignatureFailuresSpike`` (a warning) may tell the two runs apart, and only once the junk
exceeds its threshold.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from billwatch.alerting.config import SHIPPED_ROUTES
from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
from billwatch.reporting.scoring import build_report
from devtools import stripe_events as se
from devtools.alarm_evaluator import AlarmStates, MetricKey, StateChange
from devtools.local_alarms import AlarmDefinition, alarm_definitions
from devtools.moto_patches import install_alarm_history, install_percentiles
from devtools.signing import stripe_signature_header
from tests.alert_events import dispatcher_environment, sns_event
from tests.alert_receivers import AlertReceivers, alert_receivers
from tests.scenarios import Scenario
from tests.support import WEBHOOK_SECRET, LambdaContext, parse_emf

TOLERANCE_SECONDS = 300  # the WEBHOOK_TOLERANCE_SECONDS default
MAX_BODY_BYTES = 256 * 1024  # the WEBHOOK_MAX_BODY_BYTES default
SIGNATURE_INVALID = "WebhookSignatureInvalid"
# Tuesday 2026-12-01 15:00 UTC, inside business hours, as in the alarm scenarios.
T0 = calendar.timegm((2026, 12, 1, 15, 0, 0))
MINUTE = 60
TRAFFIC_MINUTES = 30
PER_MINUTE = 2
# The junk: a trickle first (one a minute, under the spike alarm's 10 in 300 s), then a burst.
TRICKLE = 8


# --- junk ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Junk:
    """One unauthenticated request: a body, its Stripe-Signature (None: no header), and how
    API Gateway hands the body over (bytes that are not UTF-8 come base64-encoded)."""

    body: bytes
    signature: str | None

    @property
    def base64(self) -> bool:
        try:
            self.body.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    def http_event(self) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if self.signature is not None:
            headers["stripe-signature"] = self.signature
        return se.api_gateway_event(self.body, headers=headers, base64=self.base64)


def cancellation(account_id: str, customer: str) -> bytes:
    """A perfect-looking event that would take an account's subscription away if it were believed."""
    subscription = se.subscription(
        id=f"sub_{account_id}", customer=customer, status="canceled", metadata={"account_id": account_id}
    )
    event = se.event("customer.subscription.deleted", subscription, created=int(time.time()))
    return json.dumps(event).encode()


def signed_now(body: bytes, secret: str = WEBHOOK_SECRET, offset: int = 0) -> str:
    return stripe_signature_header(body, secret, timestamp=int(time.time()) + offset)


def v1(body: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    return stripe_signature_header(body, secret, timestamp=timestamp).split(",", 1)[1].removeprefix("v1=")


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def huge_event(account_id: str, customer: str) -> bytes:
    """An event padded to just under the body limit: big, but small enough to reach the check."""
    event = json.loads(cancellation(account_id, customer))
    event["data"]["object"]["metadata"]["padding"] = ""
    shell = len(json.dumps(event).encode())
    event["data"]["object"]["metadata"]["padding"] = "x" * (MAX_BODY_BYTES - 1024 - shell)
    return json.dumps(event).encode()


# Every kind of junk, each built at the moment it is sent (signature timestamps are real time, as
# the tolerance is). ``account`` and ``customer`` name a real account of the traffic.
JUNK_KINDS: dict[str, Callable[[str, str], Junk]] = {
    # bodies that are not UTF-8
    "not utf-8, no header": lambda a, c: Junk(b"\xff\xfe\x00{\x80\x81 junk", None),
    "not utf-8, garbage header": lambda a, c: Junk(b"\xc3\x28\xa0\xa1", "t=1,v1=deadbeef"),
    "not utf-8, wrong secret": lambda a, c: Junk(b"\xed\xa0\x80{}", signed_now(b"\xed\xa0\x80{}", "whsec_x")),
    "latin-1 event, wrong secret": lambda a, c: Junk(
        cancellation(a, c).replace(b'"canceled"', '"cancelé"'.encode("latin-1")),
        signed_now(cancellation(a, c), "whsec_attacker"),
    ),
    "utf-16 event, no header": lambda a, c: Junk(cancellation(a, c).decode().encode("utf-16"), None),
    # bodies that are not JSON, or JSON no reader should take
    "broken json, no header": lambda a, c: Junk(b'{"id": "evt_1", "type": ', None),
    "broken json, wrong secret": lambda a, c: Junk(b"{{{", signed_now(b"{{{", "whsec_attacker")),
    "NaN and Infinity, garbage header": lambda a, c: Junk(b'{"created": NaN, "x": -Infinity}', "garbage"),
    "5000-digit number, no header": lambda a, c: Junk(b'{"created": 1' + b"0" * 5000 + b"}", None),
    "1e999, wrong secret": lambda a, c: Junk(
        b'{"created": 1e999}', signed_now(b'{"created": 1e999}', "whsec_x")
    ),
    "100,000 deep, no header": lambda a, c: Junk(deep_json(100_000), None),
    "100,000 deep, wrong secret": lambda a, c: Junk(
        deep_json(100_000), signed_now(deep_json(100_000), "whsec_x")
    ),
    "huge event, no header": lambda a, c: Junk(huge_event(a, c), None),
    "empty body, empty header": lambda a, c: Junk(b"", ""),
    # a perfect-looking event, with every way its signature can be wrong
    "event, no header": lambda a, c: Junk(cancellation(a, c), None),
    "event, empty header": lambda a, c: Junk(cancellation(a, c), ""),
    "event, garbage header": lambda a, c: Junk(cancellation(a, c), "this is not a signature"),
    "event, wrong secret": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c), "whsec_attacker")
    ),
    "event, signed over another body": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c) + b" ")
    ),
    "event, stale by 301 s": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c), offset=-(TOLERANCE_SECONDS + 1))
    ),
    "event, a day old": lambda a, c: Junk(cancellation(a, c), signed_now(cancellation(a, c), offset=-86_400)),
    "event, 301 s in the future": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c), offset=TOLERANCE_SECONDS + 1)
    ),
    "event, a year in the future": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c), offset=365 * 86_400)
    ),
    "event, timestamp of 20 digits": lambda a, c: Junk(
        cancellation(a, c), f"t={10**19},v1={v1(cancellation(a, c), 10**19)}"
    ),
    "event, signature moved to a new timestamp": lambda a, c: Junk(
        cancellation(a, c),
        f"t={int(time.time())},v1={v1(cancellation(a, c), int(time.time()) - 3600)}",
    ),
    "event, v0 instead of v1": lambda a, c: Junk(
        cancellation(a, c), signed_now(cancellation(a, c)).replace("v1=", "v0=")
    ),
    "event, two timestamps": lambda a, c: Junk(cancellation(a, c), f"t=1,{signed_now(cancellation(a, c))}"),
    "event, header of 8 KiB": lambda a, c: Junk(
        cancellation(a, c), f"{signed_now(cancellation(a, c), 'whsec_x')},v1={'0' * 8192}"
    ),
    "event, non-ASCII header": lambda a, c: Junk(
        cancellation(a, c), "t=\uff11\uff17\uff10\uff10,v1=\u00fc\u2603"
    ),
}


# --- observing ----------------------------------------------------------------------------------


def billing_and_idempotency_items(tables: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    client = boto3.client("dynamodb")
    items = {}
    for logical_id in ("BillingStateTable", "IdempotencyTable"):
        pages = client.get_paginator("scan").paginate(TableName=tables[logical_id], ConsistentRead=True)
        items[logical_id] = sorted((item for page in pages for item in page["Items"]), key=json.dumps)
    return items


def send(handler: Any, request: dict[str, Any]) -> tuple[int, dict[str, Any], list[Any]]:
    """The status, the parsed answer, and every metric the invocation emitted."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = handler.lambda_handler(request, LambdaContext())
    return result["statusCode"], json.loads(result["body"]), parse_emf(printed.getvalue())


def counted_only_as_a_signature_failure(emitted: list[Any]) -> bool:
    return [(m.name, m.value, m.dimensions) for m in emitted] == [
        (SIGNATURE_INVALID, 1.0, {"service": "billwatch"})
    ]


# --- each kind alone ----------------------------------------------------------------------------


def subscribe(account_id: str, customer: str, created: int) -> dict[str, Any]:
    subscription = se.subscription(
        id=f"sub_{account_id}", customer=customer, metadata={"account_id": account_id}
    )
    return se.event("customer.subscription.created", subscription, created=created)


def test_every_kind_of_unsigned_junk_gets_400_invalid_signature_and_counts_only_as_such(
    webhook_handler: Any, aws: dict[str, str]
) -> None:
    body = json.dumps(subscribe("acct_target", "cus_target", int(time.time()) - 60)).encode()
    request = se.api_gateway_event(body, headers={"stripe-signature": signed_now(body)})
    assert send(webhook_handler, request)[0] == 200  # an account for the junk to aim at
    problems = []
    for kind, build in JUNK_KINDS.items():  # one handler for all: each request is judged on its own
        before = billing_and_idempotency_items(aws)
        status, answer, emitted = send(webhook_handler, build("acct_target", "cus_target").http_event())
        if (status, answer.get("error")) != (400, "invalid_signature"):
            problems.append(f"{kind}: answered {status} {answer}")
        if not counted_only_as_a_signature_failure(emitted):
            problems.append(
                f"{kind}: counted as {sorted({(m.name, *m.dimensions.values()) for m in emitted})}"
            )
        if billing_and_idempotency_items(aws) != before:
            problems.append(f"{kind}: changed the stored state")
    assert not problems, "\n".join(problems)


def test_the_signature_tolerance_applies_both_ways(webhook_handler: Any, aws: dict[str, str]) -> None:
    """The junk above is refused for its timestamp alone: the same event inside the tolerance applies."""
    for offset, accepted in [
        (-(TOLERANCE_SECONDS - 5), True),
        (TOLERANCE_SECONDS - 5, True),
        (-(TOLERANCE_SECONDS + 5), False),
        (TOLERANCE_SECONDS + 5, False),
    ]:
        event = subscribe(f"acct_clock_{offset}", f"cus_clock_{abs(offset)}", int(time.time()) - 60)
        body = json.dumps(event).encode()
        request = se.api_gateway_event(body, headers={"stripe-signature": signed_now(body, offset=offset)})
        status, answer, emitted = send(webhook_handler, request)
        if accepted:
            assert (status, answer.get("outcome")) == (200, "applied"), (offset, answer)
        else:
            assert (status, answer.get("error")) == (400, "invalid_signature"), (offset, answer)
            assert counted_only_as_a_signature_failure(emitted), offset


# --- among signed traffic, through the alarms, the dispatcher and the report ---------------------


class Run(Scenario):
    """One replay of the traffic; ``junk`` posts an unauthenticated request at the current moment."""

    def junk(self, request: Junk) -> tuple[int, dict[str, Any], list[Any]]:
        kept = len(self.documents)
        with self._captured():
            result = self.handler("webhook_intake").lambda_handler(request.http_event(), LambdaContext())
        emitted = parse_emf("\n".join(json.dumps(document) for _, document in self.documents[kept:]))
        return result["statusCode"], json.loads(result["body"]), emitted


class SteppedPerfCounter:
    """The intake's clock for processing times: 1 ms a reading, so both runs measure the same."""

    def __init__(self) -> None:
        self._now = 0.0

    def perf_counter(self) -> float:
        self._now += 0.001
        return self._now

    def time(self) -> float:
        return time.time()


def signed_traffic(run: str) -> list[dict[str, Any]]:
    """The same events for each run (ids and accounts of its own), in order, one per moment."""
    events = []
    for n in range(TRAFFIC_MINUTES * PER_MINUTE):
        account, customer = f"acct_{run}_{n % 10}", f"cus_{run}_{n % 10}"
        created = 1_750_000_000 + n  # each later than the last: every event applies
        if n < 10:
            events.append(subscribe(account, customer, created))
        else:
            invoice = se.invoice(
                customer=customer,
                subscription=f"sub_{account}",
                subscription_metadata={"account_id": account},
            )
            events.append(se.event("invoice.paid", invoice, created=created))
    return events


def traffic_moments() -> list[float]:
    return [T0 + m * MINUTE + 1 + n * 19 for m in range(TRAFFIC_MINUTES) for n in range(PER_MINUTE)]


def junk_moments() -> list[float]:
    """Between the signed webhooks: one a minute from minute 1, then the rest within minutes 15 to 19."""
    trickle = [T0 + (1 + n) * MINUTE + 30 for n in range(TRICKLE)]
    burst_size = len(JUNK_KINDS) - TRICKLE
    burst = [T0 + 15 * MINUTE + 10 + n * (280 // burst_size) for n in range(burst_size)]
    return trickle + burst


def trained_history(run: Run) -> None:
    """A day of the same steady volume before T0 (what the volume anomaly band learns from)."""
    key = MetricKey.of("Billwatch", "WebhookReceived", service="billwatch")
    for age in range(24 * 60, 0, -1):
        run.store.put(key, T0 - age * MINUTE + 30, PER_MINUTE)


def replay(run: Run, run_name: str, junk: list[tuple[float, str]]) -> list[tuple[str, int, dict, list]]:
    """The signed traffic at its moments, with the junk at its own; what each junk request got."""
    trained_history(run)
    target = (f"acct_{run_name}_1", f"cus_{run_name}_1")
    answers = []
    steps = [
        (moment, "signed", event)
        for moment, event in zip(traffic_moments(), signed_traffic(run_name), strict=True)
    ]
    steps += [(moment, "junk", kind) for moment, kind in junk]
    for moment, what, item in sorted(steps, key=lambda step: step[0]):
        run.at(moment)
        if what == "signed":
            assert run.webhook(item) == 200
        else:
            answers.append((item, *run.junk(JUNK_KINDS[item](*target))))
    return answers


def state_changes(definitions: dict[str, AlarmDefinition], run: Run) -> list[StateChange]:
    """Every alarm's state changes, evaluated each minute over the traffic, as CloudWatch would."""
    metric_alarms = {key: d.properties for key, d in definitions.items() if not d.composite}
    composites = {key: d.properties["AlarmRule"] for key, d in definitions.items() if d.composite}
    states = AlarmStates(metric_alarms, composites, run.store)
    changes = []
    for minute in range(TRAFFIC_MINUTES + 1):
        changes += states.evaluate(T0 + minute * MINUTE)
    return changes


def transitions(changes: list[StateChange]) -> dict[str, list[tuple[float, str]]]:
    by_alarm: dict[str, list[tuple[float, str]]] = {}
    for change in changes:
        by_alarm.setdefault(change.alarm, []).append((change.at, change.new_state))
    return by_alarm


ACTIONS = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}


def deliver(
    run: Run, definitions: dict[str, AlarmDefinition], changes: list[StateChange]
) -> list[tuple[str, str, str]]:
    """Each change published as CloudWatch would: to the topics of its actions, the alarm topics'
    notices to the dispatcher. Returns (topic, alarm, state) of every publication."""
    published = []
    for change in changes:
        definition = definitions[change.alarm]
        for topic in definition.properties.get(ACTIONS[change.new_state]) or []:
            published.append((str(topic), change.alarm, change.new_state))
            if topic == "DispatcherAlarmTopic":
                continue  # emailed by SNS itself, no function on it
            topic_name = f"billwatch-dev-alarms-{str(topic).removesuffix('AlarmTopic').lower()}"
            run.at(change.at).alert_input(sns_event(definition.notification(change), topic=topic_name))
    return published


def routes_of_the_shipped_tree(receivers: AlertReceivers) -> dict[str, Any]:
    """The shipped alert routes, every receiver's channels (and fallback) a webhook of its own name."""
    routes = json.loads(SHIPPED_ROUTES.read_text())
    for name, receiver in routes["receivers"].items():
        hook = {"type": "webhook", "url": receivers.url(f"/{name}"), "signing_secret": "hook"}
        receiver["channels"] = [hook]
        if "fallback" in receiver:
            receiver["fallback"] = {**hook, "url": receivers.url(f"/{name}/fallback")}
    return routes


def critical_receivers(routes: dict[str, Any]) -> set[str]:
    return {
        route["receiver"]
        for route in routes["route"]["routes"]
        if "severity=critical" in route.get("matchers", [])
    }


def webhook_rate_alarms(definitions: dict[str, AlarmDefinition]) -> set[str]:
    """Every alarm that reads WebhookReceived or WebhookFailed, and the composites built on them."""
    reading = {
        key
        for key, d in definitions.items()
        if not d.composite
        and ('"WebhookReceived"' in json.dumps(d.properties) or '"WebhookFailed"' in json.dumps(d.properties))
    }
    built_on = {
        key
        for key, d in definitions.items()
        if d.composite and any(f'ALARM("{child}")' in d.properties["AlarmRule"] for child in reading)
    }
    return reading | built_on


def put_in_cloudwatch(client: Any, run: Run) -> None:
    """The run's EMF documents, as CloudWatch stores them: each metric under each dimension set."""
    for moment, document in run.documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            data = []
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                for dimension_set in directive["Dimensions"]:
                    data.append(
                        {
                            "MetricName": metric["Name"],
                            "Dimensions": [{"Name": name, "Value": document[name]} for name in dimension_set],
                            "Timestamp": dt.datetime.fromtimestamp(moment, dt.UTC),
                            "Values": [float(v) for v in (values if isinstance(values, list) else [values])],
                        }
                    )
            client.put_metric_data(Namespace=directive["Namespace"], MetricData=data)


@pytest.fixture
def percentiles() -> Iterator[None]:
    """What moto's CloudWatch lacks for the report: percentiles and the alarm history."""
    undo_percentiles, undo_history = install_percentiles(), install_alarm_history()
    yield
    undo_history()
    undo_percentiles()


@pytest.fixture
def dispatching(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[AlertReceivers, dict]]:
    with alert_receivers() as receivers:
        dispatcher_environment(monkeypatch, aws, receivers, tmp_path)
        routes = routes_of_the_shipped_tree(receivers)
        (tmp_path / "routes.json").write_text(json.dumps(routes))
        yield receivers, routes


def test_unsigned_junk_among_signed_traffic_moves_no_webhook_alarm_no_slo_and_pages_no_one(
    aws: dict[str, str],
    template: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    dispatching: tuple[AlertReceivers, dict[str, Any]],
    percentiles: None,
) -> None:
    import billwatch.billing.intake

    receivers, routes = dispatching
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setattr(billwatch.billing.intake, "time", SteppedPerfCounter())
    definitions = alarm_definitions(template)
    junk = list(zip(junk_moments(), JUNK_KINDS, strict=True))
    assert len(junk) >= 20

    clean, dirty = Run(monkeypatch, start=T0), Run(monkeypatch, start=T0)
    assert replay(clean, "clean", []) == []
    answers = replay(dirty, "dirty", junk)

    # Every junk request: 400 invalid_signature, counted as a signature failure and nothing else.
    for kind, status, answer, emitted in answers:
        assert (status, answer.get("error")) == (400, "invalid_signature"), (kind, answer)
        assert counted_only_as_a_signature_failure(emitted), (kind, [(m.name, m.dimensions) for m in emitted])

    # The alarms: the same state changes with and without the junk, but for the signature spike.
    clean_changes, dirty_changes = state_changes(definitions, clean), state_changes(definitions, dirty)
    spike = "WebhookSignatureFailuresSpike"
    dirty_transitions, clean_transitions = transitions(dirty_changes), transitions(clean_changes)
    assert dirty_transitions.pop(spike) != clean_transitions.pop(spike, None)
    assert dirty_transitions == clean_transitions
    rate_alarms = webhook_rate_alarms(definitions)
    assert {
        "HighWebhookFailureRate",
        "StripeWebhookFailureRateHigh",
        "WebhookVolumeAnomaly",
        "WebhooksAbsent",
    } <= (rate_alarms)
    for alarm in sorted(rate_alarms):
        assert dirty_transitions.get(alarm) == [(T0, "OK")], (alarm, dirty_transitions.get(alarm))
    # The spike alarm: quiet through the trickle, firing only once the burst passed its threshold.
    spike_changes = [(change.at, change.new_state) for change in dirty_changes if change.alarm == spike]
    burst = junk_moments()[TRICKLE]
    assert spike_changes[0] == (T0, "OK"), spike_changes
    fired_at = [at for at, state in spike_changes if state == "ALARM"]
    assert fired_at and min(fired_at) > burst, spike_changes
    assert definitions[spike].description.startswith("[warning]")

    # The dispatcher: no critical receiver hears of anything; the spike (a warning) reaches its own.
    published = deliver(dirty, definitions, dirty_changes)
    told = {
        receiver
        for receiver in routes["receivers"]
        if receivers.requests(f"/{receiver}") or receivers.requests(f"/{receiver}/fallback")
    }
    assert critical_receivers(routes) and not critical_receivers(routes) & told, (told, published)
    assert not [
        p for p in published if p[0] in ("CriticalAlarmTopic", "DispatcherAlarmTopic") and p[2] == "ALARM"
    ]
    assert "oncall-warning" in told, (told, published)  # the path to a receiver works
    alerted = [request.json for request in receivers.requests("/oncall-warning")]
    assert alerted and all(spike in json.dumps(notice) for notice in alerted), alerted

    # The billing report: the same SLOs and availability for the same valid traffic.
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (T0, T0 + TRAFFIC_MINUTES * MINUTE))
    read = {}
    for region, run in (("us-east-1", clean), ("us-west-2", dirty)):
        cloudwatch = boto3.client("cloudwatch", region_name=region)
        put_in_cloudwatch(cloudwatch, run)
        read[region] = CloudWatchReportSource(cloudwatch, "Billwatch", stage="dev").read(start, end)
    clean_data, dirty_data = read["us-east-1"], read["us-west-2"]
    assert clean_data.webhooks_received.value == len(traffic_moments())
    assert dirty_data.availability == clean_data.availability
    assert (dirty_data.webhooks_received, dirty_data.webhooks_failed, dirty_data.webhook_p95_ms) == (
        clean_data.webhooks_received,
        clean_data.webhooks_failed,
        clean_data.webhook_p95_ms,
    )
    clean_report, dirty_report = build_report(clean_data), build_report(dirty_data)
    assert dirty_report.slos == clean_report.slos
    assert dirty_report.health == clean_report.health
