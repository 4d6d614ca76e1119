"""One JSON POST to a receiver, answered as the retry stage reads it. Never logs the URL: it may be
a secret (a Slack incoming webhook)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from billwatch.alerting.channels.base import DELIVERED, USER_AGENT, Answer, FailedForGood, RetryLater


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without its body, and could carry a request
    # built from a secret URL to another host; a redirect is a receiver misconfiguration.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_SLACK_ERROR_CODE = re.compile(r"^[a-z][a-z_]{1,60}$")
_TOO_MANY_REQUESTS = 429
_RESPONSE_READ_LIMIT = 64 * 1024
# Only its Retry-After reading is used: the retry stage decides what to do with the wait.
_RETRY_AFTER = Retry(total=0)


def json_body(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) as seconds to wait; None if unreadable."""
    if not value:
        return None
    try:
        return float(_RETRY_AFTER.parse_retry_after(value))
    except InvalidHeader:
        return None


def _status_detail(status: int, body: bytes) -> str:
    # Slack answers with an error code as the whole body (invalid_token, no_service, ...): safe to
    # quote and what the operator needs. Other bodies may echo the request, so they stay out.
    code = body.decode("utf-8", "replace").strip()
    return f"HTTP {status} {code}" if _SLACK_ERROR_CODE.match(code) else f"HTTP {status}"


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """429, 5xx, timeouts and lost connections may pass; any other non-2xx will not."""
    if urlsplit(url).scheme not in ("https", "http"):
        return FailedForGood("the URL is not http(s)")
    request_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    # The scheme is checked above: urllib's file: and ftp: handlers cannot be reached.
    request = urllib.request.Request(url, data=body, headers=request_headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(_RESPONSE_READ_LIMIT)
            return DELIVERED
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read(_RESPONSE_READ_LIMIT)
        retry_after = retry_after_seconds(error.headers.get("Retry-After"))
        error.close()
    except TimeoutError:
        return RetryLater(f"timed out after {timeout:g} s")
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            return RetryLater(f"timed out after {timeout:g} s")
        return RetryLater(f"connection failed ({type(error.reason).__name__})")
    except (OSError, HTTPException) as error:
        return RetryLater(f"connection failed ({type(error).__name__})")
    detail = _status_detail(status, answer)
    if status == _TOO_MANY_REQUESTS or status >= 500:
        return RetryLater(detail, status=status, after=retry_after)
    return FailedForGood(detail, status=status)
