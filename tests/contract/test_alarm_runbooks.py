"""Every alarm in template.yaml has a runbook section and is on a dashboard.

Runbook section: the alarm's description ends in ``Runbook: <RunbookBaseUrl>/<page>.md[#anchor]``.
The page must exist in docs/runbooks. With an anchor, the page must have a heading whose GitHub
slug is that anchor, and the section under it must name the alarm. Without one (how the template
links today: one page per alarm family), the page's ``## Alarms`` table must have a row for the alarm
and the page must have the sections a paged engineer works through. The index in
docs/runbooks/README.md must send the alarm to the same page.

Dashboard: an ``alarm`` widget of some dashboard lists the alarm (``${Alarm.Arn}``); or, for a
composite alarm, each alarm its rule names is on a dashboard; or, for a metric alarm, each metric it
reads (MetricName, or every MetricStat of its metric math) is shown by a dashboard widget: same
namespace, metric and dimension names, and each dimension value equal or left open by a SEARCH or
SELECT. The metric readers are test_metrics_contract's, so both tests read the template alike.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import pytest

from billwatch.alerting.alarm_text import parse_alarm_description
from devtools.template import (
    ALARM_TYPE,
    COMPOSITE_ALARM_TYPE,
    DASHBOARD_TYPE,
    REPO_ROOT,
    parameter_values,
    resolved_properties,
)
from tests.contract.test_metrics_contract import Reference, _alarm_references, _dashboard_references

RUNBOOKS = REPO_ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
# The sections docs/runbooks/README.md promises on every page, that an alarm's row relies on.
PAGE_SECTIONS = ("Alarms", "First steps", "Common causes", "Recover")

# Alarms that exist only under a template Condition (HasStripeApiKeySecret), which no dashboard shows
# yet: an alarm widget cannot list them (a !Sub or !GetAtt on a resource its condition left out fails
# the deploy), and neither can a metric row naming ReconcileFunction or ReconcileDLQ. The two
# billwatch metrics could have a metric widget (docs/metrics.md's dashboards column then names it).
CONDITIONAL_ALARMS_OFF_DASHBOARDS = {
    "ReconcileLambdaErrors": "reads a metric of ReconcileFunction",
    "ReconcileLambdaThrottles": "reads a metric of ReconcileFunction",
    "ReconcileDLQNotEmpty": "reads a metric of ReconcileDLQ",
    "ReconcileDriftFound": "not yet shown: ReconcileDrift is on no widget",
    "ReconcileRunFailed": "not yet shown: ReconcileFailed is on no widget",
    "OverageDrainLambdaErrors": "reads a metric of OverageDrainFunction",
    "OverageDrainLambdaThrottles": "reads a metric of OverageDrainFunction",
}


# ------------------------------------------------------------------ markdown


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str, str]]:
    """(level, title, section text up to the next heading of the same or a higher level), code
    fences skipped, in page order."""
    found: list[tuple[int, str, int]] = []
    lines = markdown.splitlines()
    fenced = False
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#{1,6}) +(.+?) *#*$", line)):
            found.append((len(match[1]), match[2], number))
    sections = []
    for index, (level, title, start) in enumerate(found):
        end = next((line for lvl, _, line in found[index + 1 :] if lvl <= level), len(lines))
        sections.append((level, title, "\n".join(lines[start + 1 : end])))
    return sections


def anchors(markdown: str) -> dict[str, str]:
    """Anchor -> section text, with GitHub's -1, -2, ... for repeated headings."""
    seen: dict[str, int] = {}
    found = {}
    for _, title, text in headings(markdown):
        slug = github_slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found[slug if count == 0 else f"{slug}-{count}"] = text
    return found


def _names(cell: str) -> set[str]:
    return set(re.findall(r"\w+", cell))


def table_rows(section: str) -> list[list[str]]:
    """The cells of each row of the markdown tables in a section (header and rule rows dropped)."""
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:] if rows else rows


def alarm_rows(markdown: str) -> dict[str, list[str]]:
    """Alarm name -> its row, for every name in the first cell of the page's ``## Alarms`` tables."""
    section = next(
        (text for level, title, text in headings(markdown) if level == 2 and title == "Alarms"), ""
    )
    return {name: row for row in table_rows(section) for name in _names(row[0])}


def index_pages() -> dict[str, set[str]]:
    """docs/runbooks/README.md's index: alarm name -> the pages its row links."""
    section = next(text for _, title, text in headings(INDEX.read_text(encoding="utf-8")) if title == "Index")
    pages: dict[str, set[str]] = {}
    for row in table_rows(section):
        linked = set(re.findall(r"\]\(([^)#]+)", row[-1]))
        for name in _names(row[0]):
            pages.setdefault(name, set()).update(linked)
    return pages


# ------------------------------------------------------------------ template


@pytest.fixture(scope="module")
def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        **resolved_properties(template, ALARM_TYPE),
        **resolved_properties(template, COMPOSITE_ALARM_TYPE),
    }


def runbook_link(template: dict[str, Any], props: dict[str, Any]) -> tuple[str, str]:
    """(page relative to docs/runbooks, anchor or "") of an alarm's runbook link."""
    base = parameter_values(template)["RunbookBaseUrl"].rstrip("/")
    url = parse_alarm_description(props["AlarmDescription"]).runbook
    assert url.startswith(f"{base}/"), f"runbook link {url} is not under RunbookBaseUrl {base}"
    page, _, anchor = url.removeprefix(f"{base}/").partition("#")
    return page, unquote(anchor)


def runbook_problem(logical_id: str, page: str, anchor: str, index: dict[str, set[str]]) -> str | None:
    path = RUNBOOKS / page
    if not path.is_file():
        return f"its runbook link names docs/runbooks/{page}, which does not exist"
    markdown = path.read_text(encoding="utf-8")
    if anchor:
        sections = anchors(markdown)
        if anchor not in sections:
            return f"docs/runbooks/{page} has no heading whose anchor is #{anchor}"
        if logical_id not in _names(sections[anchor]):
            return f"the section #{anchor} of docs/runbooks/{page} does not name it"
    else:
        if logical_id not in alarm_rows(markdown):
            return f"docs/runbooks/{page} has no row for it in its '## Alarms' table"
        titles = {title for level, title, _ in headings(markdown) if level == 2}
        if missing := [section for section in PAGE_SECTIONS if section not in titles]:
            return f"docs/runbooks/{page} lacks the sections {missing}"
    if page not in index.get(logical_id, set()):
        return f"docs/runbooks/README.md's index does not send it to {page}"
    return None


def dashboard_views(template: dict[str, Any]) -> tuple[set[str], list[Reference]]:
    """(alarms listed by alarm widgets, metrics shown by metric widgets) over every dashboard."""
    listed: set[str] = set()
    shown: list[Reference] = []
    for logical_id, props in resolved_properties(template, DASHBOARD_TYPE).items():
        body = props["DashboardBody"]
        for widget in json.loads(body)["widgets"]:
            if widget.get("type") == "alarm":
                listed |= {arn.removesuffix(".Arn") for arn in widget["properties"]["alarms"]}
        shown += _dashboard_references(logical_id, body)
    return listed, shown


def _shows(shown: Reference, wanted: Reference) -> bool:
    wanted_values = dict(wanted.dimensions)
    return (
        shown.namespace == wanted.namespace
        and shown.name == wanted.name
        and {name for name, _ in shown.dimensions} == set(wanted_values)
        and all(value is None or value == wanted_values[name] for name, value in shown.dimensions)
    )


def dashboard_problem(
    logical_id: str,
    alarms: dict[str, dict[str, Any]],
    listed: set[str],
    shown: list[Reference],
) -> str | None:
    if logical_id in listed:
        return None
    props = alarms[logical_id]
    if "AlarmRule" in props:
        children = re.findall(r'ALARM\("([^"]+)"\)', props["AlarmRule"])
        off = [child for child in children if dashboard_problem(child, alarms, listed, shown)]
        return f"no alarm widget lists it, nor its alarms {off}" if off else None
    references = _alarm_references(logical_id, props)
    missing = [ref for ref in references if not any(_shows(item, ref) for item in shown)]
    if not references or missing:
        described = ", ".join(
            f"{ref.namespace} {ref.name} [{', '.join(f'{n}={v}' for n, v in sorted(ref.dimensions))}]"
            for ref in missing
        )
        return f"no alarm widget lists it and no metric widget shows {described or 'its metrics'}"
    return None


# ------------------------------------------------------------------ tests


def test_every_alarm_has_a_runbook_section(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    index = index_pages()
    problems = []
    for logical_id, props in alarms.items():
        page, anchor = runbook_link(template, props)
        if problem := runbook_problem(logical_id, page, anchor, index):
            problems.append(f"{logical_id}: {problem}")
    assert not problems, "alarms without a runbook section:\n" + "\n".join(problems)


def test_every_alarm_is_on_a_dashboard(template: dict[str, Any], alarms: dict[str, dict[str, Any]]) -> None:
    listed, shown = dashboard_views(template)
    problems = []
    for logical_id in alarms:
        if logical_id in CONDITIONAL_ALARMS_OFF_DASHBOARDS:
            continue
        if problem := dashboard_problem(logical_id, alarms, listed, shown):
            problems.append(f"{logical_id}: {problem}")
    assert not problems, "alarms on no dashboard:\n" + "\n".join(problems)


def test_the_alarms_left_off_dashboards_are_still_conditional(
    template: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    resources = template["Resources"]
    for logical_id in CONDITIONAL_ALARMS_OFF_DASHBOARDS:
        assert logical_id in alarms, f"{logical_id} is gone: drop it from CONDITIONAL_ALARMS_OFF_DASHBOARDS"
        assert "Condition" in resources[logical_id], (
            f"{logical_id} is no longer conditional: put it on a dashboard and drop it from "
            "CONDITIONAL_ALARMS_OFF_DASHBOARDS"
        )


def test_the_slugs_are_githubs() -> None:
    assert github_slug("First steps") == "first-steps"
    assert github_slug("README \u203a Shell setup") == "readme--shell-setup"
    assert github_slug("`HighQuotaDenialRate`: what it means") == "highquotadenialrate-what-it-means"
    assert list(anchors("# A\n```\n# not a heading\n```\n## B\n## B\n")) == ["a", "b", "b-1"]


def test_a_page_names_the_alarms_of_its_alarms_table_only() -> None:
    page = "## Alarms\n\n| alarm | fires when |\n|---|---|\n| OneAlarm, TwoAlarm | x OtherAlarm |\n## Next\n"
    assert set(alarm_rows(page)) == {"OneAlarm", "TwoAlarm"}
