"""The meter senders (v1 events, the v2 stream) and StripeApi's meter reads and cancels, against
FakeStripeApi's meters (devtools.fake_meters) over real HTTP: what Stripe counts, what each sender
reports per event, and how it retries."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from billwatch.billing.meter_stream import (
    Accepted,
    MeterSender,
    Permanent,
    RetryAfter,
    RetryPolicy,
    Transient,
    V1MeterSender,
    V2MeterEventStream,
)
from billwatch.billing.stripe_api import StripeApi, StripeApiFailure, StripeErrorCode
from billwatch.licensing.overage import MeterEvent, identifier
from devtools.fake_meters import FakeMeters, Fault, lost_answer, rate_limited, server_error, slow
from tests.support import Clock, FakeStripeApi, fake_stripe_api

NOW = 1_790_000_000
EVENT_NAME = "api_calls_overage"
CUSTOMER = "cus_Meter0001"
KEY = "rk_test_meters_only"
# Fast: retries wait through the sleep the test records, and a request gives up after 0.2 s.
POLICY = RetryPolicy(attempts=3, max_wait_seconds=5.0, backoff_seconds=0.25, timeout_seconds=0.2)
V1_PATH = "/v1/billing/meter_events"
STREAM_PATH = "/v2/billing/meter_event_stream"
SESSION_PATH = "/v2/billing/meter_event_session"


def event(n: int, units: int = 5, timestamp: int = NOW, event_name: str = EVENT_NAME) -> MeterEvent:
    """The n-th range of ``units`` overage units of one account's period."""
    return MeterEvent(
        event_name=event_name,
        identifier=identifier("acct_1", "api_calls", NOW - 3600, n * units, (n + 1) * units),
        stripe_customer_id=CUSTOMER,
        value=units,
        timestamp=timestamp,
        reported_after=(n + 1) * units,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStripeApi]:
    with fake_stripe_api() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def meters(server: FakeStripeApi, clock: Clock) -> FakeMeters:
    server.meters = FakeMeters(clock)
    server.meters.add_meter(EVENT_NAME, "mtr_calls")
    return server.meters


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def v1(server: FakeStripeApi, meters: FakeMeters, sleeps: list) -> V1MeterSender:
    return V1MeterSender(lambda: KEY, api_base=server.url, policy=POLICY, sleep=sleeps.append)


@pytest.fixture
def v2(server: FakeStripeApi, meters: FakeMeters, clock: Clock, sleeps: list) -> V2MeterEventStream:
    return V2MeterEventStream(
        lambda: KEY,
        api_base=server.url,
        meter_events_base=server.url,
        policy=POLICY,
        clock=clock,
        sleep=sleeps.append,
    )


@pytest.fixture(params=["v1", "v2"])
def sender(request: pytest.FixtureRequest) -> MeterSender:
    return request.getfixturevalue(request.param)


def path_of(sender: MeterSender) -> str:
    return V1_PATH if isinstance(sender, V1MeterSender) else STREAM_PATH


def settled(meters: FakeMeters, duplicates: int) -> None:
    """Waits for a request the client gave up on (a timeout) to be handled by the fake."""
    deadline = time.monotonic() + 3
    while len(meters.duplicates) < duplicates and time.monotonic() < deadline:
        time.sleep(0.05)


def test_events_are_accepted_and_counted_once(sender: MeterSender, meters: FakeMeters) -> None:
    events = [event(0), event(1, units=7)]
    result = sender.send(events)
    assert result.outcomes == {e.identifier: Accepted() for e in events}
    assert meters.units(CUSTOMER, EVENT_NAME) == 12
    assert [e.identifier for e in meters.accepted] == [e.identifier for e in events]


def test_a_resend_within_24_hours_is_deduplicated_and_counts_again_past_them(
    sender: MeterSender, meters: FakeMeters, clock: Clock
) -> None:
    sender.send([event(0)])
    clock.now += 23 * 3600
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert meters.units() == 5 and len(meters.duplicates) == 1
    clock.now += 2 * 3600  # 25 hours after Stripe received it: the identifier is forgotten
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert meters.units() == 10


def test_a_429_waits_its_retry_after(sender: MeterSender, meters: FakeMeters, sleeps: list) -> None:
    meters.fail(path_of(sender), rate_limited("2"))
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert sleeps == [2.0]
    assert meters.units() == 5


def test_a_retry_after_longer_than_the_policy_waits_goes_back_to_the_drain(
    sender: MeterSender, meters: FakeMeters, sleeps: list
) -> None:
    meters.fail(path_of(sender), rate_limited("30"))
    result = sender.send([event(0), event(1)])
    # Nothing more is tried once Stripe rate limits: the other event gets the same answer.
    assert result.outcomes == {event(0).identifier: RetryAfter(30.0), event(1).identifier: RetryAfter(30.0)}
    assert sleeps == [] and meters.units() == 0


def test_a_429_without_retry_after_backs_off(sender: MeterSender, meters: FakeMeters, sleeps: list) -> None:
    meters.fail(path_of(sender), rate_limited(None))
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert len(sleeps) == 1 and POLICY.backoff_seconds / 2 <= sleeps[0] <= POLICY.backoff_seconds


def test_a_500_is_retried_with_backoff(sender: MeterSender, meters: FakeMeters, sleeps: list) -> None:
    meters.fail(path_of(sender), server_error(), server_error())
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2  # doubled, jittered down to half at most
    assert meters.units() == 5


def test_500s_past_the_attempts_are_transient(sender: MeterSender, meters: FakeMeters) -> None:
    meters.fail(path_of(sender), *[server_error()] * POLICY.attempts)
    assert sender.send([event(0)]).outcome(event(0)) == Transient("server_error")
    assert meters.units() == 0


def test_an_answer_lost_after_stripe_accepted_is_resent_and_deduplicated(
    sender: MeterSender, meters: FakeMeters
) -> None:
    meters.fail(path_of(sender), lost_answer())
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert meters.units() == 5 and len(meters.duplicates) == 1


def test_a_timeout_is_retried_and_the_late_request_is_deduplicated(
    sender: MeterSender, meters: FakeMeters
) -> None:
    meters.fail(path_of(sender), slow(0.6))
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    settled(meters, duplicates=1)
    assert meters.units() == 5 and len(meters.duplicates) == 1


def test_timeouts_past_the_attempts_are_transient(sender: MeterSender, meters: FakeMeters) -> None:
    meters.fail(path_of(sender), *[slow(0.5)] * POLICY.attempts)
    assert sender.send([event(0)]).outcome(event(0)) == Transient("timeout")
    settled(meters, duplicates=POLICY.attempts - 1)  # Stripe got each late request: counted once
    assert meters.units() == 5


# v1


@pytest.mark.parametrize(
    ("refused", "code"),
    [
        (event(0, event_name="no_such_meter"), "no_meter"),
        (event(0, timestamp=NOW - 36 * 86_400), "timestamp_too_far_in_past"),
        (event(0, timestamp=NOW + 600), "timestamp_in_future"),
    ],
)
def test_v1_refusals_are_permanent_and_not_retried(
    v1: V1MeterSender, meters: FakeMeters, sleeps: list, refused: MeterEvent, code: str
) -> None:
    result = v1.send([refused, event(1)])
    outcome = result.outcome(refused)
    assert isinstance(outcome, Permanent) and outcome.code == code and outcome.message
    assert result.outcome(event(1)) == Accepted()  # one event's refusal is its own
    assert sleeps == [] and meters.units() == 5


def test_v1_sends_the_identifier_as_idempotency_key(v1: V1MeterSender, meters: FakeMeters) -> None:
    v1.send([event(0)])
    # The same identifier with another timestamp within 24 hours: the key's first parameters differ.
    outcome = v1.send([event(0, timestamp=NOW - 60)]).outcome(event(0))
    assert isinstance(outcome, Permanent) and outcome.code == "idempotency_error"
    assert meters.units() == 5


def test_v1_a_refused_key_stops_the_send(v1: V1MeterSender, meters: FakeMeters) -> None:
    meters.fail(V1_PATH, Fault(401))
    result = v1.send([event(0), event(1)])
    assert {type(outcome) for outcome in result.outcomes.values()} == {Permanent}
    assert {outcome.code for outcome in result.outcomes.values()} == {"authentication"}  # type: ignore[union-attr]
    assert meters.units() == 0 and len(meters.accepted) == 0


def test_v1_failures_are_counted_by_code(server: FakeStripeApi, meters: FakeMeters, sleeps: list) -> None:
    codes: list[StripeErrorCode] = []
    meters.fail(V1_PATH, rate_limited("1"), server_error())
    sender = V1MeterSender(
        lambda: KEY, api_base=server.url, policy=POLICY, on_error=codes.append, sleep=sleeps.append
    )
    assert sender.send([event(0)]).outcome(event(0)) == Accepted()
    assert codes == [StripeErrorCode.RATE_LIMIT, StripeErrorCode.API_ERROR]


# v2


def test_v2_sends_batches_of_100_with_one_session(v2: V2MeterEventStream, meters: FakeMeters) -> None:
    events = [event(n, units=1) for n in range(250)]
    result = v2.send(events)
    assert result.accepted == [e.identifier for e in events]
    assert meters.stream_batches == [100, 100, 50]
    assert meters.sessions_created == 1 and meters.units() == 250
    assert {e.via for e in meters.accepted} == {"v2"}
    assert {e.timestamp for e in meters.accepted} == {NOW}  # ISO 8601 on the wire, the same second


def test_v2_renews_the_session_a_minute_before_it_expires(
    v2: V2MeterEventStream, meters: FakeMeters, clock: Clock
) -> None:
    v2.send([event(0)])
    clock.now += 15 * 60 - 61
    v2.send([event(1)])
    assert meters.sessions_created == 1
    clock.now += 2  # within the last minute of the token
    v2.send([event(2)])
    assert meters.sessions_created == 2 and meters.units() == 15


def test_v2_renews_the_session_at_once_on_a_401(
    v2: V2MeterEventStream, meters: FakeMeters, sleeps: list
) -> None:
    v2.send([event(0)])
    meters.revoke_sessions()
    assert v2.send([event(1)]).outcome(event(1)) == Accepted()
    assert meters.sessions_created == 2 and sleeps == [] and meters.units() == 10


def test_v2_a_refused_restricted_key_is_permanent(v2: V2MeterEventStream, meters: FakeMeters) -> None:
    meters.fail(SESSION_PATH, Fault(401))
    result = v2.send([event(n, units=1) for n in range(150)])
    assert set(result.outcomes.values()) == {Permanent("authentication", "injected")}
    assert meters.sessions_created == 0 and meters.stream_batches == []


def test_v2_events_stripe_refuses_later_are_accepted_by_the_stream(
    v2: V2MeterEventStream, meters: FakeMeters
) -> None:
    """The stream validates asynchronously: a 200 is not a count; reconciliation finds the gap."""
    refused = event(0, event_name="no_such_meter")
    assert v2.send([refused, event(1)]).outcomes == {
        refused.identifier: Accepted(),
        event(1).identifier: Accepted(),
    }
    assert [code for _, code in meters.refused] == ["no_meter"] and meters.units() == 5


# Reads and cancels


@pytest.fixture
def api(server: FakeStripeApi, meters: FakeMeters) -> StripeApi:
    return StripeApi(lambda: KEY, api_base=server.url, max_network_retries=0)


def test_meters_reads_every_page(api: StripeApi, meters: FakeMeters) -> None:
    for n in range(120):
        meters.add_meter(f"feature_{n:03}_overage", f"mtr_{n:03}")
    found = api.meters()
    assert (
        len(found) == 121 and found[EVENT_NAME] == "mtr_calls" and found["feature_119_overage"] == "mtr_119"
    )


def test_summaries_sum_the_accepted_events_in_the_range(
    api: StripeApi, v1: V1MeterSender, meters: FakeMeters
) -> None:
    start = NOW - NOW % 60
    v1.send([event(0, timestamp=start - 1), event(1, timestamp=start), event(2, timestamp=start + 119)])
    assert api.meter_event_summaries("mtr_calls", CUSTOMER, start, start + 120) == 10.0
    assert api.meter_event_summaries("mtr_calls", CUSTOMER, start, start + 60) == 5.0
    assert api.meter_event_summaries("mtr_calls", "cus_Other0001", start - 60, start + 120) == 0.0
    with pytest.raises(StripeApiFailure) as misaligned:
        api.meter_event_summaries("mtr_calls", CUSTOMER, start + 1, start + 120)
    assert misaligned.value.code is StripeErrorCode.INVALID_REQUEST


def test_cancel_within_24_hours_uncounts_the_event(
    api: StripeApi, v1: V1MeterSender, meters: FakeMeters, clock: Clock
) -> None:
    start = NOW - NOW % 60
    v1.send([event(0), event(1)])
    clock.now += 23 * 3600
    api.cancel_meter_event(EVENT_NAME, event(0).identifier)
    assert [e.identifier for e in meters.cancelled] == [event(0).identifier]
    assert api.meter_event_summaries("mtr_calls", CUSTOMER, start, start + 60) == 5.0
    clock.now += 2 * 3600
    with pytest.raises(StripeApiFailure) as too_late:
        api.cancel_meter_event(EVENT_NAME, event(1).identifier)
    assert too_late.value.code is StripeErrorCode.INVALID_REQUEST
    assert meters.units() == 5
