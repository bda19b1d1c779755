"""The outputs of ``train-text``, ``train-lowres`` and ``train-sr`` as one model folder (``medsyn models package``;
its parser is in :mod:`.cli`).

Each part may be a training run folder (``train-text --out``: ``text_encoder/`` + ``training.json``;
``train-lowres`` / ``train-sr --set out=...``: ``train_config.json`` + ``checkpoints/last.pt``, whose EMA weights
are taken) or a finished part (a text-encoder folder; a stage folder such as ``--export`` writes). The grid comes
from the low-res run's config (or a stage folder's provenance, or ``--grid IMAGE``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from ..io.images import Geometry
from ..models.unet import UNetConfig, build_unet
from ..modelstore.package import ModelCard, ModelParts, package_model
from ..modelstore.registry import user_model_folder
from ..modelstore.store import read_stage_config, save_stage
from .diffusion import CHECKPOINT
from ..run_settings import MODEL_DEFAULTS
from .text_encoder import ENCODER_DIR, METRICS_FILE

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def log_summary(path: Path) -> dict:
    """Steps, mean loss of the last 10 steps and total wall time (summed over resumed runs) of a train_log.jsonl."""
    entries = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    wall, previous = 0.0, 0.0
    for e in entries:
        if e["elapsed_s"] < previous:  # a new run (resume) restarted the clock
            wall += previous
        previous = e["elapsed_s"]
    losses = [e["loss"] for e in entries[-10:]]
    return {"step": entries[-1]["step"] if entries else 0,
            "mean_loss_last_10": sum(losses) / len(losses) if losses else None, "wall_s": wall + previous}


def _is_run(folder: Path) -> bool:
    return (folder / "train_config.json").is_file() and (folder / "checkpoints" / CHECKPOINT).is_file()


def export_run(run: Path, out: Path, dtype: torch.dtype = torch.float32) -> dict:
    """Write the EMA weights of a diffusion training run as a stage folder ``out``; returns the run's config."""
    config = json.loads((run / "train_config.json").read_text(encoding="utf-8"))
    state = torch.load(run / "checkpoints" / CHECKPOINT, map_location="cpu", weights_only=True)
    net = build_unet(UNetConfig.from_dict({**config["unet"], "kind": config["stage"]}))
    net.load_state_dict(state["ema"])
    save_stage(net, out, {"trained_steps": int(state["step"]), "weights": "EMA", "config": config}, dtype=dtype)
    return {**config, "trained_steps": int(state["step"])}


def stage_part(source: Path, stage: str, scratch: Path, dtype: torch.dtype) -> tuple[Path, dict, dict]:
    """(stage folder, its training config or {}, its measured training summary or {}) for a run or stage folder."""
    source = Path(source)
    if _is_run(source):
        config = export_run(source, scratch / stage, dtype)
        if config["stage"] != stage:
            raise ValueError(f"{source} trained the {config['stage']} stage, not the {stage} stage. Fix: swap "
                             "them")
        log = source / "train_log.jsonl"
        return scratch / stage, config, log_summary(log) if log.is_file() else {}
    if (source / "config.json").is_file():
        stage_config = read_stage_config(source)
        provenance = stage_config.get("provenance", {})
        return source, provenance.get("config", {}), {"step": provenance.get("trained_steps")}
    raise FileNotFoundError(f"{source} is neither a training run (train_config.json and checkpoints/{CHECKPOINT}) "
                            "nor a stage folder (config.json). Fix: give the folder `medsyn train-"
                            f"{'lowres' if stage == 'lowres' else 'sr'}` wrote (its `out`)")


def text_part(source: Path) -> tuple[Path, dict]:
    """(text-encoder folder, its training metrics or {}) for a ``train-text`` output or a text-encoder folder."""
    source = Path(source)
    if (source / ENCODER_DIR / "config.json").is_file():
        metrics = source / METRICS_FILE
        return source / ENCODER_DIR, json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
    return source, {}


SYNTHETIC_STATEMENT = ("Trained on SYNTHETIC data only; it is NOT a clinical model and its outputs are synthetic "
                       "images that must never be used as patient data.")
"""The statement of a model whose training manifest marks every case synthetic, unless another is given."""
OFFICIAL_DEFAULTS_TEXT = "DDIM {steps_lowres} / {steps_sr} steps, guidance {guidance}".format(**MODEL_DEFAULTS)


def manifest_facts(config: dict) -> dict:
    """What a training run's manifest (``config["manifest"]``) says about its data: ``{"manifest", "cases",
    "synthetic"}`` (synthetic: every row's ``synthetic`` column is 1, as ``medsyn phantoms`` writes it), or {}
    when there is no readable manifest."""
    path = Path(config.get("manifest") or "")
    if not config.get("manifest") or not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    synthetic = bool(rows) and all(str(r.get("synthetic") or "").strip().lower() in ("1", "true") for r in rows)
    return {"manifest": str(path), "cases": len(rows), "synthetic": synthetic}


def _checked_defaults(defaults: dict | None, official_defaults: bool) -> dict:
    missing = [k for k in MODEL_DEFAULTS if k not in (defaults or {})]
    if missing and not official_defaults:
        raise ValueError("the model's sampler defaults are not given (" + ", ".join(
            "--" + k.replace("_", "-") for k in missing) + "). Fix: give the settings you checked its results with "
            f"(--steps-lowres, --steps-sr, --guidance, --sampler), or --official-sampler-defaults to use the "
            f"official ones ({OFFICIAL_DEFAULTS_TEXT}) for those not given")
    return {**MODEL_DEFAULTS, **(defaults or {})}


def package_training_outputs(target: Path, parts: ModelParts, *, name: str, dtype: str = "float32",
                             card: ModelCard = ModelCard(), official_defaults: bool = False, overwrite: bool = False,
                             **spec) -> Path:
    """Package training outputs ``parts`` (see the module docstring; each a run folder or a finished part) as the
    model folder ``target``; returns it. Weights are stored as ``dtype``. spec: model.json fields as for
    :func:`~MedSynLib.modelstore.package.package_model` (``title`` defaults to the name, ``license`` to "unknown",
    ``grid`` to the low-res run's).

    ``defaults``: the sampler defaults, all four (steps_lowres, steps_sr, guidance, sampler) unless
    ``official_defaults`` fills the missing ones with the official DDIM settings. ``card.training_data``: the card's
    "Training data" text; needed unless ``card.notes`` has that section or the low-res run's manifest marks every
    case synthetic (:func:`manifest_facts`), which also makes :data:`SYNTHETIC_STATEMENT` the default ``statement``
    (the sentence shown with every result) and sets ``synthetic_training_data``. ``card.training`` may carry
    ``hardware``, added to what the runs measured.
    """
    lowres, superres = parts.lowres, parts.superres
    notes, training_data, statement = card.notes, card.training_data, spec.pop("statement", None)
    user_model_folder(name)  # the name check of the model store, before any work
    spec["defaults"] = _checked_defaults(spec.get("defaults"), official_defaults)
    with tempfile.TemporaryDirectory(prefix=".medsyn-package-", dir=Path(target).parent
                                     if Path(target).parent.is_dir() else None) as scratch:
        text_dir, text_metrics = text_part(parts.text_encoder)
        low_dir, low_config, low_summary = stage_part(lowres, "lowres", Path(scratch), DTYPES[dtype])
        sr_dir, _, sr_summary = stage_part(superres, "superres", Path(scratch), DTYPES[dtype])
        if spec.get("grid") is None:
            if "grid" not in low_config:
                raise ValueError(f"the grid of {lowres} is unknown (no training config). Fix: pass --grid IMAGE, an "
                                 "image on the full-resolution grid the model was trained on")
            spec["grid"] = Geometry.from_dict(low_config["grid"])
        facts = manifest_facts(low_config)
        if training_data is None and "## Training data" not in (notes or ""):
            if not facts.get("synthetic"):
                raise ValueError(f"what {name} was trained on is not known" + (
                    f" ({facts['manifest']} does not mark its cases synthetic)" if facts else "") + ". Fix: pass "
                    "--training-data TEXT (the data: source, number of cases, whether patient data), which the "
                    "model card shows")
            training_data = (f"{facts['cases']} SYNTHETIC cases ({facts['manifest']}: every case marked "
                             "synthetic, as `medsyn phantoms` writes them). No patient data.")
        if facts.get("synthetic"):
            spec.setdefault("synthetic_training_data", True)
            statement = statement or SYNTHETIC_STATEMENT
        if statement:
            spec["statement"] = statement
        if training_data is not None:
            notes = f"## Training data\n{training_data}\n\n" + (notes or "")
        training = {"text_encoder": {k: text_metrics.get(k) for k in ("steps", "wall_time_s", "heldout", "corpus")}
                    if text_metrics else {},
                    "lowres": low_summary, "superres": sr_summary, **(card.training or {})}
        spec = {"license": "unknown", "datasets": [], "lowres_factor": int(low_config.get("lowres_factor", 4)),
                **{k: v for k, v in spec.items() if v is not None}, "title": spec.get("title") or name}
        card = dataclasses.replace(card, notes=notes, training=training)
        return package_model(target, ModelParts(text_dir, low_dir, sr_dir, parts.extra), name=name, card=card,
                             overwrite=overwrite, **spec)
