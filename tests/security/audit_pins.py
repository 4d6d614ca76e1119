"""Audit exactly the pinned versions in requirement files against PyPI's vulnerability data.

    python -m tests.security.audit_pins requirements/constraints.txt layers/shared/requirements.txt

Exits 1 when a pin has a known vulnerability. This is `pip-audit -r FILE --no-deps --disable-pip`
with one addition: some PyPI mirrors and proxies serve only the project endpoint
(/pypi/<name>/json), whose vulnerabilities are those of the latest release, and answer 404 for the
per-release one pip-audit asks. A pin that is the latest release is then still audited exactly;
any other pin is listed as not audited (it cannot be checked from here), which does not fail the
run, but a run that could audit nothing does.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from packaging.utils import canonicalize_name
from packaging.version import Version
from pip_audit._service import PyPIService, ResolvedDependency, SkippedDependency, VulnerabilityResult

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")
TIMEOUT_SECONDS = 30
PARALLEL_QUERIES = 8


def read_pins(paths: list[Path]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := PIN.match(line):
                pins[canonicalize_name(match[1])] = match[2]
    return pins


class LatestReleaseFallback(PyPIService):
    """PyPI's per-release data, or the project endpoint's when the pin is the latest release."""

    def query(self, spec):  # type: ignore[override]
        found, vulnerabilities = super().query(spec)
        if not isinstance(found, SkippedDependency):
            return found, vulnerabilities
        response = self.session.get(f"https://pypi.org/pypi/{spec.canonical_name}/json", timeout=self.timeout)
        if response.status_code != 200:
            return found, []
        project = response.json()
        if Version(project["info"]["version"]) != spec.version:
            return SkippedDependency(
                name=spec.name,
                skip_reason=f"pinned {spec.version}, latest is {project['info']['version']}, and this "
                "registry serves vulnerability data for the latest release only",
            ), []
        entries = [entry for entry in project.get("vulnerabilities") or [] if not entry.get("withdrawn")]
        return spec, [self._result(entry) for entry in entries]

    @staticmethod
    def _result(entry: dict) -> VulnerabilityResult:
        return VulnerabilityResult.create(
            ids=[entry["id"], *entry.get("aliases", [])],
            description=(entry.get("summary") or entry.get("details") or "N/A").replace("\n", " "),
            fix_versions=sorted(Version(v) for v in entry.get("fixed_in") or []),
            published=None,
        )


def audit(pins: dict[str, str], service: PyPIService) -> tuple[list[str], list[str], int]:
    """(one line per known vulnerability, one line per pin not audited, how many were audited)."""
    vulnerable, not_audited, audited = [], [], 0
    pinned = sorted(pins.items())
    specs = [ResolvedDependency(name=name, version=Version(version)) for name, version in pinned]
    # One HTTPS round trip per pin: in parallel, the audit takes seconds rather than half a minute.
    with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
        answers = list(pool.map(service.query, specs))
    for (name, version), (spec, results) in zip(pinned, answers, strict=True):
        if isinstance(spec, SkippedDependency):
            not_audited.append(f"{name}=={version}: {spec.skip_reason}")
            continue
        audited += 1
        for result in results:
            fixed = ", ".join(str(v) for v in result.fix_versions) or "no fixed release"
            ids = ", ".join([result.id, *sorted(result.aliases)])
            vulnerable.append(f"{name}=={version}: {ids} (fixed in {fixed}): {result.description}")
    return vulnerable, not_audited, audited


def main(argv: list[str]) -> int:
    pins = read_pins([Path(arg) for arg in argv])
    try:
        vulnerable, not_audited, audited = audit(pins, LatestReleaseFallback(timeout=TIMEOUT_SECONDS))
    except requests.RequestException as error:
        print(f"audit_pins: PyPI could not be reached: {error}", file=sys.stderr)
        return 1
    for line in not_audited:
        print(f"not audited  {line}")
    for line in vulnerable:
        print(f"VULNERABLE   {line}")
    print(f"audit_pins: {audited} of {len(pins)} pins audited, {len(vulnerable)} known vulnerabilities")
    return 1 if vulnerable or audited == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
