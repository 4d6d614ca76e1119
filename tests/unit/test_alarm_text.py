from __future__ import annotations

import pytest

from billwatch.alerting.alarm_text import parse_alarm_description
from billwatch.core.severities import Severity


def test_a_description_gives_severity_summary_and_runbook() -> None:
    text = parse_alarm_description(
        "[critical] More than 5% of Stripe webhooks failed over the last\n600 s. "
        "Runbook: https://example.com/runbooks/webhook-failures.md"
    )
    assert text.severity is Severity.CRITICAL
    assert text.summary == "More than 5% of Stripe webhooks failed over the last 600 s."
    assert text.runbook == "https://example.com/runbooks/webhook-failures.md"


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("More than 5% failed. Runbook: https://x/y.md", "must read"),
        ("[critical] More than 5% failed.", "must read"),
        ("[critical] Runbook: https://x/y.md", "must read"),
        ("[critical] Failed. Runbook: http://x/y.md", "must read"),
        ("[urgent] Failed. Runbook: https://x/y.md", "severity must be one of"),
    ],
)
def test_a_description_out_of_shape_names_the_problem(description: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_alarm_description(description)
