"""The log channel: the notice as a structured log line, for local runs and as a last resort."""

from __future__ import annotations

from billwatch.alerting.channels.base import DELIVERED, Answer, Channel, Content, LogRecord
from billwatch.core.observability import logger


class LogChannel(Channel[LogRecord]):
    name = "log"

    def render(self, content: Content) -> LogRecord:
        return content.log_record()

    def send(self, message: LogRecord, timeout: float) -> Answer:
        logger.info(message.message, extra=dict(message.extra))
        return DELIVERED
