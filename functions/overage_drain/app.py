"""OverageDrain: every minute (EventBridge), sends the overage units accounts owe to Stripe's billing
meters and moves their watermarks (billwatch.billing.overage_drain). Reserved concurrency 1: two runs
never pin and send the same balances at once.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from billwatch.billing.overage_drain import NO_STRIPE_KEY, build_overage_drain
from billwatch.core.config import ConfigError, load_settings
from billwatch.core.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

settings = load_settings(webhook_secret=False)
# The template deploys this function only with a Stripe key; locally it may be started without one.
drain = build_overage_drain(settings) if settings.stripe_api_configured else None


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if drain is None:
        raise ConfigError(NO_STRIPE_KEY)
    return asdict(drain.run(time_left=lambda: context.get_remaining_time_in_millis() / 1000))
