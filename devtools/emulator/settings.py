"""What the emulator is told: ports, paths and the environment variables it reads, each validated.

Every variable the emulator takes from your shell is named here; a bad value stops it with an
:class:`EmulatorError` that names the variable.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.signing import LOCAL_DEV_SECRET
from devtools.template import REPO_ROOT

HOST = "127.0.0.1"
DEFAULT_PORT = 3000
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
FAKE_CREDENTIAL = "testing"
METRICS_NAMESPACE = "Billwatch"
# The Stage parameter names the alarms the report reads; a template without one is "local".
DEFAULT_STAGE = "local"
STATUS_PAGE_DIR = REPO_ROOT / "devtools" / "status_page"
LOCAL_ALERT_ROUTES = REPO_ROOT / "devtools" / "alert_routes.local.json"
# What the status page shows of the recent past.
HISTORY_LENGTH = 500
# API Gateway HTTP APIs reject request payloads over 10 MB.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Connections waiting to be accepted. Python's default of 5 reset 17 of a burst of 32 webhooks
# while the accepting thread waited for the GIL; the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024
# CloudFormation generates real table names; locally they are "<prefix><token>-<logical id>". The
# per-run token keeps a restarted emulator in the same process off names a previous one bound.
TABLE_PREFIX = "billwatch-local-"
# Where `sam local` finds the signing secret (env.json's WEBHOOK_SECRET_ID): moto's Secrets Manager.
SAM_LOCAL_WEBHOOK_SECRET = "billwatch-local-webhook-secret"  # nosec B105 # the public secret of the local moto stack, never a real one

# The variables read from your shell.
PORT_ENV = "PORT"
SECRET_ENV = "STRIPE_WEBHOOK_SECRET"  # nosec B105 # the name of the environment variable, not its value
SPEED_ENV = "BILLWATCH_CLOCK_SPEED"  # how fast the local clock runs: 60 = an hour a minute
DATA_DIR_ENV = "BILLWATCH_DATA_DIR"
# A fixed moto port and table names, for `sam local` (env.json) to reach the same tables.
MOTO_PORT_ENV = "MOTO_PORT"
TABLE_PREFIX_ENV = "BILLWATCH_TABLE_PREFIX"
# Alert channels beyond the console: the real Slack webhook or PagerDuty service, when given.
SLACK_ENV = "SLACK_WEBHOOK_URL"
PAGERDUTY_ENV = "PAGERDUTY_ROUTING_KEY"
PAGERDUTY_URL_ENV = "PAGERDUTY_EVENTS_URL"  # another Events API v2 endpoint than PagerDuty's own
# IAM-authorized routes: who the local "SigV4 signer" is, and who the functions treat as admins.
CALLER_ENV = "LOCAL_CALLER_ARN"
ADMIN_ENV = "ADMIN_ROLE_ARNS"
LOCAL_ADMIN_ROLE = "billwatch-local-admin"
DEFAULT_CALLER_ARN = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{LOCAL_ADMIN_ROLE}/local"
DEFAULT_ADMIN_ROLE_ARNS = f"arn:aws:iam::{ACCOUNT_ID}:role/{LOCAL_ADMIN_ROLE}"
# What API Gateway can report as userArn: an IAM user/role or an STS assumed-role/federated user.
_CALLER_ARN = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\w+=,.@/-]+")


class EmulatorError(Exception):
    """The emulator cannot serve this template or these settings (the message says why)."""


def valid_caller_arn(arn: str) -> bool:
    """Whether ``arn`` looks like a principal API Gateway's IAM authorizer reports (IAM or STS)."""
    return _CALLER_ARN.fullmatch(arn) is not None


def _env(name: str) -> str:
    return (os.environ.get(name) or "").strip()


def number_from_env(name: str, kind: type, default: float) -> Any:
    """``$name`` as an int or float (``default`` when unset): at least 0, and above 0 for a float."""
    raw = _env(name)
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise EmulatorError(f"{name} must be a number, got {raw!r}") from None
    if value < 0 or (kind is float and value == 0):
        raise EmulatorError(f"{name} must be above 0, got {raw!r}")
    return value


def port_from_env() -> int:
    """``$PORT``, by default :data:`DEFAULT_PORT`."""
    port = number_from_env(PORT_ENV, int, DEFAULT_PORT)
    if port > 65535:
        raise EmulatorError(f"{PORT_ENV} must be 0-65535, got {port}")
    return int(port)


@dataclass(frozen=True)
class Settings:
    """The settings of one emulator, each with where it came from (the banner says so)."""

    secret: str
    secret_source: str
    caller_arn: str
    caller_source: str
    admin_role_arns: str
    admin_source: str
    speed: float
    moto_port: int
    table_prefix: str
    data_dir: Path | None

    def __repr__(self) -> str:  # never shows the secret
        return f"Settings(caller_arn={self.caller_arn!r}, data_dir={self.data_dir!r})"

    @classmethod
    def read(
        cls,
        *,
        webhook_secret: str | None = None,
        caller_arn: str | None = None,
        speed: float | None = None,
        moto_port: int | None = None,
        table_prefix: str | None = None,
        data_dir: str | Path | None = None,
    ) -> Settings:
        """What is passed, else the environment, else the defaults; raises EmulatorError when invalid."""
        # `make run` passes the dev secret itself when the shell has none: that is still the dev one.
        secret_from_env = _env(SECRET_ENV)
        if webhook_secret is not None and webhook_secret.strip() != LOCAL_DEV_SECRET:
            secret, secret_source = webhook_secret.strip(), "the secret passed to LocalEmulator"
        elif webhook_secret is None and secret_from_env and secret_from_env != LOCAL_DEV_SECRET:
            secret, secret_source = secret_from_env, f"{SECRET_ENV} from your environment"
        else:
            secret, secret_source = LOCAL_DEV_SECRET, f"the built-in local dev secret {LOCAL_DEV_SECRET}"

        if caller_arn is not None and caller_arn.strip():
            caller, caller_source = caller_arn.strip(), "passed to LocalEmulator"
        elif caller_from_env := _env(CALLER_ENV):
            caller, caller_source = caller_from_env, f"{CALLER_ENV} from your environment"
        else:
            caller, caller_source = DEFAULT_CALLER_ARN, f"the default, {CALLER_ENV} unset"
        if not valid_caller_arn(caller):
            raise EmulatorError(
                f"{CALLER_ENV} must be an IAM or STS ARN, e.g. {DEFAULT_CALLER_ARN}, got {caller!r}"
            )

        if admins_from_env := _env(ADMIN_ENV):
            admins, admin_source = admins_from_env, f"{ADMIN_ENV} from your environment"
        else:
            admins, admin_source = DEFAULT_ADMIN_ROLE_ARNS, f"the default, {ADMIN_ENV} unset"

        chosen_dir = data_dir if data_dir is not None else _env(DATA_DIR_ENV)
        return cls(
            secret=secret,
            secret_source=secret_source,
            caller_arn=caller,
            caller_source=caller_source,
            admin_role_arns=admins,
            admin_source=admin_source,
            speed=number_from_env(SPEED_ENV, float, 1.0) if speed is None else speed,
            moto_port=number_from_env(MOTO_PORT_ENV, int, 0) if moto_port is None else moto_port,
            table_prefix=table_prefix
            if table_prefix is not None
            else _env(TABLE_PREFIX_ENV) or f"{TABLE_PREFIX}{secrets.token_hex(3)}-",
            data_dir=Path(chosen_dir).expanduser().resolve() if chosen_dir else None,
        )
