"""``medsyn train-text``: options, a JSON config file, Ctrl-C / SIGTERM stop with a checkpoint."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

from ... import arguments
from ...io.files import check_collection_folder
from ...recipes import read_config
from .checkpoint import ENCODER_DIR, METRICS_FILE, checkpoint_dir
from .config import TextTrainConfig


OPTIONS = (("steps", arguments.count(1), "optimisation steps (default 300)"),
           ("epochs", arguments.number(0.0, low_open=True), "or passes over the reports"),
           ("batch_size", arguments.count(1, 4096), "reports per step (default 16)"),
           ("lr", arguments.number(0.0, 1.0, low_open=True),
            "peak learning rate (default 1e-4 with --init, 5e-4 from scratch)"),
           ("vocab_size", arguments.count(16, 1_000_000), "WordPiece vocabulary learnt from scratch (default 3000)"),
           ("hidden", arguments.count(1, 8192), "from scratch: hidden size (default 128)"),
           ("layers", arguments.count(1, 64), "from scratch: layers (2)"),
           ("heads", arguments.count(1, 128), "from scratch: attention heads (4)"),
           ("seed", arguments.seed, "seed of everything (0)"),
           ("max_length", arguments.count(8, 2048), "word pieces per example (256)"),
           ("device", arguments.device, "cpu (default), auto, cuda[:N]"))


def add_parser(sub) -> None:
    p = sub.add_parser("train-text", help="train the report text encoder (masked LM + Findings/Impression pairing)",
                       description="Train the report encoder on FINDINGS/IMPRESSION reports; writes "
                                   "OUT/text_encoder (for ReportEncoder.from_pretrained) and OUT/training.json.")
    p.add_argument("--reports", required=True, type=Path,
                   help="manifest CSV (column report = text file relative to it, or report_text) or folder of *.txt")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this BERT-family folder (config.json, vocab.txt, weights); default: from scratch")
    p.add_argument("--config", default=None, help="JSON file of defaults, or recipe:demo-text / recipe:official-text "
                                                  "(command-line options win)")
    for name, kind, text in OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--skip-bad", action="store_true", default=None,
                   help="skip reports without both FINDINGS and IMPRESSION (logged) instead of stopping")
    p.set_defaults(func=_run)


def config_from_args(args) -> TextTrainConfig:
    values = read_config(args.config) if args.config else {}
    for name, _, _ in OPTIONS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
            if name in ("steps", "epochs"):
                values.pop("epochs" if name == "steps" else "steps", None)
    if args.steps is not None and args.epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if args.init is not None:
        values["init"] = str(args.init)
    if args.skip_bad:
        values["skip_bad"] = True
    return TextTrainConfig.from_dict(values)


def _run(args) -> int:
    from .loop import train_text_encoder  # torch and transformers: loaded by the command, not by its parser

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = config_from_args(args)  # a bad option ends as `medsyn: error:` and `fix:` (MedSynLib.errors)
    check_collection_folder(args.out, _is_text_run, [args.reports, args.init], what="text-encoder training folder")
    interrupted = []

    def request_stop(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\nstopping after this step (checkpoint follows); interrupt again to abort", file=sys.stderr)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        metrics = train_text_encoder(args.reports, args.out, config, resume=args.resume, progress=_print_progress,
                                     stop=lambda: bool(interrupted))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if metrics.get("stopped"):
        return 130 if interrupted else 0
    summary = {k: metrics[k] for k in ("text_encoder", "steps", "wall_time_s", "heldout")}
    print(json.dumps({"event": "done", **summary}), flush=True)
    return 0


def _is_text_run(folder: Path) -> bool:
    """Whether ``folder`` is an earlier ``train-text`` output (its metrics, checkpoint or text encoder)."""
    return (folder / METRICS_FILE).is_file() or checkpoint_dir(folder) is not None or \
        (folder / ENCODER_DIR / "config.json").is_file()


def _print_progress(event: dict) -> None:
    if event["event"] == "progress":
        val = f"  val {event['val_loss']:.4f}" if "val_loss" in event else ""
        print(f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}{val}  mlm_acc "
              f"{event['mlm_accuracy']:.3f}  pair_acc {event['pairing_accuracy']:.3f}  lr {event['lr']:.2e}  "
              f"{event['steps_per_s']:.2f} steps/s  ETA {event['eta_s']:.0f} s", file=sys.stderr, flush=True)
    else:
        print(event["message"], file=sys.stderr, flush=True)
