"""What an alarm's description promises its reader: severity, a one-line summary, a runbook.

template.yaml writes every alarm description as ``[severity] summary Runbook: <url>``, so the
person paged and the alert dispatcher both learn from the alarm itself how urgent it is and
where to start, without a second catalog to keep in step with the template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from billwatch.core.severities import Severity

_DESCRIPTION = re.compile(
    r"^\[(?P<severity>[a-z]+)\] (?P<summary>\S.*?) Runbook: (?P<runbook>https://\S+)$", re.DOTALL
)


@dataclass(frozen=True)
class AlarmText:
    severity: Severity
    summary: str
    runbook: str


def parse_alarm_description(description: str) -> AlarmText:
    match = _DESCRIPTION.match(description.strip())
    if match is None:
        raise ValueError("an alarm description must read '[severity] summary Runbook: https://...'")
    try:
        severity = Severity(match["severity"])
    except ValueError:
        raise ValueError(
            f"alarm severity must be one of {[s.value for s in Severity]}, got {match['severity']!r}"
        ) from None
    return AlarmText(severity, " ".join(match["summary"].split()), match["runbook"])
