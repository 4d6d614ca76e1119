"""Revenue reconciliation (ScholarLink: "Stripe gross volume should match the sum of successful
purchases"): each daily report compares its window's gross volume in Stripe with what billwatch
recorded, per currency.

Stripe's side is the balance transactions created in the window: charges and payments count in,
refunds and payment refunds count out, each at its gross ``amount`` (fees are not taken off); every
other type (payouts, fees, adjustments, disputes, transfers...) is not a purchase and is left out.
billwatch's side is PaymentAmount less RefundAmount over the same window. A drift is over the
threshold when it is more than both ``percent`` of Stripe's gross volume and ``minimum`` (major
units of the currency), so one cent on a quiet day does not alarm.

Balance transaction amounts come from outside: a transaction whose shape or range is wrong stops
the comparison (the report says so) rather than being guessed at.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from billwatch.billing.revenue import major_units
from billwatch.billing.stripe_api import StripeApi, StripeApiFailure
from billwatch.billing.stripe_events import MAX_AMOUNT
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.observability import logger
from billwatch.reporting.model import (
    NOT_LISTENING,
    Figure,
    Known,
    Missing,
    Money,
    RevenueCheck,
)

# +1: money in; -1: money back out. Stripe signs each amount: a refund's is negative.
COUNTED_TYPES = {"charge": 1, "payment": 1, "refund": -1, "payment_refund": -1}
NO_STRIPE_KEY = "no Stripe key (StripeApiKeySecretArn is empty)"
NOT_FROM_START = (
    "billwatch did not run the whole window (no health probe reading in its first hour), "
    "so it could not have recorded all of it"
)
_CURRENCY = re.compile(r"^[a-z]{3}$")
_TYPE = re.compile(r"^[a-z_]{1,64}$")


class InvalidBalanceTransaction(ValueError):
    """A balance transaction that is not one; the message names the field, never its value."""


@dataclass(frozen=True)
class DriftThreshold:
    percent: float  # of Stripe's gross volume
    minimum: float  # major units of the currency

    def exceeded(self, drift: float, stripe_gross: float) -> bool:
        return abs(drift) > max(self.minimum, abs(stripe_gross) * self.percent / 100)


def gross_by_currency(transactions: Iterable[Mapping[str, Any]], start: int, end: int) -> dict[str, int]:
    """Gross volume in minor units per currency (lower case) of the transactions created in [start, end)."""
    gross: dict[str, int] = {}
    for index, transaction in enumerate(transactions):
        where = f"balance transaction {index}"
        kind = transaction.get("type")
        if not isinstance(kind, str) or not _TYPE.match(kind):
            raise InvalidBalanceTransaction(f"{where}: type is not a Stripe type")
        if kind not in COUNTED_TYPES:
            continue
        amount, currency, created = (transaction.get(key) for key in ("amount", "currency", "created"))
        if not isinstance(amount, int) or isinstance(amount, bool) or amount * COUNTED_TYPES[kind] < 0:
            raise InvalidBalanceTransaction(f"{where}: amount is not a {kind}'s signed integer")
        if abs(amount) > MAX_AMOUNT:
            raise InvalidBalanceTransaction(f"{where}: amount is beyond {MAX_AMOUNT}")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise InvalidBalanceTransaction(f"{where}: currency is not a three-letter code")
        if not isinstance(created, int) or isinstance(created, bool) or not start <= created < end:
            raise InvalidBalanceTransaction(f"{where}: created is outside the window asked for")
        gross[currency] = gross.get(currency, 0) + amount
    return gross


class RevenueReconciler:
    def __init__(self, stripe: StripeApi | None, threshold: DriftThreshold, metrics: MetricsRecorder) -> None:
        self._stripe = stripe
        self._threshold = threshold
        self._metrics = metrics

    def check(
        self, start: dt.datetime, end: dt.datetime, money: Figure[Money]
    ) -> Figure[tuple[RevenueCheck, ...]]:
        """Each currency's comparison; RevenueReconciled{Currency} for each one compared, and
        RevenueDrift{Currency} for each over the threshold."""
        if self._stripe is None:
            return Missing(NO_STRIPE_KEY)
        if isinstance(money, Known) and not money.value.measured_from_start:
            return Missing(NOT_FROM_START)
        start_second, end_second = int(start.timestamp()), int(end.timestamp())
        try:
            gross = gross_by_currency(
                self._stripe.balance_transactions(start_second, end_second), start_second, end_second
            )
        except GetParameterError:
            # The secret is gone or not readable: the report still goes out, saying so.
            logger.warning("Could not read the Stripe API key for the revenue reconciliation")
            return Missing("the Stripe key could not be read (STRIPE_API_KEY_SECRET_ID)")
        except StripeApiFailure as failure:
            logger.warning("Could not read Stripe's balance transactions", extra={"code": failure.code.value})
            return Missing(f"Stripe could not be read ({failure.code.value})")
        except InvalidBalanceTransaction as invalid:
            logger.warning(
                "Stripe sent a balance transaction that is not valid", extra={"problem": str(invalid)}
            )
            return Missing(f"Stripe sent a balance transaction that is not valid ({invalid})")
        stripe_gross = {
            currency.upper(): float(major_units(amount, currency)) for currency, amount in gross.items()
        }
        recorded_somewhere = (
            {entry.currency for entry in money.value.by_currency if entry.recorded_net != Known(0.0)}
            if isinstance(money, Known)
            else set()
        )
        checks = []
        for currency in sorted(set(stripe_gross) | recorded_somewhere):
            recorded = (
                money.value.recorded_net(currency) if isinstance(money, Known) else Missing(NOT_LISTENING)
            )
            checks.append(self._compare(currency, stripe_gross.get(currency, 0.0), recorded))
        return Known(tuple(checks))

    def _compare(self, currency: str, stripe_gross: float, recorded: Figure[float]) -> RevenueCheck:
        if isinstance(recorded, Missing):
            return RevenueCheck(currency, stripe_gross, recorded, recorded, over_threshold=False)
        drift = recorded.value - stripe_gross
        over = self._threshold.exceeded(drift, stripe_gross)
        self._metrics.add(Metric.REVENUE_RECONCILED, Currency=currency)
        if over:
            self._metrics.add(Metric.REVENUE_DRIFT, Currency=currency)
            logger.warning(
                "Revenue drift over the threshold",
                extra={"currency": currency, "stripe_gross": stripe_gross, "recorded": recorded.value},
            )
        return RevenueCheck(currency, stripe_gross, recorded, Known(drift), over)
