"""Business events for alert dispatch, on SNS: usage thresholds (licensing), failed payments (billing)."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from billwatch.core.observability import logger

USAGE_EVENT_TYPE = "usage.threshold_crossed"
PAYMENT_FAILED_EVENT_TYPE = "billing.payment_failed"


class BusinessEventPublisher:
    def __init__(self, topic_arn: str | None, log_message: str) -> None:
        self._topic_arn = topic_arn
        self._log_message = log_message

    @cached_property
    def _sns(self) -> Any:
        from billwatch.core import (
            aws,  # the client is made on the first crossing, which most checks never reach
        )

        return aws.client("sns")

    def publish(self, event: dict[str, Any]) -> None:
        """Logged either way, so that an event the topic did not take is still on record."""
        logger.info(self._log_message, extra={"business_event": event})
        if not self._topic_arn:
            return
        # Subscribers can filter on these without reading the message.
        attributes = {"event_type": event["type"]} | {
            name: event[name] for name in ("severity", "feature") if isinstance(event.get(name), str)
        }
        self._sns.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(event),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )


def usage_event_publisher(topic_arn: str | None) -> BusinessEventPublisher:
    return BusinessEventPublisher(topic_arn, "Usage threshold crossed")


def payment_event_publisher(topic_arn: str | None) -> BusinessEventPublisher:
    return BusinessEventPublisher(topic_arn, "Payment failed for an account")
