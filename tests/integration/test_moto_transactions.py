"""The test harness rolls moto's cancelled transactions back item by item (tests/support.py):
a cancelled transaction must still change nothing, and a committed one everything."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError


def item(table: str, pk: str) -> dict | None:
    return (
        boto3.client("dynamodb")
        .get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        .get("Item")
    )


def set_revision(table: str, pk: str, revision: int, **strings: str) -> dict:
    values = {":revision": {"N": str(revision)}} | {
        f":{name}": {"S": value} for name, value in strings.items()
    }
    assignments = ", ".join(["revision = :revision", *(f"{name} = :{name}" for name in strings)])
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": f"SET {assignments}",
            "ExpressionAttributeValues": values,
        }
    }


def test_a_cancelled_transaction_leaves_every_item_as_it_was(aws) -> None:
    table = aws["BillingStateTable"]
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "acct_kept"}, "revision": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "acct_guard"}, "revision": {"N": "7"}})
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                # Applied by moto before the failing condition below is reached, then rolled back.
                set_revision(table, "acct_kept", 2, tier="PRO"),
                {"Put": {"TableName": table, "Item": {"pk": {"S": "acct_new"}, "revision": {"N": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": "acct_guard"}},
                        "ConditionExpression": "revision = :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert item(table, "acct_kept") == {"pk": {"S": "acct_kept"}, "revision": {"N": "1"}}
    assert item(table, "acct_new") is None
    assert item(table, "acct_guard") == {"pk": {"S": "acct_guard"}, "revision": {"N": "7"}}


def test_a_committed_transaction_changes_every_item_it_names(aws) -> None:
    table = aws["BillingStateTable"]
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "acct_kept"}, "revision": {"N": "1"}})
    dynamodb.transact_write_items(
        TransactItems=[
            set_revision(table, "acct_kept", 2),
            {"Put": {"TableName": table, "Item": {"pk": {"S": "acct_new"}, "revision": {"N": "1"}}}},
        ]
    )
    assert item(table, "acct_kept")["revision"] == {"N": "2"}
    assert item(table, "acct_new")["revision"] == {"N": "1"}
