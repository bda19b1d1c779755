"""A MedSyn *model*: text encoder + low-res stage + super-resolution stage + the grid it generates on.

A model folder holds ``model.json``::

    {"format": "medsyn-model/1", "name": "...", "title": "...", "license": "...",
     "text_encoder": "text_encoder", "lowres": "lowres", "superres": "superres",
     "grid": {"size": [x, y, z], "spacing": [...], "origin": [...], "direction": [...]},
     "lowres_factor": 4, "defaults": {"steps_lowres": 50, "steps_sr": 20, "guidance": 1.0, "sampler": "ddim"},
     "space": {"kind": "grid"}, "text_encoder_sha256": "<hex of the text encoder's weights file>"}

The stages record the sha256 of their weights in their own ``config.json``; every hash is checked at load.
The model array (b, c, f, h, w) is the image array (z, y, x) on ``grid``; the low-res grid is every
``lowres_factor``-th voxel of it. ``space`` says what the grid means: ``{"kind": "grid"}`` (or no key) = a plain
patient-space box; ``{"kind": "atlas", "atlas_mask": "atlas_lung_mask.nii.gz"}`` = the grid is an atlas space
(official MedSyn): real CTs are affinely registered to the atlas lung mask (labels 50 right, 100 left)
before segmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.images import Geometry
from ..run_settings import MODEL_DEFAULTS
from .jsonfiles import CheckpointError, read_json

if TYPE_CHECKING:  # reading model.json needs no torch (model lists)
    import torch

    from ..models.text_encoder import ReportEncoder

MODEL_FORMAT = "medsyn-model/1"
TEXT_SHA_KEY = "text_encoder_sha256"


class _ModelSpaceMixin:
    """What a model's space is (``spec``, ``name``, ``folder``): shared by :class:`ModelSpace` and
    :class:`LoadedModel`."""

    @property
    def space(self) -> str:
        """"grid" (plain patient-space box) or "atlas" (an atlas space; see the module docstring)."""
        return self.spec.get("space", {}).get("kind", "grid")

    def atlas_mask_file(self) -> Path:
        """The atlas lung mask of an atlas-space model; a clear error when the model has none."""
        name = self.spec.get("space", {}).get("atlas_mask")
        path = Path(self.folder or ".") / name if name else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"model {self.name!r} works in an atlas space but its atlas lung mask is missing"
                + (f" ({path})" if path else "") + ". Fix: re-import it with `medsyn models import ... --atlas FILE` "
                "(the official preprocess/*_Reg_mask.nii.gz, labels 50 right lung, 100 left lung)")
        return path


@dataclass
class ModelSpace(_ModelSpaceMixin):
    """A model's grid and space from its ``model.json`` alone (no weights loaded): enough to check and place a CT
    before the model is loaded."""

    name: str
    grid: Geometry
    spec: dict
    folder: Path | None = None

    @classmethod
    def of(cls, folder: Path) -> "ModelSpace":
        spec = read_model_spec(folder)
        return cls(spec.get("name", Path(folder).name), Geometry.from_dict(spec["grid"]), spec, Path(folder))


@dataclass
class LoadedModel(_ModelSpaceMixin):
    name: str
    text_encoder: ReportEncoder
    lowres: torch.nn.Module
    superres: torch.nn.Module
    grid: Geometry
    lowres_factor: int
    defaults: dict
    sha256: dict
    spec: dict
    folder: Path | None = None

    @property
    def lowres_grid(self) -> Geometry:
        return self.grid.subsampled(self.lowres_factor)


def read_model_spec(folder: Path) -> dict:
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a MedSyn model folder (model.json missing)")
    spec = read_json(path)
    if spec.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: unknown format {spec.get('format')!r}, expected {MODEL_FORMAT!r}")
    return spec


def write_model_spec(folder: Path, **spec) -> Path:
    folder = Path(folder)
    spec = {"format": MODEL_FORMAT, "text_encoder": "text_encoder", "lowres": "lowres", "superres": "superres",
            "lowres_factor": 4, "defaults": dict(MODEL_DEFAULTS), **spec}
    if isinstance(spec.get("grid"), Geometry):
        spec["grid"] = spec["grid"].to_dict()
    spec[TEXT_SHA_KEY] = _text_encoder_sha256(folder, spec, check=False)
    (folder / "model.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return folder / "model.json"


def _text_encoder_sha256(folder: Path, spec: dict, check: bool = True) -> str:
    """The sha256 of the text encoder's weights, checked against ``model.json`` (models written before the text
    encoder was hashed record none: their hash is still reported)."""
    from ..models.text_encoder import weights_file
    from .store import sha256_file

    weights = weights_file(folder / spec["text_encoder"])
    digest = sha256_file(weights)
    if check and spec.get(TEXT_SHA_KEY) not in (None, digest):
        raise CheckpointError(f"{weights} is corrupted or was altered: its sha256 does not match "
                              f"{folder / 'model.json'}. Re-import or re-download the model.")
    return digest


def load_model(folder: Path, device: torch.device | str = "cpu", load_superres: bool = True) -> LoadedModel:
    """Load every part of a model folder onto ``device`` (eval mode)."""
    from ..models.text_encoder import ReportEncoder
    from .store import load_stage, read_stage_config
    from .verify import check_files, check_spec

    folder = Path(folder)
    spec = read_model_spec(folder)
    check_spec(spec, folder)
    lowres_dir, sr_dir = folder / spec["lowres"], folder / spec["superres"]
    sha = {"lowres": read_stage_config(lowres_dir).get("sha256"), "superres": read_stage_config(sr_dir).get("sha256"),
           "text_encoder": _text_encoder_sha256(folder, spec)}
    known = {f"{spec[part]}/model.safetensors": sha[part] for part in ("lowres", "superres", "text_encoder")}
    check_files(spec, folder, known, skip=() if load_superres else (spec["superres"],))
    encoder = ReportEncoder.from_pretrained(folder / spec["text_encoder"]).to(device)
    lowres = load_stage(lowres_dir, device)
    superres = load_stage(sr_dir, device) if load_superres else None
    if lowres.config.text_dim != encoder.hidden_size:
        raise ValueError(f"{folder}: the text encoder gives {encoder.hidden_size}-wide features but the low-res "
                         f"network expects {lowres.config.text_dim}")
    defaults = {**MODEL_DEFAULTS, **spec.get("defaults", {})}
    return LoadedModel(spec.get("name", folder.name), encoder, lowres, superres, Geometry.from_dict(spec["grid"]),
                       int(spec.get("lowres_factor", 4)), defaults, sha, spec, folder)
