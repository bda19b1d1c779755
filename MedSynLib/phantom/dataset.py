"""Write a data set of phantoms: one folder per case plus ``manifest.csv`` (resumable, multi-process).

Layout (paths in the manifest are relative to the data set folder)::

    DIR/manifest.csv
    DIR/case_000000/ct.nii.gz       int16 HU
                    lobes.nii.gz    uint8 labels 0..5 (MedSynLib.io.codecs.LOBE_LABELS)
                    airway.nii.gz   uint8 {0,1} (airway lumen)
                    vessels.nii.gz  uint8 {0,1} (pulmonary vessels)
                    report.txt      '# SYNTHETIC ...' comment line, then FINDINGS / IMPRESSION
                    report_2.txt .. report_K.txt  paraphrases of report.txt (other templates), with
                                    ``report_variants=K``; the manifest lists them all, separated by ';'
                    truth.json      parameters and measurements, "synthetic": true

Geometry: spacing as requested, identity direction, origin at minus half the field of view (LPS), so the
image axes are x right->left, y anterior->posterior, z inferior->superior. Each case is written to a hidden
temporary folder and renamed when complete; finished cases are skipped on the next run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.manifest import REPORT_SEPARATOR, strip_comments
from ..io.files import atomic_write, check_collection_folder
from ..io import images
from .compose import SYNTHETIC_NOTE, Phantom, make_phantom
from .grid import Grid
from .measure import measure_all
from .report import phrase_pool, render_report

FILES = ("ct.nii.gz", "lobes.nii.gz", "airway.nii.gz", "vessels.nii.gz", "report.txt", "truth.json")
MANIFEST_COLUMNS = ("case_id", "ct", "lobes", "airway", "vessels", "report", "truth", "seed", "size", "spacing",
                    "age", "sex", "effusion_right_ml", "effusion_left_ml", "ctr", "cardiomegaly",
                    "emphysema_laa", "laa950_measured", "consolidation_lobes", "ggo_lobes", "n_nodules",
                    "synthetic")


REPORT_BANNER = "# SYNTHETIC MedSyn phantom - not a patient"
"""First line of every ``report.txt``; lines starting with '#' are comments (see :func:`read_report`)."""


def read_report(path) -> str:
    """The report text of a ``report.txt`` without its '#' comment lines (what a text encoder should see)."""
    return strip_comments(Path(path).read_text(encoding="utf-8")) + "\n"


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a data set with master seed ``seed`` (independent of the worker count)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def report_file(number: int) -> str:
    """File name of a case's report number ``number`` (1 = ``report.txt``, then ``report_2.txt``, ...)."""
    return "report.txt" if number == 1 else f"report_{number}.txt"


def case_reports(truth: dict, count: int) -> list[str]:
    """``count`` reports of a case's findings: ``report.txt``'s (rendered with the phantom's seed), then paraphrases
    drawn from the same templates (``truth["report_wording"]``) with seeds derived from it."""
    pool = phrase_pool(truth.get("report_wording", "all"))
    seeds = [int(truth["seed"])] + [case_seed(int(truth["seed"]), 1000 + k) for k in range(2, count + 1)]
    return [render_report(truth, seed=s, pool=pool) for s in seeds]


def _variant_numbers(folder: Path) -> list[int]:
    """Sorted numbers N of the case folder's ``report_N.txt`` paraphrases."""
    return sorted(int(m.group(1)) for p in folder.glob("report_*.txt")
                  if (m := re.fullmatch(r"report_(\d+)\.txt", p.name)))


def write_report_variants(folder: Path, count: int) -> None:
    """Give a written case exactly ``count`` report files (adds missing paraphrases from ``truth.json``, removes
    surplus ones); each file is written to a temporary name, then renamed."""
    present = _variant_numbers(folder)
    for number in present:
        if number > count:
            (folder / report_file(number)).unlink()
    if set(range(2, count + 1)) <= set(present):
        return
    truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    for number, text in enumerate(case_reports(truth, count)[1:], 2):
        path = folder / report_file(number)
        if not path.is_file():
            atomic_write(path, REPORT_BANNER + "\n" + text)


def to_image(arr: np.ndarray, grid: Grid) -> sitk.Image:
    """(z, y, x) array -> SimpleITK image with the phantom geometry."""
    return images.to_image(arr, grid.geometry)


def write_case(ph: Phantom, folder: Path, report: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("ct", ph.ct), ("lobes", ph.lobes), ("airway", ph.airway), ("vessels", ph.vessels)):
        images.write_image(to_image(arr, ph.grid), folder / f"{name}.nii.gz", description=SYNTHETIC_NOTE)
    (folder / "report.txt").write_text(REPORT_BANNER + "\n" + report, encoding="utf-8")
    (folder / "truth.json").write_text(json.dumps(ph.truth, indent=1, sort_keys=True), encoding="utf-8")


def make_case(index: int, out: str, size: int, spacing: float, seed: int, measure: bool = True,
              wording: str = "all") -> str:
    """Generate and write case ``index`` (atomic: temporary folder, then rename). Returns the case id.

    wording: which report templates to use (:data:`MedSynLib.phantom.report.WORDINGS`)."""
    cid = f"case_{index:06d}"
    final = Path(out) / cid
    if (final / "truth.json").exists():
        return cid
    s = case_seed(seed, index)
    ph = make_phantom(s, Grid.cube(size, spacing))
    sp = ph.grid.spacing_zyx
    if measure:
        ph.truth["measured"] = measure_all(ph.ct, sp, ph.lobes, ph.airway, ph.effusion)
    ph.truth["case_id"] = cid
    ph.truth["report_wording"] = wording
    report = render_report(ph.truth, seed=s, pool=phrase_pool(wording))
    ph.truth["report"] = report
    tmp = Path(out) / f".tmp-{cid}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_case(ph, tmp, report)
    try:
        os.rename(tmp, final)
    except OSError:  # another run finished it first
        shutil.rmtree(tmp, ignore_errors=True)
    return cid


def _row(folder: Path) -> dict:
    t = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    f = t["findings"]
    eff = t.get("effusion_ml_true", {})
    cid = folder.name
    return {
        "case_id": cid, "ct": f"{cid}/ct.nii.gz", "lobes": f"{cid}/lobes.nii.gz", "airway": f"{cid}/airway.nii.gz",
        "vessels": f"{cid}/vessels.nii.gz", "truth": f"{cid}/truth.json",
        "report": REPORT_SEPARATOR.join(f"{cid}/{report_file(n)}" for n in [1, *_variant_numbers(folder)]),
        "seed": t["seed"], "size": t["grid"]["shape_zyx"][2], "spacing": t["grid"]["spacing_xyz"][0],
        "age": t["age"], "sex": t["sex"], "effusion_right_ml": eff.get("right", 0.0),
        "effusion_left_ml": eff.get("left", 0.0), "ctr": f["ctr"], "cardiomegaly": int(t["cardiomegaly"]),
        "emphysema_laa": f["emphysema_laa"],
        "laa950_measured": t.get("measured", {}).get("laa950_percent", ""),
        "consolidation_lobes": ";".join(str(c["lobe"]) for c in f["consolidation"]),
        "ggo_lobes": ";".join(str(c["lobe"]) for c in f["ggo"]),
        "n_nodules": sum(1 for n in f["nodules"] if n.get("placed", True)), "synthetic": 1,
    }


def write_manifest(out: str) -> Path:
    """(Re)write ``manifest.csv`` from every complete case folder, sorted by case id."""
    outp = Path(out)
    rows = [_row(d) for d in sorted(outp.glob("case_*")) if (d / "truth.json").exists()]
    path = outp / "manifest.csv"
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, text.getvalue())
    return path


def is_phantom_set(folder: Path) -> bool:
    """Whether ``folder`` is a phantom data set this command wrote: its ``manifest.csv`` has the phantom columns,
    or (a run stopped before its manifest) it holds only case folders."""
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        with open(manifest, encoding="utf-8", errors="replace") as f:
            return f.readline().strip() == ",".join(MANIFEST_COLUMNS)
    return all(p.is_dir() and p.name.startswith(("case_", ".tmp-case_")) for p in folder.iterdir())


def _work(args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return make_case(*args)


@dataclass(frozen=True)
class DatasetSpec:
    """What a phantom data set holds: cases on a ``size``³ grid of ``spacing`` mm from ``seed``; ``measure`` also
    records each case's measured findings.

    wording "train" keeps the held-out report templates out of the data set, so that a model trained on it can be
    prompted with wordings it never saw (``phrase_pool("heldout")``). report_variants: reports per case (the first
    and ``report_variants - 1`` paraphrases in other templates of the same wording; cases already written get
    theirs added, so a data set can gain paraphrases without regenerating its images)."""

    size: int = 256
    spacing: float = 1.0
    seed: int = 0
    measure: bool = True
    wording: str = "all"
    report_variants: int = 1


def write_dataset(out: str, n: int, spec: DatasetSpec = DatasetSpec(), workers: int = 1, log=print) -> Path:
    """Write cases 0..n-1 of ``spec`` that are missing (``workers`` processes), then the manifest. Returns the
    manifest path."""
    size, spacing, seed, measure = spec.size, spec.spacing, spec.seed, spec.measure
    wording, report_variants = spec.wording, spec.report_variants
    phrase_pool(wording)  # validate before any work
    if report_variants < 1:
        raise ValueError(f"report_variants must be >= 1, got {report_variants}")
    if n < 1 or size < 16 or not spacing > 0:
        raise ValueError(f"need n >= 1, size >= 16 voxels and a spacing > 0 mm, got {n}, {size}, {spacing}")
    outp = check_collection_folder(out, is_phantom_set, what="phantom data set")
    outp.mkdir(parents=True, exist_ok=True)
    for stale in outp.glob(".tmp-case_*"):
        shutil.rmtree(stale, ignore_errors=True)
    todo = [i for i in range(n) if not (outp / f"case_{i:06d}" / "truth.json").exists()]
    if log:
        log(f"medsyn phantoms: {n - len(todo)} of {n} cases present, writing {len(todo)} to {outp} (SYNTHETIC)")
    jobs = [(i, str(outp), size, spacing, seed, measure, wording) for i in todo]
    t0 = time.time()
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            for k, cid in enumerate(pool.imap_unordered(_work, jobs), 1):
                if log:
                    log(f"  {cid} ({k}/{len(jobs)}, {time.time() - t0:.1f} s)")
    else:
        for k, j in enumerate(jobs, 1):
            cid = make_case(*j)
            if log:
                log(f"  {cid} ({k}/{len(jobs)}, {time.time() - t0:.1f} s)")
    for i in range(n):
        write_report_variants(outp / f"case_{i:06d}", report_variants)
    return write_manifest(out)
