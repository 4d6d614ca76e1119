"""DynamoDB as billwatch uses it beneath pynamodb's models.

Every call into pynamodb's private API lives here, so that a pynamodb upgrade is checked in one
place: the connection a model caches, the client beneath it, and the low-level connection that
builds expressions for the requests pynamodb's public API cannot make (an update that returns the
item on a failed condition, a BatchGetItem across two tables, a transaction).

One DynamoDB client serves the whole process: every model's connection and Powertools'
idempotency layer (``dynamodb_client``). pynamodb would otherwise open a botocore session and a
client per model, each reading DynamoDB's service model again: three of them on a webhook's first
event, which is most of what a cold start pays after the imports.

It also reads DynamoDB's errors the one way billwatch answers them: temporary (a retry may fix
it) or permanent (the same request fails the same way).
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.connection import Connection
from pynamodb.connection.table import TableConnection
from pynamodb.constants import ALL_OLD
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model

CONDITION_FAILED = "ConditionalCheckFailedException"


class StoreUnavailable(Exception):
    """DynamoDB failed in a way that a retry may fix (throttling, timeouts, 5xx)."""


class StoreRejected(Exception):
    """DynamoDB refused the request itself (a key too long, an item too large, a malformed
    request): the same request fails the same way however often it is retried."""


# Client errors that name the request, not the moment. Anything else (throttling, 5xx, an
# error code this list does not know) is treated as temporary: a retry costs less than a loss.
_PERMANENT_ERROR_CODES = frozenset(
    {"ValidationException", "ItemCollectionSizeLimitExceededException", "SerializationException"}
)
# A cancelled transaction names why, per item: these fail the same way every time.
_PERMANENT_CANCELLATION_REASONS = frozenset({"ValidationError", "ItemCollectionSizeLimitExceeded"})


def error_code(exc: BaseException) -> str | None:
    """DynamoDB's error code behind a botocore or pynamodb error; None for a timeout and the like.

    Not pynamodb's ``cause_response_code``: it raises AttributeError when the cause carries no
    response (a read timeout), which would turn a temporary failure into a crash.
    """
    cause = exc if isinstance(exc, ClientError) else getattr(exc, "cause", None)
    return cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None


def _cancellation_reasons(exc: BaseException) -> set[str]:
    reasons = getattr(exc, "cancellation_reasons", None) or []  # pynamodb's TransactWriteError
    codes = {reason.code for reason in reasons if reason is not None}
    cause = exc if isinstance(exc, ClientError) else getattr(exc, "cause", None)
    if isinstance(cause, ClientError):
        codes |= {reason.get("Code") for reason in cause.response.get("CancellationReasons") or []}
    return codes


def store_failure(exc: Exception) -> StoreUnavailable | StoreRejected:
    """The failure a DynamoDB error stands for, to raise ``from`` it."""
    code = error_code(exc)
    if _cancellation_reasons(exc) & _PERMANENT_CANCELLATION_REASONS:
        return StoreRejected(f"DynamoDB refused the transaction ({code}): {exc}")
    if code in _PERMANENT_ERROR_CODES:
        return StoreRejected(f"DynamoDB refused the request ({code}): {exc}")
    return StoreUnavailable(str(exc))


_client_lock = threading.Lock()
_client: BaseClient | None = None


def dynamodb_client() -> BaseClient:
    """The process's DynamoDB client, made on first use with the configuration pynamodb gives its own
    (retries, timeouts, no parameter validation), from the process's botocore session
    (``billwatch.core.aws``)."""
    global _client
    with _client_lock:  # botocore does not make clients thread-safely; using one is safe
        if _client is None:
            from billwatch.core.aws import botocore_session

            connection = Connection()
            connection._local.session = botocore_session()
            _client = connection.client
        return _client


class SharedClientModel(Model):
    """A model whose connection sends through ``dynamodb_client()`` instead of a client of its own."""

    @classmethod
    def _get_connection(cls) -> TableConnection:
        table = super()._get_connection()
        if table.connection._client is None:
            table.connection._client = dynamodb_client()
        return table


def table_connection(model: type[Model]) -> TableConnection:
    """The model's cached connection to its table (the one pynamodb's own calls use)."""
    return model._get_connection()


def low_level(model: type[Model]) -> Connection:
    """The connection beneath the model's: raw requests, expressions, transactions."""
    return model._get_connection().connection


def bind_table(table_name: str, *models: type[Model]) -> None:
    """Point the models at a table, dropping the connections they cached for the old one and the
    shared client, which the next request makes anew.

    A client keeps the endpoint and credentials it was made with; binding at start-up is where a
    function (or a test, against a new moto) says which ones it means.
    """
    global _client
    with _client_lock:
        _client = None
    for model in models:
        model.Meta.table_name = table_name
        model._connection = None


def conditional_update(
    model: type[Model], key: str, actions: list, condition: Condition, return_values: str
) -> tuple[bool, dict[str, Any] | None]:
    """One conditional UpdateItem on the item keyed ``key``.

    Returns whether the condition accepted it, and the raw item: as ``return_values`` asks on
    success, as it stood on failure. pynamodb builds the expressions and botocore sends them,
    because pynamodb's update_item cannot ask for the item on a failed condition, which saves a
    read on that path.
    """
    connection = low_level(model)
    request = connection.get_operation_kwargs(
        model.Meta.table_name,
        key,
        actions=actions,
        condition=condition,
        return_values=return_values,
        return_values_on_condition_failure=ALL_OLD,
    )
    try:
        return True, connection.client.update_item(**request).get("Attributes")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == CONDITION_FAILED:
            return False, exc.response.get("Item")
        raise store_failure(exc) from exc
    except BotoCoreError as exc:
        raise store_failure(exc) from exc
