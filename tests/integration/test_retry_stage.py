"""The channel seam and the one retry stage, with the real clock and a real receiver on 127.0.0.1.

``PlainJson`` is the smallest channel the seam allows: it renders a document and makes one POST.
Whatever the retry stage does to it, it does to Slack, PagerDuty, webhooks and SES alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from billwatch.alerting.channels.base import (
    DELIVERED,
    Answer,
    Channel,
    Content,
    DeliveryFailed,
    EmailMessage,
    FailedForGood,
    LogRecord,
    RetryLater,
    WebhookDocument,
)
from billwatch.alerting.channels.http import json_body, post_json
from billwatch.alerting.channels.retry import RetryStage
from tests.alert_receivers import AlertReceivers, alert_receivers
from tests.alert_receivers import Answer as ReceiverAnswer

PATH = "/hook"


class Document:
    """A Content that only a webhook-like channel carries."""

    def slack_message(self) -> dict[str, Any]:
        return {"text": "a document"}

    def email_message(self) -> EmailMessage:
        return EmailMessage("a document", "a document", "<p>a document</p>")

    def webhook_document(self) -> WebhookDocument:
        return WebhookDocument({"say": "hello"}, "doc-1")

    def pagerduty_event(self) -> None:
        return None

    def log_record(self) -> LogRecord:
        return LogRecord("a document", {})


class PlainJson(Channel[WebhookDocument]):
    name = "plain"

    def __init__(self, url: str) -> None:
        self.url = url
        self.timeouts: list[float] = []

    def render(self, content: Content) -> WebhookDocument:
        return content.webhook_document()

    def send(self, message: WebhookDocument, timeout: float) -> Answer:
        self.timeouts.append(timeout)
        return post_json(self.url, json_body(message.body), {}, timeout)


class Pager(Channel[dict[str, Any]]):
    """Carries only what pages people: a Document is not sent at all."""

    name = "pager"

    def render(self, content: Content) -> dict[str, Any] | None:
        return content.pagerduty_event()

    def send(self, message: dict[str, Any], timeout: float) -> Answer:
        pytest.fail("nothing to page about was sent")


class Scripted(Channel[str]):
    """Answers from a script, to see what the stage makes of each answer without a network."""

    name = "scripted"

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.sent = 0

    def render(self, content: Content) -> str:
        return "message"

    def send(self, message: str, timeout: float) -> Answer:
        self.sent += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def receivers() -> Iterator[AlertReceivers]:
    with alert_receivers() as server:
        yield server


def must_not_wait(seconds: float) -> None:
    pytest.fail(f"the stage waited {seconds} s")


def deadline_in(seconds: float) -> Any:
    """The invocation's time left, as the handlers compute it from the Lambda context."""
    ends = time.monotonic() + seconds
    return lambda: ends - time.monotonic()


def test_a_delivered_answer_ends_the_stage_at_once(receivers: AlertReceivers) -> None:
    channel = PlainJson(receivers.url(PATH))
    assert RetryStage(sleep=must_not_wait).deliver(channel, Document()) is True
    (request,) = receivers.requests(PATH)
    assert request.json == {"say": "hello"}


def test_what_a_channel_does_not_carry_is_not_sent(receivers: AlertReceivers) -> None:
    assert RetryStage(sleep=must_not_wait).deliver(Pager(), Document()) is False
    assert receivers.requests() == []


def test_retry_after_is_honoured_with_the_real_clock(receivers: AlertReceivers) -> None:
    receivers.respond(PATH, [ReceiverAnswer(429, retry_after=1), ReceiverAnswer(200)])
    started = time.monotonic()
    assert RetryStage(base_delay=0.01).deliver(PlainJson(receivers.url(PATH)), Document())
    first, second = (request.at for request in receivers.requests(PATH))
    assert second - first >= 1.0
    assert time.monotonic() - started < 3.0


def test_a_permanent_failure_is_not_retried(receivers: AlertReceivers) -> None:
    receivers.respond(PATH, [ReceiverAnswer(400, body="invalid_payload"), ReceiverAnswer(200)])
    with pytest.raises(DeliveryFailed) as caught:
        RetryStage(sleep=must_not_wait).deliver(PlainJson(receivers.url(PATH)), Document())
    assert (caught.value.channel, caught.value.permanent, caught.value.status) == ("plain", True, 400)
    assert str(caught.value) == "plain delivery failed permanently: HTTP 400 invalid_payload"
    assert len(receivers.requests(PATH)) == 1


def test_no_retry_outlives_the_invocation(receivers: AlertReceivers) -> None:
    receivers.respond(PATH, [ReceiverAnswer(503)])
    channel = PlainJson(receivers.url(PATH))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught:
        RetryStage(attempts=50, base_delay=0.2, max_delay=0.4, deadline=deadline_in(1.5)).deliver(
            channel, Document()
        )
    assert time.monotonic() - started < 1.5
    assert caught.value.permanent is False
    assert "no time left in this invocation" in str(caught.value)
    assert 2 <= len(receivers.requests(PATH)) < 50
    assert all(timeout <= 1.5 for timeout in channel.timeouts)


def test_an_attempt_is_given_no_more_than_the_time_left(receivers: AlertReceivers) -> None:
    receivers.respond(PATH, [ReceiverAnswer(200, delay=2.0)])
    channel = PlainJson(receivers.url(PATH))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught:
        RetryStage(timeout=5.0, deadline=deadline_in(0.5)).deliver(channel, Document())
    assert time.monotonic() - started < 1.0
    assert channel.timeouts[0] <= 0.5
    assert "timed out" in str(caught.value)


def test_a_wait_asked_beyond_the_cap_is_left_to_a_later_invocation() -> None:
    channel = Scripted(RetryLater("HTTP 429", status=429, after=120), DELIVERED)
    with pytest.raises(DeliveryFailed) as caught:
        RetryStage(max_retry_after=30, sleep=must_not_wait).deliver(channel, Document())
    assert channel.sent == 1
    assert (caught.value.permanent, caught.value.status) == (False, 429)
    assert "Retry-After 120 s is over the 30 s limit" in str(caught.value)


def test_every_channel_answer_is_read_the_same_way() -> None:
    waits: list[float] = []
    channel = Scripted(RetryLater("SES Throttling"), RetryLater("HTTP 503", after=0.25), DELIVERED)
    assert RetryStage(base_delay=0.5, sleep=waits.append).deliver(channel, Document())
    assert channel.sent == 3
    assert 0.25 <= waits[0] <= 0.5 and waits[1] == 0.25
    failing = Scripted(FailedForGood("SES MessageRejected", status=400))
    with pytest.raises(DeliveryFailed):
        RetryStage(sleep=must_not_wait).deliver(failing, Document())
    assert failing.sent == 1
