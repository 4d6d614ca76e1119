"""`make run`: the emulator on http://127.0.0.1:$PORT until Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from typing import Any

from devtools import emulator as package
from devtools.emulator.banner import banner
from devtools.emulator.emulator import LocalEmulator
from devtools.emulator.settings import DEFAULT_PORT, HOST, SPEED_ENV, EmulatorError, port_from_env

PROG = "python -m devtools.emulator"
log = logging.getLogger("devtools.emulator")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=(package.__doc__ or "").split("\n")[0])
    parser.add_argument("--port", type=int, default=None, help=f"HTTP port (default $PORT or {DEFAULT_PORT})")
    parser.add_argument("--template", default="template.yaml", help="SAM template (default template.yaml)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"how fast the local clock runs: 60 = an hour a minute (default ${SPEED_ENV} or 1)",
    )
    args = parser.parse_args(argv)
    # The access log of the fronts at INFO; botocore/pynamodb/werkzeug chatter only with --verbose.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

    port = DEFAULT_PORT
    try:
        port = port_from_env() if args.port is None else args.port
        emulator = LocalEmulator(args.template, speed=args.speed)
        emulator.start(port=port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"emulator: error: {HOST}:{port} is already in use (is `make run` running elsewhere?); "
            f"pick another port, e.g. PORT={port + 1} make run (and the same PORT for make send)",
            file=sys.stderr,
        )
        return 1
    except (EmulatorError, ValueError) as exc:  # ConfigError is a ValueError and names the variable
        print(f"emulator: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    print(banner(emulator), flush=True)
    while not stopping.wait(0.5):
        pass
    print("\nstopping the local emulator...", flush=True)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
