"""The local stack's status page in a real browser: Debian's headless Chromium loads /_local/, runs
its script against the stack's JSON, and the test reads the DOM it built (and keeps a screenshot).

`make test` installs chromium first (`make browser`); without it this test fails, it is not skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from devtools.emulator import LocalEmulator
from tests.integration.test_local_stack import call, post_signed, subscription_created
from tests.support import ROOT

SCREENSHOT = ROOT / "test-artifacts" / "status-page.png"
ACCOUNT = "acct_status_page"
APPLIED_EVENT = "evt_status_page_applied"
BAD_SIGNATURE_EVENT = "evt_status_page_forged"
# Long enough for the page to load and poll the APIs (every 2 s) a few times; virtual time, so
# the browser only takes as long as the requests do.
VIRTUAL_TIME_MS = 8000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--virtual-time-budget={VIRTUAL_TIME_MS}",
]


# ------------------------------------------------------------------------------- the DOM


@dataclass
class Element:
    tag: str
    attributes: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def __getitem__(self, name: str) -> str:
        return self.attributes[name]

    def get(self, name: str) -> str | None:
        return self.attributes.get(name)

    @property
    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text for child in self.children)

    def find_all(self, matches: Callable[[Element], bool]) -> list[Element]:
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if matches(child):
                    found.append(child)
                found.extend(child.find_all(matches))
        return found

    def by_id(self, element_id: str) -> Element:
        (found,) = self.find_all(lambda element: element.get("id") == element_id)
        return found

    def rows(self) -> list[Element]:
        """A table's data rows: neither its head nor the row saying there are none."""
        (body,) = self.find_all(lambda element: element.tag == "tbody")
        return body.find_all(lambda element: element.tag == "tr" and element.get("class") != "empty")

    def cells(self) -> list[str]:
        return [cell.text.strip() for cell in self.find_all(lambda element: element.tag == "td")]


class _TreeBuilder(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self._open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._open[-1].children.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._open[-1].children.append(data)


def parse_html(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# ------------------------------------------------------------------------------ fixtures


def chromium(url: str, profile: Path, *output: str) -> subprocess.Popen[str]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the status page test needs Debian's chromium: `make browser` installs it")
    return subprocess.Popen(
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *output, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(browser: subprocess.Popen[str]) -> str:
    try:
        stdout, stderr = browser.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        browser.kill()
        stdout, stderr = browser.communicate()
    assert browser.returncode == 0, f"chromium exited with {browser.returncode}: {stderr[-2000:]}"
    return stdout


@dataclass(frozen=True)
class Shown:
    page: Element
    dashboards: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    stack: LocalEmulator


@pytest.fixture(scope="module")
def shown() -> Iterator[Shown]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("STRIPE_WEBHOOK_SECRET", "SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
            patch.delenv(name, raising=False)
        with LocalEmulator(autorun=False).start(port=0) as stack:
            webhook = stack.url + "/webhooks/stripe"
            secrets = list(stack.webhook_secrets)
            event = subscription_created(ACCOUNT, APPLIED_EVENT)
            assert post_signed(webhook, event, secrets)[1]["outcome"] == "applied"
            assert post_signed(webhook, event, secrets)[1]["outcome"] == "duplicate"
            forged = subscription_created("acct_status_page_forged", BAD_SIGNATURE_EVENT)
            assert post_signed(webhook, forged, ["whsec_not_the_stacks_secret"])[0] == 400

            # A failing run raises, and fires the function's errors alarm at the next evaluation.
            with pytest.raises(ValueError, match="not a billing report request"):
                stack.invoke("BillingReportFunction", {"period": "monthly"})
            stack.alarms.evaluate(stack.clock.now() + 60)
            stack.topics.drain()

            SCREENSHOT.parent.mkdir(exist_ok=True)
            page_url = stack.url + "/_local/"
            with tempfile.TemporaryDirectory(prefix="status-page-chromium-") as profiles:
                # Both at once: each browser takes a few seconds, mostly starting up.
                dom = chromium(page_url, Path(profiles, "dom"), "--dump-dom")
                screenshot = chromium(
                    page_url,
                    Path(profiles, "screenshot"),
                    f"--screenshot={SCREENSHOT}",
                    "--window-size=1400,2400",
                )
                html = finished(dom)
                finished(screenshot)

            dashboards = json.loads(call(stack.url + "/_local/api/dashboards", method="GET")[2])
            accounts = json.loads(call(stack.url + "/_local/api/accounts", method="GET")[2])
            yield Shown(parse_html(html), dashboards, accounts, stack)


# --------------------------------------------------------------------------------- tests


def test_the_page_polled_every_api_without_an_error(shown: Shown) -> None:
    connection = shown.page.by_id("connection")
    assert connection["data-state"] == "ok", connection.text
    assert shown.page.by_id("clock").text.startswith("local clock ")


def test_the_events_show_each_webhooks_outcome_and_the_refusals_reason(shown: Shown) -> None:
    events = shown.page.by_id("events").rows()

    applied = [row for row in events if row.get("data-event-id") == APPLIED_EVENT]
    assert [(row["data-status"], row["data-outcome"]) for row in applied] == [
        ("200", "duplicate"),  # newest first
        ("200", "applied"),
    ]
    assert [row.cells()[-1] for row in applied] == ["duplicate", "applied"]
    assert applied[0].cells()[3:5] == [APPLIED_EVENT, "customer.subscription.created"]
    (forged,) = [row for row in events if row.get("data-event-id") == BAD_SIGNATURE_EVENT]
    assert (forged["data-status"], forged["data-error"]) == ("400", "invalid_signature")
    assert forged.cells()[-1] == "invalid_signature: Webhook signature verification failed"


def test_the_alarms_show_every_alarms_state_with_the_failed_functions_in_alarm(shown: Shown) -> None:
    alarms = {row["data-alarm"]: row for row in shown.page.by_id("alarms").rows()}

    assert {alarm: row["data-state"] for alarm, row in alarms.items()} == shown.stack.alarms.states
    errors = alarms["BillingReportLambdaErrors"]
    assert (errors["data-state"], errors["data-severity"]) == ("ALARM", "warning")
    assert errors.cells()[1:] == ["warning", "ALARM"]
    changes = shown.page.by_id("alarm-changes").rows()
    assert any(
        (row["data-alarm"], row["data-from"], row["data-to"])
        == ("BillingReportLambdaErrors", "INSUFFICIENT_DATA", "ALARM")
        for row in changes
    )


def test_the_alerts_show_the_alert_and_its_receiver(shown: Shown) -> None:
    alerts = shown.page.by_id("alerts").rows()

    sent = [row for row in alerts if row.get("data-alert") == "BillingReportLambdaErrors"]
    assert [(row["data-receiver"], row["data-kind"]) for row in sent] == [("oncall-warning", "firing")]
    assert sent[0].cells()[1:5] == ["oncall-warning", "firing", "BillingReportLambdaErrors", "warning"]


def test_the_accounts_show_tier_subscription_and_a_usage_bar_per_quota(shown: Shown) -> None:
    (row,) = [row for row in shown.page.by_id("accounts").rows() if row.get("data-account") == ACCOUNT]

    assert (row["data-tier"], row["data-subscription-status"]) == ("PRO", "active")
    assert row.cells()[1:3] == ["PRO", f"activecus_{ACCOUNT}"]
    (account,) = [account for account in shown.accounts if account["account"] == ACCOUNT]
    bars = row.find_all(lambda element: element.get("class") == "usage")
    assert [(bar["data-feature"], bar["data-used"], bar["data-quota"]) for bar in bars] == [
        (usage["feature"], str(usage["used"]), str(usage["quota"])) for usage in account["usage"]
    ]


def test_an_accounts_mrr_reads_as_the_billing_report_writes_it(shown: Shown) -> None:
    from billwatch.billing.revenue import major_units
    from billwatch.reporting.model import Known, Missing, MrrChange
    from billwatch.reporting.renderers import mrr_line

    (row,) = [row for row in shown.page.by_id("accounts").rows() if row.get("data-account") == ACCOUNT]
    (account,) = [account for account in shown.accounts if account["account"] == ACCOUNT]
    (cell,) = row.find_all(lambda element: "mrr" in (element.get("class") or "").split())
    amount = Known(float(major_units(account["mrr"], account["currency"])))
    reported = mrr_line(MrrChange(account["currency"], amount, Missing("-"), Missing("-")))

    assert (account["mrr"], account["currency"]) == (2000, "usd")  # minor units, as Stripe sends them
    assert cell.text == reported.split(" (", 1)[0] == "USD 20.00"


def test_the_dashboards_are_laid_out_widget_by_widget_with_a_chart_per_metric_widget_with_series(
    shown: Shown,
) -> None:
    sections = shown.page.find_all(lambda element: "data-dashboard" in element.attributes)
    assert [section["data-dashboard"] for section in sections] == [d["name"] for d in shown.dashboards]

    for section, dashboard in zip(sections, shown.dashboards, strict=True):
        widgets = section.find_all(lambda element: "data-widget" in element.attributes)
        assert [(w["data-type"], w["data-widget"]) for w in widgets] == [
            (widget["type"], widget["title"]) for widget in dashboard["widgets"]
        ]
        for element, widget in zip(widgets, dashboard["widgets"], strict=True):
            canvases = element.find_all(lambda child: child.tag == "canvas")
            drawn = widget["type"] == "metric" and bool(widget.get("series"))
            assert len(canvases) == int(drawn), f"{widget['title']}: {len(canvases)} canvases"
            if "note" in widget:
                assert widget["note"] in element.text

    charts = shown.page.find_all(lambda element: element.tag == "canvas")
    with_series = [
        w for d in shown.dashboards for w in d["widgets"] if w["type"] == "metric" and w.get("series")
    ]
    assert len(charts) == len(with_series) > 0
    received = next(
        w for d in shown.dashboards for w in d["widgets"] if w["title"] == "Webhooks received by type"
    )
    assert "billwatch customer.subscription.created" in [line["label"] for line in received["series"]]


def test_the_business_dashboard_opens_on_its_variables_and_marks_the_stacks_deployment(shown: Shown) -> None:
    (section,) = [
        element
        for element in shown.page.find_all(lambda element: "data-dashboard" in element.attributes)
        if element["data-dashboard"].endswith("-business")
    ]
    variables = section.find_all(lambda element: "data-variable" in element.attributes)
    assert [(v["data-variable"], v["data-value"], v.text) for v in variables] == [
        ("plan", "PRO", "Plan (Tier): PRO"),
        ("currency", "USD", "Currency (Currency): USD"),
    ]
    (business,) = [d for d in shown.dashboards if d["name"].endswith("-business")]
    widgets = {w["title"]: w for w in business["widgets"]}
    kpi = widgets["Payment success rate (KPI ≥ 95 %)"]
    # The stack played DeployedRule's CREATE_COMPLETE when it started: one deployment, drawn.
    (deployments,) = [line for line in kpi["series"] if line["label"] == "Deployments"]
    assert sum(value for _, value in deployments["points"]) == 1 and deployments["yAxis"] == "right"
    assert {(line["color"], line["fill"]) for line in kpi["annotations"]} == {
        ("#2ca02c", "above"),
        ("#d62728", "below"),
    }
    (element,) = section.find_all(lambda e: e.get("data-widget") == "Payment success rate (KPI ≥ 95 %)")
    assert element.find_all(lambda child: child.tag == "canvas")
    # Computed here as in CloudWatch, not noted away: the top 10 decline reasons (SORT over SEARCH).
    assert "note" not in widgets["Failed payments by decline reason (top 10)"]


def test_the_screenshot_is_kept(shown: Shown, capsys: pytest.CaptureFixture[str]) -> None:
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with capsys.disabled():
        print(f"\nthe status page as Chromium drew it: {SCREENSHOT}")
