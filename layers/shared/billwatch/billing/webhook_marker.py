"""When the last verified webhook arrived: written by the intake, read by the health probe.

One item for the whole service, moved forward by a conditional UpdateItem. The intake writes it
at most once per minute per container, so it adds no request to the steady-state path, and a
failure only logs: the marker must never cost a webhook its answer. Nor its time: the answer
does not depend on it, so it is written beside the event's own work, and waited for before the
answer leaves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pynamodb.exceptions import UpdateError

from billwatch.core.dynamo import CONDITION_FAILED, error_code, table_connection
from billwatch.core.models import WebhookMarker
from billwatch.core.observability import logger

MARKER_KEY = "marker#webhook-received"
WRITE_INTERVAL_SECONDS = 60.0


class WebhookArrivals:
    def __init__(
        self, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._last_write: float | None = None

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Records the arrival, when it is due, while the block handles the event.

        The write runs in a thread joined when the block exits, so that nothing outlives the
        invocation (Lambda freezes the process between events).
        """
        writer = self._writer() if self._due() else None
        if writer is not None:
            writer.start()
        try:
            yield
        finally:
            if writer is not None:
                writer.join()

    def _due(self) -> bool:
        started = self._monotonic()
        if self._last_write is not None and started - self._last_write < WRITE_INTERVAL_SECONDS:
            return False
        # Throttled before the write, so a DynamoDB in trouble is not asked again on every event.
        self._last_write = started
        return True

    def _writer(self) -> threading.Thread | None:
        try:
            # The client is made before the thread: making it is interpreter work, which would
            # only take turns with the event's; the request's wait is what the event's work fills.
            table_connection(WebhookMarker)
        except Exception:
            logger.warning("Could not record the webhook arrival marker", exc_info=True)
            return None
        return threading.Thread(target=self._write, name="webhook-arrival-marker")

    def _write(self) -> None:
        now = int(self._clock())
        try:
            WebhookMarker(MARKER_KEY).update(
                actions=[WebhookMarker.received_at.set(now)],
                condition=WebhookMarker.received_at.does_not_exist() | (WebhookMarker.received_at < now),
            )
        except Exception as error:
            if isinstance(error, UpdateError) and error_code(error) == CONDITION_FAILED:
                return  # another container already recorded a later arrival
            logger.warning("Could not record the webhook arrival marker", exc_info=True)

    @staticmethod
    def last_received() -> int | None:
        """Epoch second of the last recorded arrival; None before the first."""
        try:
            return int(WebhookMarker.get(MARKER_KEY, consistent_read=True).received_at)
        except WebhookMarker.DoesNotExist:
            return None
