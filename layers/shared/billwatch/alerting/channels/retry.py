"""The one retry stage: every channel's attempts, under one policy and inside one deadline.

Exponential backoff with jitter, a receiver's Retry-After honoured (up to a cap), and no attempt
started or wait begun that would outlive the invocation: a notice still in flight when Lambda
stops the invocation would be lost without a word, while one given up in time is dead-lettered.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from billwatch.alerting.channels.base import Channel, Content, DeliveryFailed, FailedForGood, RetryLater
from billwatch.core.observability import logger

# An attempt started with less time than this would time out before a real receiver answers.
SHORTEST_ATTEMPT_SECONDS = 0.1
ATTEMPT_TIMEOUT_SECONDS = 5.0


class RetryStage:
    def __init__(
        self,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        max_retry_after: float = 30.0,
        timeout: float = ATTEMPT_TIMEOUT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        deadline: Callable[[], float] | None = None,
    ) -> None:
        """``deadline`` gives the seconds left to the invocation (its reserve already taken off)."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.sleep = sleep
        self.deadline = deadline
        self._random = random.SystemRandom()

    def backoff(self, failed_attempts: int) -> float:
        """Equal jitter: half the exponential step plus a random part of the other half, so
        receivers recovering from an outage are not hit by every sender at the same instant."""
        step = min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))
        return step / 2 + self._random.uniform(0, step / 2)

    def deliver(self, channel: Channel[Any], content: Content) -> bool:
        """Sends ``content`` on ``channel`` until it is delivered: True. False when the channel does
        not carry this content; DeliveryFailed when it was not delivered."""
        message = channel.render(content)
        if message is None:
            return False
        failure: RetryLater | None = None
        made = 0
        while True:
            time_left = self._time_left()
            if time_left is not None and time_left < SHORTEST_ATTEMPT_SECONDS:
                stop = "no time left in this invocation"
                break
            made += 1
            answer = channel.send(
                message, self.timeout if time_left is None else min(self.timeout, time_left)
            )
            if isinstance(answer, FailedForGood):
                raise DeliveryFailed(channel.name, answer.detail, permanent=True, status=answer.status)
            if not isinstance(answer, RetryLater):
                return True
            failure = answer
            delay, stop = self._next_delay(made, failure)
            if stop:
                break
            logger.warning(
                "Alert delivery attempt failed, retrying",
                extra={"channel": channel.name, "attempt": made, "problem": failure.detail, "delay": delay},
            )
            self.sleep(delay)
        if failure is None:
            raise DeliveryFailed(channel.name, stop, permanent=False)
        raise DeliveryFailed(
            channel.name,
            f"{failure.detail} (attempt {made} of {self.attempts}; {stop})",
            permanent=False,
            status=failure.status,
        )

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline()

    def _next_delay(self, made: int, failure: RetryLater) -> tuple[float, str]:
        """How long to wait before the next attempt, or why there is none."""
        if made >= self.attempts:
            return 0, "no attempts left"
        if failure.after is not None and failure.after > self.max_retry_after:
            # Retrying sooner than asked is refused again; a later invocation can try instead.
            return 0, f"Retry-After {failure.after:g} s is over the {self.max_retry_after:g} s limit"
        delay = failure.after if failure.after is not None else self.backoff(made)
        time_left = self._time_left()
        if time_left is not None and delay + SHORTEST_ATTEMPT_SECONDS > time_left:
            return 0, f"no time left in this invocation to wait {delay:.2f} s"
        return delay, ""
