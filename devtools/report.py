"""Print the billing report of the running local stack (what `make report` runs).

    python -m devtools.report [--period daily|weekly] [--url http://127.0.0.1:3000]

The report covers the last 24 hours (or 7 days with ``--period weekly``) of the metrics the
functions of ``make run`` emitted; the stack renders it at ``/_local/report``. Exits 0 with the
report printed, 1 when the stack cannot be reached or refuses, 2 on usage errors. Standard
library only.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:3000"
REPORT_PATH = "/_local/report"
PERIODS = ("daily", "weekly")


def _not_running(url: str, reason: object) -> str:
    port = urllib.parse.urlsplit(url).port
    run = f"make run PORT={port}" if port else "make run"
    return (
        f"report: error: no local stack answers on {url} ({reason}): start it first with `{run}` "
        "in another shell, or pass the PORT it runs on (make report PORT=...)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.report", description=__doc__.split("\n")[0])
    parser.add_argument("--period", choices=PERIODS, default="daily", help="daily (default) or weekly")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the local stack (default {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)

    base = args.url.rstrip("/")
    target = f"{base}{REPORT_PATH}?{urllib.parse.urlencode({'period': args.period})}"
    # The stack is on loopback: an HTTP(S)_PROXY from the environment must not get this request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(target, timeout=args.timeout) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", errors="replace").strip()
        print(f"report: error: HTTP {error.code} from {target}: {body}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(_not_running(base, getattr(error, "reason", error)), file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
