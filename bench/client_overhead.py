"""The client's overhead over a raw signed request, on a loopback server that answers at once.

Both sides send the same signed POST of a usage check to the same 127.0.0.1 server over a pooled
connection: the raw side signs with botocore's SigV4Auth and sends with urllib3 itself; the other
calls BillwatchClient.check (a generated idempotency key, the retry loop, the typed answer). Batches
alternate so that drift on a shared machine falls on both sides. Run as ``python -m bench.client_overhead``.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.environment import print_figures

ROOT = Path(__file__).resolve().parent.parent
DECISION = json.dumps({"allowed": True, "feature": "api_calls", "used": 1, "limit": 1000}).encode()
REGION = "us-east-1"


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: both sides reuse one pooled connection
    # The answer in one write: headers and body apart meet the client's delayed ACK (40 ms each).
    wbufsize = 64 * 1024

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(DECISION)))
        self.end_headers()
        self.wfile.write(DECISION)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def measure(batches: int = 20, batch: int = 50) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
    import urllib3
    from billwatch_client import BillwatchClient
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    credentials = Credentials("AKIDBENCH", "bench-secret", "bench-token")
    pool = urllib3.PoolManager(retries=False)
    client = BillwatchClient(url, region=REGION, credentials=credentials, retries=0)

    def raw(n: int) -> None:
        body = json.dumps({"feature": "api_calls", "quantity": 1, "idempotency_key": f"raw-{n}"}).encode()
        request = AWSRequest(
            method="POST", url=f"{url}/v1/accounts/acct_bench/usage", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        SigV4Auth(credentials, "execute-api", REGION).add_auth(request)
        prepared = request.prepare()
        json.loads(pool.request("POST", prepared.url, body=body, headers=dict(prepared.headers.items())).data)

    def checked(_n: int) -> None:
        client.check("acct_bench", "api_calls")

    sides = {"raw": raw, "client": checked}
    per_request: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for round_number in range(batches + 1):  # the first round warms both up and is not kept
            for name, send in sides.items():
                started = time.perf_counter()
                for n in range(batch):
                    send(n)
                if round_number:
                    per_request[name].append((time.perf_counter() - started) / batch * 1e6)
    finally:
        server.shutdown()
        server.server_close()
    raw_us, client_us = (statistics.median(per_request[name]) for name in sides)
    return {
        "requests_per_side": batches * batch,
        "raw_signed_us": round(raw_us),
        "client_us": round(client_us),
        "overhead_us": round(client_us - raw_us),
        "ratio": round(client_us / raw_us, 3),
    }


def render(figures: dict[str, Any]) -> list[str]:
    return [
        "Client overhead (BillwatchClient.check vs a raw SigV4-signed urllib3 POST, loopback)",
        f"   {figures['requests_per_side']} signed usage checks a side, median of alternating batches:"
        f" raw {figures['raw_signed_us']} µs, client {figures['client_us']} µs per request"
        f" -> +{figures['overhead_us']} µs, ratio {figures['ratio']}",
        "   (the same server answer for both; in AWS a check's round trip is milliseconds, so the"
        " client's key, retry loop and typed answer cost a small share of it)",
    ]


if __name__ == "__main__":
    print_figures(measure, render)
