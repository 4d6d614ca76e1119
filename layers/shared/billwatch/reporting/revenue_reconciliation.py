"""Revenue reconciliation (ScholarLink: "Stripe gross volume should match the sum of successful
purchases"): each daily report compares its window's gross volume in Stripe with what billwatch
recorded, per currency.

Stripe's side is the balance transactions created in the window: charges and payments count in,
refunds and payment refunds count out; every other type (payouts, fees, adjustments, disputes,
transfers...) is not a purchase and is left out. A balance transaction is in the settlement
currency (a 10 EUR charge settled in USD is a usd transaction with an ``exchange_rate``), while
PaymentAmount is in the invoice's currency, so each is counted at its expanded source's own amount
and currency: the charge's ``amount_captured``, the refund's ``amount`` (fees are not taken off).
billwatch's side is PaymentAmount less RefundAmount over the same window. A drift is over the
threshold when it is more than both ``percent`` of Stripe's gross volume and ``minimum`` (major
units of the currency), so one cent on a quiet day does not alarm.

A window billwatch ran all of (the health probe read its gauges in the first hour) and recorded
nothing in is compared as 0 recorded: no webhook all day while Stripe took money is the drift this
check exists for (the endpoint was down, or its secret was rotated). A first run, no Stripe key,
Stripe failing or Stripe slower than ``budget_seconds`` leave the day uncompared, with the reason.

Balance transaction amounts come from outside: a transaction whose shape or range is wrong stops
the comparison (the report says so) rather than being guessed at.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from billwatch.billing.revenue import major_units
from billwatch.billing.stripe_api import StripeApi, StripeApiFailure
from billwatch.billing.stripe_events import MAX_AMOUNT
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.observability import logger
from billwatch.reporting.model import (
    Figure,
    Known,
    Missing,
    Money,
    RevenueCheck,
)

# +1: money in; -1: money back out. Stripe signs each amount: a refund's is negative.
COUNTED_TYPES = {"charge": 1, "payment": 1, "refund": -1, "payment_refund": -1}
# What each counted type's expanded source is, and the field holding the amount it moved, in the
# source's own currency.
SOURCE_AMOUNT = {"charge": "amount_captured", "refund": "amount"}
SOURCE_OBJECT = {"charge": "charge", "payment": "charge", "refund": "refund", "payment_refund": "refund"}
# The whole reconciliation, every page included, gets this long: the report's function has 120 s,
# and Stripe being slow must leave this section uncompared, not the report unsent.
BUDGET_SECONDS = 30.0
NO_STRIPE_KEY = "no Stripe key (StripeApiKeySecretArn is empty)"
NOT_FROM_START = (
    "billwatch did not run the whole window (no health probe reading in its first hour), "
    "so it could not have recorded all of it"
)
_CURRENCY = re.compile(r"^[a-z]{3}$")
_TYPE = re.compile(r"^[a-z_]{1,64}$")


class InvalidBalanceTransaction(ValueError):
    """A balance transaction that is not one; the message names the field, never its value."""


class OutOfTime(Exception):
    """Stripe's balance transactions took longer than the reconciliation's budget."""


@dataclass(frozen=True)
class DriftThreshold:
    percent: float  # of Stripe's gross volume
    minimum: float  # major units of the currency

    def exceeded(self, drift: float, stripe_gross: float) -> bool:
        return abs(drift) > max(self.minimum, abs(stripe_gross) * self.percent / 100)


def _minor_units(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise InvalidBalanceTransaction(f"{where} is not an amount from 0 to {MAX_AMOUNT}")
    return value


def gross_by_currency(
    transactions: Iterable[Mapping[str, Any]],
    start: int,
    end: int,
    out_of_time: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Gross volume in minor units per charge currency (lower case) of the transactions created in
    [start, end), each transaction's source expanded; raises OutOfTime once ``out_of_time()``."""
    gross: dict[str, int] = {}
    for index, transaction in enumerate(transactions):
        if out_of_time():
            raise OutOfTime
        where = f"balance transaction {index}"
        kind = transaction.get("type")
        if not isinstance(kind, str) or not _TYPE.match(kind):
            raise InvalidBalanceTransaction(f"{where}: type is not a Stripe type")
        if kind not in COUNTED_TYPES:
            continue
        created = transaction.get("created")
        if not isinstance(created, int) or isinstance(created, bool) or not start <= created < end:
            raise InvalidBalanceTransaction(f"{where}: created is outside the window asked for")
        source = transaction.get("source")
        expected = SOURCE_OBJECT[kind]
        if not isinstance(source, Mapping) or source.get("object") != expected:
            raise InvalidBalanceTransaction(f"{where}: source is not an expanded {expected}")
        amount = _minor_units(
            source.get(SOURCE_AMOUNT[expected]), f"{where}: source's {SOURCE_AMOUNT[expected]}"
        )
        currency = source.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise InvalidBalanceTransaction(f"{where}: source's currency is not a three-letter code")
        gross[currency] = gross.get(currency, 0) + COUNTED_TYPES[kind] * amount
    return gross


class RevenueReconciler:
    def __init__(
        self,
        stripe: StripeApi | None,
        threshold: DriftThreshold,
        metrics: MetricsRecorder,
        budget_seconds: float = BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stripe = stripe
        self._threshold = threshold
        self._metrics = metrics
        self._budget_seconds = budget_seconds
        self._clock = clock

    def check(
        self, start: dt.datetime, end: dt.datetime, money: Figure[Money], ran_whole_window: bool
    ) -> Figure[tuple[RevenueCheck, ...]]:
        """Each currency's comparison; RevenueReconciled{Currency} for each one compared, and
        RevenueDrift{Currency} for each over the threshold. ``ran_whole_window``: the health probe
        read the gauges in the window's first hour."""
        if self._stripe is None:
            return Missing(NO_STRIPE_KEY)
        if not ran_whole_window:
            return Missing(NOT_FROM_START)
        start_second, end_second = int(start.timestamp()), int(end.timestamp())
        give_up_at = self._clock() + self._budget_seconds
        try:
            gross = gross_by_currency(
                self._stripe.balance_transactions(start_second, end_second),
                start_second,
                end_second,
                lambda: self._clock() > give_up_at,
            )
        except OutOfTime:
            logger.warning(
                "Stripe's balance transactions took too long", extra={"budget": self._budget_seconds}
            )
            return Missing(f"Stripe did not list the balance transactions within {self._budget_seconds:g} s")
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
            {
                entry.currency
                for entry in money.value.by_currency
                if isinstance(entry.recorded_net, Known) and entry.recorded_net.value != 0
            }
            if isinstance(money, Known)
            else set()
        )
        checks = []
        for currency in sorted(set(stripe_gross) | recorded_somewhere):
            recorded = money.value.recorded_net(currency) if isinstance(money, Known) else money
            # billwatch ran all day: what it did not record, it did not take in (see the module's doc).
            counted = recorded if isinstance(recorded, Known) else Known(0.0)
            checks.append(self._compare(currency, stripe_gross.get(currency, 0.0), counted))
        return Known(tuple(checks))

    def _compare(self, currency: str, stripe_gross: float, recorded: Known[float]) -> RevenueCheck:
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
