"""``medsyn train-lowres`` / ``medsyn train-sr``: a JSON config (a file or a shipped ``recipe:NAME``) plus
``--set key=value`` overrides; ``medsyn models package``: training outputs as one model folder (:mod:`.package`).

Run under ``torchrun --nproc-per-node N -m MedSynLib train-lowres ...`` for several GPUs (or CPU processes).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import arguments
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
        p.add_argument("--stop-after", type=arguments.count(1), default=None,
                       help="stop after this many steps in this run")
        p.add_argument("--export", type=Path, default=None, help="write the EMA weights as a stage folder at the end")
        p.set_defaults(func=_run, stage=stage)


def _run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..io.files import check_output_folder
    from ..modelstore.store import CONFIG_FILE
    from .diffusion import DiffusionTrainer

    config = load_config(args.config, args.stage, args.set)
    config_file = [args.config] if args.config and not str(args.config).startswith("recipe:") else []
    if args.export:  # refused now, not after the training
        export = check_output_folder(args.export, CONFIG_FILE, inputs=[config.out, *config_file],
                                     what="stage folder")
    trainer = DiffusionTrainer(config, inputs=tuple(config_file))
    metrics = trainer.run(stop_after=args.stop_after)
    if trainer.rank == 0:
        print(json.dumps({"event": "done", **metrics}), flush=True)
        if args.export and trainer.step >= config.steps:
            trainer.export(export)
            print(f"exported EMA weights to {export}", flush=True)
        elif args.export:
            print(f"medsyn: warning: not exported: the run stopped at step {trainer.step} of {config.steps}; "
                  "the same command continues it", file=sys.stderr, flush=True)
    return 0


STORAGE_DTYPES = ("bfloat16", "float16", "float32")
"""Choices of ``models package --dtype`` (the keys of :data:`.package.DTYPES`, which needs torch)."""


def add_actions(actions) -> None:
    """Register ``package`` among the actions of ``medsyn models`` (``actions``: its sub-parsers)."""
    p = actions.add_parser("package", help="make a model folder from train-text / train-lowres / train-sr outputs",
                           description="The outputs of train-text, train-lowres and train-sr as one model folder.")
    p.add_argument("--text-encoder", type=Path, required=True, help="train-text output folder (or a text_encoder "
                                                                    "folder)")
    p.add_argument("--lowres", type=Path, required=True, help="train-lowres run folder (or a stage folder)")
    p.add_argument("--superres", type=Path, required=True, help="train-sr run folder (or a stage folder)")
    p.add_argument("--name", required=True, help="model name (letters, digits, '.', '_', '-')")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="write the model folder here")
    where.add_argument("--install", action="store_true",
                       help="install into the model store ($MEDSYN_HOME/models/NAME), so --model NAME finds it")
    p.add_argument("--title", default=None, help="one line saying what the model is")
    p.add_argument("--license", default="unknown", help="licence of the weights, e.g. Apache-2.0")
    p.add_argument("--grid", type=Path, default=None, help="an image on the model's full-resolution grid (only when "
                                                           "the low-res part is a stage folder without its config)")
    p.add_argument("--training-data", default=None, metavar="TEXT",
                   help="what the model was trained on (source, number of cases, patient data or not), for the model "
                        "card; required unless the low-res run's manifest marks every case synthetic (medsyn "
                        "phantoms), which the card then says")
    p.add_argument("--statement", default=None, metavar="TEXT",
                   help="the sentence shown with every result (medsyn.json, the command's last line, Slicer); "
                        "default for a model trained on synthetic data only: that it is not a clinical model")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="a training data set's name or URL for the card's metadata (repeat for several)")
    p.add_argument("--steps-lowres", type=arguments.steps, default=None,
                   help="default low-res sampler steps of the model")
    p.add_argument("--steps-sr", type=arguments.steps, default=None, help="default super-resolution sampler steps")
    p.add_argument("--guidance", type=arguments.guidance, default=None, help="default classifier-free guidance scale")
    p.add_argument("--sampler", default=None, choices=("ddim", "dpmpp2m"), help="default sampler")
    p.add_argument("--official-sampler-defaults", action="store_true",
                   help="take the official DDIM 50 / 20 steps, guidance 1.0 for the sampler defaults not given "
                        "(without it all four are required)")
    p.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                   help="storage precision of the stage weights taken from training runs (float16 halves them)")
    p.add_argument("--card-notes", type=Path, default=None,
                   help="Markdown file whose '## ...' sections replace or extend the model card's (e.g. "
                        "'## Training data', '## Limitations')")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier model folder there")
    p.set_defaults(func=_package)


def _package(args) -> int:
    from ..io.images import Geometry, read_image
    from ..modelstore.package import ModelCard, ModelParts
    from ..modelstore.registry import user_model_folder
    from .package import package_training_outputs  # torch: loaded by the command, not by its parser

    # a refusal ends as `medsyn: error:` and `fix:` (MedSynLib.errors), as in every command
    target = user_model_folder(args.name) if args.install else args.out
    defaults = {k: v for k, v in (("steps_lowres", args.steps_lowres), ("steps_sr", args.steps_sr),
                                  ("guidance", args.guidance), ("sampler", args.sampler)) if v is not None}
    grid = Geometry.of(read_image(args.grid, "grid image")) if args.grid else None
    notes = args.card_notes.read_text(encoding="utf-8") if args.card_notes else None
    parts = ModelParts(args.text_encoder, args.lowres, args.superres)
    card = ModelCard(notes=notes, training_data=args.training_data)
    package_training_outputs(target, parts, name=args.name, dtype=args.dtype, card=card,
                             official_defaults=args.official_sampler_defaults, overwrite=args.overwrite,
                             title=args.title, license=args.license, defaults=defaults,
                             statement=args.statement, datasets=args.dataset, grid=grid)
    spec = json.loads((Path(target) / "model.json").read_text(encoding="utf-8"))
    print(f"packaged {args.name} into {target}" + (" (installed: use --model " + args.name + ")"
                                                   if args.install else ""))
    print("sampler defaults: " + ", ".join(f"{k} {v}" for k, v in spec["defaults"].items())
          + ("; statement: " + spec["statement"] if spec.get("statement") else ""))
    return 0
