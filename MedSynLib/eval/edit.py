"""Editing benchmark: a finding written into a region of held-out phantoms, and nothing changed outside it.

    python -m MedSynLib.eval.edit --model medsyn-demo --seeds 8 --lowres-only --json edit.json

Held-out phantoms (seeds 900000 + i, never in the demo's training set) without effusion or nodules, 2 mm grid:

- Effusion: region = the dependent pleural space of the right side (:func:`~MedSynLib.phantom.regions.
  dependent_pleural_space`); report "large right pleural effusion" vs "no pleural effusion"; right effusion volume
  (mL, :func:`~MedSynLib.phantom.measure.effusion_volume` on the edited CT, lungs = input lobes outside the region
  and generated lobes inside).
- Nodule: region = a ball in a lobe (:func:`~MedSynLib.phantom.regions.ball_in_lobe`); report "a N mm solid
  nodule in that lobe" vs "no nodules"; solid tissue (> -300 HU) inside the region, mL.
- Both: voxels changed outside the region (must be 0), and the seam: mean |HU step| over voxel pairs k voxels apart
  along an axis (k = the blend margin + 1 voxel) that cross the region's border, against the same measure on pairs
  inside the region (beyond the blend) and on the crossing pairs of the unedited CT; without and with RePaint
  resampling (``--resamples``).

Each run uses the model's default sampler and steps. This is a benchmark that prints measured numbers, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time

import numpy as np

from .. import arguments
from ..io.codecs import LOBE_LABELS
from ..io.files import atomic_write
from ..io.images import to_image
from ..modelstore.bundle import load_model
from ..modelstore.registry import resolve_model
from ..phantom import Grid
from ..phantom import make_phantom
from ..phantom import measure
from ..phantom.regions import ball_in_lobe, dependent_pleural_space
from ..phantom.report import phrase_pool, prompt_truth, render_report
from ..pipelines.edit import EditOptions, edit
from ..run_settings import PRECISIONS, RunSettings
from ..runtime import resolve_device, resolve_precision
from .conditioning import _summary, permutation_p
from ..errors import run_guarded

SOLID_HU = -300.0


def reports(nodule_lobe: int, nodule_mm: float) -> dict[str, tuple[str, str]]:
    """(with the finding, without) per task, in the report templates held out of the demo's training."""
    pool = phrase_pool("heldout")

    def say(**findings):
        return render_report(prompt_truth(**findings), seed=0, pool=pool, header=False).strip()

    return {"effusion": (say(effusion="large right"), say()),
            "nodule": (say(nodule=(nodule_lobe, nodule_mm)), say())}


def seam(edited: np.ndarray, original: np.ndarray, region: np.ndarray, lag: int) -> dict[str, float]:
    """Mean |HU step| over voxel pairs ``lag`` apart along each axis: ``border`` (one voxel outside the region, the
    other inside it at least ``lag`` - 1 voxels deep, on the edited CT), ``inside`` (both that deep inside, edited
    CT) and ``border_input`` (the border pairs on the unedited CT)."""
    edited, original = edited.astype(np.float32), original.astype(np.float32)
    deep = region.copy()
    for axis in range(3):  # erode by lag - 1 voxels along every axis
        for shift in range(1, lag):
            for sign in (1, -1):
                deep &= np.roll(region, sign * shift, axis) if region.shape[axis] > shift else False
    sums = {"border": [0.0, 0], "inside": [0.0, 0], "border_input": [0.0, 0]}
    for axis in range(3):
        n = region.shape[axis]
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, n - lag), slice(lag, n)
        a, b = tuple(a), tuple(b)
        step = np.abs(edited[a] - edited[b])
        step_input = np.abs(original[a] - original[b])
        cross = (~region[a] & deep[b]) | (deep[a] & ~region[b])
        inner = deep[a] & deep[b]
        for key, values, where in (("border", step, cross), ("inside", step, inner),
                                   ("border_input", step_input, cross)):
            sums[key][0] += float(values[where].sum())
            sums[key][1] += int(where.sum())
    return {k: (s / n if n else float("nan")) for k, (s, n) in sums.items()}


def paired_p_lower(a: list[float], b: list[float]) -> float:
    """One-sided p-value for mean(a - b) < 0 over paired values (exact sign-flip permutation test)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean((signs * d).mean(1) <= d.mean() + 1e-12))


def _case(index: int, grid: Grid):
    return make_phantom(seed=900000 + index, grid=grid, effusion="none", nodules=0)


def run_task(task: str, model, cases: list, prompts, seeds: list[int], resamples: list[int], settings: RunSettings,
             log) -> dict:
    """One task's rows: the edits of ``cases`` ((phantom, region) pairs; seed i edits case i mod their number)
    with the finding's report (once per RePaint count in ``resamples``) and without it, ``settings`` with each of
    ``seeds``."""
    spacing = cases[0][0].grid.spacing_zyx
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = {}
    for label, report, r in [("with", prompts[0], 0)] + [("with", prompts[0], k) for k in resamples if k] + \
            [("without", prompts[1], 0)]:
        key = f"{label}_r{r}"
        values, changed, seams, times = [], [], [], []
        for seed in seeds:
            ph, region = cases[seed % len(cases)]
            geometry = ph.grid.geometry
            keep = {"lobes": to_image(ph.lobes, geometry)}
            t0 = time.perf_counter()
            result = edit(to_image(ph.ct, geometry), to_image(region, geometry), report, model,
                          settings.replace(seed=seed), options=EditOptions(keep=keep, resamples=r))
            times.append(time.perf_counter() - t0)
            inside = region > 0
            changed.append(int((result.ct[~inside] != ph.ct[~inside]).sum()))
            ct = result.ct.astype(np.float32)
            if task == "effusion":
                lungs = np.where(inside, result.lobes, ph.lobes) > 0
                values.append(measure.effusion_volume(ct, spacing, lungs.astype(np.uint8))["right"])
            else:
                values.append(float((ct[inside] > SOLID_HU).sum()) * voxel_ml)
            lag = int(math.ceil(result.metadata["blend_mm"] / min(spacing))) + 1
            seams.append(seam(result.ct, ph.ct, inside, lag))
        rows[key] = {"report": report, "resamples": r, "value": _summary(values),
                     "changed_outside": changed, "seam": {k: _summary([s[k] for s in seams]) for k in seams[0]},
                     "seconds_per_edit": float(np.median(times))}
        log(f"{task} {key}: {np.mean(values):.2f} (changed outside: {max(changed)}), seam "
            f"{rows[key]['seam']['border']['mean']:.1f} vs inside {rows[key]['seam']['inside']['mean']:.1f} "
            f"vs input {rows[key]['seam']['border_input']['mean']:.1f} HU, {np.median(times):.1f} s per edit")
    plain = rows["with_r0"]["seam"]["border"]["values"]
    for k in (k for k in resamples if k):
        resampled = rows[f"with_r{k}"]["seam"]["border"]["values"]
        rows[f"seam_r{k}_vs_r0"] = {"mean_difference_hu": float(np.mean(resampled) - np.mean(plain)),
                                    "lower_in": int(sum(r < p for r, p in zip(resampled, plain))), "of": len(plain),
                                    "p_one_sided": paired_p_lower(resampled, plain)}
    with_, without = rows["with_r0"]["value"]["values"], rows["without_r0"]["value"]["values"]
    rows["ratio"] = float(np.mean(with_) / max(np.mean(without), 1e-6))
    rows["p_one_sided"] = permutation_p(with_, without)
    if task == "effusion":
        rows["input_value"] = _summary([measure.effusion_volume(p.ct.astype(np.float32), spacing, p.lobes)["right"]
                                        for p in phantoms])
    else:
        rows["input_value"] = _summary([float((p.ct[r > 0] > SOLID_HU).sum()) * voxel_ml
                                        for p, r in zip(phantoms, regions)])
    return rows


def markdown(result: dict) -> str:
    res = "64³ low-res (4 mm)" if result["lowres_only"] else "256³ (1 mm)"
    lines = [f"`python -m MedSynLib.eval.edit` on `{result['model']}`, {len(result['seeds'])} seeds over "
             f"{result['cases']} held-out phantoms ({result['phantom_grid']}), generated at {res}, pasted back "
             f"at 2 mm, {result['precision']}; mean ± sd; one-sided permutation test, finding vs no finding, "
             f"without resampling."]
    for task, measure_name in (("effusion", "right effusion volume (mL)"),
                               ("nodule", f"solid tissue > {SOLID_HU:.0f} HU in the region (mL)")):
        if task not in result:
            continue
        t = result[task]
        lines += ["", f"**{result['task_titles'][task]}** (input phantoms: {t['input_value']['mean']:.1f} "
                      f"± {t['input_value']['sd']:.1f}; ratio with / without {t['ratio']:.1f}×, "
                      f"p = {t['p_one_sided']:.4f})", "",
                  f"| report | resamples | {measure_name} | voxels changed outside | seam step (HU) | "
                  "inside step (HU) | input step (HU) | s / edit |", "|---|---|---|---|---|---|---|---|"]
        for key, row in t.items():
            if not isinstance(row, dict) or "resamples" not in row:
                continue
            s = row["seam"]
            lines.append(f"| {key.split('_')[0]} the finding | {row['resamples']} | {row['value']['mean']:.1f} ± "
                         f"{row['value']['sd']:.1f} | {max(row['changed_outside'])} | {s['border']['mean']:.1f} ± "
                         f"{s['border']['sd']:.1f} | "
                         f"{s['inside']['mean']:.1f} ± {s['inside']['sd']:.1f} | {s['border_input']['mean']:.1f} | "
                         f"{row['seconds_per_edit']:.1f} |")
        for key, row in t.items():
            if key.startswith("seam_r"):
                k = key[len("seam_r"):].split("_")[0]
                lines += ["", f"Seam with {k} resamples minus without, same seeds: {row['mean_difference_hu']:+.1f} HU, "
                              f"lower in {row['lower_in']} of {row['of']} (one-sided paired p = "
                              f"{row['p_one_sided']:.3f})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedSynLib.eval.edit", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--seeds", type=arguments.count(1), default=8)
    p.add_argument("--cases", type=arguments.count(1), default=4, help="held-out phantoms (seed i edits phantom i mod cases)")
    p.add_argument("--resamples", type=arguments.count(0, 100), nargs="+", default=[0, 2],
                   help="RePaint resampling counts to compare on the finding's report")
    p.add_argument("--nodule-lobe", type=int, default=5, choices=sorted(LOBE_LABELS))
    p.add_argument("--nodule-mm", type=arguments.millimetres, default=16.0)
    p.add_argument("--device", type=arguments.device, default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="as for medsyn edit (auto: bf16 on CPUs "
                   "with AMX-BF16, fp32 on other CPUs)")
    p.add_argument("--lowres-only", action="store_true", default=None,
                   help="generate at 64³ (4 mm; about 5 s per edit on a CPU)")
    p.add_argument("--tasks", nargs="+", choices=("effusion", "nodule"), default=["effusion", "nodule"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    settings = RunSettings.from_args(args)
    device = resolve_device(settings.device)
    model = load_model(resolve_model(args.model), device, load_superres=not settings.lowres_only)
    grid = Grid.cube(128, 2.0)
    seeds = list(range(args.seeds))
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    phantoms = [_case(i, grid) for i in range(args.cases)]
    prompts = reports(args.nodule_lobe, args.nodule_mm)
    lobe = LOBE_LABELS[args.nodule_lobe]
    precision = str(resolve_precision(settings.precision, device)).replace("torch.", "")
    result = {"model": model.name, "lowres_only": settings.lowres_only, "precision": precision, "seeds": seeds,
              "cases": args.cases, "phantom_grid": "128³ at 2 mm", "prompts": prompts,
              "task_titles": {"effusion": "Large right pleural effusion in the right dependent pleural space",
                              "nodule": f"{args.nodule_mm:.0f} mm nodule in a {args.nodule_mm:.0f} mm-radius ball "
                                        f"in the {lobe}"}}
    if "effusion" in args.tasks:
        regions = [dependent_pleural_space(ph, "right") for ph in phantoms]
        result["effusion"] = run_task("effusion", model, list(zip(phantoms, regions)), prompts["effusion"], seeds,
                                      args.resamples, settings, log)
    if "nodule" in args.tasks:
        regions = [ball_in_lobe(ph, args.nodule_lobe, args.nodule_mm)[0] for ph in phantoms]
        result["nodule"] = run_task("nodule", model, list(zip(phantoms, regions)), prompts["nodule"], seeds,
                                    args.resamples, settings, log)
    result["wall_s"] = time.perf_counter() - t0
    print(markdown(result))
    print(f"wall time {result['wall_s']:.0f} s")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
