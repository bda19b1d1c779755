"""Assemble a model folder from its parts: a text-encoder folder and two stage folders.

The folder gets ``model.json`` (grid, space, sampler defaults, licence, and ``files``: the sha256 of every file the
model loads), ``training.json`` (what was measured while training, when known) and ``MODEL_CARD.md``
(:mod:`.card`). It is written as every output is (:func:`MedSynLib.io.files.output_folder`): atomically, never
over anything but an earlier model folder, and that only with ``overwrite``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..io.files import output_folder
from ..io.images import Geometry
from .bundle import DEFAULTS, write_model_spec
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


def package_model(target: Path, text_encoder: Path, lowres: Path, superres: Path, *, name: str, title: str,
                  license: str, grid: Geometry, lowres_factor: int = 4, defaults: dict | None = None,
                  space: dict | None = None, training: dict | None = None, notes: str | None = None,
                  card_fields: dict | None = None, extra_files: dict[str, Path] | None = None, overwrite: bool = False,
                  **spec) -> Path:
    """Write the model folder ``target`` from copies of its parts; returns it.

    name: a plain model name (letters, digits, ``._-``). text_encoder: a folder ``ReportEncoder.from_pretrained``
    reads; lowres / superres: stage folders (:func:`MedSynLib.modelstore.store.save_stage`). grid: the
    full-resolution grid (the low-res grid is every ``lowres_factor``-th voxel). defaults: sampler defaults
    (steps_lowres, steps_sr, guidance, sampler). training: measured training facts for the card; notes: Markdown
    sections for the card and card_fields the ``${...}`` values they use (see :mod:`.card`). extra_files: further
    files to copy in (name in the folder -> source), e.g. an atlas lung mask. overwrite: replace an earlier model
    folder at ``target`` (anything else there is refused).
    """
    user_model_folder(name)  # the name check of the model store
    target, text_encoder, lowres, superres = map(Path, (target, text_encoder, lowres, superres))
    _check_parts(text_encoder, lowres, superres)
    with output_folder(target, "model.json", overwrite, [text_encoder, lowres, superres], what="model") as tmp:
        for part, source in (("text_encoder", text_encoder), ("lowres", lowres), ("superres", superres)):
            shutil.copytree(source, tmp / part, ignore=shutil.ignore_patterns(".*"))
        for dest, source in (extra_files or {}).items():
            shutil.copy2(source, tmp / dest)
        parts = ["text_encoder", "lowres", "superres", *(extra_files or {})]
        write_model_spec(tmp, name=name, title=title, license=license, grid=grid, lowres_factor=lowres_factor,
                         defaults={**DEFAULTS, **(defaults or {})}, space=space or {"kind": "grid"},
                         files=file_hashes(tmp, parts), **spec)
        if training:
            (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(render_model_card(tmp, notes, card_fields), encoding="utf-8")
    return target
