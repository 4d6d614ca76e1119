"""pytest imports each test module by its file name (the test folders are not packages), so two test
files of one name in different folders stop the whole run at collection."""

from __future__ import annotations

from collections import defaultdict

from tests.support import ROOT


def test_no_two_test_files_share_a_name() -> None:
    folders: dict[str, list[str]] = defaultdict(list)
    for path in (ROOT / "tests").rglob("test_*.py"):
        folders[path.name].append(str(path.parent.relative_to(ROOT)))
    assert {name: where for name, where in folders.items() if len(where) > 1} == {}
