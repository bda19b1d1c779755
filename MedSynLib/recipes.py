"""Training recipes that ship with MedSynLib: configs for ``medsyn train-text``, ``train-lowres`` and ``train-sr``,
loaded with ``--config recipe:NAME``; a JSON file of the same form loads your own. ``python -m MedSynLib.recipes
NAME`` prints one as JSON, to start your own from.

A recipe holds the network sizes and training settings, not your data: give ``manifest``, ``out`` and the low-res
stage's ``text_encoder`` with ``--set key=value`` (``--reports`` / ``--out`` for the text encoder). Its
``description`` is documentation only.

- ``demo-text``, ``demo-lowres``, ``demo-sr``: the CPU-sized networks and budgets of the packaged demo model
  (``python -m MedSynLib.train.demo``).
- ``official-text``, ``official-lowres``, ``official-sr``: the networks and training settings of the official
  MedSyn code (BERT-base text encoder; 64³ UNet of width 160, 256³ UNet of width 56; AdamW 1e-4, fp16, global
  batch 2 with 4 accumulation steps, EMA from step 10,000). They need GPUs (the SR stage about 21 GiB at
  inference alone) and set no step budget: the official code states none.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PREFIX = "recipe:"
DEMO_OPTIMISATION = {"batch_size": 2, "lr": 0.0002, "precision": "bf16", "ema_decay": 0.995, "ema_start": 200,
                     "seed": 2024, "checkpoint_every": 50, "log_every": 25}
"""What both diffusion stages of the packaged demo model train with (AdamW, bf16 autocast, EMA from step 200)."""
OFFICIAL_OPTIMISATION = {"batch_size": 2, "grad_accum": 4, "lr": 0.0001, "lr_schedule": "constant",
                         "betas": [0.9, 0.999], "weight_decay": 0.01, "grad_clip": 1.0, "precision": "fp16"}
"""What both official diffusion stages train with: AdamW, global batch 2 with 4 accumulation steps, fp16."""
RECIPES: dict[str, dict] = {
    "demo-lowres": {
        "description": ("Low-res stage of the packaged demo model: width 64, space-to-depth 4 (runs on a 16³ "
                        "grid), sized for a 2-core CPU; 17,000 steps, one cosine decay (the packaged weights were "
                        "trained to 10,000 steps, then extended)."),
        "stage": "lowres",
        "unet": {"dim": 64, "dim_mults": [1, 2, 2], "attn_heads": 4, "text_dim": 128, "mid_depth": 2, "patch": 4,
                 "init_kernel_size": 3},
        **DEMO_OPTIMISATION,
        "steps": 17000,
        "lr_schedule": "cosine",
        "warmup_steps": 100,
        "preview_every": 1000,
    },
    "demo-sr": {
        "description": ("Super-resolution stage of the packaged demo model: width 32, space-to-depth 4 (runs on a "
                        "64³ grid), 64³ training crops, 9,000 steps."),
        "stage": "superres",
        "unet": {"dim": 32, "dim_mults": [1, 2, 4], "attn_heads": 2, "mid_depth": 1, "patch": 4,
                 "init_kernel_size": 1},
        "crop": [64, 64, 64],
        **DEMO_OPTIMISATION,
        "steps": 9000,
    },
    "demo-text": {
        "description": ("Text encoder of the packaged demo model: a 2-layer BERT (hidden 128) learnt from scratch "
                        "on phantom reports, 6,000 steps."),
        "vocab_size": 2000,
        "hidden": 128,
        "layers": 2,
        "heads": 4,
        "batch_size": 16,
        "max_length": 160,
        "lr": 0.002,
        "steps": 6000,
        "seed": 2024,
    },
    "official-lowres": {
        "description": ("Official low-res stage: 64³ UNet, width 160, levels (1, 2, 4, 8), 8 attention heads, "
                        "text width 768 (BERT-base), 4 bottom blocks; AdamW 1e-4 (0.9, 0.999), weight decay 0.01, "
                        "clipping 1, fp16, text dropout 0.1, global batch 2 (2 GPUs x 1) with 4 accumulation "
                        "steps, EMA 0.999 every step from step 10,000, a checkpoint every 1,000 steps. Set steps: "
                        "the official code states no budget."),
        "stage": "lowres",
        "unet": {"dim": 160, "dim_mults": [1, 2, 4, 8], "attn_heads": 8, "text_dim": 768, "mid_depth": 4,
                 "init_kernel_size": 7},
        "lowres_factor": 4,
        **OFFICIAL_OPTIMISATION,
        "ema_decay": 0.999,
        "ema_start": 10000,
        "ema_every": 1,
        "text_dropout": 0.1,
        "checkpoint_every": 1000,
    },
    "official-sr": {
        "description": ("Official super-resolution stage: 256³ UNet, width 56, levels (1, 2, 4, 8), 4 attention "
                        "heads; crops of full depth x 72 x 72, conditioning noise-augmented with alpha ~ U[0, "
                        "0.4); AdamW 1e-4 (0.9, 0.999), weight decay 0.01, clipping 1, fp16, global batch 2 with "
                        "4 accumulation steps, EMA 0.995 every 10 steps from step 10,000, a checkpoint every "
                        "1,000 steps. Set steps: the official code states no budget."),
        "stage": "superres",
        "unet": {"dim": 56, "dim_mults": [1, 2, 4, 8], "attn_heads": 4, "mid_depth": 1, "init_kernel_size": 7},
        "lowres_factor": 4,
        "crop": [256, 72, 72],
        "sr_noise_aug": 0.4,
        **OFFICIAL_OPTIMISATION,
        "ema_decay": 0.995,
        "ema_start": 10000,
        "ema_every": 10,
        "checkpoint_every": 1000,
    },
    "official-text": {
        "description": ("BERT-base, as the official text encoder (CXR-BERT: 12 layers, hidden 768, 12 heads, "
                        "intermediate 3072, vocabulary 30522, 2,048 positions). To fine-tune as the paper did, "
                        "give --init with a CXR-BERT folder (downloaded beforehand; nothing is fetched); the "
                        "official fine-tuning settings are not published, so the training options are this "
                        "project's defaults."),
        "vocab_size": 30522,
        "hidden": 768,
        "layers": 12,
        "heads": 12,
        "intermediate": 3072,
        "max_positions": 2048,
    },
}


def recipe_names() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(RECIPES)


def read_config(source: str | Path) -> dict:
    """The options of ``recipe:NAME`` or of a JSON file, without its ``description``; clear errors otherwise."""
    text = str(source)
    if text.startswith(PREFIX):
        name = text.removeprefix(PREFIX)
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; shipped recipes: {', '.join(recipe_names())}")
        values = json.loads(json.dumps(RECIPES[name]))  # a deep copy
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path} (or use recipe:NAME, one of "
                                    f"{', '.join(recipe_names())})")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of options")
    values.pop("description", None)
    return values


if __name__ == "__main__":
    if sys.argv[1:2] not in ([n] for n in RECIPES):
        sys.exit(f"usage: python -m MedSynLib.recipes NAME  (one of {', '.join(recipe_names())})")
    print(json.dumps(RECIPES[sys.argv[1]], indent=2, ensure_ascii=False))
