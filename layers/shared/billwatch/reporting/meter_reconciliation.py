"""Overage reconciliation: each daily report compares the overage units billwatch sent to Stripe with
what Stripe's meter event summaries count, per account, meter and usage period.

billwatch's side is the ledger's watermark (``reported``: the units Stripe accepted) of every period
with sent units not yet confirmed (``OverageLedger.sent_totals``). Stripe's side is the meter's event
summary for the customer over the period's minute-aligned interior, where the drain puts every
event's timestamp (``billwatch.licensing.overage.event_timestamp``). billwatch links a Stripe
customer to one account; a customer billed from several is not compared (Stripe's summary counts the
customer's events whichever account sent them), and neither is a period shorter than a whole minute.

Stripe aggregates meter events asynchronously: its summaries are eventually consistent. So Stripe
counting fewer units than were sent is not drift while the shortfall is within what was sent since
the last reconciliation: each run records the watermark it compared (``checked``), and the next run
expects Stripe to count at least that much. Stripe counting more than was sent is drift at once.
A period matched exactly is confirmed (its billing state's ``confirmed``) and leaves the list.

A period with a range in flight is not compared: the drain settles it within minutes. No Stripe key
or Stripe failing to list the meters leave the whole section uncompared, with the reason; Stripe
refusing one summary, or being slower than ``budget_seconds``, leave those periods for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from billwatch.billing.stripe_api import StripeApi, StripeApiFailure
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
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
            periods = sorted(
                (
                    owed
                    for owed in self._ledger.sent_totals(now - LOOKBACK_SECONDS, now + 1, now)
                    if owed.balance.stripe_customer_id is not None  # nothing was sent for the others
                ),
                key=lambda owed: (
                    owed.balance.account_id,
                    owed.balance.event_name,
                    owed.balance.period_start,
                ),
            )
            meters = self._stripe.meters() if periods else {}
            uncomparable = {
                customer: reason
                for customer in {owed.balance.stripe_customer_id or "" for owed in periods}
                if (reason := self._why_not_comparable(customer)) is not None
            }
            checks = [
                self._check(
                    self._stripe,
                    owed,
                    uncomparable.get(owed.balance.stripe_customer_id or ""),
                    meters,
                    now,
                    give_up_at,
                )
                for owed in periods
            ]
        except GetParameterError:
            logger.warning("Could not read the Stripe API key for the overage reconciliation")
            return Missing("the Stripe key could not be read (STRIPE_API_KEY_SECRET_ID)")
        except StripeApiFailure as failure:
            logger.warning("Could not read Stripe's billing meters", extra={"code": failure.code.value})
            return Missing(f"Stripe could not be read ({failure.code.value})")
        except (StoreUnavailable, StoreRejected) as failure:
            # The report still goes out, saying so: the next day's run compares what this one could not.
            logger.warning("Could not read the overage ledger", extra={"error": str(failure)})
            return Missing("billwatch's overage ledger could not be read")
        return Known(MeterReconciliation(tuple(checks)))

    def _why_not_comparable(self, customer: str) -> str | None:
        """Why the customer's summary cannot be compared with one account's units, if it cannot."""
        try:
            accounts = self._ledger.accounts_billed_to(customer)
        except (StoreUnavailable, StoreRejected) as failure:
            # Before the ByStripeCustomer index exists (an upgrade's first deploy), or DynamoDB failing.
            logger.warning("Could not read which accounts bill a customer", extra={"error": str(failure)})
            return "which accounts bill its Stripe customer could not be read"
        return "its Stripe customer is billed from other accounts too" if len(accounts) > 1 else None

    def _check(
        self,
        stripe: StripeApi,
        owed: OwedBalance,
        uncomparable: str | None,
        meters: dict[str, str],
        now: int,
        give_up_at: float,
    ) -> MeterCheck:
        balance = owed.balance
        customer = balance.stripe_customer_id or ""  # check() leaves balances without one out

        def outcome(
            result: MeterOutcome, in_stripe: int | None = None, reason: str | None = None
        ) -> MeterCheck:
            return MeterCheck(
                customer,
                balance.event_name,
                balance.period_start,
                balance.period_end,
                balance.account_id,
                balance.reported,
                owed.checked,
                in_stripe,
                result,
                reason,
            )

        if owed.sending is not None:
            return outcome(MeterOutcome.IN_FLIGHT)
        if uncomparable is not None:
            return outcome(MeterOutcome.NOT_COMPARED, reason=uncomparable)
        meter_id = meters.get(balance.event_name)
        if meter_id is None:
            return self._counted(outcome(MeterOutcome.NO_METER))
        start, end = summary_window(balance.period_start, min(balance.period_end, now + 60))
        if start >= end:
            return outcome(
                MeterOutcome.NOT_COMPARED, reason="the period is shorter than Stripe's whole minutes"
            )
        if self._clock() > give_up_at:
            return outcome(MeterOutcome.NOT_COMPARED, reason="out of time: compared next run")
        try:
            in_stripe = round(stripe.meter_event_summaries(meter_id, customer, start, end))
        except StripeApiFailure as failure:
            # One period Stripe refuses must not stop the others being compared.
            logger.warning("Stripe refused a meter event summary", extra={"code": failure.code.value})
            return outcome(
                MeterOutcome.NOT_COMPARED, reason=f"Stripe could not be read ({failure.code.value})"
            )
        if in_stripe > balance.reported:
            result = MeterOutcome.OVER
        elif in_stripe < owed.checked:
            result = MeterOutcome.UNDER
        else:
            result = MeterOutcome.CONFIRMED if in_stripe == balance.reported else MeterOutcome.SETTLING
        confirmed = balance.reported if result is MeterOutcome.CONFIRMED else owed.confirmed
        self._ledger.confirm(
            balance.account_id, balance.feature, balance.period_start, confirmed, checked=balance.reported
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
                    "account_id": check.account_id,
                    "sent": check.sent,
                    "in_stripe": check.in_stripe,
                    "outcome": check.outcome.value,
                },
            )
        return check
