"""The session-wide scanner of tests/conftest.py: it catches a leak, and its secret list is current."""

from __future__ import annotations

from devtools.emulator.settings import SAM_LOCAL_WEBHOOK_SECRET
from devtools.signing import LOCAL_DEV_SECRET
from tests.alert_events import HOOK_SECRET
from tests.security.log_secrets import OPAQUE_TEST_SECRETS, PUBLISHED_DEV_SECRETS, find_secrets, leaks
from tests.support import WEBHOOK_SECRET


def test_a_logged_webhook_secret_is_caught() -> None:
    line = '{"level":"INFO","message":"verifying","secret":"' + WEBHOOK_SECRET + '"}'
    assert leaks([("tests/x.py::test_y: Captured stdout call", line)]) == {
        "tests/x.py::test_y: Captured stdout call": {WEBHOOK_SECRET}
    }


def test_every_kind_of_test_secret_is_caught() -> None:
    for secret in (
        WEBHOOK_SECRET,
        "whsec_" + "old",
        "rk_test_" + "probe",
        "sk_test_" + "oops",
        *OPAQUE_TEST_SECRETS,
    ):
        assert find_secrets(f"prefix {secret} suffix") == {secret}


def test_masked_keys_and_placeholders_are_not_leaks() -> None:
    assert find_secrets("Invalid API Key provided: rk_test_*****") == set()
    assert find_secrets("one or more whsec_ secrets, comma-separated (whsec_...)") == set()
    assert leaks([("clean", "webhook accepted"), ("also clean", "")]) == {}


def test_only_the_published_local_dev_secret_is_exempt() -> None:
    assert {LOCAL_DEV_SECRET} == PUBLISHED_DEV_SECRETS
    assert find_secrets(f"signs with {LOCAL_DEV_SECRET} unless STRIPE_WEBHOOK_SECRET is set") == set()
    assert find_secrets(f"{LOCAL_DEV_SECRET}2") == {f"{LOCAL_DEV_SECRET}2"}


def test_opaque_secrets_match_where_the_tests_define_them() -> None:
    assert HOOK_SECRET in OPAQUE_TEST_SECRETS
    assert SAM_LOCAL_WEBHOOK_SECRET in OPAQUE_TEST_SECRETS
