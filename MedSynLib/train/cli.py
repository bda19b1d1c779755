"""``medsyn train-lowres`` / ``medsyn train-sr``: a JSON config (a file or a shipped ``recipe:NAME``) plus
``--set key=value`` overrides.

Run under ``torchrun --nproc-per-node N -m MedSynLib train-lowres ...`` for several GPUs (or CPU processes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..recipes import read_config, recipe_names

if TYPE_CHECKING:
    from .diffusion import TrainConfig


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(source: str | Path | None, stage: str, overrides: list[str]) -> TrainConfig:
    """The TrainConfig of ``source`` (a JSON file or ``recipe:NAME``) with ``--set`` overrides, for ``stage``."""
    values = read_config(source) if source else {}
    if values.get("stage", stage) != stage:
        raise ValueError(f"{source} is a {values['stage']} config; use it with "
                         f"medsyn {'train-lowres' if values['stage'] == 'lowres' else 'train-sr'}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        values[key] = _value(value)
    values["stage"] = stage
    from .diffusion import TrainConfig  # torch: loaded by the command, not by its parser

    return TrainConfig.from_dict(values)


def add_parser(sub) -> None:
    for name, stage in (("train-lowres", "lowres"), ("train-sr", "superres")):
        p = sub.add_parser(name, help=f"train the {'64³ text-conditioned' if stage == 'lowres' else '256³ super-resolution'}"
                                       " diffusion stage (resumes from OUT/checkpoints/last.pt)")
        recipes = [f"recipe:{n}" for n in recipe_names() if n.endswith("-lowres" if stage == "lowres" else "-sr")]
        p.add_argument("--config", help=f"JSON file of TrainConfig fields, or a shipped recipe: {', '.join(recipes)}")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (JSON value), e.g. --set steps=2000 --set lr=2e-4")
        p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps in this run")
        p.add_argument("--export", type=Path, default=None, help="write the EMA weights as a stage folder at the end")
        p.set_defaults(func=_run, stage=stage)


def _run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .diffusion import DiffusionTrainer

    config = load_config(args.config, args.stage, args.set)
    trainer = DiffusionTrainer(config)
    metrics = trainer.run(stop_after=args.stop_after)
    if trainer.rank == 0:
        print(json.dumps({"event": "done", **metrics}), flush=True)
        if args.export and trainer.step >= config.steps:
            trainer.export(args.export)
            print(f"exported EMA weights to {args.export}", flush=True)
    return 0
