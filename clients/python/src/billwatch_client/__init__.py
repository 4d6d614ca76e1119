"""A client for billwatch's licensing API: one call per check, signed, retried and cached."""

from billwatch_client.client import (
    BillwatchClient,
    BillwatchError,
    FeatureNotInPlan,
    QuotaExceeded,
    Unavailable,
)

__all__ = ["BillwatchClient", "BillwatchError", "FeatureNotInPlan", "QuotaExceeded", "Unavailable"]
