"""Manifest of training cases: a CSV with columns ``case_id, ct, lobes, airway, vessels, report``.

Paths are relative to the CSV's folder; ``report`` is a text file (or a ``report_text`` column holds the text).
Lines starting with ``#`` (e.g. the phantoms' SYNTHETIC banner) are not part of the report.
This is the layout ``medsyn phantoms`` writes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("case_id", "ct", "lobes", "airway", "vessels")


@dataclass(frozen=True)
class Case:
    case_id: str
    ct: Path
    lobes: Path
    airway: Path
    vessels: Path
    report: str


def read_manifest(path: str | Path) -> list[Case]:
    """Cases of a manifest CSV, with clear errors for missing columns or report text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"manifest {path} has no cases")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing or not ({"report", "report_text"} & set(rows[0])):
        raise ValueError(f"manifest {path} lacks columns {missing or ['report or report_text']}; "
                         f"expected {', '.join(REQUIRED)}, report")
    cases = []
    for row in rows:
        base = path.parent
        if row.get("report_text"):
            report = row["report_text"]
        else:
            report_file = base / row["report"]
            if not report_file.is_file():
                raise FileNotFoundError(f"case {row['case_id']}: report file not found: {report_file}")
            report = report_file.read_text(encoding="utf-8")
        report = "\n".join(line for line in report.splitlines() if not line.lstrip().startswith("#")).strip()
        cases.append(Case(row["case_id"], *(base / row[k] for k in REQUIRED[1:]), report))
    return cases
