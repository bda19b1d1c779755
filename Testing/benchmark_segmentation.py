"""Benchmark: `medsyn segment` on the clinical-like variant family of a phantom, and the generate -> segment round
trip on CTs a model generated. Prints a table of measured numbers (Markdown) and writes ``results.json``.

    PYTHONPATH=$PWD python Testing/benchmark_segmentation.py --work /tmp/bench [--variants 1mm table ...]
        [--round-trip OUT_DIR ...] [--model medsyn-demo]

Each variant CT is written (uncompressed NIfTI) and segmented by a separate `python -m MedSynLib segment` (the
code on PYTHONPATH, so an older checkout can be measured the same way), one case at a time. Lobe Dice is the mean
over the five lobes against the phantom's true lobes on the variant's grid; a refused case (non-zero exit) is
rerun with ``--force`` where the command has it, to show what the refusal kept from the user. Round trip (run
first): each ``OUT_DIR`` is a `medsyn generate` result; its CT is segmented with its report (as one segments a CT
whose findings are known) and compared with the generated lobes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ct_variants import VARIANTS, base_phantom, make_variant


def lobe_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over lobe labels 1..5."""
    out = []
    for k in range(1, 6):
        x, y = a == k, b == k
        s = int(x.sum()) + int(y.sum())
        out.append(1.0 if s == 0 else 2.0 * int((x & y).sum()) / s)
    return float(np.mean(out))


def segment(ct: Path, out: Path, model: str | None, force: bool = False, report: str | None = None) -> dict:
    """Run `medsyn segment`; exit code, wall and CPU seconds, the sidecar or error event, stderr's last line."""
    cmd = [sys.executable, "-m", "MedSynLib", "segment", "--ct", str(ct), "--out", str(out), "--progress", "json"]
    cmd += ["--model", model] if model else []
    cmd += ["--report", report] if report else []
    cmd += ["--force"] if force else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    run = {"exit": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
           "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
           "max_rss_gb_so_far": round(after.ru_maxrss / 2**20, 2),
           "stderr": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else ""}
    if proc.returncode == 0:
        run["sidecar"] = json.loads((out / "medsyn.json").read_text(encoding="utf-8"))
    elif events and events[-1].get("event") == "error":
        run["error"] = events[-1]
    return run


def _lobes_of(run_dir: Path) -> np.ndarray:
    sidecar = json.loads((run_dir / "medsyn.json").read_text(encoding="utf-8"))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / sidecar["files"]["lobes"])))


def _row(name: str, run: dict, dice: float | None, forced: float | None) -> dict:
    sidecar = run.get("sidecar", {})
    quality = sidecar.get("quality") or run.get("error", {}).get("quality") or {}
    placement = sidecar.get("placement", {})
    return {"case": name, "exit": run["exit"], "lobe_dice": dice, "lobe_dice_forced": forced,
            "gate_lung_dice": quality.get("lung_dice"), "gate_trachea_covered": quality.get("trachea_covered"),
            "lung_outside_ml": placement.get("lung_outside_ml"),
            "placement_s": sidecar.get("timings_s", {}).get("placement_s"), "wall_s": run["wall_s"],
            "cpu_s": run["cpu_s"],
            "max_rss_gb_so_far": run["max_rss_gb_so_far"], "message": "" if run["exit"] == 0 else run["stderr"]}


def _print(row: dict) -> None:
    f = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))  # noqa: E731
    print(f"| {row['case']} | {row['exit']} | {f(row['lobe_dice'])} | {f(row['lobe_dice_forced'])} | "
          f"{f(row['gate_lung_dice'])} | {f(row['gate_trachea_covered'])} | {f(row['lung_outside_ml'], 0)} | "
          f"{f(row['placement_s'], 1)} | {row['wall_s']:.0f} / {row['cpu_s']:.0f} | {row['message'][:120]} |",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (CTs and results are written here)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--round-trip", nargs="*", type=Path, default=[], metavar="OUT_DIR",
                        help="`medsyn generate` result folders to segment")
    parser.add_argument("--model", default=None, help="model (default: the packaged demo model)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| case | exit | lobe Dice | lobe Dice with --force | gate lung Dice | gate trachea covered | "
          "lung outside box (mL) | placement s | wall / CPU s | message |\n" + "|---" * 10 + "|", flush=True)
    for run_dir in args.round_trip:
        sidecar = json.loads((run_dir / "medsyn.json").read_text(encoding="utf-8"))
        out = args.work / f"roundtrip_{run_dir.name}"
        ct, report, truth = run_dir / sidecar["files"]["ct"], sidecar["report"], _lobes_of(run_dir)
        run = segment(ct, out, args.model, report=report)
        dice = lobe_dice(_lobes_of(out), truth) if run["exit"] == 0 else None
        forced = None
        if run["exit"] == 4:
            forced_run = segment(ct, out.with_name(out.name + "_forced"), args.model, force=True, report=report)
            forced = lobe_dice(_lobes_of(out.with_name(out.name + "_forced")), truth) if forced_run["exit"] == 0 \
                else None
        rows.append(_row(f"round trip {run_dir.name}", run, dice, forced))
        _print(rows[-1])
    if args.variants:
        t0 = time.perf_counter()
        base = base_phantom(args.seed, 1.0)
        print(f"<!-- base phantom {time.perf_counter() - t0:.0f} s -->", flush=True)
        for name in args.variants:
            variant = make_variant(base, name, 1.0)
            folder = args.work / name
            folder.mkdir(exist_ok=True)
            sitk.WriteImage(variant.ct, str(folder / "ct.nii"), useCompression=False)
            truth = sitk.GetArrayFromImage(variant.lobes)
            del variant
            run = segment(folder / "ct.nii", folder / "seg", args.model)
            dice = lobe_dice(_lobes_of(folder / "seg"), truth) if run["exit"] == 0 else None
            forced = None
            if run["exit"] == 4:
                forced_run = segment(folder / "ct.nii", folder / "seg_forced", args.model, force=True)
                forced = lobe_dice(_lobes_of(folder / "seg_forced"), truth) if forced_run["exit"] == 0 else None
            rows.append(_row(f"{name} {tuple(sitk.ReadImage(str(folder / 'ct.nii')).GetSize())}", run, dice,
                             forced))
            _print(rows[-1])
            (folder / "ct.nii").unlink()
    (args.work / "results.json").write_text(json.dumps({"python_path": os.environ.get("PYTHONPATH"),
                                                        "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
