"""Train and package the demo model from scratch, on phantoms, with this project's own training code.

    python -m MedSynLib.train.demo --work runs/demo --package Resources/Models/medsyn-demo

One command, resumable across runs (phantoms already written are kept, every training stage resumes from its
checkpoint): phantoms -> report text encoder -> low-res stage -> super-resolution stage -> model folder with a model
card. Budgets (cases, steps) are options; the defaults are what the packaged demo model used.
The demo networks are sized for a 2-core CPU: both use ``patch`` (space-to-depth) so that the 256³ stage runs on a
64³ grid. The result is trained on SYNTHETIC phantoms and is not a clinical model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import arguments
from ..modelstore.package import ModelCard, ModelParts
from ..phantom import Grid
from ..recipes import DEMO_OPTIMISATION, RECIPES
from ..phantom.dataset import DatasetSpec, write_dataset
from .demo_card_template import DEMO_CARD_NOTES
from .diffusion import DiffusionTrainer, TrainConfig
from .package import log_summary, package_training_outputs
from .text_encoder import train_text_encoder
from ..errors import run_guarded

GRID = Grid.cube(256, 1.0).geometry  # the phantoms' own grid
_TEXT_RECIPE, _LOWRES_RECIPE, _SR_RECIPE = (RECIPES[f"demo-{part}"] for part in ("text", "lowres", "sr"))
TEXT = {k: _TEXT_RECIPE[k] for k in ("vocab_size", "hidden", "layers", "heads", "batch_size", "max_length", "lr")}
LOWRES_UNET = _LOWRES_RECIPE["unet"]
SUPERRES_UNET = _SR_RECIPE["unet"]
LOWRES_TRAIN = {k: _LOWRES_RECIPE[k] for k in ("batch_size", "lr", "lr_schedule", "warmup_steps", "preview_every")}
SUPERRES_TRAIN = {k: _SR_RECIPE[k] for k in ("crop", "batch_size", "lr")}
"""The demo's networks and optimisation: the ``demo-*`` recipes of :mod:`MedSynLib.recipes` (one copy)."""
LOWRES_PHASES = (10000,)
"""The low-res stage trains in phases: a run to 10,000 steps (warm-up, then a cosine decay to 0.1 lr at step
10,000), then the same run resumed with the full budget (``--lowres-steps``), whose learning rate follows the
cosine of that budget from step 10,000 on. A phase at or above the budget is skipped."""
SAMPLING = {"steps_lowres": 12, "steps_sr": 2, "guidance": 2.0, "sampler": "dpmpp2m"}
STATEMENT = ("Trained on SYNTHETIC procedural phantoms only (MedSynLib.phantom); it is NOT a clinical model and its "
             "outputs are synthetic images that must never be used as patient data.")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


STAGES = ("phantoms", "text", "lowres", "superres", "package")


@dataclass(frozen=True)
class DemoBudget:
    """The demo's data and step budgets; the defaults are what the packaged demo model used (the steps and seed:
    the ``demo-*`` recipes)."""

    lowres_cases: int = 300
    sr_cases: int = 24
    report_variants: int = 8
    """Reports per low-res case (paraphrases in the training templates; one drawn per step)."""
    text_steps: int = _TEXT_RECIPE["steps"]
    lowres_steps: int = _LOWRES_RECIPE["steps"]
    sr_steps: int = _SR_RECIPE["steps"]
    seed: int = _LOWRES_RECIPE["seed"]


def train_demo(work: Path, package: Path | None, budget: DemoBudget = DemoBudget(), workers: int = 2,
               stop_after: int | None = None, only: str | None = None) -> dict:
    """Run every part in order (or ``only`` one of :data:`STAGES`: the low-res and SR stages can then run as two
    processes side by side once the text encoder exists). Finished parts are skipped, interrupted ones resume;
    ``stop_after`` ends each stage phase after that many training steps in this run."""
    work = Path(work)
    lowres_cases, sr_cases, seed = budget.lowres_cases, budget.sr_cases, budget.seed
    text_steps, lowres_steps, sr_steps = budget.text_steps, budget.lowres_steps, budget.sr_steps
    report_variants = budget.report_variants
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    low_spec = DatasetSpec(size=64, spacing=4.0, seed=seed, measure=False, wording="train",
                           report_variants=report_variants)
    low_manifest = write_dataset(str(work / "phantoms64"), lowres_cases, low_spec, workers=workers, log=None)
    sr_spec = DatasetSpec(size=256, spacing=1.0, seed=seed + 1, measure=False, wording="train")
    sr_manifest = write_dataset(str(work / "phantoms256"), sr_cases, sr_spec, workers=workers, log=None)
    times["phantoms_s"] = time.perf_counter() - t0
    _log(f"phantoms ready: {lowres_cases} at 64³/4 mm, {sr_cases} at 256³/1 mm")

    t0 = time.perf_counter()
    text_dir = work / "text"
    # the SR stage needs no text: it can train beside the text encoder and low-res stage
    if only != "superres" and not (text_dir / "training.json").is_file():
        train_text_encoder(str(low_manifest), text_dir, {**TEXT, "steps": text_steps, "seed": seed},
                           resume=(text_dir / "checkpoint").exists())
    times["text_s"] = time.perf_counter() - t0

    if only in ("phantoms", "text"):
        return {"finished": True, "times": times}
    for stage, manifest, unet, steps, extra in (
            ("lowres", low_manifest, LOWRES_UNET, lowres_steps,
             {"text_encoder": str(text_dir / "text_encoder"), **LOWRES_TRAIN}),
            ("superres", sr_manifest, SUPERRES_UNET, sr_steps,
             SUPERRES_TRAIN)):
        if only not in (None, stage):
            continue
        t0 = time.perf_counter()
        for phase in stage_phases(stage, steps):
            config = TrainConfig(stage=stage, manifest=str(manifest), out=str(work / stage), unet=unet,
                                 grid=GRID.to_dict(), steps=phase, seed=seed, precision=DEMO_OPTIMISATION["precision"],
                                 ema_decay=DEMO_OPTIMISATION["ema_decay"],
                                 ema_start=min(DEMO_OPTIMISATION["ema_start"], steps // 4),
                                 checkpoint_every=DEMO_OPTIMISATION["checkpoint_every"],
                                 log_every=DEMO_OPTIMISATION["log_every"], **extra)
            trainer = DiffusionTrainer(config)
            trainer.run(stop_after=stop_after)
            if trainer.step < phase:
                _log(f"{stage} stopped at step {trainer.step}/{steps}; run the same command again to continue")
                return {"finished": False, "times": times}
        times[f"{stage}_s"] = time.perf_counter() - t0

    if package is not None and only in (None, "package"):
        for stage, steps in (("lowres", lowres_steps), ("superres", sr_steps)):
            log = work / stage / "train_log.jsonl"
            done = log_summary(log)["step"] if log.is_file() else 0
            if done < steps:
                _log(f"{stage} is at step {done}/{steps}; finish it before packaging")
                return {"finished": False, "times": times}
        package_model(Path(package), work, dict(lowres_cases=lowres_cases, sr_cases=sr_cases, seed=seed,
                                                report_variants=report_variants, lowres_steps=lowres_steps))
    return {"finished": True, "times": times}


def stage_phases(stage: str, steps: int) -> list[int]:
    """The step budgets a stage's run trains to, one after the other (the same run folder, resumed)."""
    return [p for p in (LOWRES_PHASES if stage == "lowres" else ()) if p < steps] + [steps]


def card_fields(data: dict) -> dict:
    """The ``${...}`` values of the demo's card notes: the recipe's settings and the data budgets."""
    return {**{k: data[k] for k in ("lowres_cases", "sr_cases", "seed", "report_variants")},
            "text_recipe": json.dumps(TEXT), "lowres_train": json.dumps(LOWRES_TRAIN),
            "superres_train": json.dumps(SUPERRES_TRAIN),
            "lowres_phases": json.dumps(stage_phases("lowres", data["lowres_steps"]))}


def package_model(folder: Path, work: Path, data: dict) -> Path:
    """Package the finished runs in ``work`` as the demo model folder (EMA weights as float16, model card)."""
    hardware = f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
    package_training_outputs(
        folder, ModelParts(work / "text", work / "lowres", work / "superres"), name="medsyn-demo", dtype="float16",
        card=ModelCard(DEMO_CARD_NOTES, card_fields(data), {"hardware": hardware}), overwrite=True,
        title="MedSyn demo (synthetic phantoms; not a clinical model)", license="Apache-2.0", defaults=SAMPLING,
        synthetic_training_data=True, statement=STATEMENT)
    _log(f"packaged {folder}")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedSynLib.train.demo", description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="working folder (phantoms, caches, checkpoints)")
    p.add_argument("--package", type=Path, default=None, help="write the finished model folder here")
    default = DemoBudget()
    p.add_argument("--lowres-cases", type=arguments.count(1), default=default.lowres_cases)
    p.add_argument("--sr-cases", type=arguments.count(1), default=default.sr_cases)
    p.add_argument("--report-variants", type=arguments.count(1), default=default.report_variants,
                   help="reports per low-res case (paraphrases in the training templates; one drawn per step)")
    p.add_argument("--text-steps", type=arguments.count(1), default=default.text_steps)
    p.add_argument("--lowres-steps", type=arguments.count(1), default=default.lowres_steps)
    p.add_argument("--sr-steps", type=arguments.count(1), default=default.sr_steps)
    p.add_argument("--workers", type=arguments.count(1, 256), default=2)
    p.add_argument("--seed", type=arguments.seed, default=default.seed)
    p.add_argument("--stop-after", type=arguments.count(1), default=None, help="training steps per stage phase in this run")
    p.add_argument("--only", choices=STAGES, default=None, help="run one part (e.g. lowres and superres side by side)")
    p.add_argument("--threads", type=arguments.count(1, 1024), default=None,
                   help="torch CPU threads (use 1 per process when processes share the cores: oversubscribed "
                        "OpenMP threads run several times slower)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = DemoBudget(args.lowres_cases, args.sr_cases, args.report_variants, args.text_steps, args.lowres_steps,
                        args.sr_steps, args.seed)
    result = train_demo(args.work, args.package, budget, args.workers, args.stop_after, args.only)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
