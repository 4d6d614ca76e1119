"""The Stripe meters stand-in moved to devtools.fake_meters, where the benchmarks can use it without
pytest; the tests keep importing it from here."""

from devtools.fake_meters import (
    FakeMeters,
    Fault,
    ReceivedEvent,
    lost_answer,
    rate_limited,
    server_error,
    slow,
)

__all__ = ["FakeMeters", "Fault", "ReceivedEvent", "lost_answer", "rate_limited", "server_error", "slow"]
