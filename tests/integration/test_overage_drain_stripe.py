"""The overage drain end to end: the ledger on moto's DynamoDB, the meter senders over real HTTP to
the Stripe stand-in (tests.fake_meters: its identifier dedup, idempotency keys and injected faults),
the dead letters on moto's SQS. Whatever fails on the way, Stripe counts every overage unit once."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from billwatch.core.models import OverageSendFailure
from billwatch.licensing.overage_ledger import OverageLedger
from tests.fake_meters import lost_answer, rate_limited, server_error
from tests.integration.overage_stack import *  # noqa: F403 (fixtures)
from tests.integration.overage_stack import V1_PATH, drain_of, use


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
    assert drain.run().parked == 1 and len(meters.accepted) == 1  # not sent every minute
    meters.add_meter("api_calls_overage")  # the operator fixes Stripe, then re-drives the range
    OverageSendFailure(OverageSendFailure.key(message["identifier"])).delete()
    clock.now += 60
    assert drain.run().events_sent == 1
    assert meters.units(customer="cus_a1", event_name="api_calls_overage") == 5
