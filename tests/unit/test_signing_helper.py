"""devtools.signing produces headers that the official stripe library accepts.

What stripe's own verification refuses (another secret, another body, a stale timestamp) is the
intake's to test, against its own verifier: tests/unit/test_signature.py.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import stripe

from devtools import send_event
from devtools import stripe_events as se
from devtools.signing import LOCAL_DEV_SECRET, compute_signature, stripe_signature_header

SECRETS = ["whsec_old_secret_still_active", "whsec_new_secret"]


@pytest.fixture
def payload() -> bytes:
    evt = se.event("invoice.paid", se.invoice(id="in_sig"), id="evt_sig")
    return json.dumps(evt, indent=2).encode("utf-8")


def test_header_format_one_v1_per_secret(payload):
    header = stripe_signature_header(payload, SECRETS, timestamp=1_760_000_000)
    parts = header.split(",")
    assert parts[0] == "t=1760000000"
    assert parts[1:] == [f"v1={compute_signature(payload, s, 1_760_000_000)}" for s in SECRETS]
    assert all(len(p.split("=", 1)[1]) == 64 for p in parts[1:])


def test_single_secret_string(payload):
    header = stripe_signature_header(payload, LOCAL_DEV_SECRET, timestamp=1)
    assert header.count("v1=") == 1


@pytest.mark.parametrize("secret", SECRETS)
def test_verifies_with_stripe_library_for_each_secret(payload, secret):
    header = stripe_signature_header(payload, SECRETS)
    assert stripe.WebhookSignature.verify_header(payload.decode("utf-8"), header, secret, tolerance=300)


def test_str_and_bytes_payload_sign_identically(payload):
    ts = int(time.time())
    assert stripe_signature_header(payload, SECRETS, ts) == stripe_signature_header(
        payload.decode("utf-8"), SECRETS, ts
    )


def test_requires_a_secret(payload):
    with pytest.raises(ValueError):
        stripe_signature_header(payload, [])
    with pytest.raises(ValueError):
        stripe_signature_header(payload, "")


# --- devtools.send_event: what it POSTs verifies like a real Stripe delivery -----------------------

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def receiver():
    """A loopback HTTP server that verifies Stripe-Signature with the stripe library."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                stripe.WebhookSignature.verify_header(
                    body.decode("utf-8"), self.headers["Stripe-Signature"], self.server.secret, tolerance=300
                )
                status = 200
            except stripe.SignatureVerificationError:
                status = 400
            received.append({"body": body, "headers": dict(self.headers), "status": status})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"received": true}' if status == 200 else b'{"error": "bad signature"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.secret = "whsec_receiver"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_send_event_with_keep_dates_posts_the_files_bytes_signed_now(receiver, capsys):
    url, received = receiver
    path = EVENTS / "invoice.paid.json"
    rc = send_event.main([str(path), "--url", url, "--secret", "whsec_other,whsec_receiver", "--keep-dates"])
    assert rc == 0
    (req,) = received
    assert req["status"] == 200 and req["body"] == path.read_bytes()  # created untouched, raw bytes
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["Stripe-Signature"].count("v1=") == 2
    out = capsys.readouterr().out
    assert "HTTP 200" in out and '{"received": true}' in out


@pytest.mark.parametrize("wrapper", ["apigw", "eventbridge"])
def test_send_event_unwraps_lambda_events(receiver, monkeypatch, wrapper):
    url, received = receiver
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_receiver")
    event_file = EVENTS / wrapper / "customer.subscription.updated.json"
    assert send_event.main([str(event_file), "--url", url, "--keep-dates"]) == 0
    bare = json.loads((EVENTS / "customer.subscription.updated.json").read_text())
    assert json.loads(received[0]["body"]) == bare


def test_send_event_non_2xx_exits_nonzero(receiver, capsys):
    url, _ = receiver
    assert send_event.main([str(EVENTS / "invoice.paid.json"), "--url", url, "--secret", "whsec_wrong"]) == 1
    assert "HTTP 400" in capsys.readouterr().out


def test_send_event_requires_a_secret(monkeypatch, capsys):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    assert send_event.main([str(EVENTS / "invoice.paid.json")]) == 2
    assert "STRIPE_WEBHOOK_SECRET" in capsys.readouterr().err


def test_send_event_connection_error(capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = send_event.main(
        [str(EVENTS / "invoice.paid.json"), "--url", f"http://127.0.0.1:{port}/", "--secret", "s"]
    )
    assert rc == 2
    assert "cannot reach" in capsys.readouterr().err
