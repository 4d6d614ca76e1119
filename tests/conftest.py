"""Shared fixtures: moto-backed AWS with the template's tables, the webhook handler, EMF capture."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from devtools.moto_patches import install_parse_once
from devtools.template import load_template
from tests.security.log_secrets import leaks
from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    CurrentStdout,
    FakeStripeApi,
    MetricsCapture,
    WebhookClient,
    fake_aws_credentials,
    fake_stripe_api,
    load_handler,
    moto_with_tables,
)

# Under pytest-xdist the workers share the cores with each other (and the chaos replay's reference
# process): a wall-clock deadline per example would measure the machine's load, not the code.
settings.register_profile("billwatch", deadline=None)
settings.load_profile("billwatch")

# Slow tests in files whose owners mark nothing themselves (a file, or one test): the status page
# drives a real browser; a fresh start's first hours on a local stack take 10 to 40 s of CPU; the
# demo's four hours (the fixture) over a minute of CPU in a process of their own.
SLOW_TESTS = (
    "tests/integration/test_status_page.py",
    "tests/integration/test_fresh_start_local_stack.py::test_nobody_is_told_anything_in_the_first_two_hours",
    "tests/integration/test_fresh_start_local_stack.py::test_a_probe_that_ran_and_then_stopped_is_paged",
)
SLOW_FIXTURES = {"four_hours"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW_TESTS) or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # The slowest first (a stable sort keeps each file's order): `make test` runs with
    # --dist loadfile --no-loadscope-reorder, so they start at once on the workers, not last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def moto_parses_once() -> Iterator[None]:
    """moto without its repeated parsing (devtools.moto_patches.install_parse_once): the same answers,
    a fifth less work per webhook."""
    undo = install_parse_once()
    yield
    undo()


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch)


@pytest.fixture
def aws(aws_credentials: None, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    with moto_with_tables(template, monkeypatch) as names:
        yield names


@pytest.fixture
def webhook_handler(aws: dict, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return load_handler("webhook_intake")


@pytest.fixture
def webhooks(webhook_handler: Any) -> WebhookClient:
    return WebhookClient(webhook_handler)


@pytest.fixture
def metrics(capsys: pytest.CaptureFixture[str]) -> MetricsCapture:
    from billwatch.core.observability import logger

    # The Powertools handler keeps the stream it was created with, which is not this test's capture.
    logger.registered_handler.stream = CurrentStdout()
    return MetricsCapture(capsys)


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the AWS API operations botocore sends from here on, in order."""
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call

    def counting(client: BaseClient, operation: str, params: dict) -> Any:
        calls.append(operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return calls


@pytest.fixture
def stripe_api() -> Iterator[FakeStripeApi]:
    """A stand-in for the Stripe API on 127.0.0.1 (point STRIPE_API_BASE at its url)."""
    with fake_stripe_api() as server:
        yield server


# ------------------------------------------------------------- secrets in logs
# Everything the session prints or logs is scanned as it comes, and the run fails at the end if a
# test secret showed up: the stdout/stderr/log sections of every test report (passed tests too),
# what tests read back through capsys/capfd (which never reaches a report section), and every
# record that reaches the root logger.

_leaks: dict[str, set[str]] = {}


def _scan(where: str, text: str) -> None:
    for place, secrets in leaks([(where, text)]).items():
        _leaks.setdefault(place, set()).update(secrets)


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "outside any test")


class _SessionLogScanner(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.format(record)  # fills record.exc_text, so tracebacks are scanned too
            text = " ".join(filter(None, (record.getMessage(), record.exc_text, repr(record.__dict__))))
        except Exception:  # a record that cannot be formatted is the logging call's bug, not a leak
            return
        _scan(f"{_current_test()}: log record of {record.name}", text)


# INFO and up, as the functions log in Lambda (POWERTOOLS_LOG_LEVEL=INFO): botocore's DEBUG records
# never reach a log there, and formatting each of them would slow the suite down many times.
_log_scanner = _SessionLogScanner(level=logging.INFO)
_original_readouterr = pytest.CaptureFixture.readouterr


def _scanning_readouterr(self: pytest.CaptureFixture[Any]) -> Any:
    captured = _original_readouterr(self)
    _scan(f"{_current_test()}: read via capsys/capfd", f"{captured.out}\n{captured.err}")
    return captured


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(_log_scanner)
    pytest.CaptureFixture.readouterr = _scanning_readouterr  # type: ignore[method-assign]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:
        _scan(f"{report.nodeid}: {title}", text)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    logging.getLogger().removeHandler(_log_scanner)
    pytest.CaptureFixture.readouterr = _original_readouterr  # type: ignore[method-assign]
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # a pytest-xdist worker's exit status is not the run's: hand them over
        worker_output["test_secret_leaks"] = {where: sorted(secrets) for where, secrets in _leaks.items()}
        return
    if not _leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["test secrets appeared in the output or logs of the test session:"]
    lines += [f"  {where}: {', '.join(sorted(secrets))}" for where, secrets in sorted(_leaks.items())]
    for line in lines:
        (reporter.write_line if reporter else print)(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """What a pytest-xdist worker found in the logs and captures only it saw (the controller sees the
    report sections itself)."""
    for where, secrets in getattr(node, "workeroutput", {}).get("test_secret_leaks", {}).items():
        _leaks.setdefault(where, set()).update(secrets)
