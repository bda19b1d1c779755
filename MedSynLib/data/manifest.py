"""Manifest of training cases: a CSV with columns ``case_id, ct, lobes, airway, vessels, report``.

Paths are relative to the CSV's folder; ``report`` is a text file (or a ``report_text`` column holds the text).
A case may have several reports of the same findings (paraphrases, report augmentation): ``report`` then lists
their files separated by ``;`` and training draws one per step. Lines starting with ``#`` (e.g. the phantoms'
SYNTHETIC banner) are not part of a report.
An optional ``split`` column marks each case ``train`` or ``val`` (held out for the validation loss).
This is the layout ``medsyn phantoms`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io.text import read_csv_rows, read_text

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
    return strip_comments(read_text(path, f"case {case_id}: report file"))


@dataclass(frozen=True)
class ReportRow:
    """One manifest row's reports: ``name`` says where it is ("cases.csv line 3 (case_0001)"), ``sources`` where
    each text came from (its file, or ``name`` for a ``report_text`` column)."""

    name: str
    row: dict
    reports: tuple[str, ...]
    sources: tuple[str, ...]


def read_report_rows(path: str | Path) -> list[ReportRow]:
    """Every row of a manifest CSV with its report texts ('#' comment lines removed), for any manifest that has a
    ``report`` (file names relative to the CSV, several separated by ``;``) or ``report_text`` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    columns, rows = read_csv_rows(path, "manifest")
    if not {"report", "report_text"} & set(columns):
        raise ValueError(f"manifest {path} has no 'report' (path to a text file) or 'report_text' column")
    out = []
    for line, row in enumerate(rows, start=2):
        label = row.get("case_id") or row.get("id")
        name = f"{path.name} line {line}" + (f" ({label})" if label else "")
        if row.get("report_text"):
            reports, sources = (strip_comments(row["report_text"]),), (name,)
        else:
            files = report_paths(row.get("report"), path.parent)
            reports, sources = tuple(read_report_file(file, label or name) for file in files), tuple(map(str, files))
        if not reports or not all(reports):
            raise ValueError(f"{f'case {label}' if label else name}: empty report; give a report file or report_text")
        out.append(ReportRow(name, row, reports, sources))
    return out


def read_manifest(path: str | Path) -> list[Case]:
    """Cases of a manifest CSV, with clear errors for missing columns or report text."""
    rows = read_report_rows(path)
    if not rows:
        raise ValueError(f"manifest {path} has no cases")
    missing = [c for c in REQUIRED if c not in rows[0].row]
    if missing:
        raise ValueError(f"manifest {path} lacks columns {missing}; expected {', '.join(REQUIRED)}, report")
    base = Path(path).parent
    cases = []
    for r in rows:
        row = r.row
        split = (row.get("split") or "train").strip().lower()
        if split not in SPLITS:
            raise ValueError(f"case {row['case_id']}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        cases.append(Case(row["case_id"], *(base / row[k] for k in REQUIRED[1:]), r.reports, split))
    return cases
