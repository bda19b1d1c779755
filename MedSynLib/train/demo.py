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
from pathlib import Path

import torch

from ..io.files import output_folder
from ..modelstore.bundle import write_model_spec
from ..modelstore.store import save_stage
from ..phantom import Grid
from ..phantom.dataset import write_dataset
from .diffusion import DiffusionTrainer, TrainConfig
from .text_encoder import train_text_encoder

GRID = Grid.cube(256, 1.0).geometry  # the phantoms' own grid
TEXT = {"vocab_size": 2000, "hidden": 128, "layers": 2, "heads": 4, "batch_size": 16, "max_length": 160, "lr": 2e-3}
LOWRES_UNET = {"dim": 64, "dim_mults": [1, 2, 2], "attn_heads": 4, "text_dim": 128, "mid_depth": 2, "patch": 4,
               "init_kernel_size": 3}
SUPERRES_UNET = {"dim": 32, "dim_mults": [1, 2, 4], "attn_heads": 2, "mid_depth": 1, "patch": 4,
                 "init_kernel_size": 1}
LOWRES_TRAIN = {"batch_size": 2, "lr": 2e-4, "lr_schedule": "cosine", "warmup_steps": 100, "preview_every": 1000}
LOWRES_EXTENDED_FROM = (10000,)
"""The packaged low-res stage was trained to 10,000 steps, then extended to 17,000 (a second cosine decay from
step 10,000 on): ``lr_extended_from`` replays that schedule in one run (it applies where it is below the budget)."""
SUPERRES_TRAIN = {"crop": [64, 64, 64], "batch_size": 2, "lr": 2e-4}
SAMPLING = {"steps_lowres": 12, "steps_sr": 2, "guidance": 2.0, "sampler": "dpmpp2m"}
STATEMENT = ("Trained on SYNTHETIC procedural phantoms only (MedSynLib.phantom); it is NOT a clinical model and its "
             "outputs are synthetic images that must never be used as patient data.")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


STAGES = ("phantoms", "text", "lowres", "superres", "package")


def train_demo(work: Path, package: Path | None, lowres_cases: int, sr_cases: int, text_steps: int,
               lowres_steps: int, sr_steps: int, workers: int, seed: int, stop_after: int | None,
               only: str | None = None, report_variants: int = 8) -> dict:
    """Run every part in order (or ``only`` one of :data:`STAGES`: the low-res and SR stages can then run as two
    processes side by side once the text encoder exists). Finished parts are skipped, interrupted ones resume."""
    work = Path(work)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    low_manifest = write_dataset(str(work / "phantoms64"), lowres_cases, size=64, spacing=4.0, seed=seed,
                                 workers=workers, measure=False, log=None, wording="train",
                                 report_variants=report_variants)
    sr_manifest = write_dataset(str(work / "phantoms256"), sr_cases, size=256, spacing=1.0, seed=seed + 1,
                                workers=workers, measure=False, log=None, wording="train")
    times["phantoms_s"] = time.perf_counter() - t0
    _log(f"phantoms ready: {lowres_cases} at 64³/4 mm, {sr_cases} at 256³/1 mm")

    t0 = time.perf_counter()
    text_dir = work / "text"
    text_metrics = {}
    if only != "superres":  # the SR stage needs no text: it can train beside the text encoder and low-res stage
        text_metrics = json.loads((text_dir / "training.json").read_text()) if (text_dir / "training.json").is_file() \
            else train_text_encoder(str(low_manifest), text_dir, {**TEXT, "steps": text_steps, "seed": seed},
                                    resume=(text_dir / "checkpoint").exists())
    times["text_s"] = time.perf_counter() - t0

    results = {}
    if only in ("phantoms", "text"):
        return {"finished": True, "times": times}
    for stage, manifest, unet, steps, extra in (
            ("lowres", low_manifest, LOWRES_UNET, lowres_steps,
             {"text_encoder": str(text_dir / "text_encoder"), **LOWRES_TRAIN,
              "lr_extended_from": [e for e in LOWRES_EXTENDED_FROM if e < lowres_steps]}),
            ("superres", sr_manifest, SUPERRES_UNET, sr_steps,
             SUPERRES_TRAIN)):
        if only not in (None, stage, "package"):
            continue
        t0 = time.perf_counter()
        config = TrainConfig(stage=stage, manifest=str(manifest), out=str(work / stage), unet=unet, grid=GRID.to_dict(),
                             steps=steps, seed=seed, precision="bf16", ema_decay=0.995, ema_start=min(200, steps // 4),
                             checkpoint_every=50, log_every=25, **extra)
        trainer = DiffusionTrainer(config)
        results[stage] = {**trainer.run(stop_after=0 if only == "package" else stop_after), "trainer": trainer}
        times[f"{stage}_s"] = time.perf_counter() - t0
        if trainer.step < steps:
            _log(f"{stage} stopped at step {trainer.step}/{steps}; run the same command again to continue")
            return {"finished": False, "times": times}

    if package is not None and only in (None, "package"):
        package_model(Path(package), work, results, text_metrics,
                      dict(lowres_cases=lowres_cases, sr_cases=sr_cases, seed=seed, report_variants=report_variants))
    return {"finished": True, "times": times}


def package_model(folder: Path, work: Path, results: dict, text_metrics: dict, data: dict) -> Path:
    """Assemble the model folder: text encoder, both stages (EMA weights, float16), model.json and MODEL_CARD.md."""
    import shutil

    with output_folder(folder, "model.json", overwrite=True, what="model") as tmp:
        shutil.copytree(work / "text" / "text_encoder", tmp / "text_encoder")
        for stage in ("lowres", "superres"):
            trainer = results[stage]["trainer"]
            save_stage(trainer.ema.net.cpu(), tmp / stage, {"trained_steps": trainer.step, "weights": "EMA",
                                                            "data": f"phantoms, seed {data['seed']}"},
                       dtype=torch.float16)
        write_model_spec(tmp, name="medsyn-demo", title="MedSyn demo (synthetic phantoms; not a clinical model)",
                         license="Apache-2.0", grid=GRID, defaults=SAMPLING, synthetic_training_data=True,
                         space={"kind": "grid"}, statement=STATEMENT)
        (tmp / "MODEL_CARD.md").write_text(model_card(work, text_metrics, data))
    _log(f"packaged {folder}")
    return folder


def log_summary(path: Path) -> dict:
    """Steps, mean loss of the last 10 steps and total wall time (summed over resumed runs) of a train_log.jsonl."""
    entries = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    wall, previous = 0.0, 0.0
    for e in entries:
        if e["elapsed_s"] < previous:  # a new run (resume) restarted the clock
            wall += previous
        previous = e["elapsed_s"]
    losses = [e["loss"] for e in entries[-10:]]
    return {"step": entries[-1]["step"] if entries else 0, "mean_loss_last_10": sum(losses) / max(1, len(losses)),
            "wall_s": wall + previous}


def model_card(work: Path, text_metrics: dict, data: dict) -> str:
    low, sr = (log_summary(Path(work) / stage / "train_log.jsonl") for stage in ("lowres", "superres"))
    held = text_metrics.get("heldout") or {}
    hardware = f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
    return f"""# MedSyn demo model

{STATEMENT}

## Architecture
- Text encoder: BERT, {TEXT['layers']} layers, hidden {TEXT['hidden']}, {TEXT['heads']} heads, WordPiece vocabulary
  {TEXT['vocab_size']} learnt on the phantom reports; masked-language modelling + Findings/Impression pairing.
- Low-res stage: `LowResUNet` {json.dumps(LOWRES_UNET)} on 64³ (4 mm), 4 channels (CT, lobes, airway, vessels);
  space-to-depth 4, so its layers run on a 16³ grid of 4³-voxel blocks.
- Super-resolution stage: `SuperResUNet` {json.dumps(SUPERRES_UNET)} on 256³ (1 mm), conditioned on the 4x
  nearest-upsampled low-res volume; space-to-depth 4 so it runs on a 64³ grid.
- Default sampling: {json.dumps(SAMPLING)}.

## Data
Procedural chest CT phantoms (`medsyn phantoms`): {data['lowres_cases']} cases at 64³ / 4 mm for the text encoder
and the low-res stage, {data['sr_cases']} cases at 256³ / 1 mm for the super-resolution stage (64³ crops); master
seed {data['seed']}. Reports use only the "train" half of the report templates (`wording="train"`), so that the
benchmark below can prompt with wordings the model never saw. Each low-res case has {data['report_variants']} reports
(`report.txt` and paraphrases of the same findings in other "train" templates, `report_variants`); the low-res
stage draws one per training step and the text encoder trains on all of them (held out by case).

## Training
| part | steps | final loss | wall time |
|---|---|---|---|
| text encoder | {text_metrics.get('steps', '?')} | held-out MLM accuracy {held.get('mlm_accuracy', float('nan')):.3f}, pairing accuracy {held.get('pairing_accuracy', float('nan')):.3f} | {text_metrics.get('wall_time_s', 0):.0f} s |
| low-res | {low['step']} | {low['mean_loss_last_10']:.4f} (mean of last 10) | {low['wall_s']:.0f} s |
| super-resolution | {sr['step']} | {sr['mean_loss_last_10']:.4f} (mean of last 10) | {sr['wall_s']:.0f} s |

Hardware: {hardware}. AdamW, bf16 autocast, gradient clipping 1, EMA 0.995, classifier-free-guidance text dropout
0.1; low-res `TrainConfig` options {json.dumps(LOWRES_TRAIN)}, `lr_extended_from` {list(LOWRES_EXTENDED_FROM)}
(cosine decay to 0.1 lr at step {LOWRES_EXTENDED_FROM[0]}, then a second one to the end: the schedule of an earlier
run that was extended, kept as the recipe; sample previews in the working folder's `lowres/previews/`),
SR {json.dumps(SUPERRES_TRAIN)} (constant lr).
Reproduce: `python -m MedSynLib.train.demo --work runs/demo --package Resources/Models/medsyn-demo` (one command,
resumable; the defaults are the budgets above). The packaged weights are this command's output: text encoder, then
low-res stage, then SR stage, each run once from scratch with 2 torch threads on this machine (the wall times
above). Resuming gives the same weights as an uninterrupted run; another CPU or thread count may round differently.

## Limitations
- Fine texture and lung density: the low-res stage hardly uses the detail of its input at any noise level (error
  in the CT channel, mean square in model units, 0.026 at t = 0, where the input itself is off by 0.00016; 0.029 at
  t = 0.5), so lung parenchyma comes out smoother and brighter than in the phantoms and emphysema (%LAA-950) is not
  reproduced. Measured on 6 training cases with severe emphysema (%LAA-950 28.1 % at 64³): its prediction of the
  clean volume from a nearly noise-free input (diffusion time 0.02) has 5.1 % with the emphysema wording and 5.2 %
  without, and lungs 50 HU brighter than the input. Folding 4x4x4 blocks into {LOWRES_UNET['dim']} features is not the only
  cause: a patch-2 network trained 3,000 steps does the same. Earlier variants (a voxel-level refiner, guidance 3
  and 5, fine-tunes on phantoms rich in emphysema, a loss weighted towards low noise, the input skip of Karras et
  al. on this design; README) did not change this. A low-res stage with a full-rank last layer (patch 2 or 1),
  that input skip and its loss weight, trained longer (a GPU), is the way forward.
- Text: the effusion wording is followed strongly in the training templates and in held-out templates (benchmark
  below) and less in free paraphrases with words the reports never use; heart size only weakly (CTR p 0.25 in
  held-out templates, 0.068 in training ones; the training phantoms with cardiomegaly have CTR 0.56-0.63). The
  text encoder is small and trained from scratch on phantom reports; trained 6,000 steps it carries cardiomegaly
  far better than at 2,000 (linear probe on its mean features, README: accuracy 0.90 against 0.80, majority class
  0.72), which moved held-out CTR from p 0.69 to p 0.25. Letting every block hear the pooled report
  (`UNetConfig.pooled_text`, a 3,000-step fine-tune, README) helped %LAA-950 in training wording (p 0.0024) but
  left held-out CTR at p 0.31 and held-out %LAA-950 at p 0.083, so it is not in this package. A pre-trained
  biomedical encoder (CXR-BERT, as in the paper) and a low-res stage trained longer are the way forward.
- Effusion volume from the CT is measured on one grid of about 4 mm whatever the CT's resolution (`analysis_grid`,
  block means of the CT): the quick-start sample reads 1,027 mL on its 64³ result and 1,515 mL on its 256³ result.
  On the native 1 mm grid the generated fluid's voxel texture falls in and out of the fluid HU range (18 mL).
- Lobe maps: the official single lobe channel passes through the labels in between wherever a lobe meets the
  background or a lobe two labels away, so rounding alone leaves rims of wrong labels along the lung border and the
  fissures, and noise in the channel leaves specks of lobe labels outside the lungs. The pipeline drops lung pieces
  under 5 mL (`drop_lobe_islands`) and votes the rims away (`majority_lobes`: each lung voxel takes the most common
  label of its 20 mm cube); neither is part of the official method. Table V below is measured that way.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedSynLib.train.demo", description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="working folder (phantoms, caches, checkpoints)")
    p.add_argument("--package", type=Path, default=None, help="write the finished model folder here")
    p.add_argument("--lowres-cases", type=int, default=300)
    p.add_argument("--sr-cases", type=int, default=24)
    p.add_argument("--report-variants", type=int, default=8,
                   help="reports per low-res case (paraphrases in the training templates; one drawn per step)")
    p.add_argument("--text-steps", type=int, default=6000)
    p.add_argument("--lowres-steps", type=int, default=17000)
    p.add_argument("--sr-steps", type=int, default=9000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--stop-after", type=int, default=None, help="training steps per stage in this run")
    p.add_argument("--only", choices=STAGES, default=None, help="run one part (e.g. lowres and superres side by side)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (use 1 per process when processes share the cores: oversubscribed "
                        "OpenMP threads run several times slower)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train_demo(args.work, args.package, args.lowres_cases, args.sr_cases, args.text_steps,
                        args.lowres_steps, args.sr_steps, args.workers, args.seed, args.stop_after, args.only,
                        args.report_variants)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
