"""Stopping a running local stack, with its clock sped up so that schedules and alarms are busy."""

from __future__ import annotations

import socket
import sys
import threading
import time

from moto.cloudwatch import models as moto_cloudwatch

from devtools.emulator import LocalEmulator


def bindable(port: int) -> bool:
    """No socket listens on the port (connections of the past may linger in TIME_WAIT)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stop_ends_every_part_and_frees_every_port() -> None:
    stdout, utcnow = sys.stdout, moto_cloudwatch.utcnow
    stack = LocalEmulator(speed=600).start(port=0)  # a local minute every 0.1 s
    http_port = int(stack.url.rsplit(":", 1)[1])
    internal_port = int(stack.internal_url.rsplit(":", 1)[1])
    moto_port = int(stack.moto_endpoint.rsplit(":", 1)[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (len(stack.fired) >= 3 and stack.alarms.evaluations >= 3):
        time.sleep(0.05)
    assert len(stack.fired) >= 3 and stack.alarms.evaluations >= 3, "the schedules and alarms ran"

    stack.stop()

    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("local-stack")]
    assert bindable(http_port) and bindable(internal_port) and bindable(moto_port)
    assert sys.stdout is stdout and moto_cloudwatch.utcnow is utcnow
    stack.stop()  # idempotent
