"""Alert dispatch from the command line: test alerts, silences for maintenance windows, and the
alerts that fire (list, acknowledge, resolve by hand).

    python -m devtools.alerts test [--function NAME]
    python -m devtools.alerts silence add --matcher alertname=HighQuotaDenialRate --ends 2026-12-01T18:00Z \\
        --comment "pricing migration" [--starts ...] --table NAME
    python -m devtools.alerts silence list --table NAME
    python -m devtools.alerts silence remove ID --table NAME
    python -m devtools.alerts alerts list [--function NAME]
    python -m devtools.alerts alerts ack ID --reason "INC-42, on it" [--function NAME] [--by WHOM]
    python -m devtools.alerts alerts resolve ID --reason "customer paid by wire" [--function NAME] [--by WHOM]

``test`` sends one alert of each severity through the configured routes. With ``--function`` it
asks the deployed AlertDispatch function to (your AWS credentials); without, it runs the
dispatcher here, on moto, with the routes in ALERT_ROUTES_PATH (default: every receiver on the
log channel, devtools/alert_routes.local.json), and prints what each receiver got. The silence
commands write the deployed AlertStateTable (your credentials), as the admin API does. So do the
alerts commands, which also read the routes (who was told on which channels) and, to resolve, send
the resolved notices: ``--function`` takes the table, routes, channel secrets and DLQ from the
deployed AlertDispatch function's environment; without it they come from this shell's
(ALERT_STATE_TABLE_NAME, ALERT_ROUTES_PARAMETER or ALERT_ROUTES_PATH, ALERT_SECRETS_ID, ...). They
are recorded (on the silence, on the alert, and in the audit trail) as done by the ARN your AWS
credentials act as (STS GetCallerIdentity), as the admin API records the ARN IAM authenticated.
``--by`` (a person, a team, a ticket) is only a note of on whose behalf: the audit record keeps it
beside that ARN, as ``on_behalf_of``, never in its place, since anyone can type anything.
Exits 0 on success, 1 when something was refused, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

LOCAL_ROUTES = Path(__file__).with_name("alert_routes.local.json")
TEST_ALERTS_REQUEST = {"billwatch": "test-alerts"}
_ON_BEHALF_OF = "on whose behalf (a note kept beside your ARN in the audit trail; the caller is your ARN)"


def _moment(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time like 2026-12-01T18:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. a trailing Z for UTC")
    return int(moment.timestamp())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.alerts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    test = commands.add_parser("test", help="send a test alert of each severity through the routes")
    test.add_argument("--function", help="the deployed AlertDispatch function; omit to run locally")
    silence = commands.add_parser("silence", help="maintenance windows")
    actions = silence.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add")
    add.add_argument("--matcher", action="append", required=True, help="label=value, label!=value, =~ or !~")
    add.add_argument("--starts", type=_moment, help="ISO 8601 (default: now)")
    add.add_argument("--ends", type=_moment, required=True, help="ISO 8601")
    add.add_argument("--comment", required=True)
    remove = actions.add_parser("remove")
    for action in (add, remove):
        action.add_argument("--by", help=_ON_BEHALF_OF)
        # An admin action with no audit trail to record it in is not done (billwatch.core.audit).
        action.add_argument("--audit-table", default=os.environ.get("AUDIT_TABLE_NAME"), required=False)
    for action in (add, actions.add_parser("list"), remove):
        action.add_argument("--table", default=os.environ.get("ALERT_STATE_TABLE_NAME"), required=False)
    remove.add_argument("id")
    alert = commands.add_parser("alerts", help="what fires: list, acknowledge, resolve by hand")
    alert_actions = alert.add_subparsers(dest="action", required=True)
    handlings = [alert_actions.add_parser("ack"), alert_actions.add_parser("resolve")]
    for action in (alert_actions.add_parser("list"), *handlings):
        action.add_argument("--function", help="the deployed AlertDispatch function to take settings from")
    for action in handlings:
        action.add_argument("id", help="the alert's id, from alerts list")
        action.add_argument("--reason", required=True, help="why; kept on the alert and in the log")
        action.add_argument("--by", help=_ON_BEHALF_OF)
    return parser


def _deployed_test(function: str) -> dict[str, Any]:
    import boto3

    response = boto3.client("lambda").invoke(
        FunctionName=function, Payload=json.dumps(TEST_ALERTS_REQUEST).encode()
    )
    payload = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        raise RuntimeError(f"the function failed: {payload}")
    return payload


def _local_test() -> dict[str, Any]:
    from moto import mock_aws

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("ALERT_ROUTES_PATH", str(LOCAL_ROUTES))
    with mock_aws():
        import boto3

        from billwatch.alerting.dispatcher import build_alert_dispatcher
        from billwatch.core.config import load_alert_settings, load_settings
        from devtools.template import create_tables, load_template

        tables = create_tables(boto3.client("dynamodb"), load_template())
        os.environ.update(
            BILLING_TABLE_NAME=tables["BillingStateTable"],
            IDEMPOTENCY_TABLE_NAME=tables["IdempotencyTable"],
            ALERT_STATE_TABLE_NAME=tables["AlertStateTable"],
        )
        dispatcher = build_alert_dispatcher(load_settings(webhook_secret=False), load_alert_settings())
        try:
            return {
                "sent": dispatcher.send_test_alerts(requested_by=os.environ.get("USER", "make alert-test"))
            }
        finally:
            dispatcher.flush_metrics()


def _store(table: str | None, audit_table: str | None) -> Any:
    if not table:
        raise SystemExit(
            "silence commands need --table or ALERT_STATE_TABLE_NAME (the stack's AlertStateTable)"
        )
    from billwatch.alerting.store import AlertStore
    from billwatch.core.audit import DEFAULT_RETENTION_DAYS, AuditTrail
    from billwatch.core.metrics import MetricsRecorder
    from billwatch.core.models import bind_alert_table

    bind_alert_table(table)
    # The audit metrics are not flushed: printed here, they would never reach CloudWatch.
    return AlertStore(
        AuditTrail(audit_table, DEFAULT_RETENTION_DAYS, MetricsRecorder("Billwatch", "billwatch"))
    )


def _acting_as(audit: Any, on_behalf_of: str | None) -> str:
    """The ARN the operator's AWS credentials act as, named as the caller of what follows in the
    audit trail (``audit``), with ``--by`` beside it."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from billwatch.core.audit import AdminRequest

    try:
        arn = str(boto3.client("sts").get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError) as error:
        raise SystemExit(
            f"could not tell who your AWS credentials are (STS: {error}); nothing was done"
        ) from None
    audit.begin(AdminRequest(arn, None, None, on_behalf_of))
    return arn


def _dispatcher(function: str | None) -> Any:
    """The dispatcher the admin API answers with, built from the function's environment."""
    import boto3

    from billwatch.alerting.dispatcher import build_alert_dispatcher
    from billwatch.core.config import load_alert_settings, load_settings

    env: dict[str, str] = dict(os.environ)
    if function:
        configuration = boto3.client("lambda").get_function_configuration(FunctionName=function)
        env.update(configuration.get("Environment", {}).get("Variables", {}))
    return build_alert_dispatcher(load_settings(env, webhook_secret=False), load_alert_settings(env))


def _alerts(args: argparse.Namespace) -> int:
    from billwatch.alerting.dispatcher import (
        MAX_ALERTS_PAGE_SIZE,
        AlertActionRefused,
        AlertNotFound,
        handling_reason,
    )
    from billwatch.alerting.store import MalformedAlertId

    if args.action != "list":
        try:
            handling_reason(args.reason)
        except ValueError as error:
            print(f"--reason: {error}", file=sys.stderr)
            return 2
    from billwatch.core.config import ConfigError

    try:
        # Delivery metrics are not flushed: printed here, they would never reach CloudWatch.
        dispatcher = _dispatcher(args.function)
    except ConfigError as missing:
        print(
            f"{missing}: pass --function NAME to use the deployed function's settings, or set the "
            "variables docs/configuration.md lists for the alert dispatcher",
            file=sys.stderr,
        )
        return 2
    if args.action == "list":
        listed: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:  # every page: a command line has no 30-second limit
            page = dispatcher.active_alerts(limit=MAX_ALERTS_PAGE_SIZE, offset=offset)
            listed += page["alerts"]
            offset = page["next_offset"]
        print(json.dumps(listed))
        return 0
    by = _acting_as(dispatcher.store.audit, args.by)
    handle = dispatcher.acknowledge if args.action == "ack" else dispatcher.resolve_by_hand
    try:
        print(json.dumps(handle(args.id, by, args.reason)))
    except (AlertNotFound, AlertActionRefused, MalformedAlertId) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "test":
        report = _deployed_test(args.function) if args.function else _local_test()
        print(json.dumps(report))
        return 0
    if args.command == "alerts":
        return _alerts(args)
    store = _store(args.table, getattr(args, "audit_table", None))
    now = int(dt.datetime.now(dt.UTC).timestamp())
    if args.action == "list":
        print(json.dumps([s.as_dict() | {"active": s.active(now)} for s in store.silences()]))
        return 0
    by = _acting_as(store.audit, args.by)
    if args.action == "add":
        from billwatch.alerting.store import SilenceError

        try:
            silence = store.create_silence(args.matcher, args.starts or now, args.ends, args.comment, by, now)
        except SilenceError as error:
            print(f"refused: {error}", file=sys.stderr)
            return 1
        print(json.dumps(silence.as_dict()))
        return 0
    if not store.remove_silence(args.id, by):
        print(f"no silence {args.id}", file=sys.stderr)
        return 1
    print(f"removed {args.id}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "shared"))
    sys.exit(main())
