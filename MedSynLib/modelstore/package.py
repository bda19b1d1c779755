"""Assemble a model folder from its parts: a text-encoder folder and two stage folders.

The folder gets ``model.json`` (grid, space, sampler defaults, licence, and ``files``: the sha256 of every file the
model loads), ``training.json`` (what was measured while training, when known) and ``MODEL_CARD.md``
(:mod:`.card`). It is written as every output is (:func:`MedSynLib.io.files.output_folder`): atomically, never
over anything but an earlier model folder, and that only with ``overwrite``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..io.files import output_folder
from ..run_settings import MODEL_DEFAULTS
from .bundle import write_model_spec
from .card import render_model_card
from .registry import user_model_folder
from .store import read_stage_config, sha256_file

TEXT_ENCODER_FILES = ("config.json", "vocab.txt")


def _check_parts(text_encoder: Path, lowres: Path, superres: Path) -> None:
    missing = [f for f in TEXT_ENCODER_FILES if not (text_encoder / f).is_file()]
    if missing or not any((text_encoder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise FileNotFoundError(f"{text_encoder} is not a text-encoder folder (needs config.json, vocab.txt and "
                                "model.safetensors). Fix: give the text_encoder folder `medsyn train-text` wrote")
    for stage, folder in (("lowres", lowres), ("superres", superres)):
        kind = read_stage_config(folder)["unet"].get("kind")
        if kind != stage:
            raise ValueError(f"{folder} holds a {kind} stage where the {stage} stage belongs. Fix: swap the "
                             "folders")
    hidden = json.loads((text_encoder / "config.json").read_text(encoding="utf-8")).get("hidden_size")
    text_dim = read_stage_config(lowres)["unet"].get("text_dim")
    if hidden != text_dim:
        raise ValueError(f"the text encoder {text_encoder} gives {hidden}-wide features but the low-res stage "
                         f"{lowres} expects {text_dim}. Fix: package the encoder the low-res stage was trained with")


def file_hashes(folder: Path, parts: list[str]) -> dict[str, str]:
    """sha256 of every file under the given parts of ``folder`` (paths relative to it, '/' separated, sorted)."""
    out = {}
    for part in parts:
        root = Path(folder) / part
        for path in sorted([root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())):
            out[path.relative_to(folder).as_posix()] = sha256_file(path)
    return out


@dataclass(frozen=True)
class ModelParts:
    """The folders a model is assembled from: ``text_encoder`` (a folder ``ReportEncoder.from_pretrained`` reads),
    ``lowres`` / ``superres`` (stage folders, :func:`MedSynLib.modelstore.store.save_stage`), and ``extra`` files to
    copy in (name in the model folder -> source), e.g. an atlas lung mask."""

    text_encoder: Path
    lowres: Path
    superres: Path
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """What a model folder says about itself beyond model.json: ``notes`` (Markdown sections for MODEL_CARD.md)
    and ``fields`` (the ``${...}`` values they use, see :mod:`.card`); ``training`` (measured training facts,
    written to training.json and shown on the card)."""

    notes: str | None = None
    fields: dict | None = None
    training: dict | None = None
    training_data: str | None = None
    """The card's "Training data" text (see :func:`MedSynLib.train.package.package_training_outputs`)."""


def package_model(target: Path, parts: ModelParts, *, name: str, card: ModelCard = ModelCard(),
                  overwrite: bool = False, **spec) -> Path:
    """Write the model folder ``target`` from copies of its ``parts``; returns it.

    name: a plain model name (letters, digits, ``._-``). spec: the rest of model.json: ``title``, ``license`` and
    ``grid`` (the full-resolution grid, a Geometry; the low-res grid is every ``lowres_factor``-th voxel, default
    4), ``defaults`` (sampler defaults over :data:`~MedSynLib.run_settings.MODEL_DEFAULTS`), ``space`` (default a
    plain grid) and any further fields. overwrite: replace an earlier model folder at ``target`` (anything else
    there is refused).
    """
    missing = [key for key in ("title", "license", "grid") if spec.get(key) is None]
    if missing:
        raise ValueError(f"a model needs {', '.join(missing)} in its model.json")
    text_encoder, lowres, superres = parts.text_encoder, parts.lowres, parts.superres
    extra_files, training, notes, card_fields = parts.extra, card.training, card.notes, card.fields
    spec = {"lowres_factor": 4, **spec, "defaults": {**MODEL_DEFAULTS, **(spec.get("defaults") or {})},
            "space": spec.get("space") or {"kind": "grid"}}
    user_model_folder(name)  # the name check of the model store
    target, text_encoder, lowres, superres = map(Path, (target, text_encoder, lowres, superres))
    _check_parts(text_encoder, lowres, superres)
    with output_folder(target, "model.json", overwrite, [text_encoder, lowres, superres], what="model") as tmp:
        for part, source in (("text_encoder", text_encoder), ("lowres", lowres), ("superres", superres)):
            shutil.copytree(source, tmp / part, ignore=shutil.ignore_patterns(".*"))
        for dest, source in extra_files.items():
            shutil.copy2(source, tmp / dest)
        copied = ["text_encoder", "lowres", "superres", *extra_files]
        write_model_spec(tmp, name=name, files=file_hashes(tmp, copied), **spec)
        if training:
            (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(render_model_card(tmp, notes, card_fields), encoding="utf-8")
    return target
