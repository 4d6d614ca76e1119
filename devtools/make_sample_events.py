"""Regenerate the sample events under events/ from devtools.stripe_events.

    python -m devtools.make_sample_events [--out events]

Writes one Stripe event per handled type (events/<type>.json), legacy-shape variants
(events/legacy/), and Lambda wrappers for ``sam local invoke -e``: the signed webhook
(events/apigw/, events/eventbridge/), and from template.yaml one event per schedule of every
function (events/schedules/), per HttpApi route other than the webhook (events/apigw/), and a
CloudWatch alarm notification through SNS for the alert dispatcher (events/sns/). Those are named
``<Function>.<Event>.json`` after the function and its event in the template.
Output is deterministic: fixed ids and timestamps; the API Gateway sample is signed with
``LOCAL_DEV_SECRET`` at a fixed timestamp (so it is stale by the time you use it - see events/README.md).
events/README.md is hand-written and not touched.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import stripe_events as se
from devtools.signing import LOCAL_DEV_SECRET, stripe_signature_header
from devtools.template import FUNCTION_TYPE, load_template, resolved_properties, resources_of_type

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"

ACCOUNT_ID = "acct_demo"
CUSTOMER_ID = "cus_demo"
SUBSCRIPTION_ID = "sub_demo"
META = {"account_id": ACCOUNT_ID}

# 2025-10-01T00:00:00Z .. 2025-11-01T00:00:00Z: the demo subscription's current period.
PERIOD_START = 1_759_276_800
PERIOD_END = 1_761_955_200
# Events happen a little after the period starts (2025-10-01T00:05:00Z onwards).
T0 = PERIOD_START + 300
DAY = 86_400


def _evt_id(name: str) -> str:
    return "evt_demo_" + name.replace(".", "_")


def _sub(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "id": SUBSCRIPTION_ID,
        "customer": CUSTOMER_ID,
        "metadata": META,
        "current_period_start": PERIOD_START,
        "current_period_end": PERIOD_END,
        "created": PERIOD_START,
    }
    kwargs.update(overrides)
    return se.subscription(**kwargs)


def _invoice(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "id": "in_demo_0001",
        "customer": CUSTOMER_ID,
        "subscription": SUBSCRIPTION_ID,
        "subscription_metadata": META,
        "created": PERIOD_START,
        "period_start": PERIOD_START,
        "period_end": PERIOD_END,
    }
    kwargs.update(overrides)
    return se.invoice(**kwargs)


def _scheduled_cancel(sub: dict[str, Any]) -> dict[str, Any]:
    """The customer asked to cancel at period end (what the customer portal does)."""
    sub["canceled_at"] = T0
    sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
    return sub


SUB_UPDATED_PREVIOUS = {
    "cancel_at": None,
    "cancel_at_period_end": False,
    "canceled_at": None,
    "cancellation_details": {"reason": None},
}


def stripe_events() -> dict[str, dict[str, Any]]:
    """{relative path: Stripe event} for the bare and legacy samples."""
    out: dict[str, dict[str, Any]] = {}

    def add(type_: str, obj: dict, *, created: int, prefix: str = "", **kw: Any) -> None:
        name = f"{prefix}{type_}"
        out[f"{name}.json"] = se.event(type_, obj, id=_evt_id(name.replace("/", "_")), created=created, **kw)

    add(
        "checkout.session.completed",
        se.checkout_session(
            id="cs_test_demo_completed",
            customer=CUSTOMER_ID,
            client_reference_id=ACCOUNT_ID,
            subscription=SUBSCRIPTION_ID,
            metadata=META,
            created=PERIOD_START - 120,
        ),
        created=PERIOD_START + 2,
    )
    add(
        "checkout.session.expired",
        se.checkout_session(
            id="cs_test_demo_expired",
            customer=None,
            client_reference_id=ACCOUNT_ID,
            status="expired",
            subscription=None,
            metadata=META,
            created=PERIOD_START - 2 * DAY,
        ),
        created=PERIOD_START - DAY,
    )
    add("customer.subscription.created", _sub(), created=PERIOD_START + 1)
    add(
        "customer.subscription.updated",
        _scheduled_cancel(_sub(cancel_at_period_end=True)),
        created=T0,
        previous_attributes=SUB_UPDATED_PREVIOUS,
    )
    add(
        "customer.subscription.deleted",
        _sub(status="canceled", cancel_at_period_end=True),
        created=PERIOD_END + 5,
    )
    trial_end = PERIOD_START + 14 * DAY
    add(
        "customer.subscription.trial_will_end",
        _sub(status="trialing", trial_end=trial_end, current_period_end=trial_end),
        created=trial_end - 3 * DAY,
    )
    add(
        "customer.subscription.paused",
        _sub(status="paused", trial_end=trial_end, current_period_end=trial_end),
        created=trial_end + 5,
        previous_attributes={"status": "trialing"},
    )
    add(
        "customer.subscription.resumed",
        _sub(current_period_start=trial_end + 3600, current_period_end=trial_end + 3600 + 31 * DAY),
        created=trial_end + 3605,
        previous_attributes={"status": "paused"},
    )
    add("invoice.paid", _invoice(), created=PERIOD_START + 3600)
    add(
        "invoice.payment_failed",
        _invoice(id="in_demo_0002", status="open", billing_reason="subscription_cycle"),
        created=PERIOD_START + 3600,
    )
    add(
        "entitlements.active_entitlement_summary.updated",
        se.entitlement_summary(customer=CUSTOMER_ID, lookup_keys=("sso", "audit_log")),
        created=PERIOD_START + 3,
        previous_attributes={
            "entitlements": se.entitlement_summary(customer=CUSTOMER_ID, lookup_keys=())["entitlements"]
        },
    )
    add("customer.deleted", se.customer(id=CUSTOMER_ID, metadata=META), created=PERIOD_END + 10 * DAY)
    # What Stripe tells of money and suspicious activity without changing the account's state.
    charge_id = "ch_demo_0001"
    add(
        "charge.refunded",
        se.charge(id=charge_id, customer=CUSTOMER_ID, amount_refunded=500, created=PERIOD_START + 3600),
        created=PERIOD_START + 2 * DAY,
        previous_attributes={"amount_refunded": 0},
    )
    add(
        "payment_intent.payment_failed",
        se.payment_intent(id="pi_demo_0002", customer=CUSTOMER_ID, created=PERIOD_START + 3500),
        created=PERIOD_START + 3600,
    )
    add(
        "charge.dispute.created",
        se.dispute(id="dp_demo_0001", charge=charge_id, created=PERIOD_START + 3 * DAY),
        created=PERIOD_START + 3 * DAY,
    )
    add(
        "radar.early_fraud_warning.created",
        se.early_fraud_warning(id="issfr_demo_0001", charge=charge_id, created=PERIOD_START + 2 * DAY),
        created=PERIOD_START + 2 * DAY,
    )

    # Legacy (pre-2025-03-31) shapes: API version inferred from the object -> 2024-06-20.
    add(
        "customer.subscription.updated",
        _scheduled_cancel(_sub(cancel_at_period_end=True, legacy=True)),
        created=T0,
        previous_attributes=SUB_UPDATED_PREVIOUS,
        prefix="legacy/",
    )
    add("invoice.paid", _invoice(legacy=True), created=PERIOD_START + 3600, prefix="legacy/")
    return out


# ------------------------------------------------------------------ the template's other triggers

REGION = "us-east-1"
AWS_ACCOUNT = "123456789012"  # moto's default account, as in the local stack
# The stack name CloudFormation puts in front of the names it makes (samconfig.toml's default).
STACK_NAME = "billwatch-dev"
# Every trigger sample happens at one moment: Monday 2025-10-06 08:00 in America/New_York, when the
# default daily and weekly report schedules both fire.
TRIGGERED_AT = "2025-10-06T12:00:00Z"
TRIGGERED_AT_EPOCH = int(datetime.fromisoformat(TRIGGERED_AT).timestamp())
SCHEDULER_TIME_PLACEHOLDER = "<aws.scheduler.scheduled-time>"
WEBHOOK_ROUTE = "POST /webhooks/stripe"  # its samples are the signed Stripe events above
# The IAM caller of the IAM-authorized route samples: a session of the local admin role, which
# env.json lists in ADMIN_ROLE_ARNS (the local stack's default caller too).
ADMIN_CALLER_ARN = f"arn:aws:sts::{AWS_ACCOUNT}:assumed-role/billwatch-local-admin/local"
PATH_PARAMETER = re.compile(r"\{([^}/]+)\}")
PATH_PARAMETER_VALUES = {
    "account_id": ACCOUNT_ID,
    "silence_id": uuid.uuid5(uuid.NAMESPACE_URL, "silence").hex,
    # billwatch.alerting.store.alert_id of acct_demo's 95 % api_calls alert in the demo period
    "alert_id": "dXNhZ2UjYWNjdF9kZW1vI2FwaV9jYWxscyM5NSMyMDI1LTEwLTAxVDAwOjAwOjAwWg",
}
ROUTE_BODIES: dict[str, dict[str, Any]] = {
    "POST /v1/accounts/{account_id}/usage": {"feature": "api_calls", "quantity": 1},
    "PUT /admin/accounts/{account_id}/tier-override": {"tier": "PRO"},
    "POST /admin/accounts/{account_id}/grants": {"feature": "exports", "quantity": 100},
    "POST /admin/silences": {
        "matchers": ["alertname=WebhookVolumeAnomaly"],
        # Far enough ahead that the silence is not over by the time the sample is used.
        "ends_at": "2030-01-01T00:00:00Z",
        "comment": "sam local sample: a maintenance window",
    },
    "POST /admin/alerts/{alert_id}/ack": {"reason": "sam local sample: looking into it"},
    "POST /admin/alerts/{alert_id}/resolve": {"reason": "sam local sample: the customer upgraded"},
}
# The alarm whose notification the SNS sample carries: a single-metric one, so its Trigger names the
# metric itself (no metric math).
SAMPLE_ALARM = "WebhookSignatureFailuresSpike"


def function_events(template: Mapping[str, Any], *event_types: str) -> Iterator[tuple[str, str, dict]]:
    """(function logical id, event name, event Properties) of every event of the given types."""
    for function, resource in resources_of_type(template, FUNCTION_TYPE).items():
        for name, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            if event.get("Type") in event_types:
                yield function, name, event.get("Properties") or {}


def route_key(props: Mapping[str, Any]) -> str:
    return f"{str(props.get('Method', 'ANY')).upper()} {props.get('Path', '$default')}"


def _sample_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(parts)))


def scheduled_event(function: str, event_name: str) -> dict[str, Any]:
    """What an EventBridge rule (a SAM ``Schedule`` event) sends the function."""
    rule = f"{STACK_NAME}-{function}{event_name}"  # SAM's logical id of the rule, in the stack
    return {
        "version": "0",
        "id": _sample_uuid("scheduled-event", rule, TRIGGERED_AT),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": AWS_ACCOUNT,
        "time": TRIGGERED_AT,
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{AWS_ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def scheduler_input(props: Mapping[str, Any]) -> Any:
    """What EventBridge Scheduler (a SAM ``ScheduleV2`` event) sends: its Input, context filled in."""
    return json.loads(props["Input"].replace(SCHEDULER_TIME_PLACEHOLDER, TRIGGERED_AT))


def route_event(function: str, event_name: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """An HTTP API (payload 2.0) request on a route, as API Gateway hands it over."""
    key = route_key(props)
    method, path = key.split(" ", 1)
    parameters = {name: PATH_PARAMETER_VALUES[name] for name in PATH_PARAMETER.findall(path)}
    body = ROUTE_BODIES.get(key)
    event = se.api_gateway_event(
        json.dumps(body) if body is not None else b"",
        headers={
            "accept": "application/json",
            "content-type": "application/json",
            "user-agent": "billwatch-sample-client/1.0",
        },
        path=PATH_PARAMETER.sub(lambda found: parameters[found[1]], path),
        method=method,
        request_id=_sample_uuid("request", function, event_name),
        time_epoch_ms=TRIGGERED_AT_EPOCH * 1000,
        source_ip="203.0.113.7",
    )
    # API Gateway names the route as the template does, with its {parameters}.
    event["routeKey"] = event["requestContext"]["routeKey"] = key
    if parameters:
        event["pathParameters"] = parameters
    if body is None:
        del event["body"], event["headers"]["content-type"], event["headers"]["content-length"]
    if (props.get("Auth") or {}).get("Authorizer") == "AWS_IAM":
        event["requestContext"]["authorizer"] = {
            "iam": {
                "accessKey": "ASIASAMPLE",
                "accountId": AWS_ACCOUNT,
                "callerId": "AROASAMPLE:local",
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": ADMIN_CALLER_ARN,
                "userId": "AROASAMPLE:local",
            }
        }
    return event


def _cloudwatch_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def alarm_notification_event(
    alarm: Mapping[str, Any], topic_names: Mapping[str, str], topic: str
) -> dict[str, Any]:
    """CloudWatch's notification of ``alarm`` (its resolved Properties) going into ALARM, as SNS
    delivers it from ``topic``; ``topic_names`` maps the topics' logical ids to their names."""

    def topic_arn(logical_id: str) -> str:
        return f"arn:aws:sns:{REGION}:{AWS_ACCOUNT}:{topic_names[logical_id]}"

    threshold = float(alarm["Threshold"])
    breached_at = TRIGGERED_AT_EPOCH - 60
    message = {
        "AlarmName": alarm["AlarmName"],
        "AlarmDescription": alarm["AlarmDescription"],
        "AWSAccountId": AWS_ACCOUNT,
        "AlarmConfigurationUpdatedTimestamp": _cloudwatch_time(TRIGGERED_AT_EPOCH - 7 * DAY),
        "NewStateValue": "ALARM",
        "NewStateReason": (
            f"Threshold Crossed: 1 out of the last 1 datapoints [{threshold + 4}"
            f" ({datetime.fromtimestamp(breached_at, UTC):%d/%m/%y %H:%M:%S})] was greater than the"
            f" threshold ({threshold}) (minimum 1 datapoint for OK -> ALARM transition)."
        ),
        "StateChangeTime": _cloudwatch_time(TRIGGERED_AT_EPOCH),
        "Region": "US East (N. Virginia)",
        "AlarmArn": f"arn:aws:cloudwatch:{REGION}:{AWS_ACCOUNT}:alarm:{alarm['AlarmName']}",
        "OldStateValue": "OK",
        "OKActions": [topic_arn(action) for action in alarm.get("OKActions", [])],
        "AlarmActions": [topic_arn(action) for action in alarm.get("AlarmActions", [])],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": alarm["MetricName"],
            "Namespace": alarm["Namespace"],
            "StatisticType": "Statistic",
            "Statistic": alarm["Statistic"].upper(),
            "Unit": None,
            "Dimensions": [
                {"value": dimension["Value"], "name": dimension["Name"]}
                for dimension in alarm.get("Dimensions", [])
            ],
            "Period": int(alarm["Period"]),
            "EvaluationPeriods": int(alarm["EvaluationPeriods"]),
            "ComparisonOperator": alarm["ComparisonOperator"],
            "Threshold": threshold,
            "TreatMissingData": alarm.get("TreatMissingData", "missing"),
            "EvaluateLowSampleCountPercentile": "",
        },
    }
    arn = topic_arn(topic)
    subscription = _sample_uuid("subscription", arn)
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{arn}:{subscription}",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": _sample_uuid("sns-message", arn, alarm["AlarmName"], TRIGGERED_AT),
                    "TopicArn": arn,
                    "Subject": f'ALARM: "{alarm["AlarmName"]}" in US East (N. Virginia)',
                    "Message": json.dumps(message),
                    "Timestamp": TRIGGERED_AT.replace("Z", ".000Z"),
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-sample.pem",
                    "UnsubscribeUrl": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe"
                    f"&SubscriptionArn={arn}:{subscription}",
                    "MessageAttributes": {},
                },
            }
        ]
    }


def trigger_events(template: Mapping[str, Any]) -> dict[str, Any]:
    """{relative path: Lambda event} for the template's schedules, routes and the alarm notification."""
    out: dict[str, Any] = {}
    for function, name, _props in function_events(template, "Schedule"):
        out[f"schedules/{function}.{name}.json"] = scheduled_event(function, name)
    for function, name, props in function_events(template, "ScheduleV2"):
        out[f"schedules/{function}.{name}.json"] = scheduler_input(props)
    for function, name, props in function_events(template, "HttpApi"):
        if route_key(props) != WEBHOOK_ROUTE:
            out[f"apigw/{function}.{name}.json"] = route_event(function, name, props)
    alarm = resolved_properties(template, "AWS::CloudWatch::Alarm")[SAMPLE_ALARM]
    topic_names = {
        logical_id: props["TopicName"]
        for logical_id, props in resolved_properties(template, "AWS::SNS::Topic").items()
        if "TopicName" in props
    }
    alarm_topic = alarm["AlarmActions"][0]
    for function, name, props in function_events(template, "SNS"):
        if props["Topic"] == {"Ref": alarm_topic}:
            out[f"sns/{function}.{name}.json"] = alarm_notification_event(alarm, topic_names, alarm_topic)
    return out


def dumps(doc: Any) -> str:
    """How every sample is serialised (Stripe also sends 2-space-indented JSON)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def all_events() -> dict[str, dict[str, Any]]:
    """{relative path under events/: document} for every generated file."""
    out = stripe_events()
    updated = out["customer.subscription.updated.json"]

    body = dumps(updated).encode("utf-8")
    signed_at = updated["created"] + 1
    out["apigw/customer.subscription.updated.json"] = se.api_gateway_event(
        body,
        headers={
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": stripe_signature_header(body, LOCAL_DEV_SECRET, timestamp=signed_at),
        },
        request_id="Sd3mOjDemo0AAAA=",
        time_epoch_ms=signed_at * 1000 + 137,
    )
    out["eventbridge/customer.subscription.updated.json"] = se.eventbridge_event(updated)
    out.update(trigger_events(load_template()))
    return out


def write(out_dir: Path = EVENTS_DIR) -> list[Path]:
    written = []
    for rel, doc in sorted(all_events().items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.make_sample_events", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=EVENTS_DIR, help="output directory (default: events/)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
