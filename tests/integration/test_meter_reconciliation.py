"""The daily overage reconciliation end to end: units the drain sent (the ledger on moto's DynamoDB, the
meter senders over real HTTP to the Stripe stand-in) compared with the stand-in's meter event
summaries; confirmed periods leave the list, and drift is what Stripe cannot explain by lag."""

from __future__ import annotations

import dataclasses

from billwatch.billing.stripe_api import StripeApi
from billwatch.core.dynamo import StoreRejected, StoreUnavailable
from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount
from billwatch.licensing.overage_ledger import OverageLedger
from billwatch.licensing.service import Licensing
from billwatch.reporting.meter_reconciliation import MeterReconciler
from billwatch.reporting.model import Known, MeterOutcome, MeterReconciliation, Missing
from tests.integration.overage_stack import *  # noqa: F403 (fixtures)
from tests.integration.overage_stack import drain_of, use
from tests.integration.test_overage_ledger import DEC_2
from tests.support import Clock, FakeStripeApi, MetricsCapture

DAY = 86_400


def reconciler(
    stripe: FakeStripeApi, licensing: Licensing, clock: Clock, key: str | None = "rk_test_report", budget=45.0
) -> tuple[MeterReconciler, MetricsRecorder]:
    recorder = MetricsRecorder("Billwatch", "billwatch")
    api = None if key is None else StripeApi(lambda: key, stripe.url, max_network_retries=0)
    ledger = OverageLedger(licensing.policy.catalog)
    return MeterReconciler(ledger, api, recorder, budget_seconds=budget), recorder


def reconcile(stripe, licensing, clock, capsys) -> tuple[MeterReconciliation, MetricsCapture]:
    capsys.readouterr()  # what ran before this reconciliation
    checker, recorder = reconciler(stripe, licensing, clock)
    result = checker.check(int(clock.now))
    recorder.flush()
    assert isinstance(result, Known), result
    return result.value, MetricsCapture(capsys)


def drained(stripe, licensing, clock, dlq, *uses: tuple[str, int]) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    for account, units in uses:
        use(licensing, account, units)
    drain.run()
    clock.now += 60


def outcomes(reconciliation: MeterReconciliation) -> dict[str, tuple[MeterOutcome, int, int | None]]:
    return {check.account_id: (check.outcome, check.sent, check.in_stripe) for check in reconciliation.checks}


def billing(licensing: Licensing, account_id: str) -> dict[str, int]:
    return licensing.entitlements(account_id)["features"]["exports"]["billing"]


def test_units_stripe_counts_are_confirmed_and_leave_the_list(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13), ("a2", 12))
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {
        "a1": (MeterOutcome.CONFIRMED, 3, 3),
        "a2": (MeterOutcome.CONFIRMED, 2, 2),
    }
    assert metrics.total("MeterReconciled") == 2 and metrics.total("MeterDrift") == 0
    assert billing(licensing, "a1") == {"pending": 0, "sent": 0, "confirmed": 3}
    assert reconcile(stripe, licensing, clock, capsys)[0].checks == ()  # confirmed: nothing left to compare


def test_stripe_counting_late_is_settling_and_under_once_a_day_has_passed(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    meters.accepted.clear()  # Stripe has not aggregated them yet (or, a day on, lost them)
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.SETTLING, 3, 0)}
    assert metrics.total("MeterDrift") == 0
    assert billing(licensing, "a1") == {"pending": 0, "sent": 3, "confirmed": 0}
    clock.now += DAY
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.UNDER, 3, 0)}
    assert reconciliation.drifts[0].checked == 3
    assert metrics.total("MeterDrift") == 1


def test_units_sent_since_the_last_run_may_still_be_settling(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    reconcile(stripe, licensing, clock, capsys)  # confirms 3
    clock.now += DAY
    drained(stripe, licensing, clock, dlq, ("a1", 2))
    meters.accepted.pop()  # the 2 new units are not in Stripe's summary yet
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.SETTLING, 5, 3)}
    assert metrics.total("MeterDrift") == 0


def test_stripe_counting_more_than_was_sent_is_drift_at_once(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    (sent,) = meters.accepted
    meters.accepted.append(dataclasses.replace(sent, identifier="sent_from_elsewhere", value=2))
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.OVER, 3, 5)}
    assert reconciliation.drifts[0].drift == 2
    assert metrics.total("MeterDrift") == 1
    assert billing(licensing, "a1")["confirmed"] == 0


def test_a_range_in_flight_is_left_to_the_drain(stripe, meters, licensing, clock, dlq, capsys) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    reconcile(stripe, licensing, clock, capsys)
    use(licensing, "a1", 1)
    ledger = OverageLedger(licensing.policy.catalog)
    (owed,) = [owed for owed in ledger.due(int(clock.now)) if owed.owing]
    assert ledger.pin(owed, 4, int(clock.now))  # pinned, not yet sent
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.IN_FLIGHT, 3, None)}
    assert metrics.total("MeterReconciled") == 0 and metrics.total("MeterDrift") == 0


def test_an_event_name_stripe_has_no_active_meter_for_is_drift(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    meters.meters.clear()  # the meter was archived after the units were sent
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.NO_METER, 3, None)}
    assert metrics.total("MeterDrift") == 1


def test_a_stripe_customer_billed_from_two_accounts_is_not_compared_nor_drift(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    """Stripe's summary counts the customer's events whichever account sent them, and their periods
    start apart: comparing either account's period with it would be a false drift."""
    for account in ("a1", "a2"):
        BillingAccount(account, stripe_customer_id="cus_shared").save()
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    drained(stripe, licensing, clock, dlq, ("a2", 14))
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {
        "a1": (MeterOutcome.NOT_COMPARED, 3, None),
        "a2": (MeterOutcome.NOT_COMPARED, 4, None),
    }
    assert {check.reason for check in reconciliation.checks} == {
        "its Stripe customer is billed from other accounts too"
    }
    assert metrics.total("MeterDrift") == 0 and metrics.total("MeterReconciled") == 0
    assert billing(licensing, "a2")["sent"] == 4


def test_an_admin_reset_in_the_minute_after_a_send_keeps_the_units_in_the_closed_periods_window(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    """The event goes out stamped before the drain's minute: a reset seconds later ends the period
    within that minute, and the event is still in the closed period's whole minutes."""
    use(licensing, "a1", 10)  # the period starts
    clock.now += 600
    drained(stripe, licensing, clock, dlq, ("a1", 3))
    clock.now -= 30  # 30 s after the drain ran
    licensing.reset_usage("a1")
    clock.now += DAY
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.CONFIRMED, 3, 3)}
    assert metrics.total("MeterDrift") == 0


def test_a_period_shorter_than_a_minute_is_not_compared_and_the_others_are(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    use(licensing, "a0", 13)
    clock.now += 10
    drained(stripe, licensing, clock, dlq, ("a1", 13))  # a1's period starts 10 s after a0's
    clock.now -= 30
    licensing.reset_usage("a1")  # 40 s after its start: no whole minute of Stripe's
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {
        "a0": (MeterOutcome.CONFIRMED, 3, 3),
        "a1": (MeterOutcome.NOT_COMPARED, 3, None),
    }
    assert [check.reason for check in reconciliation.checks if check.account_id == "a1"] == [
        "the period is shorter than Stripe's whole minutes"
    ]
    assert metrics.total("MeterDrift") == 0


def test_units_sent_before_a_customer_change_are_compared_with_the_customer_they_went_to(
    stripe, meters, licensing, clock, dlq, capsys
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    BillingAccount("a1").update(actions=[BillingAccount.stripe_customer_id.set("cus_new")])
    clock.now += DAY  # a false under-count a day on would be billed again by the runbook
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.CONFIRMED, 3, 3)}
    assert reconciliation.checks[0].stripe_customer_id == "cus_a1"
    assert metrics.total("MeterDrift") == 0


def test_a_closed_period_is_reconciled_from_its_record(stripe, meters, licensing, clock, dlq, capsys) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    clock.now = DEC_2
    use(licensing, "a1", 1)  # December's first use closes November, sent and unconfirmed
    reconciliation, _ = reconcile(stripe, licensing, clock, capsys)
    (check,) = reconciliation.checks
    assert (check.outcome, check.sent, check.period_end) == (MeterOutcome.CONFIRMED, 3, check.period_end)
    assert reconcile(stripe, licensing, clock, capsys)[0].checks == ()


def test_without_a_key_or_with_stripe_failing_nothing_is_compared_and_the_report_says_why(
    stripe, meters, licensing, clock, dlq
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    checker, _ = reconciler(stripe, licensing, clock, key=None)
    assert checker.check(int(clock.now)) == Missing("no Stripe key (StripeApiKeySecretArn is empty)")
    failing = stripe.failure
    stripe.failure = (500, {"type": "api_error", "message": "Stripe is down"})
    try:
        checker, _ = reconciler(stripe, licensing, clock)
        assert checker.check(int(clock.now)) == Missing("Stripe could not be read (api_error)")
    finally:
        stripe.failure = failing
    assert billing(licensing, "a1") == {"pending": 0, "sent": 3, "confirmed": 0}


def test_what_the_budget_leaves_is_compared_the_next_run(stripe, meters, licensing, clock, dlq) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))
    checker, _ = reconciler(stripe, licensing, clock, budget=-1.0)
    result = checker.check(int(clock.now))
    assert isinstance(result, Known)
    assert [check.outcome for check in result.value.checks] == [MeterOutcome.NOT_COMPARED]


def test_without_the_customer_index_the_periods_are_not_compared_and_say_why(
    stripe, meters, licensing, clock, dlq, capsys, monkeypatch
) -> None:
    """An upgrade's first deploy has no ByStripeCustomer index yet (DynamoDB adds one index an update):
    the report still goes out, and no drift is claimed for what it could not check."""
    drained(stripe, licensing, clock, dlq, ("a1", 13))

    def no_index(customer: str) -> set[str]:
        raise StoreRejected("DynamoDB refused the request (ValidationException): no such index")

    monkeypatch.setattr(OverageLedger, "accounts_billed_to", staticmethod(no_index))
    reconciliation, metrics = reconcile(stripe, licensing, clock, capsys)
    assert outcomes(reconciliation) == {"a1": (MeterOutcome.NOT_COMPARED, 3, None)}
    assert reconciliation.checks[0].reason == "which accounts bill its Stripe customer could not be read"
    assert metrics.total("MeterDrift") == 0


def test_a_ledger_dynamodb_cannot_read_leaves_the_section_uncompared(
    stripe, meters, licensing, clock, dlq, monkeypatch
) -> None:
    drained(stripe, licensing, clock, dlq, ("a1", 13))

    def unavailable(*args: object) -> list:
        raise StoreUnavailable("throttled")

    monkeypatch.setattr(OverageLedger, "sent_totals", unavailable)
    checker, _ = reconciler(stripe, licensing, clock)
    assert checker.check(int(clock.now)) == Missing("billwatch's overage ledger could not be read")
