"""Conditioning benchmark mirroring the paper's Tables II-V, with the phantom measurement functions.

    python -m MedSynLib.eval --model medsyn-demo --seeds 8 --json eval.json [--lowres-only] [--prompts paraphrase]

- Table II: pleural effusion volume (mL, from the CT alone), "large bilateral effusions" vs "no effusion".
- Table III: cardiothoracic ratio, cardiomegaly vs normal heart size.
- Table IV: %LAA-950 inside the lungs, emphysema vs no emphysema.
- Table V: anatomy-conditioned generation (lobes + airway of held-out phantoms held): Dice of the generated lung
  region (air-density voxels inside the body on the generated CT, :func:`air_inside_body`) to the held lobes;
  and fixed-CT segmentation of held-out phantoms: mean lobe Dice and airway Dice, with and without the report.

Prompts use only report templates held out of the demo's training reports (:func:`finding_prompts`; the demo
data set is written with ``wording="train"``); ``--prompts train`` asks the same in training templates and
``--prompts paraphrase`` in free wording. Each comparison reports mean ± sd over the seeds and a one-sided
permutation test (exact for small groups, else 20,000 permutations), so no statistics package is needed. This is
a benchmark that prints measured numbers, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io.files import atomic_write
from ..io.images import to_image
from ..modelstore.bundle import load_model
from ..modelstore.registry import resolve_model
from ..phantom import Grid
from ..phantom import make_phantom
from ..phantom import measure
from ..phantom.report import phrase_pool, prompt_truth, render_report
from ..pipelines import generate, segment
from .. import arguments
from ..run_settings import PRECISIONS, RunSettings
from ..runtime import resolve_device, resolve_precision
from ..errors import run_guarded

PARAPHRASES = {
    "effusion": ("FINDINGS: Both pleural spaces are filled by large dependent fluid collections with adjacent "
                 "collapse of the lower lobes. IMPRESSION: Large pleural fluid collections on both sides.",
                 "FINDINGS: The pleural spaces are clear, without fluid. Lungs are well aerated. IMPRESSION: No "
                 "pleural fluid."),
    "cardiomegaly": ("FINDINGS: Marked enlargement of the cardiac silhouette. Lungs are clear. IMPRESSION: Enlarged "
                     "heart.",
                     "FINDINGS: Cardiac size is normal. Lungs are clear. IMPRESSION: Normal heart size."),
    "emphysema": ("FINDINGS: Extensive centrilobular and paraseptal lucencies with large apical bullae. "
                  "IMPRESSION: Advanced emphysematous destruction of the lungs.",
                  "FINDINGS: Normal lung attenuation without lucencies or bullae. IMPRESSION: No emphysematous "
                  "change."),
}
"""Free paraphrases with words the phantom reports never use ("fluid collections", "lucencies"): a text encoder
trained from scratch on phantom reports has never seen them and can go only by the words around them (measured in
docs/evaluation.md)."""


def finding_prompts(wording: str = "heldout") -> dict[str, tuple[str, str]]:
    """(with the finding, without) per table, written only with the report templates of ``wording``: by default
    the held-out half (``phrase_pool("heldout")``), the phantom vocabulary in sentences a model trained on "train"
    wordings never saw; ``wording="train"`` asks the same in training templates (to tell text from image failures).
    """
    pool = phrase_pool(wording)

    def say(**findings):
        return render_report(prompt_truth(**findings), seed=0, pool=pool, header=False).strip()

    return {"effusion": (say(effusion="large bilateral"), say()),
            "cardiomegaly": (say(cardiomegaly=True), say()),
            "emphysema": (say(emphysema="severe"), say())}


ANATOMY_PHANTOM_SEED = 900000
"""Case ``i`` of the anatomy and segmentation benchmark is the phantom of seed ``ANATOMY_PHANTOM_SEED + i``: a
fixed set, apart from training data (whose cases take 32-bit seeds drawn from their master seed, ``case_seed``)."""
PROMPT_SETS = {"heldout": finding_prompts, "train": lambda: finding_prompts("train"), "paraphrase": lambda: PARAPHRASES}


def permutation_p(a: list[float], b: list[float], rounds: int = 20000, seed: int = 0) -> float:
    """One-sided p-value for mean(a) > mean(b) (exact when the groups are small)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled, n = np.concatenate([a, b]), len(a)
    observed = a.mean() - b.mean()
    total = len(pooled)
    if total <= 16:
        splits = [np.array(c) for c in itertools.combinations(range(total), n)]
    else:
        rng = np.random.default_rng(seed)
        splits = [rng.permutation(total)[:n] for _ in range(rounds)]
    hits = 0
    for idx in splits:
        mask = np.zeros(total, bool)
        mask[idx] = True
        hits += pooled[mask].mean() - pooled[~mask].mean() >= observed - 1e-12
    return hits / len(splits)


def _finite(values: list[float]) -> list[float]:
    return [float(v) for v in values if np.isfinite(v)]


def _summary(values: list[float]) -> dict:
    """mean ± sd of the finite values; ``unmeasurable`` counts results the measurement could not read (NaN)."""
    ok = _finite(values)
    return {"mean": float(np.mean(ok)) if ok else float("nan"),
            "sd": float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0,
            "n": len(ok), "unmeasurable": len(values) - len(ok), "values": [float(v) for v in values]}


def _measure(result) -> dict:
    """Effusion, CTR and %LAA-950 of a generated result, on its binary lung mask (split into sides at the midline).

    The lung mask, not the lobe labels: the measurements then do not depend on how lobe labels are assigned inside
    the lungs (:func:`MedSynLib.io.lobes.majority_lobes` never changes the lungs' extent; specks of lung outside
    them are already gone, :func:`MedSynLib.io.lobes.drop_lobe_islands`).
    """
    spacing = tuple(reversed(result.geometry.spacing))
    ct, lungs = result.ct_hu.astype(np.float32), (result.lobes > 0).astype(np.uint8)
    return {"effusion_ml": measure.effusion_volume(ct, spacing, lungs)["total"],
            "ctr": measure.cardiothoracic_ratio(lungs, spacing, ct)["ctr"],
            "laa950": measure.laa950(ct, lungs, result.airway)}


def air_inside_body(ct_hu: np.ndarray, air_hu: float = -400.0) -> np.ndarray:
    """The lung region of a CT (z, y, x) in HU: air-density voxels enclosed by the body on their axial slice.

    Per slice, so that a trachea leaving the top of the volume (or a thin leak in a generated body wall on
    another slice) does not join the lungs to the air outside the patient. Main airways are included.
    """
    air = np.asarray(ct_hu) < air_hu
    inside = np.zeros_like(air)
    for z, plane in enumerate(air):
        body = sitk.BinaryFillhole(sitk.GetImageFromArray((~plane).astype(np.uint8)))
        inside[z] = plane & (sitk.GetArrayViewFromImage(body) > 0)
    return inside


def compare_prompts(model, prompts: dict, seeds: list[int], settings: RunSettings, log) -> dict:
    """Tables II-IV: each finding's measure on the CTs generated for its prompt and for the prompt without it,
    ``settings`` with each of ``seeds``."""
    tables = {}
    for name, key in (("effusion", "effusion_ml"), ("cardiomegaly", "ctr"), ("emphysema", "laa950")):
        groups = []
        for prompt in prompts[name]:
            values = []
            for seed in seeds:
                values.append(_measure(generate(prompt, model, settings=settings.replace(seed=seed)))[key])
            groups.append(values)
        tables[name] = {"measure": key, "with_finding": _summary(groups[0]), "without": _summary(groups[1]),
                        "p_one_sided": permutation_p(_finite(groups[0]), _finite(groups[1]))
                        if _finite(groups[0]) and _finite(groups[1]) else float("nan"),
                        "ratio": float(np.mean(groups[0]) / max(np.mean(groups[1]), 1e-6))}
        log(f"{name}: {tables[name]['with_finding']['mean']:.3f} vs {tables[name]['without']['mean']:.3f} "
            f"(p = {tables[name]['p_one_sided']:.4f})")
    return tables


def anatomy_and_segmentation(model, seeds: list[int], cases: int, settings: RunSettings, log) -> dict:
    """Table V on ``cases`` held-out phantoms: generation with their lobes and airway held, and segmentation of
    their CTs without and with their report (``settings`` with the seeds in turn)."""
    grid = model.lowres_grid if settings.lowres_only else model.grid
    spacing = grid.spacing[0]
    held_dice, seg_lobe, seg_lobe_report, seg_airway = [], [], [], []
    no_finding = finding_prompts()["effusion"][1]
    for i in range(cases):
        ph = make_phantom(seed=ANATOMY_PHANTOM_SEED + i, grid=Grid.cube(grid.size[0], spacing))
        geometry = ph.grid.geometry
        lobes_img, airway_img = to_image(ph.lobes, geometry), to_image(ph.airway, geometry)
        seeded = settings.replace(seed=seeds[i % len(seeds)])
        result = generate(no_finding, model, {"lobes": lobes_img, "airway": airway_img}, seeded)
        held = sitk.GetArrayFromImage(sitk.Resample(lobes_img, result.geometry.reference())) > 0
        held_dice.append(measure.dice(air_inside_body(result.ct_hu), held))
        ct_img = to_image(ph.ct, geometry)
        report_text = render_report(ph.truth, seed=i, pool=phrase_pool("heldout"))
        for report, bucket in ((None, seg_lobe), (report_text, seg_lobe_report)):
            seg = segment(ct_img, model, report, seeded)
            bucket.append(float(np.mean([measure.dice(seg.lobes, ph.lobes, k) for k in range(1, 6)])))
            if report is None:
                seg_airway.append(measure.dice(seg.airway, ph.airway))
        log(f"held-out phantom {i}: lung Dice {held_dice[-1]:.3f}, lobe Dice {seg_lobe[-1]:.3f} "
            f"(with report {seg_lobe_report[-1]:.3f}), airway Dice {seg_airway[-1]:.3f}")
    return {"anatomy_conditioned_lung_dice": _summary(held_dice), "segmentation_lobe_dice": _summary(seg_lobe),
            "segmentation_lobe_dice_with_report": _summary(seg_lobe_report),
            "segmentation_airway_dice": _summary(seg_airway)}


def _pm(s: dict, digits: int) -> str:
    if not s["n"]:
        return f"unmeasurable ({s['unmeasurable']} of {s['unmeasurable']})"
    text = f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"
    return text + (f" ({s['unmeasurable']} of {s['n'] + s['unmeasurable']} unmeasurable)" if s["unmeasurable"] else "")


def markdown_table(result: dict) -> str:
    """The benchmark as a Markdown section (for docs/evaluation.md and the model card)."""
    res = "64³ low-res results" if result["lowres_only"] else "256³ results"
    lines = [_section_title(result), "",
             f"`python -m MedSynLib.eval` on `{result['model']}`: {len(result['seeds'])} seeds per prompt, "
             f"{result['prompt_set']} prompts, guidance {result.get('guidance', 'default')}, "
             f"{result.get('precision', 'float32')}, measured on the {res}; "
             "mean ± sd, one-sided permutation test."]
    tables = result.get("tables_II_IV")
    if tables:
        lines += ["", "| table | with the finding | without | ratio | p |", "|---|---|---|---|---|"]
        for name, label, digits in (("effusion", "II effusion volume (mL, from the CT)", 0),
                                    ("cardiomegaly", "III cardiothoracic ratio", 3), ("emphysema", "IV %LAA-950", 1)):
            t = tables[name]
            lines.append(f"| {label} | {_pm(t['with_finding'], digits)} | {_pm(t['without'], digits)} | "
                         f"{t['ratio']:.2f} | {t['p_one_sided']:.4f} |")
    v = result.get("table_V")
    if v:
        n = v["segmentation_lobe_dice"]["n"]
        lines += ["", f"| Table V ({n} held-out phantoms) | Dice |", "|---|---|",
                  f"| lung region of the generated CT vs the held lobes (lobes + airway held) | "
                  f"{_pm(v['anatomy_conditioned_lung_dice'], 2)} |",
                  f"| fixed-CT segmentation, mean lobe Dice, no report | {_pm(v['segmentation_lobe_dice'], 2)} |",
                  f"| fixed-CT segmentation, mean lobe Dice, with the report | "
                  f"{_pm(v['segmentation_lobe_dice_with_report'], 2)} |",
                  f"| fixed-CT segmentation, airway Dice | {_pm(v['segmentation_airway_dice'], 2)} |"]
    return "\n".join(lines) + "\n"


def _tables(result: dict) -> str:
    return {(True, True): "II-V", (True, False): "II-IV", (False, True): "V"}[
        ("tables_II_IV" in result, "table_V" in result)]


def _tag(result: dict) -> str:
    res = "lowres" if result["lowres_only"] else "full"
    return f"eval_{res}_{result['prompt_set']}_tables{_tables(result)}_{len(result['seeds'])}seeds"


def _section_title(result: dict) -> str:
    res = "64³ low-res" if result["lowres_only"] else "256³"
    tables = _tables(result)
    label = f"Table{'s' if '-' in tables else ''} {tables}"
    return f"## Conditioning benchmark, {label}: {res}, {result['prompt_set']} prompts"


def write_to_card(folder: Path, result: dict) -> Path:
    """Put ``result`` beside a model folder's MODEL_CARD.md (as JSON) and its table into the card: in place of the
    section of an earlier run of the same kind (resolution, prompt set), else after the card's other evaluation
    sections (before *Limitations* and *Citation* where the card has them); files are replaced atomically."""
    folder = Path(folder)
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        raise FileNotFoundError(f"{folder} has no MODEL_CARD.md; give the folder of a packaged model")
    tag, title = _tag(result), _section_title(result)
    section = (markdown_table(result) + f"\nNumbers: `{tag}.json`.\n").removeprefix("## ")
    sections = [part.rstrip() + "\n" for part in card.read_text(encoding="utf-8").rstrip().split("\n## ")]
    titles = ["## " + part.split("\n")[0] for part in sections]
    if title in titles:
        sections[titles.index(title)] = section
    else:
        after = [i for i, t in enumerate(titles) if t in ("## Limitations", "## Citation")]
        sections.insert(after[0] if after else len(sections), section)
    text = "\n## ".join(sections)
    for path, content in ((folder / f"{tag}.json", json.dumps(result, indent=2)), (card, text)):
        atomic_write(path, content)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedSynLib.eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--seeds", type=arguments.count(1), default=8)
    p.add_argument("--cases", type=arguments.count(1), default=4, help="held-out phantoms for Table V")
    p.add_argument("--device", type=arguments.device, default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--guidance", type=arguments.guidance, default=None,
                   help="classifier-free guidance (default: the model's)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="as for medsyn generate (auto: bf16 on "
                   "CPUs with AMX-BF16, fp32 on other CPUs; the model card's tables were measured in fp32)")
    p.add_argument("--lowres-only", action="store_true", default=None, help="measure the 64³ results (faster)")
    p.add_argument("--prompts", choices=sorted(PROMPT_SETS), default="heldout",
                   help="heldout: phantom vocabulary in report templates held out of training (default); "
                        "train: the same prompts in training templates; "
                        "paraphrase: free wording with words the phantom reports never use")
    p.add_argument("--skip-anatomy", action="store_true", help="only Tables II-IV (prompts)")
    p.add_argument("--skip-prompts", action="store_true", help="only Table V (anatomy and segmentation)")
    p.add_argument("--json", default=None)
    p.add_argument("--card", type=Path, default=None,
                   help="model folder: write the JSON beside its MODEL_CARD.md and the table into the card")
    args = p.parse_args(argv)
    settings = RunSettings.from_args(args)
    device = resolve_device(settings.device)
    model = load_model(resolve_model(args.model), device, load_superres=not settings.lowres_only)
    settings = settings.resolved(model)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)  # noqa: E731
    prompts = PROMPT_SETS[args.prompts]()
    precision = str(resolve_precision(settings.precision, device)).replace("torch.", "")
    result = {"model": model.name, "lowres_only": settings.lowres_only, "seeds": seeds, "prompt_set": args.prompts,
              "guidance": settings.guidance, "precision": precision, "prompts": prompts}
    if not args.skip_prompts:
        result["tables_II_IV"] = compare_prompts(model, prompts, seeds, settings, log)
    if not args.skip_anatomy:
        result["table_V"] = anatomy_and_segmentation(model, seeds, args.cases, settings, log)
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps({k: v for k, v in result.items() if k != "prompts"}, indent=1))
    print(markdown_table(result))
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    if args.card:
        write_to_card(args.card, result)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
