"""BillwatchClient: the licensing API as three calls, each signed, timed out and retried safely.

A check is retried under one idempotency key, so the API answers every retry with the first
attempt's decision and counts the use once, however many attempts reached it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.session import Session

SERVICE = "execute-api"
# API Gateway's throttling answers 429 too: only a body with this reason is the quota's answer.
QUOTA_EXCEEDED = "quota_exceeded"
FEATURE_NOT_IN_PLAN = "feature_not_in_plan"


class BillwatchError(Exception):
    """An answer the API gave that is not a success: ``status``, ``error`` code and the server's message."""

    def __init__(self, status: int | None, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body: Mapping[str, Any] = body or {}
        self.error: str | None = self.body.get("error") or self.body.get("reason")


class QuotaExceeded(BillwatchError):
    """The use would pass the feature's quota: nothing was counted. ``body`` has used, limit, resets_at."""


class FeatureNotInPlan(BillwatchError):
    """The account's plan does not include the feature."""


class Unavailable(BillwatchError):
    """No answer after every retry: connection failures, timeouts, 5xx or throttling."""


class BillwatchClient:
    """``base_url`` is the API's URL (``make run`` prints the local one; use ``sign=False`` there).

    ``region`` defaults to the environment's (AWS_REGION in a Lambda), credentials to botocore's
    chain (the Lambda's role). ``timeout`` is per attempt, in seconds; ``retries`` counts the
    attempts after the first. Entitlements are cached for ``cache_ttl`` seconds (0 turns it off).
    """

    def __init__(
        self,
        base_url: str,
        region: str | None = None,
        sign: bool = True,
        timeout: float = 3.0,
        retries: int = 3,
        cache_ttl: float = 60.0,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        credentials: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.cache_ttl = cache_ttl
        self._clock, self._sleep = clock, sleep
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout), retries=False)
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()
        # Counts invalidations: an answer fetched across one may predate the change, so is not kept.
        self._invalidations = 0
        self._signer: Callable[[AWSRequest], None] | None = None
        if sign:
            session = Session()
            region = region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
            if not region:
                raise ValueError("sign=True needs a region: pass region= or set AWS_REGION")
            source = credentials or session.get_credentials()
            if source is None:
                raise ValueError("sign=True needs AWS credentials: none were found in botocore's chain")
            signing_region: str = region
            # Frozen per request: a role's refreshed credentials are picked up as they rotate.
            self._signer = lambda request: SigV4Auth(
                source.get_frozen_credentials(), SERVICE, signing_region
            ).add_auth(request)

    # --- the API --------------------------------------------------------------------------------

    def entitlements(self, account: str) -> dict[str, Any]:
        """The account's tier and features, from the cache while it is younger than ``cache_ttl``."""
        now = self._clock()
        with self._cache_lock:
            cached, invalidations = self._cache.get(account), self._invalidations
        # Each caller gets its own copy: one that edits its answer must not change the next caller's.
        if cached is not None and cached[0] > now:
            return copy.deepcopy(cached[1])
        answer = self._call("GET", f"/v1/accounts/{_segment(account)}/entitlements")
        with self._cache_lock:
            if self.cache_ttl > 0 and invalidations == self._invalidations:
                self._cache[account] = (now + self.cache_ttl, copy.deepcopy(answer))
        return answer

    def check(
        self, account: str, feature: str, quantity: int = 1, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Count ``quantity`` uses of ``feature``; the decision (allowed, used, limit, remaining...).

        Raises QuotaExceeded or FeatureNotInPlan when the use is refused (nothing counted), and
        Unavailable when no attempt got an answer. Without a key one is made for this call, so its
        retries are one use; pass your own to make a retry of your own request one use too.
        """
        body = {
            "feature": feature,
            "quantity": quantity,
            "idempotency_key": idempotency_key or str(uuid.uuid4()),
        }
        return self._call("POST", f"/v1/accounts/{_segment(account)}/usage", body)

    def usage_report(self, account: str, from_: str | None = None, to: str | None = None) -> dict[str, Any]:
        """The account's usage periods between two days (YYYY-MM-DD; the API's defaults otherwise)."""
        query = {name: value for name, value in (("from", from_), ("to", to)) if value is not None}
        path = f"/v1/accounts/{_segment(account)}/usage-report"
        return self._call("GET", f"{path}?{urlencode(query)}" if query else path)

    # --- the cache ------------------------------------------------------------------------------

    def invalidate(self, account: str | None = None) -> None:
        """Forget one account's cached entitlements, or every account's."""
        with self._cache_lock:
            self._invalidations += 1
            if account is None:
                self._cache.clear()
            else:
                self._cache.pop(account, None)

    def handle_business_event(self, event: Mapping[str, Any]) -> set[str]:
        """Invalidate the accounts a billwatch business event names; the accounts invalidated.

        Takes the Lambda event of an SNS subscription to the business-events topic (each record's
        message is one event), or one event itself: a usage threshold crossed, a payment failed, or
        any later type that names an ``account_id``, since each may change what the account may use.
        """
        messages: Iterable[Any] = (
            [record.get("Sns", {}).get("Message") for record in event["Records"]]
            if isinstance(event.get("Records"), list)
            else [event]
        )
        accounts = set()
        for message in messages:
            business_event = json.loads(message) if isinstance(message, str | bytes) else message
            account = business_event.get("account_id") if isinstance(business_event, dict) else None
            if isinstance(account, str):
                self.invalidate(account)
                accounts.add(account)
        return accounts

    # --- the wire -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        for attempt in range(self.retries + 1):
            # Full jitter: clients that failed together do not come back together.
            ceiling = min(self.max_backoff, self.backoff * 2**attempt)
            delay = ceiling * random.random()  # noqa: S311 # nosec B311 # jitter, not a secret
            try:
                status, headers, answer = self._send(method, self.base_url + path, data)
            except urllib3.exceptions.HTTPError as error:  # refused, reset, timed out
                failure = Unavailable(None, f"{method} {path}: {error}")
            else:
                if status < 400:
                    return answer
                if not _retryable(status, answer):
                    raise _refusal(status, answer)
                failure = Unavailable(status, f"{method} {path}: {_message(status, answer)}", answer)
                retry_after = _seconds(headers.get("retry-after"))
                if retry_after is not None:
                    if retry_after > self.max_backoff:  # longer than the caller agreed to wait
                        raise failure
                    delay = retry_after
            if attempt == self.retries:
                raise failure
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, method: str, url: str, data: bytes | None
    ) -> tuple[int, Mapping[str, str], dict[str, Any]]:
        request = AWSRequest(method=method, url=url, data=data)
        request.headers["Accept"] = "application/json"
        if data is not None:
            request.headers["Content-Type"] = "application/json"
        if self._signer is not None:
            self._signer(request)  # per attempt: a signature is only good for minutes
        prepared = request.prepare()
        response = self._http.request(
            method, prepared.url, body=data, headers=dict(prepared.headers.items()), redirect=False
        )
        try:
            answer = json.loads(response.data or b"{}")
        except ValueError:
            answer = {"message": response.data[:200].decode(errors="replace")}
        return response.status, response.headers, answer if isinstance(answer, dict) else {"value": answer}


def _segment(account: str) -> str:
    return quote(account, safe="")


def _retryable(status: int, answer: Mapping[str, Any]) -> bool:
    return status >= 500 or (status == 429 and answer.get("reason") != QUOTA_EXCEEDED)


def _refusal(status: int, answer: Mapping[str, Any]) -> BillwatchError:
    message = _message(status, answer)
    if answer.get("reason") == QUOTA_EXCEEDED:
        return QuotaExceeded(status, message, answer)
    if answer.get("reason") == FEATURE_NOT_IN_PLAN:
        return FeatureNotInPlan(status, message, answer)
    return BillwatchError(status, message, answer)


def _message(status: int, answer: Mapping[str, Any]) -> str:
    if isinstance(answer.get("message"), str):
        return answer["message"]
    if answer.get("reason"):
        return f"{answer['reason']}: {answer.get('feature')}"
    return f"HTTP {status}"


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is read as absent (API Gateway sends neither)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
