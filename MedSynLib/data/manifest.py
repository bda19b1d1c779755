"""Manifest of training cases: a CSV with columns ``case_id, ct, lobes, airway, vessels, report``.

Paths are relative to the CSV's folder; ``report`` is a text file (or a ``report_text`` column holds the text).
A case may have several reports of the same findings (paraphrases, report augmentation): ``report`` then lists
their files separated by ``;`` and training draws one per step. Lines starting with ``#`` (e.g. the phantoms'
SYNTHETIC banner) are not part of a report.
An optional ``split`` column marks each case ``train`` or ``val`` (held out for the validation loss).
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
    reports: tuple[str, ...]
    split: str = "train"

    @property
    def report(self) -> str:
        """The case's first (canonical) report."""
        return self.reports[0]


SPLITS = ("train", "val")
REPORT_SEPARATOR = ";"
"""Separates the files of a case's several reports in the manifest's ``report`` column."""


def strip_comments(text: str) -> str:
    """A report's text without its '#' comment lines."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()


def report_paths(column: str | None, base: Path) -> list[Path]:
    """The files a manifest's ``report`` column lists (one, or several separated by ``;``), relative to ``base``."""
    return [base / name.strip() for name in (column or "").split(REPORT_SEPARATOR) if name.strip()]


def read_report_file(path: Path, case_id: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"case {case_id}: report file not found: {path}")
    return strip_comments(path.read_text(encoding="utf-8"))


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
            reports = (strip_comments(row["report_text"]),)
        else:
            reports = tuple(read_report_file(file, row["case_id"]) for file in report_paths(row.get("report"), base))
        if not reports or not all(reports):
            raise ValueError(f"case {row['case_id']}: empty report; give a report file or report_text")
        split = (row.get("split") or "train").strip().lower()
        if split not in SPLITS:
            raise ValueError(f"case {row['case_id']}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        cases.append(Case(row["case_id"], *(base / row[k] for k in REQUIRED[1:]), reports, split))
    return cases
