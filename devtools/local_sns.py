"""The template's SNS topics in moto, delivered to the functions subscribed to them.

Lambda's SNS trigger invokes the function asynchronously with an ``aws:sns`` record. Locally each
topic that a function subscribes to (an ``SNS`` event of the function) fans out, in moto, to an SQS
queue of the local stack's own; a thread per subscription receives from it, wraps each
notification in the record Lambda would send, and invokes the function. A failed invocation is
not deleted, so SQS gives it back after its visibility timeout: like Lambda's two retries of an
asynchronous invocation, a notification is tried three times, then dropped with an error in the
log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from devtools.template import FUNCTION_TYPE, resources_of_type

log = logging.getLogger("devtools.local_sns")

TOPIC_TYPE = "AWS::SNS::Topic"
ATTEMPTS = 3
RETRY_AFTER_SECONDS = 2


def topic_subscriptions(template: Mapping[str, Any]) -> dict[str, list[str]]:
    """Topic logical id -> the functions whose SNS events subscribe to it."""
    subscribed: dict[str, list[str]] = {}
    for function, resource in resources_of_type(template, FUNCTION_TYPE).items():
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if isinstance(event, dict) and event.get("Type") == "SNS":
                topic = (event.get("Properties") or {}).get("Topic")
                if isinstance(topic, dict) and isinstance(topic.get("Ref"), str):
                    subscribed.setdefault(topic["Ref"], []).append(function)
    return subscribed


def lambda_sns_event(notification: Mapping[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The event Lambda's SNS trigger sends for one notification (as SNS delivers it over HTTP/SQS)."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": notification.get("Type", "Notification"),
                    "MessageId": notification["MessageId"],
                    "TopicArn": notification["TopicArn"],
                    "Subject": notification.get("Subject"),
                    "Message": notification["Message"],
                    "Timestamp": notification.get("Timestamp"),
                    "SignatureVersion": notification.get("SignatureVersion", "1"),
                    "Signature": notification.get("Signature", ""),
                    "SigningCertUrl": notification.get("SigningCertURL", ""),
                    "UnsubscribeUrl": notification.get("UnsubscribeURL", ""),
                    "MessageAttributes": notification.get("MessageAttributes") or {},
                },
            }
        ]
    }


@dataclass(frozen=True)
class Delivery:
    topic: str  # logical id
    function: str
    message_id: str
    succeeded: bool
    attempt: int


class TopicDeliveries:
    """The template's topics in moto, delivered to their functions between start() and stop()."""

    def __init__(
        self,
        template: Mapping[str, Any],
        sns_client: Any,
        sqs_client: Any,
        invoke: Callable[[str, Any], Any],
        on_delivery: Callable[[Delivery], None] = lambda delivery: None,
    ) -> None:
        self._sns = sns_client
        self._sqs = sqs_client
        self._invoke = invoke
        self._on_delivery = on_delivery
        self.topic_arns = {
            logical_id: sns_client.create_topic(Name=f"billwatch-local-{logical_id}")["TopicArn"]
            for logical_id in resources_of_type(template, TOPIC_TYPE)
        }
        self._subscriptions: list[
            tuple[str, str, str, str]
        ] = []  # topic, function, queue URL, subscription ARN
        for topic, functions in topic_subscriptions(template).items():
            for function in functions:
                queue_url = sqs_client.create_queue(
                    QueueName=f"billwatch-local-{topic}-to-{function}",
                    Attributes={"VisibilityTimeout": str(RETRY_AFTER_SECONDS)},
                )["QueueUrl"]
                queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
                subscription = sns_client.subscribe(
                    TopicArn=self.topic_arns[topic], Protocol="sqs", Endpoint=queue_arn
                )["SubscriptionArn"]
                self._subscriptions.append((topic, function, queue_url, subscription))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def publish(self, topic: str, message: Mapping[str, Any] | str, subject: str | None = None) -> str:
        """Publish to the topic with that logical id, as a function's own sns:Publish would."""
        text = message if isinstance(message, str) else json.dumps(message)
        request: dict[str, Any] = {"TopicArn": self.topic_arns[topic], "Message": text}
        if subject:
            request["Subject"] = subject[:100]
        return self._sns.publish(**request)["MessageId"]

    def start(self) -> None:
        for topic, function, queue_url, subscription in self._subscriptions:
            thread = threading.Thread(
                target=self._deliver,
                args=(topic, function, queue_url, subscription),
                name=f"local-stack-sns-{topic}-{function}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queue is empty, or ``timeout`` seconds have passed: for tests and demos."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = 0
            for _, _, queue_url, _ in self._subscriptions:
                attributes = self._sqs.get_queue_attributes(
                    QueueUrl=queue_url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                pending += sum(int(value) for value in attributes.values())
            if not pending:
                return
            time.sleep(0.05)

    def _deliver(self, topic: str, function: str, queue_url: str, subscription: str) -> None:
        while not self._stopping.is_set():
            try:
                received = self._sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    AttributeNames=["ApproximateReceiveCount"],
                )
            except Exception:
                if self._stopping.is_set():
                    return
                log.exception("could not receive %s's notifications for %s", topic, function)
                self._stopping.wait(1)
                continue
            for message in received.get("Messages", []):
                self._invoke_with(topic, function, queue_url, subscription, message)

    def _invoke_with(
        self, topic: str, function: str, queue_url: str, subscription: str, message: Mapping[str, Any]
    ) -> None:
        notification = json.loads(message["Body"])
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            self._invoke(function, lambda_sns_event(notification, subscription))
            succeeded = True
        except Exception:
            succeeded = False
            last = attempt >= ATTEMPTS
            log.exception(
                "%s failed on a notification from %s (attempt %d of %d%s)",
                function,
                topic,
                attempt,
                ATTEMPTS,
                "; dropped" if last else "; it will be retried",
            )
            if not last:
                self._on_delivery(Delivery(topic, function, notification["MessageId"], False, attempt))
                return
        self._sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        self._on_delivery(Delivery(topic, function, notification["MessageId"], succeeded, attempt))
