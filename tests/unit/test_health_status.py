"""How check results add up to the service's status, and how Stripe errors are classified."""

from __future__ import annotations

import pytest
import stripe

from billwatch.billing.stripe_api import StripeErrorCode, stripe_error_code
from billwatch.health.probe import HealthStatus, http_status, overall_status


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ({"dynamodb": "ok", "stripe_api": "ok"}, HealthStatus.OK),
        ({"dynamodb": "ok", "stripe_api": "skipped", "dead_letter_queues": "skipped"}, HealthStatus.OK),
        ({"dynamodb": "ok", "stripe_api": "failed"}, HealthStatus.DEGRADED),
        ({"dynamodb": "ok", "probe": "failed"}, HealthStatus.DEGRADED),
        ({"dynamodb": "failed", "stripe_api": "ok"}, HealthStatus.DOWN),
        ({"dynamodb": "failed", "stripe_api": "failed"}, HealthStatus.DOWN),
    ],
)
def test_status_aggregation(checks: dict[str, str], expected: HealthStatus) -> None:
    assert overall_status(checks) is expected


def test_only_down_is_503() -> None:
    assert [http_status(status) for status in HealthStatus] == [200, 200, 503]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (stripe.RateLimitError("slow down", http_status=429), StripeErrorCode.RATE_LIMIT),
        (stripe.AuthenticationError("bad key", http_status=401), StripeErrorCode.AUTHENTICATION),
        (stripe.PermissionError("restricted", http_status=403), StripeErrorCode.PERMISSION),
        (stripe.InvalidRequestError("no such", param=None, http_status=404), StripeErrorCode.INVALID_REQUEST),
        (stripe.APIConnectionError("reset"), StripeErrorCode.CONNECTION),
        (TimeoutError("timed out"), StripeErrorCode.CONNECTION),
        (stripe.APIError("boom", http_status=500), StripeErrorCode.API_ERROR),
        (stripe.CardError("declined", param=None, code="card_declined"), StripeErrorCode.API_ERROR),
    ],
)
def test_stripe_error_classification(error: Exception, code: StripeErrorCode) -> None:
    assert stripe_error_code(error) is code
