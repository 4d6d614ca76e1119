"""devtools.meter_correction against the Stripe stand-in over real HTTP: an operator reads what Stripe's
meter counts for a customer and cancels a duplicate by its identifier, within Stripe's 24 hours."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools import meter_correction
from devtools.fake_meters import FakeMeters, ReceivedEvent
from tests.support import Clock, FakeStripeApi, fake_stripe_api

NOW = 1_796_000_040  # on a whole minute
EVENT_NAME = "api_calls_overage"


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
    for identifier, value in (("bw_first", 3), ("bw_resent", 3)):
        server.meters.accepted.append(
            ReceivedEvent(EVENT_NAME, identifier, "cus_Meter0001", value, NOW - 600, NOW - 60, "v1")
        )
    return server.meters


def run(server: FakeStripeApi, *argv: str, key: str | None = "rk_test_ops") -> int:
    environ = {"STRIPE_API_BASE": server.url, **({"STRIPE_API_KEY": key} if key else {})}
    return meter_correction.main(list(argv), environ)


def summary(server: FakeStripeApi, customer: str = "cus_Meter0001") -> list[str]:
    return [
        "summary",
        "--event-name",
        EVENT_NAME,
        "--customer",
        customer,
        "--from",
        "2026-11-30T00:00Z",
        "--to",
        "2026-12-31T00:00Z",
    ]


def test_an_operator_reads_the_count_and_cancels_a_duplicate(server, meters, capsys) -> None:
    assert run(server, *summary(server)) == 0
    assert json.loads(capsys.readouterr().out)["units"] == 6
    assert run(server, "cancel", "--event-name", EVENT_NAME, "--identifier", "bw_resent") == 0
    assert json.loads(capsys.readouterr().out)["cancelled"] is True
    assert [event.identifier for event in meters.cancelled] == ["bw_resent"]
    assert run(server, *summary(server)) == 0
    assert json.loads(capsys.readouterr().out)["units"] == 3


def test_stripe_refusing_a_cancel_after_24_hours_is_an_error_that_changes_nothing(
    server, meters, clock, capsys
) -> None:
    clock.now += 86_400
    assert run(server, "cancel", "--event-name", EVENT_NAME, "--identifier", "bw_resent") == 1
    assert "Stripe refused it (invalid_request)" in capsys.readouterr().err
    assert meters.units() == 6


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (
            [
                "summary",
                "--event-name",
                EVENT_NAME,
                "--customer",
                "acct_1",
                "--from",
                "2026-11-30T00:00Z",
                "--to",
                "2026-12-31T00:00Z",
            ],
            "is not a Stripe customer id",
        ),
        (
            [
                "summary",
                "--event-name",
                EVENT_NAME,
                "--customer",
                "cus_Meter0001",
                "--from",
                "2026-11-30T00:00:30Z",
                "--to",
                "2026-12-31T00:00Z",
            ],
            "is not on a whole minute",
        ),
        (
            [
                "summary",
                "--event-name",
                EVENT_NAME,
                "--customer",
                "cus_Meter0001",
                "--from",
                "2026-11-30T00:00",
                "--to",
                "2026-12-31T00:00Z",
            ],
            "has no time zone",
        ),
        (["cancel", "--event-name", EVENT_NAME, "--identifier", "x" * 101], "1 to 100 printable characters"),
    ],
    ids=["not-a-customer", "not-a-minute", "no-zone", "identifier-too-long"],
)
def test_bad_arguments_name_the_problem_and_reach_no_stripe(server, meters, capsys, argv, problem) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(server, *argv)
    assert exit_.value.code == 2 and problem in capsys.readouterr().err
    assert meters.units() == 6 and meters.cancelled == []


def test_without_a_key_nothing_is_asked(server, meters, capsys) -> None:
    assert run(server, *summary(server), key=None) == 2
    assert "STRIPE_API_KEY is not set" in capsys.readouterr().err


def test_an_event_name_without_a_meter_says_so(server, meters, capsys) -> None:
    argv = summary(server)
    argv[2] = "no_such_meter"
    assert run(server, *argv) == 1
    assert "no active meter for 'no_such_meter'" in capsys.readouterr().err
