"""API Gateway's part: the template's HTTP API routes on werkzeug, each request a payload-2.0 event.

Two WSGI apps, each on its own loopback port and werkzeug's threaded server (which reads chunked
bodies and answers ``Expect: 100-continue``):

* :class:`PublicFront` on ``$PORT``: the template's routes, and the emulator's own read-only pages
  under ``/_local/`` (the status page, its JSON, the billing report, the API's OpenAPI document).
  Nothing here skips a check: people tunnel ``$PORT`` to receive real Stripe webhooks.
* :class:`InternalFront` on an unannounced port: Lambda's Invoke API, for the functions that hand a
  long job over to a fresh invocation (``AWS_ENDPOINT_URL_LAMBDA`` points them at it).

As API Gateway does: a body over 10 MB is a 413, an unknown route a 404, a function that fails a
500 ``{"message": "Internal Server Error"}``; a fault of the emulator itself is a 500 too, and the
server goes on serving.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from devtools import local_status
from devtools.emulator.settings import (
    ACCOUNT_ID,
    DEFAULT_CALLER_ARN,
    HOST,
    LISTEN_BACKLOG,
    MAX_BODY_BYTES,
    STATUS_PAGE_DIR,
    valid_caller_arn,
)

if TYPE_CHECKING:
    from devtools.emulator.emulator import LocalEmulator

log = logging.getLogger(__name__)

STAGE = "$default"
# Routes the emulator serves itself, ahead of the template's: API Gateway has nothing like them.
LOCAL_PREFIX = "/_local/"
REPORT_PATH = "/_local/report"
OPENAPI_PATH = "/_local/openapi.json"
# The function whose Powertools resolver serves the alert routes: the document takes them from it.
ALERT_DISPATCH = "AlertDispatchFunction"
CALLER_HEADER = "x-billwatch-caller-arn"
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Lambda's Invoke API, served by the emulator itself on its internal port.
_LAMBDA_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
# Response headers the server computes itself.
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding"}
_JSON = "application/json"
_INTERNAL_SERVER_ERROR = {"message": "Internal Server Error"}  # API Gateway's answer when a function fails


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


# ------------------------------------------------------------------------- payload format 2.0


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


class _Answer(Response):
    # A function's response without a Content-Type goes out without one, as from API Gateway.
    default_mimetype = None


def _json(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return _Answer(json.dumps(body), status, [("content-type", _JSON), *headers])


def lambda_response(result: Any) -> Response:
    """What API Gateway makes of a payload-2.0 Lambda result."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Without a statusCode, API Gateway treats the whole result as a JSON 200 body.
        return _json(200, result)
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
    return _Answer(raw, status, headers)


# --------------------------------------------------------------------------------- the fronts


class _Front:
    """A WSGI app that reads each request's body under API Gateway's limit and answers every request."""

    def __init__(self, emulator: LocalEmulator) -> None:
        self.emulator = emulator

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY_BYTES
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        served_by = "-"
        try:
            try:
                body = request.get_data()
            except RequestEntityTooLarge:
                response = _json(413, {"message": "Request Entity Too Large"})
            except BadRequest:  # a malformed chunked body
                response = _json(400, {"message": "Bad Request"})
            else:
                # The request target as received: API Gateway matches routes on the raw path.
                target = environ.get("REQUEST_URI") or request.full_path
                response, served_by = self.dispatch(request, target, body, request_id, started)
        except Exception:
            # A fault of the emulator itself (a function's own failure is answered where it is
            # invoked): every request still gets an answer, and the server goes on serving.
            log.exception("the emulator failed on %s %s", request.method, request.full_path)
            response = _json(500, _INTERNAL_SERVER_ERROR)
        response.headers["apigw-requestid"] = request_id
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info(
            "%s %s -> %s (%s, %.0f ms)",
            request.method,
            request.full_path,
            response.status_code,
            served_by,
            elapsed_ms,
        )
        return response(environ, start_response)

    def dispatch(
        self, request: Request, target: str, body: bytes, request_id: str, started: float
    ) -> tuple[Response, str]:
        """The answer to one request whose body has been read, and what served it (for the log)."""
        raise NotImplementedError


_NOT_FOUND = (404, {"message": "Not Found"})


class PublicFront(_Front):
    """``$PORT``: the template's routes and the emulator's own pages, nothing that skips a check."""

    def dispatch(
        self, request: Request, target: str, body: bytes, request_id: str, started: float
    ) -> tuple[Response, str]:
        path = target.partition("?")[0]
        if path.startswith(LOCAL_PREFIX):
            return self._local_page(request, path), "status page"
        found = self.emulator.resolve(request.method, path)
        if found is None:
            return _json(*_NOT_FOUND), "-"
        route, path_parameters = found
        authorizer = None
        if route.iam_auth:
            # Where API Gateway would check the SigV4 signature: the local caller stands in for it.
            caller = (request.headers.get(CALLER_HEADER) or "").strip() or self.emulator.caller_arn
            if not valid_caller_arn(caller):
                message = f"{CALLER_HEADER} must be an IAM or STS ARN, e.g. {DEFAULT_CALLER_ARN}"
                return _json(400, {"message": message}), "-"
            authorizer = iam_authorizer(caller)
        event = http_api_event(
            method=request.method,
            target=target,
            # The caller header is an instruction to the emulator, not part of the request.
            headers=[
                (name, value) for name, value in request.headers.items() if name.lower() != CALLER_HEADER
            ],
            body=body,
            route_key=route.route_key,
            path_parameters=path_parameters,
            source_ip=request.remote_addr or HOST,
            protocol=request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            request_id=request_id,
            authorizer=authorizer,
        )
        try:
            response = lambda_response(self.emulator.invoke(route.function, event))
        except Exception:
            log.exception("%s failed on %s %s", route.function, request.method, path)
            response = _json(500, _INTERNAL_SERVER_ERROR)
        # Recorded before the answer goes out: whoever got the answer finds the request recorded.
        elapsed_ms = (time.monotonic() - started) * 1000
        self.emulator.record_request(route, response.status_code, elapsed_ms, body, response.get_data())
        return response, route.function

    def _local_page(self, request: Request, path: str) -> Response:
        """The emulator's own pages, all read-only: the status page, its JSON, the billing report and
        the API's OpenAPI document."""
        if request.method != "GET":
            return _json(*_NOT_FOUND)
        if path == REPORT_PATH:
            return self._report(request)
        emulator = self.emulator
        api = {
            f"{LOCAL_PREFIX}api/status": lambda: local_status.status(emulator),
            f"{LOCAL_PREFIX}api/accounts": lambda: local_status.accounts(emulator),
            f"{LOCAL_PREFIX}api/dashboards": emulator.dashboards,
            OPENAPI_PATH: self._openapi,
        }
        if path in api:
            try:
                return _json(200, api[path]())
            except Exception as exc:
                log.exception("the status page's %s failed", path)
                return _json(500, {"message": f"{type(exc).__name__}: {exc}"})
        name = "index.html" if path == LOCAL_PREFIX else path.removeprefix(f"{LOCAL_PREFIX}static/")
        page = STATUS_PAGE_DIR / name
        # Only the page's own files: nothing outside its folder, whatever the path says.
        if name and "/" not in name and page.is_file() and page.suffix in _STATIC_TYPES:
            return _Answer(page.read_bytes(), 200, [("content-type", _STATIC_TYPES[page.suffix])])
        return _json(*_NOT_FOUND)

    def _openapi(self) -> dict[str, Any]:
        # Importable once start() has put the functions' layer on sys.path.
        from devtools import openapi

        return openapi.document(self.emulator.functions[ALERT_DISPATCH].module.app)

    def _report(self, request: Request) -> Response:
        query = urllib.parse.parse_qs(request.query_string.decode("latin-1"), keep_blank_values=True)
        period = query.pop("period", ["daily"])[-1]
        try:
            # Importable once start() has put the functions' layer on sys.path.
            from billwatch.reporting.model import ReportPeriod

            periods = [choice.value for choice in ReportPeriod]
            if query:
                status, text = 400, f"unknown query parameter {min(query)!r}: only period is taken\n"
            elif period not in periods:
                status, text = 400, f"period must be {' or '.join(periods)}, got {period!r}\n"
            else:
                status, text = 200, self.emulator.billing_report(period)
        except Exception as exc:
            log.exception("the billing report failed on %s", request.full_path)
            status, text = 500, f"the billing report failed: {type(exc).__name__}: {exc} (see the log)\n"
        return _Answer(text.encode(), status, [("content-type", "text/plain; charset=utf-8")])


class InternalFront(_Front):
    """The internal port: the AWS APIs the emulator stands in for, for the functions themselves."""

    def dispatch(
        self, request: Request, target: str, body: bytes, request_id: str, started: float
    ) -> tuple[Response, str]:
        invoked = _LAMBDA_INVOKE.match(target.partition("?")[0])
        if invoked is None or request.method != "POST":
            return _json(*_NOT_FOUND), "-"
        name = urllib.parse.unquote(invoked["name"])
        function = self.emulator.function_named(name)
        if function is None:
            body_404 = {"Type": "User", "message": f"Function not found: {name}"}
            return _json(404, body_404, [("x-amzn-ErrorType", "ResourceNotFoundException")]), "lambda invoke"
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            refusal = {"message": "Could not parse request body into json"}
            return _json(
                400, refusal, [("x-amzn-ErrorType", "InvalidRequestContentException")]
            ), "lambda invoke"
        if (request.headers.get("X-Amz-Invocation-Type") or "RequestResponse") == "Event":
            self.emulator.invoke_async(function, event)
            return _Answer(b"", 202), function
        try:
            return _json(200, self.emulator.invoke(function, event)), function
        except Exception as exc:
            failure = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return _json(200, failure, [("X-Amz-Function-Error", "Unhandled")]), function


# ------------------------------------------------------------------------------------ servers


class _RequestHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        # The fronts log each request themselves, with the function that served it.
        log.log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)


def serve(app: _Front, port: int) -> BaseWSGIServer:
    """A threaded werkzeug server of ``app`` on 127.0.0.1:``port`` (0: an ephemeral port), not yet serving.

    The socket is bound here, with a deep listen backlog: a port in use raises OSError (EADDRINUSE)
    rather than werkzeug's exit, and early connections wait to be accepted.
    """
    listener = socket.create_server((HOST, port), backlog=LISTEN_BACKLOG)
    try:
        return make_server(
            HOST, port, app, threaded=True, request_handler=_RequestHandler, fd=listener.fileno()
        )
    finally:
        listener.close()
