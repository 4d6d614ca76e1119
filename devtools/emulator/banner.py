"""What `make run` prints once the emulator serves: where everything is and how to use it."""

from __future__ import annotations

import os
import re

from devtools.emulator.emulator import LocalEmulator
from devtools.emulator.http_front import CALLER_HEADER, LOCAL_PREFIX, REPORT_PATH
from devtools.emulator.settings import (
    ACCOUNT_ID,
    DATA_DIR_ENV,
    DEFAULT_PORT,
    HOST,
    PAGERDUTY_ENV,
    REGION,
    SECRET_ENV,
    SLACK_ENV,
    SPEED_ENV,
)
from devtools.signing import LOCAL_DEV_SECRET


def _iam_section(emulator: LocalEmulator) -> str:
    """How IAM-authorized routes are called locally (empty when the template has none)."""
    if not emulator.iam_routes:
        return ""
    iam = [route for route in emulator.routes if route in emulator.iam_routes]
    method, path, _ = next((route for route in iam if route[0] == "GET"), iam[0])
    example = emulator.url + re.sub(
        r"\{([^{}]+?)\+?\}", lambda m: "acct_local" if m.group(1) == "account_id" else m.group(1), path
    )
    method_arg = "" if method in ("GET", "ANY") else f"-X {method} "
    other = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/SomeoneElse/local"
    return f"""
IAM routes (no SigV4 locally) see this caller in requestContext.authorizer.iam.userArn:
  Caller:         {emulator.caller_arn}   ({emulator.caller_source})
  Admin roles:    {emulator.admin_role_arns}   ({emulator.admin_source})
  Another caller for one request:
    curl {method_arg}-H '{CALLER_HEADER}: {other}' {example}
"""


def banner(emulator: LocalEmulator) -> str:
    routes = "\n".join(
        f"    {method:<6} {emulator.url}{'/<any path>' if path == '$default' else path}  -> {function}"
        + ("  (IAM)" if (method, path, function) in emulator.iam_routes else "")
        for method, path, function in emulator.routes
    )
    tables = "\n".join(f"    {logical_id:<20} {name}" for logical_id, name in emulator.table_names.items())
    port = emulator.url.rsplit(":", 1)[1]
    port_arg = "" if port == str(DEFAULT_PORT) else f" PORT={port}"
    webhook = next(
        (f"{emulator.url}{path}" for _, path, _ in emulator.routes if "webhook" in path), emulator.url
    )
    forward = webhook.replace(f"http://{HOST}", "localhost")
    send = f"    make send{port_arg} EVENT=events/customer.subscription.updated.json\n"
    if emulator.uses_local_dev_secret:
        send += (
            f"  (make send signs with ${SECRET_ENV}, by default {LOCAL_DEV_SECRET}; "
            "it must match the secret above)"
        )
    else:
        send += f"  (export the same {SECRET_ENV} in that shell first: make send signs with it)"
    speed = emulator.clock.speed
    clock = "real time" if speed == 1 else f"{speed:g}x real time (a local hour every {3600 / speed:.0f} s)"
    schedules = "\n".join(
        f"    {s.function + '.' + s.name:<32} {s.expression}" + (f" ({s.zone})" if s.zone != "UTC" else "")
        for s in emulator.schedules
    )
    left_out = (
        f"\n    not deployed with the template's defaults: {', '.join(emulator.undeployed)}"
        if emulator.undeployed
        else ""
    )
    channels = ", ".join(
        ["the console (log)"]
        + (["Slack"] if os.environ.get(SLACK_ENV, "").strip() else [])
        + (["PagerDuty for critical"] if os.environ.get(PAGERDUTY_ENV, "").strip() else [])
    )
    alarms = len(emulator.alarms.definitions) if emulator.alarms else 0
    if emulator.data_dir is None:
        data = f"in memory (set {DATA_DIR_ENV} to keep the tables and metrics across restarts)"
    else:
        restored = ", ".join(f"{name} {count}" for name, count in emulator.restored.items()) or "nothing yet"
        data = f"kept in {emulator.data_dir} (restored: {restored})"
    return f"""
billwatch local emulator (Ctrl-C to stop)
  Status page:    {emulator.url}{LOCAL_PREFIX}
  Webhook URL:    {webhook}
  Routes (from {emulator.template_path.name}):
{routes}
  Billing report: {emulator.url}{REPORT_PATH}[?period=weekly]   (or: make report{port_arg} [PERIOD=weekly])
  AWS (moto):     {emulator.moto_endpoint}   region {REGION}, credentials testing/testing
  Data:           {data}
  Tables:
{tables}
  Clock:          {clock}   ({SPEED_ENV} or --speed)
  Schedules:
{schedules}{left_out}
  Alarms:         {alarms} from the template, evaluated every local minute; alerts go to {channels}
                  (set {SLACK_ENV} and {PAGERDUTY_ENV} to reach the real ones)
  Signing secret: {emulator.secret_source}

Send a sample event, in another shell:
{send}

Forward real test-mode events with the Stripe CLI:
    stripe listen --forward-to {forward}
  then restart this with the whsec_ it prints:
    export {SECRET_ENV}=whsec_...   # from `stripe listen`
    make run{port_arg}
{_iam_section(emulator)}"""
