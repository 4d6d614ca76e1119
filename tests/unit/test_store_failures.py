"""DynamoDB's permanent failures are not temporary ones, wherever licensing meets them.

DynamoDB is replaced by a stand-in whose reads find nothing and whose one chosen operation fails
as botocore reports it (after botocore's own retries): a request DynamoDB refuses (a key too long,
an item too large) surfaces as StoreRejected and a 422, which nobody should retry; throttling,
timeouts and 5xx surface as StoreUnavailable and a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from pynamodb.exceptions import DeleteError, PutError, QueryError

from billwatch.core.audit import AuditTrail
from billwatch.core.dynamo import StoreRejected, StoreUnavailable, store_failure
from billwatch.core.http_answers import store_failure_answer
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import bind_billing_table, bind_idempotency_table
from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text
from billwatch.licensing.service import Licensing
from tests.support import Clock

ENDPOINT = "https://dynamodb.us-east-1.amazonaws.com"


def client_error(code: str) -> Callable[[str], Exception]:
    return lambda operation: ClientError(
        {"Error": {"Code": code, "Message": f"{code} from the stand-in"}}, operation
    )


PERMANENT = {
    "ValidationException": client_error("ValidationException"),
    "ItemCollectionSizeLimitExceededException": client_error("ItemCollectionSizeLimitExceededException"),
}
TEMPORARY = {
    "ProvisionedThroughputExceededException": client_error("ProvisionedThroughputExceededException"),
    "ThrottlingException": client_error("ThrottlingException"),
    "InternalServerError": client_error("InternalServerError"),
    "read timeout": lambda operation: ReadTimeoutError(endpoint_url=ENDPOINT),
    "connect timeout": lambda operation: ConnectTimeoutError(endpoint_url=ENDPOINT),
    "no connection": lambda operation: EndpointConnectionError(endpoint_url=ENDPOINT),
}

# What each read answers when it is not the operation that fails: an account never seen.
NOTHING_FOUND = {
    "GetItem": {},
    "BatchGetItem": {"Responses": {}},
    "UpdateItem": {"Attributes": {"pk": {"S": "acct_1"}}},
    "TransactWriteItems": {},
}

# Every way licensing reaches DynamoDB, and the operation that is made to fail.
CALLS: dict[str, tuple[Callable[[Licensing], Any], str]] = {
    "entitlements": (lambda licensing: licensing.entitlements("acct_1"), "GetItem"),
    "a counted use": (lambda licensing: licensing.use("acct_1", "exports", 1), "UpdateItem"),
    "an on/off feature's use": (lambda licensing: licensing.use("acct_1", "sso", 1), "GetItem"),
    "a keyed use's read": (
        lambda licensing: licensing.use_idempotently("acct_1", "exports", 1, "job-1"),
        "BatchGetItem",
    ),
    "a keyed use's write": (
        lambda licensing: licensing.use_idempotently("acct_1", "exports", 1, "job-1"),
        "TransactWriteItems",
    ),
    "a grant's read": (lambda licensing: licensing.grant("acct_1", "exports", 5), "GetItem"),
    "a grant's write": (lambda licensing: licensing.grant("acct_1", "exports", 5), "TransactWriteItems"),
    "a tier override's read": (lambda licensing: licensing.set_tier_override("acct_1", "PRO"), "GetItem"),
    # Each admin action and its audit record are one transaction.
    "a tier override": (lambda licensing: licensing.set_tier_override("acct_1", "PRO"), "TransactWriteItems"),
    "a usage reset's read": (lambda licensing: licensing.reset_usage("acct_1"), "GetItem"),
    "a usage reset's write": (lambda licensing: licensing.reset_usage("acct_1"), "TransactWriteItems"),
}


@pytest.fixture
def dynamodb(aws_credentials, monkeypatch) -> dict[str, Any]:
    """Set ``operation`` and ``error``; every other operation finds nothing."""
    failing: dict[str, Any] = {}

    def answer(client: BaseClient, operation: str, params: dict) -> dict:
        if operation == failing["operation"]:
            raise failing["error"](operation)
        return NOTHING_FOUND[operation]

    monkeypatch.setattr(BaseClient, "_make_api_call", answer)
    return failing


@pytest.fixture
def licensing(dynamodb, metrics) -> Licensing:
    bind_billing_table("billing-state")
    bind_idempotency_table("idempotency")
    catalog = load_catalog_text(shipped_catalog_text(), "plans.json")
    recorder, clock = MetricsRecorder("Billwatch", "billwatch"), Clock(1_796_137_200)
    return Licensing(catalog, recorder, clock, audit=AuditTrail("audit", 400, recorder, clock))


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("code", PERMANENT)
def test_a_request_dynamodb_refuses_is_rejected_not_unavailable(licensing, dynamodb, call, code) -> None:
    run, dynamodb["operation"] = CALLS[call]
    dynamodb["error"] = PERMANENT[code]
    with pytest.raises(StoreRejected, match=code):
        run(licensing)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("failure", TEMPORARY)
def test_throttling_timeouts_and_5xx_are_unavailable(licensing, dynamodb, call, failure) -> None:
    run, dynamodb["operation"] = CALLS[call]
    dynamodb["error"] = TEMPORARY[failure]
    with pytest.raises(StoreUnavailable):
        run(licensing)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StoreRejected("DynamoDB refused the request (ValidationException): key too long"), 422),
        (StoreUnavailable("Rate exceeded"), 503),
        # The alert store lets pynamodb's own errors through; they are told apart the same way.
        (PutError("Failed to put item", PERMANENT["ValidationException"]("PutItem")), 422),
        (DeleteError("Failed to delete item", PERMANENT["ValidationException"]("DeleteItem")), 422),
        (QueryError("Failed to query items", TEMPORARY["ThrottlingException"]("Query")), 503),
        (PutError("Failed to put item", TEMPORARY["read timeout"]("PutItem")), 503),
    ],
)
def test_the_http_answer_is_a_422_naming_a_refusal_and_a_503_only_for_what_may_pass(
    metrics, error, status
) -> None:
    answer = store_failure_answer(error)
    body = answer.body
    assert answer.status_code == status
    if status == 422:
        assert body["error"] == "rejected_by_store" and "ValidationException" in body["message"]
    else:
        assert body == {"error": "temporarily_unavailable", "message": "try again shortly"}


def _cancelled(*codes: str) -> ClientError:
    reasons = [{"Code": code, "Message": f"{code} from the stand-in"} for code in codes]
    return ClientError(
        {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons},
        "TransactWriteItems",
    )


@pytest.mark.parametrize(
    ("codes", "failure"),
    [
        (("None", "ValidationError"), StoreRejected),  # an item too large, a key too long
        (("ItemCollectionSizeLimitExceeded",), StoreRejected),
        (("TransactionConflict", "None"), StoreUnavailable),
        (("ThrottlingError",), StoreUnavailable),
    ],
)
def test_a_cancelled_transaction_is_judged_by_its_reasons(codes: tuple[str, ...], failure: type) -> None:
    from pynamodb.exceptions import TransactWriteError

    assert isinstance(store_failure(_cancelled(*codes)), failure)
    wrapped = TransactWriteError("cancelled", cause=_cancelled(*codes))
    assert isinstance(store_failure(wrapped), failure)
