"""The reference for section 1b: a webhook handler written as the Powertools tutorials write one.

It has the stack the brief asks of billwatch (Powertools Logger, Metrics and idempotency) and
nothing else: one boto3 client made at import and shared with the idempotency layer, and one raw
UpdateItem with a two-clause expression for the event. It does not verify the signature, parse
the event beyond what it needs, or record an arrival, so it is the least such a handler does.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

logger = Logger()
metrics = Metrics(namespace="ReferenceHandler")
dynamodb = boto3.client("dynamodb")
idempotency_store = DynamoDBPersistenceLayer(
    table_name=os.environ["IDEMPOTENCY_TABLE_NAME"], boto3_client=dynamodb
)


@idempotent_function(
    data_keyword_argument="event",
    persistence_store=idempotency_store,
    config=IdempotencyConfig(event_key_jmespath="id"),
)
def apply(event: dict[str, Any]) -> dict[str, Any]:
    account_id = event["data"]["object"]["metadata"]["account_id"]
    dynamodb.update_item(
        TableName=os.environ["BILLING_TABLE_NAME"],
        Key={"pk": {"S": account_id}},
        UpdateExpression="SET subscription_status = :status ADD revision :one",
        ExpressionAttributeValues={":status": {"S": event["data"]["object"]["status"]}, ":one": {"N": "1"}},
    )
    return {"outcome": "applied", "account_id": account_id}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    applied = apply(event=json.loads(event["body"]))
    metrics.add_metric(name="WebhookReceived", unit="Count", value=1)
    logger.info("Stripe event processed", extra=applied)
    return {"statusCode": 200, "body": json.dumps({"received": True, **applied})}
