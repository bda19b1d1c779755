"""``medsyn batch``: K samples for each report of a CSV file, one result folder per sample, resumable.

``prompts.csv`` has a ``report`` column and optional ``id`` and ``seed`` columns. Sample k (0..K-1) of data row r
(0-based) is written to ``<out>/<id>_<k>/`` with seed ``seed + k`` when the row gives a seed, else
``base_seed + 1000 r + k``. A case folder holding ``medsyn.json`` is finished and skipped on a re-run;
half-written temporary folders are removed and their cases redone. ``manifest.csv`` lists every case
(:data:`COLUMNS`) and is rewritten atomically after each one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .generate import GenerationResult
from .outputs import SIDECAR, write_result

MANIFEST = "manifest.csv"
COLUMNS = ("id", "k", "seed", "report", "folder", "ct", "segmentation", "status", "error")
SEED_STRIDE = 1000


@dataclass
class Case:
    """One sample: prompt ``id``, sample index ``k``, its seed and report; written to ``<out>/<folder>``."""

    id: str
    k: int
    seed: int
    report: str

    @property
    def folder(self) -> str:
        return f"{self.id}_{self.k}"


def read_prompts(path: Path, per_prompt: int, base_seed: int = 0) -> list[Case]:
    """The cases of a prompts CSV (see the module docstring); errors name the file, row and fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if not 1 <= per_prompt <= SEED_STRIDE:
        raise ValueError(f"--per-prompt must be between 1 and {SEED_STRIDE}, got {per_prompt}")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    if not rows or "report" not in rows[0]:
        raise ValueError(f"{path} needs a header with a 'report' column (optional 'id' and 'seed') and at least "
                         "one row")
    cases, seen = [], set()
    for r, row in enumerate(rows):
        where = f"{path} row {r + 2}"
        report = (row.get("report") or "").strip()
        if not report:
            raise ValueError(f"{where}: the report is empty. Fix: write the Findings/Impression text or drop the row")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", (row.get("id") or "").strip()).strip("._") or f"prompt{r:04d}"
        if name in seen:
            raise ValueError(f"{where}: id {name!r} is used twice. Fix: give every row its own id")
        seen.add(name)
        seed_text = (row.get("seed") or "").strip()
        try:
            row_seed = int(seed_text) if seed_text else None
        except ValueError:
            raise ValueError(f"{where}: seed {seed_text!r} is not an integer") from None
        for k in range(per_prompt):
            seed = row_seed + k if row_seed is not None else base_seed + SEED_STRIDE * r + k
            cases.append(Case(name, k, seed, report))
    return cases


def _write_manifest(out_dir: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(text.getvalue(), encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)


def _row(case: Case, out_dir: Path, status: str, error: str = "") -> dict:
    files = {}
    if status == "done":
        files = json.loads((out_dir / case.folder / SIDECAR).read_text()).get("files", {})
    return {"id": case.id, "k": case.k, "seed": case.seed, "report": case.report, "folder": case.folder,
            "ct": files.get("ct", ""), "segmentation": files.get("segmentation", ""), "status": status,
            "error": error}


def remove_partial(out_dir: Path, folders: set[str]) -> list[str]:
    """Delete half-written case folders among ``folders``: their temporary ``.<folder>.partial-*`` siblings and
    case folders without a sidecar. Nothing else in ``out_dir`` is touched."""
    removed = []
    for entry in sorted(Path(out_dir).iterdir()):
        partial = ".partial-" in entry.name and entry.name[1:].split(".partial-")[0] in folders
        unfinished = entry.name in folders and not (entry / SIDECAR).is_file()
        if entry.is_dir() and (partial or unfinished):
            shutil.rmtree(entry)
            removed.append(entry.name)
    return removed


def run_batch(cases: list[Case], out_dir: Path, make: Callable[[Case], GenerationResult], model_info: dict,
              preview: bool = False, on_case: Callable[[int, Case, str, str], None] | None = None) -> list[dict]:
    """Generate every unfinished case with ``make(case)`` and write it; returns the manifest rows.

    ``on_case(index, case, status, error)`` is called with status "running", "skipped", "done" or "failed".
    A ``ValueError`` fails only its case; anything else (cancel, out of memory) stops the batch, leaving finished
    cases and the manifest in place.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial(out_dir, {c.folder for c in cases})
    rows = [_row(c, out_dir, "done" if (out_dir / c.folder / SIDECAR).is_file() else "pending") for c in cases]
    _write_manifest(out_dir, rows)
    notify = on_case or (lambda *a: None)
    for i, case in enumerate(cases):
        if rows[i]["status"] == "done":
            notify(i, case, "skipped", "")
            continue
        notify(i, case, "running", "")
        try:
            write_result(make(case), out_dir / case.folder, "generate", model_info, preview=preview)
            rows[i] = _row(case, out_dir, "done")
        except ValueError as exc:
            rows[i] = _row(case, out_dir, "failed", str(exc))
        _write_manifest(out_dir, rows)
        notify(i, case, rows[i]["status"], rows[i]["error"])
    return rows
