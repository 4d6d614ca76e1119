"""Unzipped size of the built SharedLayer, per distribution and per sub-package."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _disk_usage(path: Path) -> tuple[int, int]:
    """(bytes on disk like `du`, apparent bytes) of a tree, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    disk = apparent = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            stat = os.lstat(os.path.join(root, name))
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            disk += stat.st_blocks * 512
            if name in files:
                apparent += stat.st_size
    stat = os.lstat(path)
    return disk + stat.st_blocks * 512, apparent


def _owners(python_dir: Path) -> dict[str, str]:
    """Top-level entry (package dir, module file, dist-info) -> distribution name, from RECORD files."""
    owners: dict[str, str] = {}
    for dist_info in python_dir.glob("*.dist-info"):
        distribution = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        record = dist_info / "RECORD"
        owners[dist_info.name] = distribution
        if record.exists():
            with record.open(encoding="utf-8", newline="") as handle:
                for row in csv.reader(handle):
                    if row and row[0]:
                        owners.setdefault(row[0].split("/", 1)[0], distribution)
    return owners


def measure(layer_dir: Path) -> dict[str, Any]:
    python_dir = layer_dir / "python"
    disk, apparent = _disk_usage(layer_dir)
    owners = _owners(python_dir)
    per_distribution: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    sub_packages = []
    for entry in sorted(python_dir.iterdir()):
        owner = owners.get(entry.name, f"{entry.name} (project code)" if entry.is_dir() else entry.name)
        entry_disk, entry_apparent = _disk_usage(entry)
        per_distribution[owner][0] += entry_disk
        per_distribution[owner][1] += entry_apparent
        if entry.is_dir() and not entry.name.endswith(".dist-info"):
            for child in entry.iterdir():
                if child.is_dir() and child.name != "__pycache__":
                    sub_packages.append((f"{entry.name}/{child.name}", _disk_usage(child)[1]))
    breakdown = sorted(
        (
            {"package": name, "du_mb": round(sizes[0] / MB, 2), "apparent_mb": round(sizes[1] / MB, 2)}
            for name, sizes in per_distribution.items()
        ),
        key=lambda item: item["du_mb"],
        reverse=True,
    )
    files = sum(1 for path in python_dir.rglob("*") if path.is_file())
    return {
        "dir": str(layer_dir),
        "du_mb": round(disk / MB, 2),
        "apparent_mb": round(apparent / MB, 2),
        "files": files,
        "by_package": breakdown,
        "largest_sub_packages": [
            {"path": path, "apparent_mb": round(size / MB, 2)}
            for path, size in sorted(sub_packages, key=lambda item: item[1], reverse=True)[:8]
        ],
    }
