"""Overage reconciliation: each daily report compares the overage units billwatch sent to Stripe with
what Stripe's meter event summaries count, per Stripe customer, meter and usage period.

billwatch's side is the ledger's watermark (``reported``: the units Stripe accepted) of every period
with sent units not yet confirmed (``OverageLedger.sent_totals``). Stripe's side is the meter's event
summary for the customer over the period's minute-aligned interior, where the drain puts every
event's timestamp (``billwatch.licensing.overage.event_timestamp``). Accounts that share a Stripe
customer and a period are compared as one: Stripe's summary cannot tell them apart.

Stripe aggregates meter events asynchronously: its summaries are eventually consistent. So Stripe
counting fewer units than were sent is not drift while the shortfall is within what was sent since
the last reconciliation: each run records the watermark it compared (``checked``), and the next run
expects Stripe to count at least that much. Stripe counting more than was sent is drift at once.
A period matched exactly is confirmed (its billing state's ``confirmed``) and leaves the list.

A period with a range in flight is not compared: the drain settles it within minutes. No Stripe key,
Stripe failing, or Stripe slower than ``budget_seconds`` leave the rest uncompared, with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from billwatch.billing.stripe_api import StripeApi, StripeApiFailure
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.observability import logger
from billwatch.licensing.overage import STRIPE_PAST_WINDOW_SECONDS, summary_window
from billwatch.licensing.overage_ledger import OverageLedger, OwedBalance
from billwatch.reporting.model import Figure, Known, MeterCheck, MeterOutcome, MeterReconciliation, Missing

# The report's function has 120 s; the summaries get this much, and what is left is compared next day.
BUDGET_SECONDS = 45.0
# Periods that ended longer ago than Stripe keeps events for invoicing are past correcting.
LOOKBACK_SECONDS = STRIPE_PAST_WINDOW_SECONDS + 7 * 86_400
NO_STRIPE_KEY = "no Stripe key (StripeApiKeySecretArn is empty)"


@dataclass
class _Group:
    balances: list[OwedBalance]

    @property
    def first(self) -> OwedBalance:
        return self.balances[0]


def _groups(balances: Iterable[OwedBalance]) -> list[_Group]:
    grouped: dict[tuple[str, str, int, int], _Group] = {}
    for owed in balances:
        balance = owed.balance
        if balance.stripe_customer_id is None:
            continue  # nothing was sent for it: the drain counts it as no_customer
        key = (balance.stripe_customer_id, balance.event_name, balance.period_start, balance.period_end)
        grouped.setdefault(key, _Group([])).balances.append(owed)
    return [grouped[key] for key in sorted(grouped)]


class MeterReconciler:
    def __init__(
        self,
        ledger: OverageLedger,
        stripe: StripeApi | None,
        metrics: MetricsRecorder,
        budget_seconds: float = BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._stripe = stripe
        self._metrics = metrics
        self._budget_seconds = budget_seconds
        self._clock = clock

    def check(self, now: int) -> Figure[MeterReconciliation]:
        """Every period with sent units not yet confirmed, compared; MeterReconciled for each one
        compared and MeterDrift for each drift."""
        if self._stripe is None:
            return Missing(NO_STRIPE_KEY)
        give_up_at = self._clock() + self._budget_seconds
        try:
            groups = _groups(self._ledger.sent_totals(now - LOOKBACK_SECONDS, now + 1, now))
            meters = self._stripe.meters() if groups else {}
            checks = [self._check(self._stripe, group, meters, now, give_up_at) for group in groups]
        except GetParameterError:
            logger.warning("Could not read the Stripe API key for the overage reconciliation")
            return Missing("the Stripe key could not be read (STRIPE_API_KEY_SECRET_ID)")
        except StripeApiFailure as failure:
            logger.warning("Could not read Stripe's billing meters", extra={"code": failure.code.value})
            return Missing(f"Stripe could not be read ({failure.code.value})")
        return Known(MeterReconciliation(tuple(checks)))

    def _check(
        self, stripe: StripeApi, group: _Group, meters: dict[str, str], now: int, give_up_at: float
    ) -> MeterCheck:
        balance = group.first.balance
        customer = balance.stripe_customer_id or ""  # _groups leaves balances without one out
        sent = sum(owed.balance.reported for owed in group.balances)
        checked = sum(owed.checked for owed in group.balances)

        def outcome(result: MeterOutcome, in_stripe: int | None = None) -> MeterCheck:
            return MeterCheck(
                customer,
                balance.event_name,
                balance.period_start,
                balance.period_end,
                tuple(sorted(owed.balance.account_id for owed in group.balances)),
                sent,
                checked,
                in_stripe,
                result,
            )

        if any(owed.sending is not None for owed in group.balances):
            return outcome(MeterOutcome.IN_FLIGHT)
        meter_id = meters.get(balance.event_name)
        if meter_id is None:
            return self._counted(outcome(MeterOutcome.NO_METER))
        if self._clock() > give_up_at:
            return outcome(MeterOutcome.NOT_COMPARED)
        start, end = summary_window(balance.period_start, min(balance.period_end, now + 60))
        in_stripe = round(stripe.meter_event_summaries(meter_id, customer, start, end))
        if in_stripe > sent:
            result = MeterOutcome.OVER
        elif in_stripe < checked:
            result = MeterOutcome.UNDER
        else:
            result = MeterOutcome.CONFIRMED if in_stripe == sent else MeterOutcome.SETTLING
        for owed in group.balances:
            # One account of a shared customer cannot be told apart in Stripe: each is confirmed only
            # when the whole group matches.
            confirmed = owed.balance.reported if result is MeterOutcome.CONFIRMED else owed.confirmed
            self._ledger.confirm(
                owed.balance.account_id,
                owed.balance.feature,
                owed.balance.period_start,
                confirmed,
                checked=owed.balance.reported,
            )
        return self._counted(outcome(result, in_stripe))

    def _counted(self, check: MeterCheck) -> MeterCheck:
        self._metrics.add(Metric.METER_RECONCILED)
        if check.outcome.is_drift:
            self._metrics.add(Metric.METER_DRIFT)
            logger.warning(
                "Overage units drift from Stripe's meter",
                extra={
                    "event_name": check.event_name,
                    "period_start": check.period_start,
                    "accounts": list(check.account_ids),
                    "sent": check.sent,
                    "in_stripe": check.in_stripe,
                    "outcome": check.outcome.value,
                },
            )
        return check
