"""Where a notice sends its reader: the dashboard that shows the alert's part of billwatch, and the
runbook that says what to do.

An alarm brings its runbook in its description (alarm_text.py) and its runbook page as its
``group`` label; business events bring neither, so their groups are mapped to the runbook pages
that cover them here, under the RunbookBaseUrl the alarms use. The dashboard follows the page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from billwatch.alerting.inputs import Alert, cloudwatch_console_url
from billwatch.core.config import Dashboards

# A business alert's group -> the runbook page that covers it. A test notice that did not reach a
# receiver is an alert delivery failure.
BUSINESS_RUNBOOK_PAGES = {
    "usage": "licensing",
    "payments": "payment-failures",
    "test": "alert-delivery-failures",
}
# The runbook pages whose alarms the licensing dashboard shows; every other page's are on billing.
LICENSING_RUNBOOK_PAGES = frozenset({"licensing", "quota-reset-failure"})


def dashboard_url(region: str, name: str) -> str:
    return cloudwatch_console_url(region, "dashboards/dashboard", name)


def runbook_page(alert: Alert) -> str | None:
    """The page of docs/runbooks (without .md) that covers the alert."""
    group = alert.labels.get("group")
    return BUSINESS_RUNBOOK_PAGES.get(group, group) if group else None


@dataclass(frozen=True)
class AlertLinks:
    """Without dashboards or a runbook base URL (a local run), notices leave those links out."""

    dashboards: Dashboards | None = None
    runbook_base_url: str | None = None

    def added_to(self, alert: Alert) -> Alert:
        """The alert with its dashboard link, and the runbook link a business alert lacks."""
        page = runbook_page(alert)
        runbook = alert.runbook
        if runbook is None and self.runbook_base_url and alert.labels.get("group") in BUSINESS_RUNBOOK_PAGES:
            runbook = f"{self.runbook_base_url}/{page}.md"
        dashboard = None
        if self.dashboards is not None:
            name = self.dashboards.licensing if page in LICENSING_RUNBOOK_PAGES else self.dashboards.billing
            dashboard = dashboard_url(self.dashboards.region, name)
        return dataclasses.replace(alert, runbook=runbook, dashboard_url=dashboard)
