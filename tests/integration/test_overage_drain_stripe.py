"""The overage drain end to end: the ledger on moto's DynamoDB, the meter senders over real HTTP to
the Stripe stand-in (devtools.fake_meters: its identifier dedup, idempotency keys and injected faults),
the dead letters on moto's SQS. Whatever fails on the way, Stripe counts every overage unit once."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from billwatch.core.metrics import MetricsRecorder
from billwatch.core.models import BillingAccount, OverageSendFailure, UsagePeriodRecord, overage_shard
from billwatch.licensing.overage_ledger import OverageLedger
from billwatch.licensing.quota_reset import QuotaReset
from billwatch.licensing.service import Licensing
from devtools.fake_meters import lost_answer, rate_limited, server_error
from tests.integration.overage_stack import *  # noqa: F403 (fixtures)
from tests.integration.overage_stack import V1_PATH, drain_of, use
from tests.integration.test_overage_ledger import DEC_2


def dead_letters(dlq: str) -> list[dict[str, Any]]:
    answer = boto3.client("sqs").receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in answer.get("Messages", [])]


@pytest.mark.parametrize("threshold", [1000, 1], ids=["v1", "v2-stream"])
def test_every_unit_reaches_stripe_once_through_faults_and_a_lost_watermark_write(
    stripe, meters, licensing, clock, dlq, threshold: int, monkeypatch
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold)
    route = V1_PATH if threshold > 1 else "/v2/billing/meter_event_stream"
    for account in ("a1", "a2", "a3"):
        use(licensing, account, 10)  # at the quota: nothing owed yet
    faults = [server_error(), server_error(), rate_limited("0"), lost_answer(), server_error()]
    for minute, (account, units) in enumerate([("a1", 3), ("a2", 2), ("a1", 1), ("a3", 4), ("a2", 2)]):
        use(licensing, account, units)
        meters.fail(route, faults[minute])
        if minute == 2:  # Stripe accepts, then the watermark's write is lost
            with monkeypatch.context() as crash:
                crash.setattr(OverageLedger, "settle", lambda *args: (_ for _ in ()).throw(OSError("lost")))
                with pytest.raises(OSError):
                    drain.run()
        else:
            drain.run()
        clock.now += 60
    for _ in range(3):  # the runs after the faults stop
        drain.run()
        clock.now += 60
    assert {c: meters.units(customer=f"cus_{c}") for c in ("a1", "a2", "a3")} == {"a1": 4, "a2": 4, "a3": 4}
    assert meters.duplicates  # the lost answers' and the lost write's resends: same identifier, not counted
    assert [owed.owing for owed in OverageLedger(licensing.policy.catalog).due(int(clock.now))] == []
    assert dead_letters(dlq) == []


def test_a_resend_after_a_lost_watermark_write_is_the_same_identifier_and_parameters(
    stripe, meters, licensing, clock, dlq, monkeypatch
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    use(licensing, "a1", 13)
    with monkeypatch.context() as crash:
        crash.setattr(OverageLedger, "settle", lambda *args: (_ for _ in ()).throw(OSError("lost")))
        with pytest.raises(OSError):
            drain.run()
    use(licensing, "a1", 2)  # more units before the retry: they go after the pinned range
    clock.now += 600
    drain.run()
    drain.run()
    first, second = meters.accepted
    (resent,) = meters.duplicates
    assert (resent.identifier, resent.timestamp, resent.value) == (first.identifier, first.timestamp, 3)
    assert second.value == 2 and meters.units(customer="cus_a1") == 5


def test_a_refused_range_is_dead_lettered_parked_and_sent_again_once_re_driven(
    stripe, meters, licensing, clock, dlq
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    use(licensing, "a1", 1005, feature="api_calls")  # billed to api_calls_overage: no such meter
    use(licensing, "a2", 12)
    result = drain.run()
    assert (result.events_sent, result.failed) == (1, {"permanent": 1})
    (message,) = dead_letters(dlq)
    assert (message["account_id"], message["feature"], message["units_through"]) == ("a1", "api_calls", 5)
    assert message["error"].startswith("no_meter: ") and message["outcome"] == "permanent"
    clock.now += 60
    assert drain.run().parked == 1 and len(meters.accepted) == 1  # not sent every minute: held
    clock.now += 60
    assert drain.run().balances == 0
    meters.add_meter("api_calls_overage")  # the operator fixes Stripe, then re-drives the range
    OverageSendFailure(OverageSendFailure.key(message["identifier"])).delete()
    clock.now += 3600 - clock.now % 3600  # the hour's run reads the held balances
    assert drain.run().events_sent == 1
    assert meters.units(customer="cus_a1", event_name="api_calls_overage") == 5


def test_a_period_goes_to_the_stripe_customer_of_its_first_pin_and_a_new_customer_from_the_next_period(
    stripe, meters, licensing, clock, dlq
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    use(licensing, "a1", 13)
    meters.fail(V1_PATH, *[lost_answer() for _ in range(6)])  # Stripe accepts the range, the answers are lost
    drain.run()
    BillingAccount("a1").update(actions=[BillingAccount.stripe_customer_id.set("cus_new")])
    use(licensing, "a1", 2)  # 2 more in the same period, never sent before it closes
    clock.now += 60
    result = drain.run()  # the pinned range again, as first sent (else Stripe refuses its identifier)
    assert (result.failed, dead_letters(dlq)) == ({}, [])
    assert {resent.identifier for resent in meters.duplicates} == {meters.accepted[0].identifier}
    clock.now = DEC_2
    use(licensing, "a1", 12)  # December's first use closes November, owing 2
    drain.run()
    clock.now += 60
    drain.run()
    assert (meters.units(customer="cus_a1"), meters.units(customer="cus_new")) == (5, 2)


def test_a_keyed_check_puts_the_account_back_on_the_list_that_a_release_took_it_off_after_its_read(
    stripe, meters, licensing, clock, dlq, monkeypatch
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    use(licensing, "a1", 13)
    drain.run()  # sends 3; the marker stays until a run finds nothing owed
    clock.now += 60
    commit = Licensing._commit

    def a_drain_run_first(self: Licensing, *args: Any, **kwargs: Any) -> Any:
        drain.run()  # between the check's read and its write: nothing owed yet, so a1 leaves the list
        return commit(self, *args, **kwargs)

    with monkeypatch.context() as between:
        between.setattr(Licensing, "_commit", a_drain_run_first)
        assert licensing.use_idempotently("a1", "exports", 2, "order-1").overage == 2
    assert BillingAccount.get("a1").overage_due == overage_shard("a1")
    clock.now += 60
    drain.run()
    assert meters.units(customer="cus_a1") == 5


def test_balances_that_cannot_be_sent_are_held_and_never_keep_a_paying_account_off_the_list(
    stripe, meters, licensing, clock, dlq, monkeypatch
) -> None:
    victim = "zz_victim"
    shard = overage_shard(victim)
    stuck = [account for account in (f"a{n:03d}" for n in range(200)) if overage_shard(account) == shard][:3]
    for account in stuck:  # past the quota, with no Stripe customer to bill: sorted before the victim
        licensing.use(account, "exports", 11)
    use(licensing, victim, 13)
    due = OverageLedger.due
    # A run's list as full of them as production's 500 would be.
    monkeypatch.setattr(OverageLedger, "due", lambda self, now, limit=500: due(self, now, len(stuck)))
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    clock.now += 60 - clock.now % 60  # a minute's run, not the hour's
    assert drain.run().held == len(stuck)
    clock.now += 60
    drain.run()
    assert meters.units(customer=f"cus_{victim}") == 3
    QuotaReset(licensing, MetricsRecorder("B", "b"), clock).run_segment(str(clock.now), 0, 1)
    assert {BillingAccount.get(account).overage_due for account in stuck} == {f"held#{shard}"}
    # A customer added later: the hour's run reads the held balances and sends what became sendable.
    BillingAccount(stuck[0]).update(actions=[BillingAccount.stripe_customer_id.set(f"cus_{stuck[0]}")])
    clock.now += 3600 - clock.now % 3600
    assert drain.run().events_sent == 1
    assert meters.units(customer=f"cus_{stuck[0]}") == 1
    assert BillingAccount.get(stuck[0]).overage_due == shard


def test_a_closed_period_too_old_for_stripe_is_held_and_still_listed_for_reconciliation(
    stripe, meters, licensing, clock, dlq
) -> None:
    drain = drain_of(stripe, licensing, clock, dlq, threshold=1000)
    use(licensing, "a1", 13)
    drain.run()  # 3 sent
    use(licensing, "a1", 2)  # 2 more, never sent: the drain is down for weeks
    since = int(clock.now)
    clock.now += 55 * 86_400 - clock.now % 3600 + 60  # 35 days past the period's end; not on the hour
    licensing.use("a1", "api_calls", 1)  # a new period: November's goes to its record, owing 2
    result = drain.run()
    assert (result.unsent, result.held, result.events_sent) == ({"too_old": 1}, 1, 0)
    assert UsagePeriodRecord.get("a1", since).overage_due == f"held#{overage_shard('a1')}"
    clock.now += 60
    assert drain.run().balances == 0  # not read every minute
    now = int(clock.now)
    (listed,) = OverageLedger(licensing.policy.catalog).sent_totals(since, now, now)
    assert (listed.closed, listed.balance.reported, listed.balance.overage) == (True, 3, 5)
