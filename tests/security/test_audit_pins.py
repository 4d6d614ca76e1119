"""tests/security/audit_pins.py fails the build on a known vulnerability, without asking PyPI here."""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version
from pip_audit._service import SkippedDependency, VulnerabilityResult

from tests.security import audit_pins


class KnownVulnerabilities:
    """Stands in for PyPI: jinja2 2.10 has one advisory, everything else is clean or unknown."""

    def query(self, spec):
        if spec.name == "unknown":
            return SkippedDependency(name=spec.name, skip_reason="not on this registry"), []
        if (spec.name, spec.version) == ("jinja2", Version("2.10")):
            advisory = VulnerabilityResult.create(
                ids=["GHSA-462w-v97r-4m45", "PYSEC-2019-217"],
                description="sandbox escape",
                fix_versions=[Version("2.10.1")],
                published=None,
            )
            return spec, [advisory]
        return spec, []


def test_reads_exactly_the_pins(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n-r other.txt\nJinja2==2.10  # why\nrequests>=2\nPyYAML == 6.0.3\n")
    assert audit_pins.read_pins([requirements]) == {"jinja2": "2.10", "pyyaml": "6.0.3"}


def test_a_known_vulnerability_is_reported_with_its_fix() -> None:
    vulnerable, not_audited, audited = audit_pins.audit(
        {"jinja2": "2.10", "pyyaml": "6.0.3", "unknown": "1.0"}, KnownVulnerabilities()
    )
    assert vulnerable == [
        "jinja2==2.10: PYSEC-2019-217, GHSA-462w-v97r-4m45 (fixed in 2.10.1): sandbox escape"
    ]
    assert not_audited == ["unknown==1.0: not on this registry"]
    assert audited == 2


def test_the_run_fails_on_a_vulnerability_and_when_nothing_could_be_audited(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(audit_pins, "LatestReleaseFallback", lambda **_: KnownVulnerabilities())
    requirements = tmp_path / "requirements.txt"
    for pins, exit_code in (("pyyaml==6.0.3\n", 0), ("jinja2==2.10\n", 1), ("unknown==1.0\n", 1)):
        requirements.write_text(pins)
        assert audit_pins.main([str(requirements)]) == exit_code
