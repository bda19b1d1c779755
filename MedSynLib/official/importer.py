"""One-time conversion of the official MedSyn checkpoints into a model folder (``model.json``, see :mod:`.bundle`).

The official model generates in its atlas space: 256³ voxels of (1.234375, 1.234375, 1.140625) mm,
origin (-135.3828125, 162.765869, -320.9296875) LPS, direction diag(1, -1, 1) (the unflipped model array as an
ITK image: x = w, y = h, z = f), low-res grid every 4th voxel. Real CTs reach it by affine registration to the
atlas lung mask (``--atlas``, the official ``preprocess/*_Reg_mask.nii.gz``), which is copied into the folder.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io.files import output_folder
from ..io.images import Geometry, read_image, to_image, write_image
from ..modelstore.bundle import write_model_spec
from ..modelstore.registry import registry
from ..run_settings import MODEL_DEFAULTS

OFFICIAL_NAME = "medsyn-official"
ATLAS_FILE = "atlas_lung_mask.nii.gz"
ATLAS_LABELS = (0, 50, 100)
OFFICIAL_GRID = Geometry((256, 256, 256), (1.234375, 1.234375, 1.140625), (-135.3828125, 162.765869, -320.9296875),
                         (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
OFFICIAL_LAYOUT = {"lowres": "results_text_low_res_improved_unet_seg",
                   "superres": "results_SR_gaussian_aug_full_volume_seg",
                   "text_finetuned": "pretrained_lm/pytorch_model.bin"}
"""Where the parts lie inside the official ``model/`` folder (``run_inference.sh``)."""


def licence_entry(name: str) -> dict:
    """The registry entry whose licence terms apply: ``name``'s, else the official model's (the weights are the
    official ones whatever the folder is called)."""
    entries = {e["name"]: e for e in registry()["models"]}
    return entries.get(name) or entries.get(OFFICIAL_NAME) or {"name": OFFICIAL_NAME, "license": "CC-BY-NC 4.0",
                                                                   "requires_license_acceptance": True}


def _atlas_mask(path: Path, out: Path) -> None:
    image = read_image(path, "atlas lung mask")
    array = sitk.GetArrayFromImage(image)
    values = np.unique(array)
    if not set(values.tolist()) <= set(ATLAS_LABELS) or not {50, 100} <= set(values.tolist()):
        raise ValueError(f"{path} is not the official atlas lung mask: labels must be 0, 50 (right lung) and 100 "
                         f"(left lung); found {values[:10].tolist()}. Fix: pass preprocess/*_Reg_mask.nii.gz")
    write_image(to_image(array.astype(np.int16), Geometry.of(image)), out,
                description="MedSyn atlas lung mask (50 right, 100 left)")


@dataclass(frozen=True)
class OfficialFiles:
    """Where the official weights are. lowres / superres: official ``<N>_ckpt`` folders, results folders (largest N
    is used) or ``.bin`` files. text_encoder: a local CXR-BERT / BERT folder; text_finetuned: the official
    ``pretrained_lm/pytorch_model.bin`` (merged into the encoder, which is saved in this project's format);
    atlas: the official atlas lung mask (labels 50 right, 100 left), for segmenting real CTs."""

    lowres: Path
    superres: Path
    text_encoder: Path
    text_finetuned: Path | None = None
    atlas: Path | None = None


def import_official_model(target: Path, files: OfficialFiles, up_order: str = "eval", name: str = OFFICIAL_NAME,
                          accept_license: bool = False, overwrite: bool = False,
                          progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Convert the official checkpoints ``files`` into the model folder ``target`` (written atomically); returns
    it."""
    lowres, superres, text_encoder = files.lowres, files.superres, files.text_encoder
    text_finetuned, atlas = files.text_finetuned, files.atlas
    from ..models.text_encoder import ReportEncoder  # torch and transformers: not for the command line's parser
    from ..modelstore.store import read_stage_config
    from .checkpoint import import_official_stage

    entry = licence_entry(name)
    if entry.get("requires_license_acceptance") and not accept_license:
        raise ValueError(f"the official MedSyn weights are licensed {entry.get('license', 'CC-BY-NC 4.0')} "
                         "(non-commercial use). Fix: read the licence and re-run with --accept-license to accept it")
    step = progress or (lambda *a: None)
    inputs = (lowres, superres, text_encoder, text_finetuned, atlas)
    with output_folder(target, "model.json", overwrite, inputs, what="model") as tmp:
        import_official_stage(lowres, tmp / "lowres", "lowres", up_order=up_order)
        step("import", 1, 4)
        import_official_stage(superres, tmp / "superres", "superres", up_order=up_order)
        step("import", 2, 4)
        encoder = ReportEncoder.from_pretrained(text_encoder, fine_tuned=text_finetuned)
        text_dim = read_stage_config(tmp / "lowres")["unet"]["text_dim"]
        if encoder.hidden_size != text_dim:
            raise ValueError(f"the text encoder {text_encoder} gives {encoder.hidden_size}-wide features but the "
                             f"low-res network expects {text_dim}. Fix: pass the CXR-BERT folder it was trained with")
        encoder.save_pretrained(tmp / "text_encoder")
        step("import", 3, 4)
        space = {"kind": "atlas"}
        if atlas is not None:
            _atlas_mask(atlas, tmp / ATLAS_FILE)
            space["atlas_mask"] = ATLAS_FILE
        write_model_spec(tmp, name=name, title=entry.get("title", "MedSyn official weights"),
                         license=entry.get("license", "CC-BY-NC 4.0"), grid=OFFICIAL_GRID, lowres_factor=4,
                         defaults=dict(MODEL_DEFAULTS), space=space,
                         license_accepted=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                         if accept_license else None,
                         provenance={"lowres": str(lowres), "superres": str(superres),
                                     "text_encoder": str(text_encoder),
                                     "text_finetuned": str(text_finetuned) if text_finetuned else None,
                                     "atlas_mask": str(atlas) if atlas else None, "up_order": up_order})
    step("import", 4, 4)
    return Path(target)
