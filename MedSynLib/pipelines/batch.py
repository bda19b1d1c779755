"""``medsyn batch``: K samples for each report of a CSV file, one result folder per sample; resumable and sharded.

``prompts.csv`` has a ``report`` column and optional ``id`` and ``seed`` columns. Sample k (0..K-1) of data row r
(0-based) is written to ``<out>/<id>_<k>/`` with seed ``seed + k`` when the row gives a seed, else
``base_seed + 1000 r + k``.

Sharding: shard I of N (``--shard I/N``, or RANK / WORLD_SIZE under torchrun) takes cases I, I + N, I + 2N, … of
that list. Seeds and folders do not depend on N, so a case's result is the same whether it was made alone, in any
shard or on a resume. Shards share nothing but the output folder: each writes its rows to
``shards/shard-I-of-N.csv``, and ``manifest.csv`` (:data:`COLUMNS`) is merged under a file lock from the case
folders on disk (and the failures the shards recorded) when a shard starts, after each of its cases and when it
ends; so the shard that finishes last leaves the complete manifest, and the manifest describes the folders on disk.

Resuming: a case folder holding ``medsyn.json`` is finished and skipped when its sidecar records this case's
request (:func:`request_of`: report, seed, sampler settings, held channels, model weights). One made from another
request is refused before any work, or made again with ``redo_changed``. Half-written temporary folders of the
shard's cases are removed and those cases redone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..arguments import SEED_MAX
from ..environment import distributed
from ..io.files import atomic_write, check_collection_folder, remove_stale_partials
from ..io.text import read_csv_rows
from ..run_settings import MODEL_KEYS
from .generation import GenerationResult
from .outputs import SIDECAR

MANIFEST = "manifest.csv"
SHARDS = "shards"
LOCK = ".manifest.lock"
COLUMNS = ("id", "k", "seed", "report", "folder", "ct", "segmentation", "status", "error")
SEED_STRIDE = 1000
CHANGED = ("made from another report, seed, sampler setting, held channel, model or output format (--format) than "
           "the prompts now ask for (see its medsyn.json)")


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


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: the cases whose position in the case list is ``index`` mod ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N (I counts from 0)")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` (``--shard``), I counted from 0."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"--shard expects I/N with 0 <= I < N (e.g. 0/8), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_environment(cls, environ=os.environ) -> "Shard":
        """RANK / WORLD_SIZE as torchrun sets them (checked: :func:`~MedSynLib.environment.distributed`); shard 0/1
        outside torchrun."""
        layout = distributed(environ)
        return cls(layout.rank, layout.world_size)

    def select(self, cases: list[Case]) -> list[Case]:
        return cases[self.index::self.count]

    @property
    def file(self) -> str:
        return f"{SHARDS}/shard-{self.index}-of-{self.count}.csv"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def read_prompts(path: Path, per_prompt: int, base_seed: int = 0) -> list[Case]:
    """The cases of a prompts CSV (see the module docstring); one error names every bad row and its fix."""
    path = Path(path)
    if not 1 <= per_prompt <= SEED_STRIDE:
        raise ValueError(f"--per-prompt must be between 1 and {SEED_STRIDE}, got {per_prompt}")
    columns, rows = read_csv_rows(path, "prompts file")
    if not rows or "report" not in columns:
        raise ValueError(f"{path} needs a header with a 'report' column (optional 'id' and 'seed') and at least "
                         "one row")
    cases, seen, errors = [], set(), []
    for r, row in enumerate(rows):
        where = f"row {r + 2}"
        report = (row.get("report") or "").strip()
        if not report:
            errors.append(f"{where}: the report is empty. Fix: write the Findings/Impression text or drop the row")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", (row.get("id") or "").strip()).strip("._") or f"prompt{r:04d}"
        if name in seen:
            errors.append(f"{where}: id {name!r} is used twice. Fix: give every row its own id")
        seen.add(name)
        seed_text = (row.get("seed") or "").strip()
        row_seed = None
        if seed_text:
            try:
                row_seed = int(seed_text)
            except ValueError:
                errors.append(f"{where}: seed {seed_text!r} is not an integer")
            if row_seed is not None and not 0 <= row_seed <= SEED_MAX - per_prompt:
                errors.append(f"{where}: seed {seed_text} is out of range. Fix: use a seed from 0 to "
                              f"{SEED_MAX - per_prompt}")
                row_seed = None
        for k in range(per_prompt):
            seed = row_seed + k if row_seed is not None else base_seed + SEED_STRIDE * r + k
            cases.append(Case(name, k, seed, report))
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad row{'s' if len(errors) > 1 else ''}:\n  " + "\n  ".join(errors))
    return cases


def request_of(sidecar: dict) -> dict:
    """What a result was made from, as its sidecar records it: the fields a resumed batch must find unchanged."""
    settings = sidecar.get("settings") or {}
    return {"report": sidecar.get("report"), "seed": sidecar.get("seed"),
            "settings": {name: settings.get(name) for name in MODEL_KEYS},
            "lowres_only": sidecar.get("lowres_only"), "held_channels": sidecar.get("held_channels"),
            "model_sha256": (sidecar.get("model") or {}).get("sha256"),
            "dicom": "dicom" in (sidecar.get("files") or {})}


def _write_csv(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:  # replaced by its shard between listing and reading
        return []


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes."""
    with open(path, "a+", encoding="utf-8") as f:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class CaseFolders:
    """The state of each case's folder in ``out_dir`` against its request, and the manifest built from it.

    ``request(case)`` is what the case must have been made from (the shape of :func:`request_of`). Sidecars are
    re-read only when they change, so a merge after every case stays cheap for thousands of cases.
    """

    def __init__(self, out_dir: Path, cases: list[Case], request: Callable[[Case], dict]):
        self.out_dir, self.cases, self.request = Path(out_dir), cases, request
        self._sidecars: dict[str, tuple[tuple[int, int], dict]] = {}

    def sidecar(self, case: Case) -> dict | None:
        path = self.out_dir / case.folder / SIDECAR
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._sidecars.get(case.folder)
        if cached is None or cached[0] != key:
            cached = (key, json.loads(path.read_text(encoding="utf-8")))
            self._sidecars[case.folder] = cached
        return cached[1]

    def state(self, case: Case) -> str:
        """"done" (made from this request), "changed" (made from another) or "missing"."""
        sidecar = self.sidecar(case)
        if sidecar is None:
            return "missing"
        expected = json.loads(json.dumps(self.request(case)))
        return "done" if request_of(sidecar) == expected else "changed"

    def row(self, case: Case, status: str | None = None, error: str = "") -> dict:
        """The manifest row of ``case``: its folder as it is on disk (a changed case: the report and seed its files
        were made from), else ``status`` (pending / failed) and ``error``."""
        row = {"id": case.id, "k": case.k, "seed": case.seed, "report": case.report, "folder": case.folder,
               "ct": "", "segmentation": "", "status": status or "pending", "error": error}
        state = self.state(case)
        if state != "missing":
            sidecar = self.sidecar(case)
            files = sidecar.get("files", {})
            row.update(seed=sidecar.get("seed"), report=sidecar.get("report"), ct=files.get("ct", ""),
                       segmentation=files.get("segmentation", ""), status=state,
                       error="" if state == "done" else f"{CHANGED}; run with --redo-changed to make it again")
        return row

    def merge(self) -> list[dict]:
        """Rewrite ``manifest.csv`` (atomically, under a lock) from the folders on disk and the failures the
        shards recorded; returns its rows."""
        with _locked(self.out_dir / LOCK):
            failed = {}
            files = sorted((self.out_dir / SHARDS).glob("shard-*.csv"), key=lambda p: p.stat().st_mtime_ns)
            for path in files:  # newest last: a later run's record of a case wins
                for r in _read_csv(path):
                    failed[(r["folder"], r["report"], r["seed"])] = r["error"] if r["status"] == "failed" else None
            rows = []
            for case in self.cases:
                error = failed.get((case.folder, case.report, str(case.seed)))
                rows.append(self.row(case, "failed" if error else "pending", error or ""))
            _write_csv(self.out_dir / MANIFEST, rows)
        return rows


def is_batch_folder(folder: Path) -> bool:
    """Whether ``folder`` is a batch output this command wrote: its ``manifest.csv`` has the batch columns, or it
    holds the shards' records."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        with open(manifest, encoding="utf-8", errors="replace") as f:
            return f.readline().strip() == ",".join(COLUMNS)
    return (folder / SHARDS).is_dir() and all(p.name.startswith("shard-") for p in (folder / SHARDS).iterdir())


def claim_batch_folder(out_dir: Path, inputs=()) -> Path:
    """``out_dir`` checked before any work (:func:`~MedSynLib.io.files.check_collection_folder`): new, empty, or an
    earlier batch output (continued); never a folder holding an input (the prompts file included)."""
    return check_collection_folder(out_dir, is_batch_folder, inputs, what="batch output")


def run_batch(cases: list[Case], out_dir: Path, make: Callable[[Case], GenerationResult],
              write: Callable[[GenerationResult, Path, bool], Path], request: Callable[[Case], dict],
              shard: Shard = Shard(), redo_changed: bool = False,
              on_case: Callable[[int, int, Case, str, str], None] | None = None) -> list[dict]:
    """Generate every unfinished case of ``shard`` with ``make(case)`` and write it with ``write(result, folder,
    overwrite)`` (e.g. :func:`.outputs.write_result`, with or without DICOM); returns the shard's rows.

    ``request(case)``: what a finished case must have been made from (:func:`request_of`). Cases made from another
    request raise ValueError before anything is written, unless ``redo_changed``.
    ``on_case(position, count, case, status, error)`` (position in the shard's ``count`` cases) is called with
    status "running", "skipped", "done" or "failed". A ``ValueError`` fails only its case; anything else (cancel,
    out of memory) stops the shard, leaving finished cases, the shard's rows and the manifest in place.
    """
    out_dir = Path(out_dir)
    mine = shard.select(cases)
    folders = CaseFolders(out_dir, cases, request)
    changed = [c.folder for c in mine if folders.state(c) == "changed"] if out_dir.is_dir() else []
    if changed and not redo_changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise ValueError(f"{len(changed)} finished case{'s were' if len(changed) > 1 else ' was'} {CHANGED}: "
                         f"{shown}. Fix: restore the prompts and options of the first run, write to a new --out, "
                         "or add --redo-changed to make these cases again (their folders are replaced)")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)  # what killed runs left: marked partial folders whose process is gone
    rows = [folders.row(c) for c in mine]
    _write_csv(out_dir / shard.file, rows)
    folders.merge()
    notify = on_case or (lambda *a: None)
    for i, case in enumerate(mine):
        if rows[i]["status"] == "done":
            notify(i, len(mine), case, "skipped", "")
            continue
        notify(i, len(mine), case, "running", "")
        try:
            write(make(case), out_dir / case.folder, redo_changed)
            rows[i] = folders.row(case)
        except ValueError as exc:
            rows[i] = folders.row(case, "failed", str(exc))
        _write_csv(out_dir / shard.file, rows)
        folders.merge()
        notify(i, len(mine), case, rows[i]["status"], rows[i]["error"])
    return rows
