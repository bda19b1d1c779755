"""``medsyn models import``: convert the official MedSyn checkpoints once into a model folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import run_guarded
from ..models.config import UP_ORDERS
from ..modelstore.registry import user_model_folder, user_models_dir
from ..progress import Reporter
from .importer import OFFICIAL_LAYOUT, OFFICIAL_NAME


def add_actions(actions) -> None:
    """Register ``import`` among the actions of ``medsyn models`` (``actions``: its sub-parsers)."""
    imp = actions.add_parser("import", help="convert the official MedSyn checkpoints once into a model folder "
                                            f"under {user_models_dir()}")
    imp.add_argument("folder", nargs="?", type=Path, default=None,
                     help="the official model/ folder; fills in --lowres, --superres and --text-finetuned from "
                          + ", ".join(f"{v}" for v in OFFICIAL_LAYOUT.values()))
    imp.add_argument("--lowres", type=Path, help="low-res checkpoint: <N>_ckpt folder, results folder or .bin file")
    imp.add_argument("--superres", type=Path, help="super-resolution checkpoint (same forms)")
    imp.add_argument("--text-encoder", type=Path, required=True,
                     help="local folder of microsoft/BiomedVLP-CXR-BERT-specialized (config.json, vocab.txt, weights)")
    imp.add_argument("--text-finetuned", type=Path, default=None,
                     help="the official fine-tuned language model, pretrained_lm/pytorch_model.bin")
    imp.add_argument("--atlas", type=Path, default=None,
                     help="the official atlas lung mask preprocess/*_Reg_mask.nii.gz (needed by `medsyn segment`)")
    imp.add_argument("--up-order", choices=UP_ORDERS, default="eval",
                     help="decoder ordering: eval (official inference scripts) or train (official training code)")
    imp.add_argument("--name", default=OFFICIAL_NAME, help=f"model name (default {OFFICIAL_NAME})")
    imp.add_argument("--accept-license", action="store_true",
                     help="accept the licence of the official weights (CC-BY-NC 4.0, non-commercial)")
    imp.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    imp.add_argument("--progress", choices=("text", "json"), default="text")
    imp.set_defaults(func=_import)


def _import(args) -> int:
    from .importer import OfficialFiles, import_official_model

    reporter = Reporter(args.progress)

    def work() -> int:
        parts = {"lowres": args.lowres, "superres": args.superres, "text_finetuned": args.text_finetuned}
        if args.folder is not None:
            parts = {k: v if v is not None else args.folder / OFFICIAL_LAYOUT[k] for k, v in parts.items()}
            if args.text_finetuned is None and not parts["text_finetuned"].is_file():
                parts["text_finetuned"] = None
        missing = [f"--{k.replace('_', '-')}" for k in ("lowres", "superres") if parts[k] is None]
        if missing:
            raise ValueError(f"missing {' and '.join(missing)}. Fix: give the official checkpoint folders, or the "
                             "official model/ folder as the first argument")
        target = user_model_folder(args.name)
        files = OfficialFiles(parts["lowres"], parts["superres"], args.text_encoder, parts["text_finetuned"],
                              args.atlas)
        import_official_model(target, files, args.up_order, args.name, args.accept_license, args.overwrite, reporter)
        reporter.emit({"event": "done", "out": str(target), "name": args.name})
        if args.progress == "text":
            print(f"imported {args.name} into {target}" + ("" if args.atlas else
                  "\n  note: no --atlas given; `medsyn segment` needs it (re-import with --atlas FILE --overwrite)"),
                  file=sys.stderr)
        return 0

    return run_guarded(work, reporter.emit)  # `medsyn: error:` and `fix:`, as every command (docs/failure-modes.md)
