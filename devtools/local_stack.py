"""Run the template's HTTP API locally: real handlers, DynamoDB in an embedded moto server.

    python -m devtools.local_stack          # what `make run` runs; PORT=3000 by default

No AWS account, Docker or network is needed: moto's server runs in-process on 127.0.0.1, the
tables are created from template.yaml's own definitions, and every ``HttpApi`` route of the
template is served on ``http://127.0.0.1:$PORT``. Each request becomes an API Gateway HTTP API
payload-format-2.0 event for the route's real handler (loaded from the function's CodeUri +
Handler, with the template's environment), and the handler's response becomes the HTTP response.

The webhook signing secret is ``$STRIPE_WEBHOOK_SECRET`` when set (e.g. the ``whsec_`` printed by
``stripe listen``), else the public local dev secret ``whsec_local_dev_secret``.

Routes whose HttpApi event has ``Auth: {Authorizer: AWS_IAM}`` (or that inherit an ``AWS_IAM``
``DefaultAuthorizer``) are not SigV4-checked locally: their event carries
``requestContext.authorizer.iam`` for a configurable caller instead, as API Gateway sends it for a
signed request. The caller is ``$LOCAL_CALLER_ARN``, by default
``arn:aws:sts::123456789012:assumed-role/billwatch-local-admin/local``; an
``x-billwatch-caller-arn`` request header overrides it for that request (and is not passed on to
the handler). The functions get ``ADMIN_ROLE_ARNS=arn:aws:iam::123456789012:role/billwatch-local-admin``
unless ``$ADMIN_ROLE_ARNS`` is set, so the default caller is an admin.

Tests use :class:`LocalStack` directly::

    with LocalStack().start(port=0) as stack:   # port 0 = an ephemeral port
        urllib.request.urlopen(stack.url + "/webhooks/stripe", ...)
        boto3.client("dynamodb", endpoint_url=stack.moto_endpoint, ...)

Lambda's Invoke API, which the functions that hand a long job over to a fresh invocation call,
is served on a second, unannounced loopback port (``stack.internal_url``, what
``AWS_ENDPOINT_URL_LAMBDA`` points the functions at), never on ``$PORT``: people tunnel ``$PORT``
to receive real Stripe webhooks, and nothing reachable there may apply an event unsigned.

``stop()`` (or leaving the ``with`` block) shuts the servers down and restores ``os.environ``,
``sys.path``, ``sys.modules``, ``sys.stdout`` and moto as they were before ``start()``.

The metrics the handlers print (CloudWatch EMF, as in Lambda) are put into moto's CloudWatch by
:mod:`devtools.local_metrics`, and ``GET /_local/report[?period=daily|weekly]`` (what
``make report`` prints) renders the billing report of the last day or week from them. That route
is the local stack's own, not the template's; moto gets the percentiles and the alarm history the
report needs from :mod:`devtools.moto_cloudwatch`.

Differences from AWS worth knowing: invocations of one function are serialised (like a function
with a single warm instance), the function timeout is reported to the handler but not enforced,
and moto's state lives in memory unless ``BILLWATCH_DATA_DIR`` keeps the tables and metrics.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import contextlib
import errno
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, ClassVar

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from devtools import local_persistence, local_status
from devtools.local_alarms import AlarmEvent, AlarmWatcher
from devtools.local_metrics import LocalMetrics, install_stdout_tap
from devtools.local_schedules import FiredSchedule, LocalClock, ManualClock, Scheduler
from devtools.local_sns import Delivery, TopicDeliveries
from devtools.signing import LOCAL_DEV_SECRET
from devtools.template import (
    FUNCTION_TYPE,
    LAYER_TYPE,
    REPO_ROOT,
    ScheduleEvent,
    create_tables,
    deployed_resources,
    function_environment,
    function_names,
    function_properties,
    http_routes,
    load_template,
    parameter_values,
    resources_of_type,
    schedules,
)

__all__ = [
    "MAX_BODY_BYTES",
    "LambdaContext",
    "LocalStack",
    "LocalStackError",
    "Route",
    "banner",
    "http_api_event",
    "iam_authorizer",
    "iam_routes",
    "main",
]

log = logging.getLogger("devtools.local_stack")

HOST = "127.0.0.1"
DEFAULT_PORT = 3000
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
STAGE = "$default"
METRICS_NAMESPACE = "Billwatch"
# The Stage parameter names the alarms the report reads; a template without one is "local".
DEFAULT_STAGE = "local"
# Routes the local stack serves itself, ahead of the template's: API Gateway has nothing like them.
LOCAL_PREFIX = "/_local/"
REPORT_PATH = "/_local/report"
STATUS_PAGE_DIR = REPO_ROOT / "devtools" / "status_page"
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Powertools' resolvers keep the request they are routing on a class attribute that every resolver
# in the process shares (Lambda runs one invocation per process). Two functions that route with
# them must not run at once here, or one would answer with the other's path and body.
POWERTOOLS_ROUTING_LOCK = threading.Lock()
# How fast the local clock runs (schedules, alarm evaluation, metric timestamps): 60 = an hour a minute.
SPEED_ENV = "BILLWATCH_CLOCK_SPEED"
DATA_DIR_ENV = "BILLWATCH_DATA_DIR"
# A fixed moto port and table names, for `sam local` (env.json) to reach the same tables.
MOTO_PORT_ENV = "MOTO_PORT"
TABLE_PREFIX_ENV = "BILLWATCH_TABLE_PREFIX"
# Where `sam local` finds the signing secret (env.json's WEBHOOK_SECRET_ID): moto's Secrets Manager.
SAM_LOCAL_WEBHOOK_SECRET = "billwatch-local-webhook-secret"  # nosec B105 # the public secret of the local moto stack, never a real one
# Alert channels beyond the console: the real Slack webhook or PagerDuty service, when given.
SLACK_ENV = "SLACK_WEBHOOK_URL"
PAGERDUTY_ENV = "PAGERDUTY_ROUTING_KEY"
PAGERDUTY_URL_ENV = "PAGERDUTY_EVENTS_URL"  # another Events API v2 endpoint than PagerDuty's own
LOCAL_ALERT_ROUTES = REPO_ROOT / "devtools" / "alert_routes.local.json"
QUEUE_TYPE = "AWS::SQS::Queue"
# Lambda's Invoke API, served by the local stack itself on its internal port (AWS_ENDPOINT_URL_LAMBDA).
_LAMBDA_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
# What the status page shows of the recent past.
HISTORY_LENGTH = 500
# CloudFormation generates real table names; locally they are "<prefix><token>-<logical id>". The
# per-stack token keeps a restarted stack in the same process off names a previous one bound.
TABLE_PREFIX = "billwatch-local-"
# API Gateway HTTP APIs reject request payloads over 10 MB.
MAX_BODY_BYTES = 10 * 1024 * 1024
# An over-limit body up to this size is read and discarded so the client gets to see the 413.
_DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES
SECRET_ENV = "STRIPE_WEBHOOK_SECRET"  # nosec B105 # the name of the environment variable, not its value
FAKE_CREDENTIAL = "testing"
# IAM-authorized routes: who the local "SigV4 signer" is, and who the functions treat as admins.
CALLER_ENV = "LOCAL_CALLER_ARN"
CALLER_HEADER = "x-billwatch-caller-arn"
ADMIN_ENV = "ADMIN_ROLE_ARNS"
LOCAL_ADMIN_ROLE = "billwatch-local-admin"
DEFAULT_CALLER_ARN = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{LOCAL_ADMIN_ROLE}/local"
DEFAULT_ADMIN_ROLE_ARNS = f"arn:aws:iam::{ACCOUNT_ID}:role/{LOCAL_ADMIN_ROLE}"
# What API Gateway can report as userArn: an IAM user/role or an STS assumed-role/federated user.
_CALLER_ARN = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\w+=,.@/-]+")
_IAM_AUTHORIZER = "AWS_IAM"
HTTP_API_TYPE = "AWS::Serverless::HttpApi"

# Variables from the caller's shell that would point the handlers (or botocore) somewhere other
# than the embedded moto server, or at a second webhook secret source (load_settings wants one).
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "WEBHOOK_SECRET_ID",
    "WEBHOOK_SECRET_PARAMETER",
)
_CLEARED_ENV_PREFIXES = ("AWS_ENDPOINT_URL_",)  # service-specific endpoints win over AWS_ENDPOINT_URL
# The tables every function is told about, whatever the template's own Environment says.
_TABLE_ENV = {"BILLING_TABLE_NAME": "BillingStateTable", "IDEMPOTENCY_TABLE_NAME": "IdempotencyTable"}
_LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost")
# Response headers the server computes itself.
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding"}
_JSON = {"content-type": "application/json"}
_INTERNAL_SERVER_ERROR = {"message": "Internal Server Error"}  # API Gateway's answer when a function fails
# Connections waiting to be accepted. Python's default of 5 reset 17 of a burst of 32 webhooks
# while the accepting thread waited for the GIL; the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024


class LocalStackError(Exception):
    """The local stack cannot serve this template (the message says why)."""


class FunctionExited(Exception):
    """A handler ended its invocation with SystemExit or KeyboardInterrupt (Lambda's Runtime.ExitError)."""


# ------------------------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Route:
    """One HttpApi route of the template: ``METHOD /path`` (or ``$default``) -> function."""

    method: str
    path: str
    function: str
    iam_auth: bool = False  # the route uses the AWS_IAM authorizer
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params: list[str] = []
        pattern: re.Pattern[str] | None = None
        if self.path != "$default":
            parts = []
            for segment in self.path.split("/"):
                variable = re.fullmatch(r"\{([^{}]+?)(\+?)\}", segment)
                if variable:
                    params.append(variable.group(1))
                    parts.append("(.+)" if variable.group(2) else "([^/]+)")
                else:
                    parts.append(re.escape(segment))
            pattern = re.compile("/".join(parts))
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_params", tuple(params))

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    @property
    def as_tuple(self) -> tuple[str, str, str]:
        return (self.method, self.path, self.function)

    def specificity(self) -> tuple[bool, bool, int, int, bool]:
        """Sort key: API Gateway prefers the most specific route (and ``$default`` last)."""
        greedy = self.path.endswith("+}")
        literal_segments = self.path.count("/") - len(self._params)
        return (self._pattern is None, greedy, len(self._params), -literal_segments, self.method == "ANY")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters (possibly empty) when this route takes the request, else None."""
        if self.method not in ("ANY", method):
            return None
        if self._pattern is None:
            return {}
        found = self._pattern.fullmatch(path)
        if not found:
            return None
        return {
            name: urllib.parse.unquote(value)
            for name, value in zip(self._params, found.groups(), strict=True)
        }


def _default_authorizer(template: Mapping[str, Any], api_id: Any) -> Any:
    """The ``Auth.DefaultAuthorizer`` of the HttpApi an event belongs to (Globals.HttpApi merged)."""
    auth = dict(((template.get("Globals") or {}).get("HttpApi") or {}).get("Auth") or {})
    ref = api_id.get("Ref") if isinstance(api_id, dict) else None
    api = (resources_of_type(template, HTTP_API_TYPE).get(ref) or {}) if isinstance(ref, str) else {}
    auth.update((api.get("Properties") or {}).get("Auth") or {})
    return auth.get("DefaultAuthorizer")


def iam_routes(template: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """The :func:`devtools.template.http_routes` entries that API Gateway authorizes with IAM.

    That is the event's ``Auth.Authorizer``, else its API's ``DefaultAuthorizer``, is ``AWS_IAM``
    (``Authorizer: NONE`` opts a route out of a default).
    """
    found: set[tuple[str, str, str]] = set()
    for logical_id, resource in resources_of_type(template, FUNCTION_TYPE).items():
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            auth = props.get("Auth") or {}
            if "Authorizer" in auth:
                authorizer = auth["Authorizer"]
            else:
                authorizer = _default_authorizer(template, props.get("ApiId"))
            if authorizer == _IAM_AUTHORIZER:
                method = str(props.get("Method", "ANY")).upper()
                found.add((method, str(props.get("Path", "$default")), logical_id))
    return found


def valid_caller_arn(arn: str) -> bool:
    """Whether ``arn`` looks like a principal API Gateway's IAM authorizer reports (IAM or STS)."""
    return _CALLER_ARN.fullmatch(arn) is not None


def iam_authorizer(user_arn: str) -> dict[str, Any]:
    """``requestContext.authorizer`` as API Gateway HTTP APIs send it for an IAM-authorized route."""
    return {
        "iam": {
            "accessKey": "ASIALOCAL",
            "accountId": ACCOUNT_ID,
            "callerId": "AROALOCAL:local",
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": user_arn,
            "userId": "AROALOCAL:local",
        }
    }


# ------------------------------------------------------------------------- Lambda plumbing


class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers and Powertools use."""

    def __init__(self, function_name: str, memory_limit_in_mb: int, timeout_seconds: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = int(memory_limit_in_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + float(timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class _Function:
    logical_id: str
    module: ModuleType
    handler: Any
    memory_mb: int
    timeout_s: float
    # Lambda gives one invocation at a time to an instance; the handler's globals assume that.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def routes_with_powertools(self) -> bool:
        return any(isinstance(value, ApiGatewayResolver) for value in vars(self.module).values())

    def invoke(self, event: dict[str, Any]) -> Any:
        with self.lock:
            context = LambdaContext(self.logical_id, self.memory_mb, self.timeout_s)
            started = time.monotonic()
            try:
                result = self.handler(event, context)
            except (SystemExit, KeyboardInterrupt) as exited:
                # Lambda reports the invocation failed; here it must not end the thread serving it.
                raise FunctionExited(
                    f"{self.logical_id} exited: {type(exited).__name__} {exited}"
                ) from exited
            elapsed = time.monotonic() - started
        if elapsed > self.timeout_s:
            log.warning(
                "%s ran %.1f s, longer than its %s s timeout (Lambda would have stopped it)",
                self.logical_id,
                elapsed,
                self.timeout_s,
            )
        return result


def _http_date(epoch_ms: int) -> str:
    when = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[
        when.month - 1
    ]
    return f"{when:%d}/{month}/{when:%Y:%H:%M:%S} +0000"


def http_api_event(
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    route_key: str,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = HOST,
    protocol: str = "HTTP/1.1",
    request_id: str | None = None,
    time_epoch_ms: int | None = None,
    authorizer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The API Gateway HTTP API (payload format 2.0) event for one HTTP request.

    ``target`` is the request target (path and query string, as received). Header names are
    lower-cased and repeated headers joined with ``,``; ``Cookie`` headers become ``cookies``.
    A UTF-8 body is passed as text, anything else base64-encoded with ``isBase64Encoded`` true.
    ``authorizer`` becomes ``requestContext.authorizer`` (e.g. :func:`iam_authorizer`); without
    it the event has none, as for a route without an authorizer.
    """
    raw_path, _, raw_query = target.partition("?")
    request_id = request_id or str(uuid.uuid4())
    time_epoch_ms = int(time.time() * 1000) if time_epoch_ms is None else time_epoch_ms

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[lower] = f"{merged[lower]},{value}" if lower in merged else value
    merged.setdefault("x-amzn-trace-id", f"Root=1-{time_epoch_ms // 1000:08x}-{uuid.uuid4().hex[:24]}")
    forwarded = merged.get("x-forwarded-for")
    merged["x-forwarded-for"] = f"{forwarded}, {source_ip}" if forwarded else source_ip
    merged.setdefault("x-forwarded-proto", "http")

    query: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value

    host = merged.get("host", HOST)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": "local",
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": STAGE,
        "time": _http_date(time_epoch_ms),
        "timeEpoch": time_epoch_ms,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = dict(authorizer)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        try:
            event["body"] = body.decode("utf-8")
            event["isBase64Encoded"] = False
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


def _event_summary(body: bytes) -> dict[str, Any]:
    """The Stripe event id and type of a webhook body, when it has them (it may be anything)."""
    from billwatch.core import strict_json  # the layer is on the path once the stack has started

    try:
        event = strict_json.loads(body)
    except strict_json.JsonRefused:
        return {}
    if not isinstance(event, dict):
        return {}
    return {key: event[key] for key in ("id", "type") if isinstance(event.get(key), str)}


def _answer_summary(answer: bytes) -> dict[str, Any]:
    """The outcome a handler answered with (applied, duplicate, stale, ...) or the problem it named."""
    try:
        body = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(body, dict):
        return {}
    found = {
        key: body[key] for key in ("outcome", "error", "reason", "message") if isinstance(body.get(key), str)
    }
    return found


def _number_from_env(name: str, kind: type, default: float) -> Any:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise LocalStackError(f"{name} must be a number, got {raw!r}") from None
    if value < 0 or (kind is float and value == 0):
        raise LocalStackError(f"{name} must be above 0, got {raw!r}")
    return value


def _lambda_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """What API Gateway makes of a payload-2.0 Lambda result: (status, headers, body)."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Without a statusCode, API Gateway treats the whole result as a JSON 200 body.
        return 200, list(_JSON.items()), json.dumps(result).encode("utf-8")
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"statusCode {status} is not an HTTP status")
    headers = [
        (str(name), str(value))
        for name, value in (result.get("headers") or {}).items()
        if str(name).lower() not in _HOP_BY_HOP
    ]
    headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
    body = result.get("body")
    if body is None:
        raw = b""
    elif result.get("isBase64Encoded"):
        raw = base64.b64decode(body, validate=True)
    else:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
    return status, headers, raw


# --------------------------------------------------------------------------------- HTTP side


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _TooLarge(Exception):
    pass


class _RequestHandler(BaseHTTPRequestHandler):
    """Reads requests and writes answers the way API Gateway does; subclasses say what they serve."""

    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "billwatch-local"
    sys_version = ""
    _answered = False  # whether the answer to the current request has begun

    # One method handler for every verb API Gateway routes.
    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def handle_expect_100(self) -> bool:
        if self._declared_length() > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, {"message": "Request Entity Too Large"}, str(uuid.uuid4()))
            return False
        return super().handle_expect_100()

    def _declared_length(self) -> int:
        try:
            return int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return 0

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if not raw_length:
            return b""
        length = int(raw_length)  # ValueError -> 400
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            if length <= _DRAIN_LIMIT_BYTES:
                self._discard(length)
            raise _TooLarge
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_field = self.rfile.readline(1024).split(b";", 1)[0].strip()
            # Hex digits only: int() would also take "-1", which read() takes as "to the end".
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise ValueError("malformed chunk size")  # -> 400
            size = int(size_field, 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _TooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _discard(self, length: int) -> None:
        with contextlib.suppress(OSError):
            self.connection.settimeout(10)
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 20))
                if not chunk:
                    break
                length -= len(chunk)

    def _serve(self) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        self._answered = False
        try:
            self._serve_request(request_id, started)
        except Exception:
            # A fault of the local stack itself (a function's own failure is answered where it is
            # invoked): every request still gets an answer, and the server goes on serving.
            log.exception("the local stack failed on %s %s", self.command, self.path)
            self.close_connection = True  # what the failed request left unread must not be parsed
            if not self._answered:
                self._send_json(500, _INTERNAL_SERVER_ERROR, request_id)
                self._access_log(500, started, "-")

    def _serve_request(self, request_id: str, started: float) -> None:
        try:
            body = self._read_body()
        except _TooLarge:
            self.close_connection = True
            self._send_json(413, {"message": "Request Entity Too Large"}, request_id)
            return self._access_log(413, started, "-")
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"message": "Bad Request"}, request_id)
            return self._access_log(400, started, "-")
        self._dispatch(self.path.partition("?")[0], body, request_id, started)

    def _dispatch(self, path: str, body: bytes, request_id: str, started: float) -> None:
        raise NotImplementedError

    def _not_found(self, request_id: str, started: float) -> None:
        self._send_json(404, {"message": "Not Found"}, request_id)
        self._access_log(404, started, "-")

    def _send_json(self, status: int, body: dict[str, Any], request_id: str) -> None:
        self._send(status, list(_JSON.items()), json.dumps(body).encode("utf-8"), request_id)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, request_id: str) -> None:
        self._answered = True
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("apigw-requestid", request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _access_log(self, status: int, started: float, function: str) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("%s %s -> %s (%s, %.0f ms)", self.command, self.path, status, function, elapsed_ms)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s - " + format, self.address_string(), *args)


class _PublicRequestHandler(_RequestHandler):
    """``$PORT``: the template's routes and the local stack's own pages, nothing that skips a check."""

    def _dispatch(self, path: str, body: bytes, request_id: str, started: float) -> None:
        if path.startswith(LOCAL_PREFIX):
            return self._serve_local(path, request_id, started)
        found = self.server.stack.resolve(self.command, path)
        if found is None:
            return self._not_found(request_id, started)
        route, path_parameters = found
        authorizer = None
        if route.iam_auth:
            # Where API Gateway would check the SigV4 signature: the local caller stands in for it.
            caller = (self.headers.get(CALLER_HEADER) or "").strip() or self.server.stack.caller_arn
            if not valid_caller_arn(caller):
                message = f"{CALLER_HEADER} must be an IAM or STS ARN, e.g. {DEFAULT_CALLER_ARN}"
                self._send_json(400, {"message": message}, request_id)
                return self._access_log(400, started, "-")
            authorizer = iam_authorizer(caller)
        event = http_api_event(
            method=self.command,
            target=self.path,
            # The caller header is an instruction to the local stack, not part of the request.
            headers=[(name, value) for name, value in self.headers.items() if name.lower() != CALLER_HEADER],
            body=body,
            route_key=route.route_key,
            path_parameters=path_parameters,
            source_ip=self.client_address[0],
            protocol=self.request_version,
            request_id=request_id,
            authorizer=authorizer,
        )
        try:
            result = self.server.stack.invoke(route.function, event)
            status, headers, raw = _lambda_response(result)
        except Exception:
            log.exception("%s failed on %s %s", route.function, self.command, path)
            status, headers, raw = 500, list(_JSON.items()), json.dumps(_INTERNAL_SERVER_ERROR).encode()
        # Recorded before the answer goes out: whoever got the answer finds the request recorded.
        self.server.stack.record_request(route, status, (time.monotonic() - started) * 1000, body, raw)
        self._send(status, headers, raw, request_id)
        self._access_log(status, started, route.function)

    def _serve_local(self, path: str, request_id: str, started: float) -> None:
        """The local stack's own pages, all read-only: the status page, its JSON, and the billing report."""
        if self.command != "GET":
            return self._not_found(request_id, started)
        if path == REPORT_PATH:
            return self._serve_report(request_id, started)
        stack = self.server.stack
        api = {
            f"{LOCAL_PREFIX}api/status": lambda: local_status.status(stack),
            f"{LOCAL_PREFIX}api/accounts": lambda: local_status.accounts(stack),
            f"{LOCAL_PREFIX}api/dashboards": stack.dashboards,
        }
        if path in api:
            try:
                body = json.dumps(api[path]()).encode()
            except Exception as exc:
                log.exception("the status page's %s failed", path)
                return self._send_json(500, {"message": f"{type(exc).__name__}: {exc}"}, request_id)
            self._send(200, list(_JSON.items()), body, request_id)
            return self._access_log(200, started, "status page")
        name = "index.html" if path == LOCAL_PREFIX else path.removeprefix(f"{LOCAL_PREFIX}static/")
        page = STATUS_PAGE_DIR / name
        # Only the page's own files: nothing outside its folder, whatever the path says.
        if name and "/" not in name and page.is_file() and page.suffix in _STATIC_TYPES:
            self._send(200, [("content-type", _STATIC_TYPES[page.suffix])], page.read_bytes(), request_id)
            return self._access_log(200, started, "status page")
        return self._not_found(request_id, started)

    def _serve_report(self, request_id: str, started: float) -> None:
        query = urllib.parse.parse_qs(self.path.partition("?")[2], keep_blank_values=True)
        period = query.pop("period", ["daily"])[-1]
        try:
            # Importable once start() has put the functions' layer on sys.path.
            from billwatch.reporting.report import ReportPeriod

            periods = [choice.value for choice in ReportPeriod]
            if query:
                status, text = 400, f"unknown query parameter {min(query)!r}: only period is taken\n"
            elif period not in periods:
                status, text = 400, f"period must be {' or '.join(periods)}, got {period!r}\n"
            else:
                status, text = 200, self.server.stack.billing_report(period)
        except Exception as exc:
            log.exception("the billing report failed on %s %s", self.command, self.path)
            status, text = 500, f"the billing report failed: {type(exc).__name__}: {exc} (see the log)\n"
        self._send(status, [("content-type", "text/plain; charset=utf-8")], text.encode(), request_id)
        self._access_log(status, started, "local report")


class _InternalRequestHandler(_RequestHandler):
    """The internal port: the AWS APIs the local stack emulates for the functions themselves."""

    def _dispatch(self, path: str, body: bytes, request_id: str, started: float) -> None:
        if (invoked := _LAMBDA_INVOKE.match(path)) and self.command == "POST":
            return self._serve_lambda_invoke(urllib.parse.unquote(invoked["name"]), body, request_id, started)
        return self._not_found(request_id, started)

    def _serve_lambda_invoke(self, name: str, payload: bytes, request_id: str, started: float) -> None:
        """Lambda's Invoke API, for the functions that invoke themselves (job hand-overs)."""
        stack = self.server.stack
        function = stack.function_named(name)
        if function is None:
            headers = [*_JSON.items(), ("x-amzn-ErrorType", "ResourceNotFoundException")]
            body = json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode()
            self._send(404, headers, body, request_id)
            return self._access_log(404, started, "lambda invoke")
        try:
            event = json.loads(payload or b"{}")
        except ValueError:
            headers = [*_JSON.items(), ("x-amzn-ErrorType", "InvalidRequestContentException")]
            self._send(400, headers, b'{"message": "Could not parse request body into json"}', request_id)
            return self._access_log(400, started, "lambda invoke")
        if (self.headers.get("X-Amz-Invocation-Type") or "RequestResponse") == "Event":
            stack.invoke_async(function, event)
            self._send(202, [], b"", request_id)
            return self._access_log(202, started, function)
        headers = list(_JSON.items())
        try:
            answer = json.dumps(stack.invoke(function, event)).encode()
        except Exception as exc:
            headers.append(("X-Amz-Function-Error", "Unhandled"))
            answer = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
        self._send(200, headers, answer, request_id)
        self._access_log(200, started, function)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], stack: LocalStack, handler: type[_RequestHandler]) -> None:
        self.stack = stack
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("connection from %s dropped: %s", client_address, exc)
        else:
            log.exception("unexpected error serving %s", client_address)


# ------------------------------------------------------------------------------ environment


class _EnvPatch:
    """Sets/removes os.environ entries and remembers the originals for restore()."""

    def __init__(self) -> None:
        self._original: dict[str, str | None] = {}

    def apply(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            if name not in self._original:
                self._original[name] = os.environ.get(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def restore(self) -> None:
        for name, value in self._original.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._original.clear()


def _no_proxy_with_loopback(current: str | None) -> str:
    entries = [entry.strip() for entry in (current or "").split(",") if entry.strip()]
    return ",".join(entries + [host for host in _LOOPBACK_NO_PROXY if host not in entries])


# ------------------------------------------------------------------------------------ stack


class LocalStack:
    """moto on loopback + the template's HTTP API routes served by the real handlers."""

    _active: ClassVar[LocalStack | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        *,
        webhook_secret: str | None = None,
        env: Mapping[str, str | None] | None = None,
        table_prefix: str | None = None,
        caller_arn: str | None = None,
        speed: float | None = None,
        moto_port: int | None = None,
        autorun: bool = True,
        data_dir: str | Path | None = None,
        parameters: Mapping[str, Any] | None = None,
        clock: LocalClock | ManualClock | None = None,
    ) -> None:
        """``webhook_secret`` defaults to ``$STRIPE_WEBHOOK_SECRET``, else the local dev secret.
        ``env`` holds extra overrides for the functions' environment (``None`` removes a variable).
        ``table_prefix`` defaults to ``billwatch-local-<random>-``.
        ``caller_arn`` (the IAM caller of IAM-authorized routes) defaults to ``$LOCAL_CALLER_ARN``,
        else :data:`DEFAULT_CALLER_ARN`.
        ``speed`` (the local clock's, default ``$BILLWATCH_CLOCK_SPEED`` or 1) and ``moto_port``
        (default ``$MOTO_PORT`` or an ephemeral one) as their variables say.
        ``data_dir`` (default ``$BILLWATCH_DATA_DIR``; none: everything lives in memory) keeps the
        tables and the metrics across restarts: restored on start, saved on stop.
        ``parameters`` override the template's parameter defaults (schedules, alarms, environment);
        ``clock`` replaces the running clock (a ManualClock for replays).
        With ``autorun`` false the schedules and the alarm evaluation do not run on their own: a
        test drives them with ``scheduler.fire_due()`` and ``alarms.evaluate()``.
        """
        path = Path(template_path)
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path
        self.template_path = path.resolve()
        self.template = load_template(self.template_path)
        self._extra_env = dict(env or {})
        if table_prefix is None:
            table_prefix = (
                os.environ.get(TABLE_PREFIX_ENV) or ""
            ).strip() or f"{TABLE_PREFIX}{secrets.token_hex(3)}-"
        self._table_prefix = table_prefix
        self.routes: list[tuple[str, str, str]] = http_routes(self.template)
        self.iam_routes: set[tuple[str, str, str]] = iam_routes(self.template)
        self._routes = sorted(
            (Route(*route, iam_auth=route in self.iam_routes) for route in self.routes),
            key=Route.specificity,
        )

        caller_from_env = (os.environ.get(CALLER_ENV) or "").strip()
        if caller_arn is not None and caller_arn.strip():
            self.caller_arn, self.caller_source = caller_arn.strip(), "passed to LocalStack"
        elif caller_from_env:
            self.caller_arn, self.caller_source = caller_from_env, f"{CALLER_ENV} from your environment"
        else:
            self.caller_arn, self.caller_source = DEFAULT_CALLER_ARN, f"the default, {CALLER_ENV} unset"
        if not valid_caller_arn(self.caller_arn):
            raise LocalStackError(
                f"{CALLER_ENV} must be an IAM or STS ARN, e.g. {DEFAULT_CALLER_ARN}, got {self.caller_arn!r}"
            )
        admins_from_env = (os.environ.get(ADMIN_ENV) or "").strip()
        if admins_from_env:
            self.admin_role_arns, self.admin_source = admins_from_env, f"{ADMIN_ENV} from your environment"
        else:
            self.admin_role_arns, self.admin_source = (
                DEFAULT_ADMIN_ROLE_ARNS,
                f"the default, {ADMIN_ENV} unset",
            )

        # `make run` passes the dev secret itself when the shell has none: that is still the dev one.
        from_env = (os.environ.get(SECRET_ENV) or "").strip()
        if webhook_secret is not None and webhook_secret.strip() != LOCAL_DEV_SECRET:
            self._secret, self.secret_source = webhook_secret.strip(), "the secret passed to LocalStack"
        elif webhook_secret is None and from_env and from_env != LOCAL_DEV_SECRET:
            self._secret, self.secret_source = from_env, f"{SECRET_ENV} from your environment"
        else:
            self._secret = LOCAL_DEV_SECRET
            self.secret_source = f"the built-in local dev secret {LOCAL_DEV_SECRET}"

        self.stage = parameter_values(self.template).get("Stage", DEFAULT_STAGE)
        self.parameters = dict(parameters or {})
        self.clock = clock or LocalClock(_number_from_env(SPEED_ENV, float, 1.0) if speed is None else speed)
        self._moto_port = _number_from_env(MOTO_PORT_ENV, int, 0) if moto_port is None else moto_port
        deployed = deployed_resources(self.template, self.parameters)
        self.schedules: list[ScheduleEvent] = [
            s for s in schedules(self.template, self.parameters) if s.function in deployed
        ]
        self.undeployed = sorted(set(resources_of_type(self.template, FUNCTION_TYPE)) - deployed)
        self.api_id = next(iter(resources_of_type(self.template, HTTP_API_TYPE)), "HttpApi")
        self.queue_urls: dict[str, str] = {}
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_LENGTH)
        self.fired: collections.deque[FiredSchedule] = collections.deque(maxlen=HISTORY_LENGTH)
        self.alarm_events: collections.deque[AlarmEvent] = collections.deque(maxlen=HISTORY_LENGTH)
        self.deliveries: collections.deque[Delivery] = collections.deque(maxlen=HISTORY_LENGTH)
        self.alerts_sent: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_LENGTH)
        self.metrics: LocalMetrics | None = None
        self.topics: TopicDeliveries | None = None
        self.alarms: AlarmWatcher | None = None
        self.scheduler: Scheduler | None = None
        self._routes_dir: str | None = None
        self._alert_env: dict[str, str] = {}
        self._autorun = autorun
        chosen_dir = data_dir if data_dir is not None else (os.environ.get(DATA_DIR_ENV) or "").strip()
        self.data_dir = Path(chosen_dir).expanduser().resolve() if chosen_dir else None
        self.restored: dict[str, int] = {}
        self._serving = False
        self._async: concurrent.futures.ThreadPoolExecutor | None = None
        self._function_names = function_names(self.template)
        self.url = ""
        self.internal_url = ""
        self.moto_endpoint = ""
        self.table_names: dict[str, str] = {}
        self.functions: dict[str, _Function] = {}
        self._moto: Any = None
        self._http: _HttpServer | None = None
        self._internal_http: _HttpServer | None = None
        self._server_threads: list[tuple[_HttpServer, threading.Thread]] = []
        self._env = _EnvPatch()
        self._added_paths: list[str] = []
        self._added_modules: list[str] = []
        self._cloudwatch: Any = None
        # What start() patched outside this object (sys.stdout, moto), undone last-in first-out.
        self._patches = contextlib.ExitStack()

    def __repr__(self) -> str:  # never shows the secret
        return f"LocalStack(url={self.url!r}, moto_endpoint={self.moto_endpoint!r})"

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """The active signing secret(s), to sign test requests with (never print them)."""
        return tuple(part.strip() for part in self._secret.split(",") if part.strip())

    @property
    def uses_local_dev_secret(self) -> bool:
        return self._secret == LOCAL_DEV_SECRET

    @property
    def running(self) -> bool:
        return bool(self._server_threads)

    # -------------------------------------------------------------------- lifecycle

    def start(self, port: int = DEFAULT_PORT) -> LocalStack:
        """Start moto and serve the routes on 127.0.0.1:``port`` (0 = an ephemeral port).

        One stack per process at a time: the environment and the handlers' module-level state
        (cached clients, bound table names) are process-wide.
        """
        with LocalStack._active_lock:
            if LocalStack._active is not None:
                raise LocalStackError("a LocalStack is already running in this process; stop it first")
            LocalStack._active = self
        try:
            # Bind first: a port in use fails fast, and early requests wait in the backlog.
            self._http = _HttpServer((HOST, port), self, _PublicRequestHandler)
            self._internal_http = _HttpServer((HOST, 0), self, _InternalRequestHandler)
            self._start_moto()
            self._create_tables()
            self._create_queues()
            self.client("secretsmanager").create_secret(
                Name=SAM_LOCAL_WEBHOOK_SECRET, SecretString=self._secret
            )
            self._start_cloudwatch()
            if self.data_dir is not None:
                assert self.metrics is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
                self.restored = local_persistence.restore(
                    self.data_dir,
                    self.client("dynamodb"),
                    self.table_names,
                    self._cloudwatch,
                    self.metrics.store,
                )
            self.topics = TopicDeliveries(
                self.template, self.client("sns"), self.client("sqs"), self.invoke, self.deliveries.append
            )
            self._local_alert_channels()
            self._async = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="local-stack-async"
            )
            for function in resources_of_type(self.template, FUNCTION_TYPE):
                self.functions[function] = self._load_function(function)
            # After the handlers' imports: a log handler made at import keeps the sys.stdout it saw,
            # and that must not be a wrapper that stop() takes away.
            assert self.metrics is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
            self._patches.callback(install_stdout_tap(self.metrics.on_line))
            self._observe_alerts()
            self.alarms = AlarmWatcher(
                self.template,
                self.metrics,
                self.clock,
                self._cloudwatch,
                self.topics.publish,
                self.alarm_events.append,
                self.parameters,
            )
            self.alarms.create_stand_ins(self.topics.topic_arns)
            self.scheduler = Scheduler(self.schedules, self.invoke, self.clock, self.fired.append)
            self.topics.start()
            if self._autorun:
                self.alarms.start()
                self.scheduler.start()
            for server, name in (
                (self._http, "local-stack-http"),
                (self._internal_http, "local-stack-internal"),
            ):
                thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
                thread.start()
                self._server_threads.append((server, thread))
        except BaseException:
            self.stop()
            raise
        self.url = f"http://{HOST}:{self._http.server_address[1]}"
        self._serving = True
        return self

    def stop(self) -> None:
        """Stop both servers and undo every change start() made to the process. Idempotent."""
        # The parts that invoke functions first, while moto still answers them.
        for part in (self.scheduler, self.alarms, self.topics):
            if part is not None:
                part.stop()
        self.scheduler = self.alarms = self.topics = None
        if self._async is not None:
            self._async.shutdown(wait=True, cancel_futures=True)
            self._async = None
        if self._serving and self.data_dir is not None and self.metrics is not None:
            try:
                saved = local_persistence.save(
                    self.data_dir, self.client("dynamodb"), self.table_names, self.metrics.store
                )
                log.info("saved the local data to %s: %s", self.data_dir, saved)
            except Exception:
                log.exception("could not save the local data to %s", self.data_dir)
        self._serving = False
        for server, thread in self._server_threads:
            server.shutdown()
            thread.join(timeout=10)
        self._server_threads.clear()
        for bound in (self._http, self._internal_http):
            if bound is not None:
                bound.server_close()
        self._http = self._internal_http = None
        self._patches.close()
        self._cloudwatch = None
        self.metrics = None
        if self._routes_dir is not None:
            shutil.rmtree(self._routes_dir, ignore_errors=True)
            self._routes_dir = None
        if self._moto is not None:
            # moto's backends live in the process: the next stack (or test) starts from nothing.
            from moto.moto_api import _internal as moto_api

            with contextlib.suppress(Exception):
                moto_api.moto_api_backend.reset()
            with contextlib.suppress(Exception):
                self._moto.stop()
            server = getattr(self._moto, "_server", None)  # ThreadedMotoServer does not close it
            if server is not None:
                with contextlib.suppress(Exception):
                    server.server_close()
            self._moto = None
        self.functions.clear()
        for name in self._added_modules:
            sys.modules.pop(name, None)
        self._added_modules.clear()
        for entry in self._added_paths:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)
        self._added_paths.clear()
        self._env.restore()
        with LocalStack._active_lock:
            if LocalStack._active is self:
                LocalStack._active = None

    def __enter__(self) -> LocalStack:
        return self if self.running else self.start(port=0)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- the pieces

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address=HOST, port=self._moto_port, verbose=False)
        self._moto.start()
        host, moto_port = self._moto.get_host_and_port()
        self.moto_endpoint = f"http://{host}:{moto_port}"
        self.internal_url = f"http://{HOST}:{self._internal_http.server_address[1]}"
        cleared = {
            name: None
            for name in os.environ
            if any(name.startswith(prefix) for prefix in _CLEARED_ENV_PREFIXES)
        }
        self._env.apply(
            {
                **cleared,
                **dict.fromkeys(_CLEARED_ENV),
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                # Lambda's Invoke API is the local stack's own: moto's would look for a container.
                "AWS_ENDPOINT_URL_LAMBDA": self.internal_url,
                "AWS_ACCESS_KEY_ID": FAKE_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIAL,
                "AWS_SESSION_TOKEN": FAKE_CREDENTIAL,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "NO_PROXY": _no_proxy_with_loopback(os.environ.get("NO_PROXY")),
                "no_proxy": _no_proxy_with_loopback(os.environ.get("no_proxy")),
            }
        )

    def client(self, service: str) -> Any:
        """A boto3 client of the local moto server."""
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.moto_endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIAL,
            aws_secret_access_key=FAKE_CREDENTIAL,
            aws_session_token=FAKE_CREDENTIAL,
        )

    def _create_tables(self) -> None:
        self.table_names = create_tables(self.client("dynamodb"), self.template, prefix=self._table_prefix)

    def _create_queues(self) -> None:
        sqs = self.client("sqs")
        for logical_id in resources_of_type(self.template, QUEUE_TYPE):
            self.queue_urls[logical_id] = sqs.create_queue(QueueName=f"{self._table_prefix}{logical_id}")[
                "QueueUrl"
            ]

    def _start_cloudwatch(self) -> None:
        """moto's CloudWatch on the local clock, with what the billing report needs of it too:
        percentiles and the alarm history."""
        from devtools.moto_patches import install_alarm_clock, install_alarm_history, install_percentiles

        self._patches.callback(install_percentiles())
        self._patches.callback(install_alarm_history())
        self._patches.callback(install_alarm_clock(self.clock.now))
        self._cloudwatch = self.client("cloudwatch")
        self.metrics = LocalMetrics(self._cloudwatch, clock=self.clock)

    def _local_alert_channels(self) -> None:
        """The console for every alert receiver, plus Slack and PagerDuty when their settings are given."""
        slack = (os.environ.get(SLACK_ENV) or "").strip()
        pagerduty = (os.environ.get(PAGERDUTY_ENV) or "").strip()
        routes = json.loads(LOCAL_ALERT_ROUTES.read_text(encoding="utf-8"))
        secrets_for_channels = {}
        for name, receiver in routes["receivers"].items():
            if slack:
                receiver["channels"].append({"type": "slack", "webhook_url_secret": "slack_webhook_url"})  # nosec B105 # the key the secret is stored under, not the secret
                secrets_for_channels["slack_webhook_url"] = slack
            if pagerduty and name == "oncall-critical":
                channel = {"type": "pagerduty", "routing_key_secret": "pagerduty_routing_key"}  # nosec B105 # the key the secret is stored under, not the secret
                if events_url := (os.environ.get(PAGERDUTY_URL_ENV) or "").strip():
                    channel["events_url"] = events_url
                receiver["channels"].append(channel)
                secrets_for_channels["pagerduty_routing_key"] = pagerduty
        self._routes_dir = tempfile.mkdtemp(prefix="billwatch-local-routes-")
        path = Path(self._routes_dir) / "alert_routes.json"
        path.write_text(json.dumps(routes), encoding="utf-8")
        self._alert_env = {"ALERT_ROUTES_PATH": str(path), "ALERT_SECRETS": json.dumps(secrets_for_channels)}

    def _observe_alerts(self) -> None:
        """The console channel's notices, as the status page's "alerts sent", from the handlers' log."""
        stack = self

        class Notices(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage() == "Alert notification":
                    alert = getattr(record, "alert", {})
                    stack.alerts_sent.append(
                        {
                            "at": stack.clock.now(),
                            "receiver": getattr(record, "receiver", None),
                            "kind": getattr(record, "kind", None),
                            "alert": alert,
                        }
                    )

        handler = Notices()
        # Powertools' Logger is the standard logger of the service's name.
        service_logger = logging.getLogger("billwatch")
        service_logger.addHandler(handler)
        self._patches.callback(service_logger.removeHandler, handler)

    def function_env(self, logical_id: str) -> dict[str, str | None]:
        """The environment a function runs with locally (``None`` = not set).

        The template's variables (resolved against parameter defaults and the local table
        names; anything unresolvable is left unset), then the local overrides (including
        ``ADMIN_ROLE_ARNS``: yours when set, else the role of the default local caller).
        """
        refs = {**self.table_names, **self.queue_urls, **(self.topics.topic_arns if self.topics else {})}
        env = function_environment(self.template, logical_id, parameters=self.parameters, resource_refs=refs)
        env.update(
            {
                variable: self.table_names[logical_table]
                for variable, logical_table in _TABLE_ENV.items()
                if logical_table in self.table_names
            }
        )
        env.update(self._alert_env)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                "POWERTOOLS_SERVICE_NAME": "billwatch",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                SECRET_ENV: self._secret,
                ADMIN_ENV: self.admin_role_arns,
                **dict.fromkeys(_CLEARED_ENV),
            }
        )
        env.update(self._extra_env)
        return env

    def _load_function(self, logical_id: str) -> _Function:
        props = function_properties(self.template, logical_id)
        code_uri, handler_name = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler_name, str) or "." not in handler_name:
            raise LocalStackError(
                f"{logical_id}: needs a local CodeUri directory and a module.function Handler"
            )
        base = self.template_path.parent
        code_dir = (base / code_uri).resolve()
        module_path, _, attribute = handler_name.rpartition(".")
        source = code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        if not source.is_file():
            raise LocalStackError(f"{logical_id}: handler module {source} does not exist")

        # What Lambda puts on sys.path: the function's code, then its layers (ContentUri[/python]).
        paths = [code_dir]
        layers = resources_of_type(self.template, LAYER_TYPE)
        for layer in props.get("Layers") or []:
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            content = ((layers.get(ref) or {}).get("Properties") or {}).get("ContentUri")
            if isinstance(content, str):
                layer_dir = (base / content).resolve()
                paths += [layer_dir / "python", layer_dir] if (layer_dir / "python").is_dir() else [layer_dir]
        for entry in reversed([str(path) for path in paths]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
                self._added_paths.append(entry)

        # The handler reads its settings at import (cold start), so the env goes first.
        self._env.apply(self.function_env(logical_id))
        name = f"_local_stack_{logical_id}_{module_path.replace('.', '_')}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, source)
        if spec is None or spec.loader is None:
            raise LocalStackError(f"{logical_id}: cannot import {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self._added_modules.append(name)
        spec.loader.exec_module(module)
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise LocalStackError(f"{logical_id}: {source} has no function {attribute!r}")
        function = _Function(
            logical_id=logical_id,
            module=module,
            handler=handler,
            memory_mb=int(props.get("MemorySize", 128)),
            timeout_s=float(props.get("Timeout", 3)),
        )
        if function.routes_with_powertools:
            function.lock = POWERTOOLS_ROUTING_LOCK
        return function

    # ------------------------------------------------------------------ requests

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route API Gateway would pick for ``method path`` and its path parameters."""
        for route in self._routes:
            params = route.match(method.upper(), path)
            if params is not None:
                return route, params
        return None

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke a function's handler as Lambda would (a fresh context, one at a time), and count
        the invocation in AWS/Lambda as Lambda does."""
        started = time.monotonic()
        failed = True
        try:
            result = self.functions[function].invoke(event)
            failed = False
            return result
        finally:
            if self.metrics is not None:
                dimensions = {"FunctionName": function}
                self.metrics.put("AWS/Lambda", "Invocations", dimensions, 1, "Count")
                self.metrics.put("AWS/Lambda", "Errors", dimensions, int(failed), "Count")
                elapsed_ms = (time.monotonic() - started) * 1000
                self.metrics.put("AWS/Lambda", "Duration", dimensions, elapsed_ms, "Milliseconds")

    def dashboards(self) -> list[dict[str, Any]]:
        """The template's dashboards with every widget's series over the last hours of the local clock."""
        from devtools.local_dashboards import DASHBOARD_HOURS, dashboard_series

        assert self.metrics is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
        end = self.clock.now()
        with self.metrics.lock:
            return dashboard_series(self.template, self.metrics.store, end - DASHBOARD_HOURS * 3600, end)

    def function_named(self, name: str) -> str | None:
        """The logical id of the function Lambda knows by ``name``: a name, a partial or full ARN."""
        short = name.split(":function:", 1)[-1].split(":", 1)[0]
        return self._function_names.get(short)

    def invoke_async(self, function: str, event: Any) -> None:
        """An asynchronous invocation (InvocationType Event): Lambda queues it and runs it later."""
        assert self._async is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check

        def run() -> None:
            try:
                self.invoke(function, event)
            except Exception:
                log.exception("the asynchronous invocation of %s failed", function)

        self._async.submit(run)

    def record_request(
        self, route: Route, status: int, elapsed_ms: float, body: bytes, answer: bytes
    ) -> None:
        """What API Gateway counts of a request, and, for the webhooks, the event and its outcome."""
        if self.metrics is not None:
            dimensions = {"ApiId": self.api_id}
            self.metrics.put("AWS/ApiGateway", "Count", dimensions, 1, "Count")
            self.metrics.put("AWS/ApiGateway", "4xx", dimensions, int(400 <= status < 500), "Count")
            self.metrics.put("AWS/ApiGateway", "5xx", dimensions, int(status >= 500), "Count")
            self.metrics.put("AWS/ApiGateway", "Latency", dimensions, elapsed_ms, "Milliseconds")
        self.requests.append(
            {
                "at": self.clock.now(),
                "route": route.route_key,
                "function": route.function,
                "status": status,
                **_event_summary(body),
                **_answer_summary(answer),
            }
        )

    def billing_report(self, period: str) -> str:
        """The console billing report of the ``period`` (daily or weekly) up to now, from moto."""
        from billwatch.reporting.report import (
            CloudWatchReportSource,
            ReportPeriod,
            build_report,
            render_console,
            report_window,
        )

        report_period = ReportPeriod(period)
        source = CloudWatchReportSource(self._cloudwatch, METRICS_NAMESPACE, stage=self.stage)
        # moto cuts the window to whole seconds, end excluded: ending at the next second takes in
        # what a request emitted a moment ago.
        now = datetime.fromtimestamp(self.clock.now(), UTC).replace(microsecond=0) + timedelta(seconds=1)
        start, end = report_window(report_period, end=now)
        return render_console(build_report(source.read(start, end), report_period))


# ------------------------------------------------------------------------------------ CLI


def _iam_section(stack: LocalStack) -> str:
    """How IAM-authorized routes are called locally (empty when the template has none)."""
    if not stack.iam_routes:
        return ""
    iam = [route for route in stack.routes if route in stack.iam_routes]
    method, path, _ = next((route for route in iam if route[0] == "GET"), iam[0])
    example = stack.url + re.sub(
        r"\{([^{}]+?)\+?\}", lambda m: "acct_local" if m.group(1) == "account_id" else m.group(1), path
    )
    method_arg = "" if method in ("GET", "ANY") else f"-X {method} "
    other = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/SomeoneElse/local"
    return f"""
IAM routes (no SigV4 locally) see this caller in requestContext.authorizer.iam.userArn:
  Caller:         {stack.caller_arn}   ({stack.caller_source})
  Admin roles:    {stack.admin_role_arns}   ({stack.admin_source})
  Another caller for one request:
    curl {method_arg}-H '{CALLER_HEADER}: {other}' {example}
"""


def banner(stack: LocalStack) -> str:
    routes = "\n".join(
        f"    {method:<6} {stack.url}{'/<any path>' if path == '$default' else path}  -> {function}"
        + ("  (IAM)" if (method, path, function) in stack.iam_routes else "")
        for method, path, function in stack.routes
    )
    tables = "\n".join(f"    {logical_id:<20} {name}" for logical_id, name in stack.table_names.items())
    port = stack.url.rsplit(":", 1)[1]
    port_arg = "" if port == str(DEFAULT_PORT) else f" PORT={port}"
    webhook = next(
        (f"{stack.url}{path}" for _, path, _ in stack.routes if "webhook" in path),
        stack.url,
    )
    forward = webhook.replace(f"http://{HOST}", "localhost")
    send = f"    make send{port_arg} EVENT=events/customer.subscription.updated.json\n"
    if stack.uses_local_dev_secret:
        send += (
            f"  (make send signs with ${SECRET_ENV}, by default {LOCAL_DEV_SECRET}; "
            "it must match the secret above)"
        )
    else:
        send += f"  (export the same {SECRET_ENV} in that shell first: make send signs with it)"
    speed = stack.clock.speed
    clock = "real time" if speed == 1 else f"{speed:g}x real time (a local hour every {3600 / speed:.0f} s)"
    schedules = "\n".join(
        f"    {s.function + '.' + s.name:<32} {s.expression}" + (f" ({s.zone})" if s.zone != "UTC" else "")
        for s in stack.schedules
    )
    left_out = (
        f"\n    not deployed with the template's defaults: {', '.join(stack.undeployed)}"
        if stack.undeployed
        else ""
    )
    channels = ", ".join(
        ["the console (log)"]
        + (["Slack"] if os.environ.get(SLACK_ENV, "").strip() else [])
        + (["PagerDuty for critical"] if os.environ.get(PAGERDUTY_ENV, "").strip() else [])
    )
    alarms = len(stack.alarms.definitions) if stack.alarms else 0
    if stack.data_dir is None:
        data = f"in memory (set {DATA_DIR_ENV} to keep the tables and metrics across restarts)"
    else:
        restored = ", ".join(f"{name} {count}" for name, count in stack.restored.items()) or "nothing yet"
        data = f"kept in {stack.data_dir} (restored: {restored})"
    return f"""
billwatch local stack (Ctrl-C to stop)
  Status page:    {stack.url}{LOCAL_PREFIX}
  Webhook URL:    {webhook}
  Routes (from {stack.template_path.name}):
{routes}
  Billing report: {stack.url}{REPORT_PATH}[?period=weekly]   (or: make report{port_arg} [PERIOD=weekly])
  AWS (moto):     {stack.moto_endpoint}   region {REGION}, credentials testing/testing
  Data:           {data}
  Tables:
{tables}
  Clock:          {clock}   ({SPEED_ENV} or --speed)
  Schedules:
{schedules}{left_out}
  Alarms:         {alarms} from the template, evaluated every local minute; alerts go to {channels}
                  (set {SLACK_ENV} and {PAGERDUTY_ENV} to reach the real ones)
  Signing secret: {stack.secret_source}

Send a sample event, in another shell:
{send}

Forward real test-mode events with the Stripe CLI:
    stripe listen --forward-to {forward}
  then restart this with the whsec_ it prints:
    export {SECRET_ENV}=whsec_...   # from `stripe listen`
    make run{port_arg}
{_iam_section(stack)}"""


def _port_from_env() -> int:
    raw = os.environ.get("PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"local_stack: error: PORT must be a number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"local_stack: error: PORT must be 0-65535, got {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_stack", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=None, help=f"HTTP port (default $PORT or {DEFAULT_PORT})")
    parser.add_argument("--template", default="template.yaml", help="SAM template (default template.yaml)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"how fast the local clock runs: 60 = an hour a minute (default ${SPEED_ENV} or 1)",
    )
    args = parser.parse_args(argv)
    port = _port_from_env() if args.port is None else args.port
    # The access log of this server at INFO; botocore/pynamodb/werkzeug chatter only with --verbose.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

    try:
        stack = LocalStack(args.template, speed=args.speed)
        stack.start(port=port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"local_stack: error: {HOST}:{port} is already in use (is `make run` running elsewhere?); "
            f"pick another port, e.g. PORT={port + 1} make run (and the same PORT for make send)",
            file=sys.stderr,
        )
        return 1
    except (LocalStackError, ValueError) as exc:  # ConfigError is a ValueError and names the variable
        print(f"local_stack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    print(banner(stack), flush=True)
    while not stopping.wait(0.5):
        pass
    print("\nstopping the local stack...", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
