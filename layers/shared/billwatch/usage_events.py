"""Usage threshold events: the business events alert dispatch consumes from an SNS topic."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from billwatch.observability import logger

EVENT_TYPE = "usage.threshold_crossed"


class UsageEventPublisher:
    def __init__(self, topic_arn: str | None) -> None:
        self._topic_arn = topic_arn

    @cached_property
    def _sns(self) -> Any:
        import boto3  # created on the first crossing, which most checks never reach

        return boto3.client("sns")

    def publish(self, event: dict[str, Any]) -> None:
        """Logged either way, so that an event the topic did not take is still on record."""
        logger.info("Usage threshold crossed", extra={"usage_event": event})
        if not self._topic_arn:
            return
        self._sns.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(event),
            MessageAttributes={
                "event_type": {"DataType": "String", "StringValue": EVENT_TYPE},
                "severity": {"DataType": "String", "StringValue": event["severity"]},
                "feature": {"DataType": "String", "StringValue": event["feature"]},
            },
        )
