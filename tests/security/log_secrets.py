"""The secrets the test suite hands to the code, and a scanner for them in captured output."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Any Stripe-shaped credential: the suite uses many throwaway ones (whsec_old, rk_test_probe, ...),
# and a log line showing any of them would show a real one in production. Masked forms such as
# "rk_test_*****" and placeholders such as "whsec_..." do not match.
STRIPE_CREDENTIAL = re.compile(r"(?:whsec_|[sr]k_(?:live|test)_)[A-Za-z0-9_]+")

# Not a secret: the local stack's documented signing secret, printed on purpose by `make run`'s banner
# and by send_event's help, and written in the Makefile and README.
PUBLISHED_DEV_SECRETS = frozenset({"whsec_local_dev_secret"})  # devtools/signing.py LOCAL_DEV_SECRET

# Secrets without a recognisable shape, copied from where the tests define them
# (tests/security/test_log_secrets.py checks that the copies still match).
OPAQUE_TEST_SECRETS = (
    "hook-signing-secret-for-tests",  # tests/alert_events.py HOOK_SECRET: alert webhook signing
    "report-hook-secret-for-tests",  # tests/integration/test_billing_report_job.py HOOK_SECRET
    "billwatch-local-webhook-secret",  # devtools/local_stack.py SAM_LOCAL_WEBHOOK_SECRET
    "R0UT1NGKEY",  # the PagerDuty routing key the alert tests configure
)


def find_secrets(text: str) -> set[str]:
    found = set(STRIPE_CREDENTIAL.findall(text)) - PUBLISHED_DEV_SECRETS
    found.update(secret for secret in OPAQUE_TEST_SECRETS if secret in text)
    return found


def leaks(captured: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """{where: secrets} for each (where, text) that shows a secret."""
    found: dict[str, set[str]] = {}
    for where, text in captured:
        if secrets := find_secrets(text):
            found.setdefault(where, set()).update(secrets)
    return found
