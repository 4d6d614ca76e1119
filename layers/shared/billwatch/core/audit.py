"""The audit trail of admin actions: who did what to which account, silence or alert, when, what it
was before and after, in which request, and whether it was done or refused (AuditTable).

Append-only. Each record is a new item under a key nobody chooses (the time to the microsecond and
128 random bits), written only if no item has that key; the functions may only PutItem it and the
reader only Query it (template.yaml), and the table's resource policy denies every principal
UpdateItem, DeleteItem and BatchWriteItem. An action that writes DynamoDB is written in one
transaction with its record: when the record cannot be written the action is not done either (the
caller gets the store's answer, a 503 for an outage), so nothing an admin does goes unrecorded.
Refused attempts are recorded with a plain put; the caller is refused whether or not it lands.

Records are kept ``AUDIT_RETENTION_DAYS`` (TTL ``expiration``); docs/audit-trail.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PutError, QueryError, TransactWriteError
from pynamodb.expressions.condition import Condition

from billwatch.core import dynamo
from billwatch.core.dynamo import StoreRejected, StoreUnavailable, store_failure
from billwatch.core.ids import is_account_id
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.models import AuditRecord, bind_audit_table
from billwatch.core.observability import logger
from billwatch.core.request_fields import unknown_parameter

if TYPE_CHECKING:  # imported when an action is written: a usage check's cold start does without it
    from pynamodb.transactions import TransactWrite

STACK_SCOPE = "stack"  # the partition of records about no account: silences, alerts, refused reads
AUDIT_LOG_MESSAGE = "Admin action"  # what the Logs Insights query and the dashboard's log widget find

HISTORY_PAGE_SIZE = 50
MAX_HISTORY_PAGE_SIZE = 500
MAX_HISTORY_DAYS = 92  # a quarter: at most four monthly partitions per page across accounts
DEFAULT_HISTORY_DAYS = 7
DEFAULT_RETENTION_DAYS = 400  # as the template's AuditRetentionDays


class Outcome(StrEnum):
    RECORDED = "recorded"  # done, and recorded with it
    REFUSED = "refused"


@dataclass(frozen=True)
class Target:
    """What an action was done to: ``kind`` account, silence, alert, or none (a listing)."""

    kind: str
    id: str | None = None

    @property
    def scope(self) -> str:
        """The record's partition: the account's own, or the stack's (an id that names no account
        included: it must not become a partition of its own)."""
        return f"account#{self.id}" if self.kind == "account" and is_account_id(self.id) else STACK_SCOPE


NO_TARGET = Target("none")


@dataclass(frozen=True)
class AdminRequest:
    """Who is calling and in which request: API Gateway's request id and Lambda's. ``on_behalf_of``:
    whom an operator says a command is for (devtools.alerts' ``--by``), kept beside the caller, never
    in its place: it is typed, not authenticated."""

    caller: str
    api_request_id: str | None
    lambda_request_id: str | None
    on_behalf_of: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any], context: Any) -> AdminRequest:
        request_context = event.get("requestContext") or {}
        caller = ((request_context.get("authorizer") or {}).get("iam") or {}).get("userArn")
        return cls(
            caller=str(caller or "none"),
            api_request_id=request_context.get("requestId"),
            lambda_request_id=getattr(context, "aws_request_id", None),
        )


@dataclass(frozen=True)
class AuditedRoute:
    """An admin route (``"METHOD /path/{param}"``, as the template names it) and the action it is
    audited as. The parameter names the target: account_id, silence_id or alert_id."""

    route: str
    action: str

    def match(self, operation: str) -> Target | None:
        method, _, template = self.route.partition(" ")
        names = re.findall(r"\{(\w+)\}", template)
        pattern = re.escape(template)
        for name in names:
            pattern = pattern.replace(re.escape(f"{{{name}}}"), "([^/]+)")
        match = re.fullmatch(f"{re.escape(method)} {pattern}", operation)
        if match is None:
            return None
        if not names:
            return NO_TARGET
        return Target(names[0].removesuffix("_id"), match.group(1))


def attempted(operation: str, routes: Sequence[AuditedRoute]) -> tuple[str, Target]:
    """The action and target a refused call asked for; an unknown route is ``other`` (the metric's
    Action label stays a bounded set whatever a caller sends)."""
    for route in routes:
        target = route.match(operation)
        if target is not None:
            return route.action, target
    return "other", NO_TARGET


class AuditTrail:
    """Writes the records (with the change they record, or alone for a refusal) and reads them back.

    The handler names the request (``begin``) before anything is done, and ``end``s it after.
    """

    def __init__(
        self,
        table: str | None,
        retention_days: int,
        metrics: MetricsRecorder,
        clock: Callable[[], float] = time.time,
        *,
        bound: bool = False,
    ) -> None:
        """``table``: the trail's table. None: no trail, so every admin action is refused, unless
        ``bound``: then whichever table ``bind_audit_table`` named last (a service built without
        settings, as tests build it)."""
        self._configured = table is not None or bound
        if table is not None:
            bind_audit_table(table)
        self._retention_seconds = retention_days * 86400
        self._metrics = metrics
        self.clock = clock
        self._request: AdminRequest | None = None

    def begin(self, request: AdminRequest) -> None:
        self._request = request

    def end(self) -> None:
        self._request = None

    # ------------------------------------------------------------------ writing

    def entry(
        self,
        action: str,
        target: Target,
        before: Any,
        after: Any,
        *,
        reason: str | None = None,
        caller: str | None = None,
        outcome: Outcome = Outcome.RECORDED,
    ) -> AuditRecord:
        """The record of one action, to write with it (``commit``)."""
        moment = datetime.fromtimestamp(self.clock(), UTC)
        at = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
        request = self._request or AdminRequest("none", None, None)
        return AuditRecord(
            target.scope,
            f"{at}#{uuid.uuid4().hex}",
            month=at[:7],
            at=at,
            caller=caller or request.caller,
            on_behalf_of=request.on_behalf_of,
            action=action,
            target_kind=target.kind,
            target=target.id,
            outcome=outcome.value,
            reason=reason,
            before=None if before is None else json.dumps(before, sort_keys=True, default=str),
            after=None if after is None else json.dumps(after, sort_keys=True, default=str),
            api_request_id=request.api_request_id,
            lambda_request_id=request.lambda_request_id,
            expiration=int(moment.timestamp()) + self._retention_seconds,
        )

    def commit(self, record: AuditRecord, change: Callable[[TransactWrite], None]) -> bool:
        """The change and its record in one transaction. True when both are written; False when the
        change's condition refused it (nothing is written). Any other failure raises the store's
        (StoreUnavailable or StoreRejected), with nothing written."""
        from pynamodb.transactions import TransactWrite

        self._writable()
        try:
            with TransactWrite(connection=dynamo.low_level(AuditRecord)) as transaction:
                change(transaction)
                transaction.save(record, condition=AuditRecord.sk.does_not_exist())
        except TransactWriteError as exc:
            # The record's key is new (time and 128 random bits): a refused condition is the change's.
            if any(
                reason is not None and reason.code == "ConditionalCheckFailed"
                for reason in exc.cancellation_reasons or []
            ):
                return False
            raise store_failure(exc) from exc
        self.recorded(record)
        return True

    @staticmethod
    def put(record: AuditRecord) -> tuple[AuditRecord, Condition]:
        """The record as one put of a transaction another module writes (then ``recorded``)."""
        return record, AuditRecord.sk.does_not_exist()

    def write(self, record: AuditRecord) -> None:
        """A record on its own, for an action that writes nothing to DynamoDB (it starts a job):
        written first, so that the action does not happen when this raises (the store's failure)."""
        self._writable()
        try:
            record.save(condition=AuditRecord.sk.does_not_exist())
        except PutError as exc:
            raise store_failure(exc) from exc
        self.recorded(record)

    def refuse(self, operation: str, routes: Sequence[AuditedRoute], reason: str, caller: str | None) -> None:
        """A refused attempt, recorded on its own. Its caller is refused whether or not the record
        lands, so a failure here is logged, not raised."""
        action, target = attempted(operation, routes)
        record = self.entry(action, target, None, None, reason=reason, caller=caller, outcome=Outcome.REFUSED)
        try:
            self.write(record)
        except (StoreUnavailable, StoreRejected) as exc:
            logger.error(
                "Could not record a refused admin call in the audit trail",
                extra={"audit_action": action, "caller_arn": record.caller, "detail": str(exc)},
            )
            self.recorded(record)

    def _writable(self) -> None:
        if not self._configured:
            raise StoreUnavailable(
                "AUDIT_TABLE_NAME is not set: admin actions cannot be recorded, so none is done"
            )

    def recorded(self, record: AuditRecord) -> None:
        """The metric and the log line of an action done or refused (what the Logs Insights query
        reads): a refusal is counted and logged even when its record could not be written."""
        self._metrics.add(Metric.ADMIN_ACTION, Action=record.action, Outcome=record.outcome)
        logger.info(AUDIT_LOG_MESSAGE, extra={"audit": as_dict(record)})

    # ------------------------------------------------------------------ reading

    def history(self, query: HistoryQuery) -> dict[str, Any]:
        """One page of records, newest first, and the cursor of the next page (None: no more)."""
        if not self._configured:
            raise StoreUnavailable("AUDIT_TABLE_NAME is not set: there is no audit trail to read")
        wanted = query.limit + 1  # one more than the page: whether another page follows, without asking
        records: list[AuditRecord] = []
        try:
            for record in self._newest_first(query):
                records.append(record)
                if len(records) == wanted:
                    break
        except (QueryError, ClientError, BotoCoreError) as exc:
            raise store_failure(exc) from exc
        page = records[: query.limit]
        following = encode_cursor(page[-1]) if len(records) == wanted else None
        return {"records": [as_dict(record) for record in page], "next_cursor": following}

    @staticmethod
    def _newest_first(query: HistoryQuery) -> Iterator[AuditRecord]:
        low, high = _sort_key_bound(query.start), _sort_key_bound(query.end) + "~"
        start_key = None
        if query.cursor is not None:
            start_key = {"pk": {"S": query.cursor[0]}, "sk": {"S": query.cursor[1]}}
        if query.account is not None:
            yield from AuditRecord.query(
                f"account#{query.account}",
                AuditRecord.sk.between(low, high),
                scan_index_forward=False,
                last_evaluated_key=start_key,
                page_size=query.limit + 1,
            )
            return
        for month in _months_newest_first(query.start, query.end):
            if start_key is not None and start_key["sk"]["S"][:7] < month:
                continue  # the cursor is in an older month
            index_start = None
            if start_key is not None and start_key["sk"]["S"][:7] == month:
                index_start = {**start_key, "month": {"S": month}}
            yield from AuditRecord.by_month.query(
                month,
                AuditRecord.sk.between(low, high),
                scan_index_forward=False,
                last_evaluated_key=index_start,
                page_size=query.limit + 1,
            )


def as_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "caller": record.caller,
        "on_behalf_of": record.on_behalf_of,
        "action": record.action,
        "target": {"kind": record.target_kind, "id": record.target},
        "outcome": record.outcome,
        "reason": record.reason,
        "before": None if record.before is None else json.loads(record.before),
        "after": None if record.after is None else json.loads(record.after),
        "request_id": record.api_request_id,
        "lambda_request_id": record.lambda_request_id,
    }


# ------------------------------------------------------------------ the query, from outside

_SORT_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z#[0-9a-f]{32}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Records are from billwatch's time; the range keeps every computation on a moment inside the calendar.
_MOMENTS = (datetime(2000, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC))
QUERY_PARAMETERS = ("account", "from", "to", "limit", "cursor")


class HistoryQueryError(ValueError):
    """A query the audit trail cannot answer; the message names the parameter."""


@dataclass(frozen=True)
class HistoryQuery:
    account: str | None
    start: datetime
    end: datetime
    limit: int
    cursor: tuple[str, str] | None  # (pk, sk) of the last record of the page before

    @classmethod
    def parse(cls, parameters: Mapping[str, str], now: float) -> HistoryQuery:
        """The query string's parameters, each checked; the first problem raises, naming it."""
        if problem := unknown_parameter(parameters, QUERY_PARAMETERS):
            raise HistoryQueryError(problem)
        account = parameters.get("account")
        if account is not None and not is_account_id(account):
            raise HistoryQueryError(
                "account: an account id (letters, digits and _.:@-, at most 128, not a Stripe cus_ id)"
            )
        end = _moment(parameters, "to", end_of_day=True) or datetime.fromtimestamp(now, UTC)
        start = _moment(parameters, "from", end_of_day=False) or end - timedelta(days=DEFAULT_HISTORY_DAYS)
        if start > end:
            raise HistoryQueryError("from: must not be after to")
        if end - start > timedelta(days=MAX_HISTORY_DAYS):
            raise HistoryQueryError(f"from: the range from..to may span at most {MAX_HISTORY_DAYS} days")
        limit_text = parameters.get("limit")
        limit = HISTORY_PAGE_SIZE
        if limit_text is not None:
            if (
                not re.fullmatch(r"[0-9]{1,4}", limit_text)
                or not 1 <= int(limit_text) <= MAX_HISTORY_PAGE_SIZE
            ):
                raise HistoryQueryError(f"limit: a whole number from 1 to {MAX_HISTORY_PAGE_SIZE}")
            limit = int(limit_text)
        cursor = None if "cursor" not in parameters else _decode_cursor(parameters["cursor"], account)
        if cursor is not None and not _sort_key_bound(start) <= cursor[1] <= _sort_key_bound(end) + "~":
            raise HistoryQueryError("cursor: from another range (keep from and to as they were)")
        return cls(account, start, end, limit, cursor)


def _moment(parameters: Mapping[str, str], name: str, *, end_of_day: bool) -> datetime | None:
    """A date (a whole UTC day: ``to`` takes its end) or an ISO 8601 time with its offset, within
    ``_MOMENTS`` (a day at the edge of the calendar would overflow the arithmetic on it)."""
    text = parameters.get(name)
    if text is None:
        return None
    moment: datetime | None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None and _DATE.fullmatch(text):  # a date: the whole day, in UTC
            moment = moment.replace(tzinfo=UTC) + (
                timedelta(days=1, microseconds=-1) if end_of_day else timedelta()
            )
        moment = moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        moment = None
    if moment is None or not _MOMENTS[0] <= moment < _MOMENTS[1]:
        raise HistoryQueryError(
            f"{name}: a date (2026-12-07) or a time with its offset (2026-12-07T09:00:00Z), "
            f"from {_MOMENTS[0].year} to {_MOMENTS[1].year - 1}, got {text[:40]!r}"
        )
    return moment


def _sort_key_bound(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _months_newest_first(start: datetime, end: datetime) -> Iterator[str]:
    year, month = end.year, end.month
    while (year, month) >= (start.year, start.month):
        yield f"{year:04d}-{month:02d}"
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)


def encode_cursor(record: AuditRecord) -> str:
    raw = json.dumps([record.pk, record.sk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str, account: str | None) -> tuple[str, str]:
    """A cursor this route gave out for the same account (or for none); nothing else is let through
    to DynamoDB as a start key."""
    problem = HistoryQueryError("cursor: not a cursor this route gave out (use next_cursor as it came)")
    try:
        pk, sk = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise problem from None
    if not isinstance(pk, str) or not isinstance(sk, str) or not _SORT_KEY.fullmatch(sk):
        raise problem
    if account is not None and pk != f"account#{account}":
        raise problem
    if pk != STACK_SCOPE and not (pk.startswith("account#") and is_account_id(pk.removeprefix("account#"))):
        raise problem
    return pk, sk


__all__ = [
    "AUDIT_LOG_MESSAGE",
    "AdminRequest",
    "AuditTrail",
    "AuditedRoute",
    "HistoryQuery",
    "HistoryQueryError",
    "Outcome",
    "Target",
]
