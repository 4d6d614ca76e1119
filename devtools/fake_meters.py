"""Stripe's billing meters as the tests' FakeStripeApi (tests.support) and the overage drain benchmark
(bench.overage_drain, through ``MeterServer``) serve them: meters, v1 meter events, the
v2 meter event session and stream, event summaries and cancel adjustments, with Stripe's rules that
billwatch relies on, on a clock the test sets:

- an identifier is unique over a rolling 24 hours from its receipt: a duplicate is answered as an
  accepted event and not counted; past the window the same identifier counts again;
- v1 takes the Idempotency-Key (24 hours too): the same key with the same parameters replays the first
  answer, with other parameters it is a 400 ``idempotency_error``;
- a timestamp past 35 days or more than 5 minutes ahead, or an event name no active meter has, is a
  400 on v1; on the v2 stream (validated later by Stripe) the event is dropped into ``refused``;
- a session token lasts 15 minutes; the stream answers 401 to an expired, revoked or unknown one;
- an event is cancelled only within 24 hours of its receipt;
- summaries need a customer and minute-aligned start and end; they sum the accepted, not cancelled
  events whose timestamp is in [start, end).

``fail(path, *faults)`` queues scripted faults for a path, one per request: a status (with
Retry-After), a delay, or ``after_accepting`` (Stripe handled the request, the client sees a 500).
Injected faults happen in front of the API, so an Idempotency-Key does not save them.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEDUP_WINDOW_SECONDS = 86_400
PAST_WINDOW_SECONDS = 35 * 86_400
FUTURE_WINDOW_SECONDS = 300
SESSION_SECONDS = 900
STREAM_LIMIT = 100

Answer = tuple[int, dict[str, Any], dict[str, str]]  # status, body, headers


@dataclass(frozen=True)
class Fault:
    status: int = 500
    retry_after: str | None = None
    delay_seconds: float = 0.0  # answer this late (the request is then handled as usual)
    after_accepting: bool = False  # handle the request, then answer ``status`` instead


def rate_limited(retry_after: str | None = "1") -> Fault:
    return Fault(429, retry_after=retry_after)


def server_error() -> Fault:
    return Fault(500)


def slow(seconds: float) -> Fault:
    return Fault(200, delay_seconds=seconds)


def lost_answer() -> Fault:
    return Fault(500, after_accepting=True)


@dataclass
class ReceivedEvent:
    event_name: str
    identifier: str
    customer: str
    value: int
    timestamp: int
    received_at: float
    via: str  # "v1" or "v2"
    cancelled: bool = False


def _error(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    error_type: str = "invalid_request_error",
) -> Answer:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return status, {"error": error}, {}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeMeters:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.meters: dict[str, str] = {}  # meter id -> event name
        self.accepted: list[ReceivedEvent] = []
        self.duplicates: list[ReceivedEvent] = []  # answered as accepted, not counted
        self.refused: list[tuple[dict[str, Any], str]] = []  # v2 events Stripe's later validation drops
        self.sessions: dict[str, float] = {}  # token -> when it expires
        self.sessions_created = 0
        self.stream_batches: list[int] = []  # the number of events of each stream request handled
        self.faults: dict[str, list[Fault]] = {}
        self._idempotency: dict[str, tuple[str, float, Answer]] = {}  # key -> (params, when, answer)
        self._lock = threading.Lock()

    def add_meter(self, event_name: str, meter_id: str | None = None) -> str:
        meter_id = meter_id or f"mtr_{uuid.uuid4().hex[:24]}"
        self.meters[meter_id] = event_name
        return meter_id

    def fail(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault(path, []).extend(faults)

    def revoke_sessions(self) -> None:
        self.sessions.clear()

    @property
    def cancelled(self) -> list[ReceivedEvent]:
        return [event for event in self.accepted if event.cancelled]

    def units(self, customer: str | None = None, event_name: str | None = None) -> int:
        """The units Stripe counts: accepted, not cancelled events (of a customer, of an event name)."""
        return sum(
            event.value
            for event in self.accepted
            if not event.cancelled
            and customer in (None, event.customer)
            and event_name in (None, event.event_name)
        )

    def listed_meters(self) -> list[dict[str, Any]]:
        return [
            {
                "id": meter_id,
                "object": "billing.meter",
                "event_name": event_name,
                "status": "active",
                "created": 1_700_000_000,
            }
            for meter_id, event_name in self.meters.items()
        ]

    # Requests

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> Answer | None:
        """The answer to a meter request, None for a path of no meter endpoint."""
        route, _, raw_query = path.partition("?")
        fault = self._next_fault(route)
        if fault is not None and fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        elif fault is not None and not fault.after_accepting:
            retry = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, {"error": {"type": "api_error", "message": "injected"}}, retry
        with self._lock:
            answer = self._route(method, route, urllib.parse.parse_qs(raw_query), headers, body)
        if answer is not None and fault is not None and fault.after_accepting:
            return fault.status, {"error": {"type": "api_error", "message": "injected after accepting"}}, {}
        return answer

    def _next_fault(self, route: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(route)
            return queue.pop(0) if queue else None

    def _route(
        self, method: str, route: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> Answer | None:
        if method == "POST" and route == "/v1/billing/meter_events":
            return self._v1_event(self._form(body), headers.get("Idempotency-Key"))
        if method == "POST" and route == "/v1/billing/meter_event_adjustments":
            return self._cancel(self._form(body))
        if method == "POST" and route == "/v2/billing/meter_event_session":
            return self._session()
        if method == "POST" and route == "/v2/billing/meter_event_stream":
            return self._stream(headers.get("Authorization", ""), json.loads(body or b"{}"))
        if method == "GET" and route.startswith("/v1/billing/meters/") and route.endswith("/event_summaries"):
            return self._summaries(route.split("/")[4], {key: values[-1] for key, values in query.items()})
        return None

    @staticmethod
    def _form(body: bytes) -> dict[str, str]:
        return {key: values[-1] for key, values in urllib.parse.parse_qs(body.decode()).items()}

    def _v1_event(self, form: dict[str, str], idempotency_key: str | None) -> Answer:
        now = self.clock()
        params = json.dumps(form, sort_keys=True)
        saved = self._idempotency.get(idempotency_key or "")
        if saved is not None and now - saved[1] < DEDUP_WINDOW_SECONDS:
            if saved[0] != params:
                message = "Keys for idempotent requests can only be used with the same parameters."
                return _error(400, message, error_type="idempotency_error")
            self.duplicates.append(self._received(form, int(form["timestamp"]), now, "v1"))
            status, body, _ = saved[2]
            return status, body, {"Idempotent-Replayed": "true"}
        if not form.get("timestamp", "").isdigit():
            return _error(400, "timestamp must be an integer", "parameter_invalid_integer", "timestamp")
        refusal = self._refusal(form.get("event_name", ""), int(form["timestamp"]), form, now)
        if refusal is not None:
            code, param, message = refusal
            return _error(400, message, code, param)
        self._count(self._received(form, int(form["timestamp"]), now, "v1"))
        answer: Answer = (
            200,
            {
                "object": "billing.meter_event",
                "created": int(now),
                "event_name": form["event_name"],
                "identifier": form["identifier"],
                "livemode": False,
                "payload": {
                    "stripe_customer_id": form["payload[stripe_customer_id]"],
                    "value": form["payload[value]"],
                },
                "timestamp": int(form["timestamp"]),
            },
            {},
        )
        if idempotency_key:
            self._idempotency[idempotency_key] = (params, now, answer)
        return answer

    def _refusal(
        self, event_name: str, timestamp: int, form: dict[str, str], now: float
    ) -> tuple[str, str, str] | None:
        """Why Stripe refuses the event (its error code, the parameter, a message), or None."""
        if event_name not in self.meters.values():
            return "no_meter", "event_name", f"No active meter has the event name {event_name!r}."
        if timestamp < now - PAST_WINDOW_SECONDS:
            return "timestamp_too_far_in_past", "timestamp", "Timestamp must be within the past 35 days."
        if timestamp > now + FUTURE_WINDOW_SECONDS:
            return "timestamp_in_future", "timestamp", "Timestamp must be at most 5 minutes in the future."
        if not form.get("payload[stripe_customer_id]", "").startswith("cus_"):
            return "meter_event_no_customer_defined", "payload", "The payload names no stripe_customer_id."
        if not form.get("payload[value]", "").isdigit():
            return "meter_event_invalid_value", "payload", "The payload's value must be a whole number."
        return None

    @staticmethod
    def _received(form: dict[str, str], timestamp: int, now: float, via: str) -> ReceivedEvent:
        return ReceivedEvent(
            event_name=form["event_name"],
            identifier=form["identifier"],
            customer=form["payload[stripe_customer_id]"],
            value=int(form["payload[value]"]),
            timestamp=timestamp,
            received_at=now,
            via=via,
        )

    def _count(self, event: ReceivedEvent) -> None:
        """Counted, unless its identifier was received in the past 24 hours (then a duplicate)."""
        seen = any(
            earlier.identifier == event.identifier
            and event.received_at - earlier.received_at < DEDUP_WINDOW_SECONDS
            for earlier in self.accepted
        )
        (self.duplicates if seen else self.accepted).append(event)

    def _session(self) -> Answer:
        now = self.clock()
        token = f"mes_tok_{uuid.uuid4().hex}"
        self.sessions[token] = now + SESSION_SECONDS
        self.sessions_created += 1
        return (
            200,
            {
                "id": f"mes_{uuid.uuid4().hex[:24]}",
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": _iso(now),
                "expires_at": _iso(now + SESSION_SECONDS),
                "livemode": False,
            },
            {},
        )

    def _stream(self, authorization: str, body: dict[str, Any]) -> Answer:
        now = self.clock()
        token = authorization.removeprefix("Bearer ")
        if self.sessions.get(token, 0) <= now:
            message = "The meter event session has expired or is unknown: create a new one."
            return _error(
                401, message, "billing_meter_event_session_expired", error_type="temporary_session_expired"
            )
        events = body.get("events")
        if not isinstance(events, list) or not 1 <= len(events) <= STREAM_LIMIT:
            return _error(
                400, f"events must list 1 to {STREAM_LIMIT} events", "invalid_array_length", "events"
            )
        self.stream_batches.append(len(events))
        for event in events:
            form = {
                "event_name": event.get("event_name", ""),
                "identifier": event.get("identifier") or uuid.uuid4().hex,
                **{f"payload[{key}]": value for key, value in (event.get("payload") or {}).items()},
            }
            timestamp = int(datetime.fromisoformat(event["timestamp"]).timestamp())
            refusal = self._refusal(form["event_name"], timestamp, form, now)
            if refusal is not None:
                self.refused.append((event, refusal[0]))
            else:
                self._count(self._received(form, timestamp, now, "v2"))
        return 200, {}, {}

    def _cancel(self, form: dict[str, str]) -> Answer:
        now = self.clock()
        identifier = form.get("cancel[identifier]", "")
        if form.get("type") != "cancel":
            return _error(400, "type must be cancel", "parameter_invalid_empty", "type")
        event = next(
            (
                event
                for event in reversed(self.accepted)
                if event.identifier == identifier and event.event_name == form.get("event_name")
            ),
            None,
        )
        if event is None or event.cancelled:
            return _error(
                400, f"no meter event to cancel with identifier {identifier!r}", param="cancel[identifier]"
            )
        if now - event.received_at >= DEDUP_WINDOW_SECONDS:
            return _error(
                400,
                "a meter event can only be cancelled within 24 hours of its receipt",
                param="cancel[identifier]",
            )
        event.cancelled = True
        return (
            200,
            {
                "id": f"mtrad_{uuid.uuid4().hex[:24]}",
                "object": "billing.meter_event_adjustment",
                "event_name": event.event_name,
                "type": "cancel",
                "cancel": {"identifier": identifier},
                "status": "pending",
                "livemode": False,
            },
            {},
        )

    def _summaries(self, meter_id: str, query: dict[str, str]) -> Answer:
        if meter_id not in self.meters:
            return _error(404, f"No such billing meter: {meter_id!r}", "resource_missing", "id")
        for required in ("customer", "start_time", "end_time"):
            if not query.get(required):
                return _error(400, f"Missing required param: {required}.", "parameter_missing", required)
        start, end = int(query["start_time"]), int(query["end_time"])
        for name, moment in (("start_time", start), ("end_time", end)):
            if moment % 60:
                return _error(
                    400, f"{name} must be aligned with minute boundaries", "parameter_invalid_integer", name
                )
        if end <= start:
            return _error(400, "end_time must be after start_time", "parameter_invalid_integer", "end_time")
        value = sum(
            event.value
            for event in self.accepted
            if not event.cancelled
            and event.customer == query["customer"]
            and event.event_name == self.meters[meter_id]
            and start <= event.timestamp < end
        )
        summary = {
            "id": f"mtrusg_{uuid.uuid4().hex[:24]}",
            "object": "billing.meter_event_summary",
            "aggregated_value": float(value),
            "start_time": start,
            "end_time": end,
            "livemode": False,
            "meter": meter_id,
        }
        url = f"/v1/billing/meters/{meter_id}/event_summaries"
        return 200, {"object": "list", "data": [summary], "has_more": False, "url": url}, {}


class MeterServer(ThreadingHTTPServer):
    """The meter endpoints alone on 127.0.0.1, both Stripe's API host and its meter events host
    (``url``): for what runs without pytest, where tests.support.FakeStripeApi is not importable."""

    daemon_threads = True

    def __init__(self, meters: FakeMeters) -> None:
        super().__init__(("127.0.0.1", 0), _MeterHandler)
        self.meters = meters

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _MeterHandler(BaseHTTPRequestHandler):
    server: MeterServer
    protocol_version = "HTTP/1.1"  # keep-alive, as Stripe's hosts: a request is not a new connection
    wbufsize = 64 * 1024  # the answer in one write: headers and body apart meet the delayed ACK

    def do_GET(self) -> None:
        self._answer("GET", b"")

    def do_POST(self) -> None:
        self._answer("POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _answer(self, method: str, body: bytes) -> None:
        status, answer, headers = self.server.meters.answer(method, self.path, self.headers, body) or (
            404,
            {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}},
            {},
        )
        payload = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass
