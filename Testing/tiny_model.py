"""Builds a tiny random-weight MedSyn model folder (text encoder + both stages + model.json) for tests.

The weights are random: outputs mean nothing, but every code path (encoding, both stages, holding, writing,
geometry) runs for real, in seconds, on the CPU. ``atlas=True`` makes an atlas-space model like the official one
(direction diag(1, -1, 1), an atlas lung mask of two ellipsoids, labels 50 right / 100 left).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from MedSynLib.io.images import Geometry, to_image, write_image
from MedSynLib.models import LowResUNet, SuperResUNet, UNetConfig
from MedSynLib.models.text_encoder import ReportEncoder
from MedSynLib.modelstore.bundle import write_model_spec
from MedSynLib.modelstore.store import save_stage

WORDS = ("findings impression no pleural effusion large bilateral effusions the heart is enlarged lungs are clear "
         "emphysema with bullae consolidation right lower lobe cardiomegaly normal chest ct . , :").split()
GRID = Geometry((32, 32, 32), (4.0, 4.0, 4.0), (-62.0, -62.0, -62.0))
ATLAS_GRID = Geometry((32, 32, 32), (4.0, 4.0, 4.0), (-62.0, 62.0, -62.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))
ATLAS_LUNGS = {"centres": ((-28.0, 0.0, 0.0), (28.0, 0.0, 0.0)), "radii": ((20.0, 32.0, 44.0), (20.0, 32.0, 44.0)),
               "values": (50, 100)}
"""The tiny atlas: right lung (50, smaller LPS x) and left lung (100) as ellipsoids (centre, radii in mm, LPS)."""


def ellipsoids(geometry: Geometry, centres, radii, values, background=0, dtype=np.int16) -> np.ndarray:
    """(z, y, x) array on ``geometry``: ``background``, ellipsoids (physical centres, radii in mm) set to ``values``."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.size[::-1]], indexing="ij"), -1)[..., ::-1]
    matrix = np.array(geometry.direction, float).reshape(3, 3) * np.array(geometry.spacing)
    points = np.asarray(geometry.origin) + index @ matrix.T
    out = np.full(points.shape[:3], background, dtype)
    for centre, radius, value in zip(centres, radii, values):
        out[(((points - np.asarray(centre)) / np.asarray(radius)) ** 2).sum(-1) <= 1] = value
    return out


TINY_STATEMENT = "An untrained test model: its outputs are SYNTHETIC noise, not images of anything."


def build_tiny_model(folder: Path, seed: int = 0, atlas: bool = False) -> Path:
    folder = Path(folder)
    torch.manual_seed(seed)
    text_dir = folder / "text_encoder"
    text_dir.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=2048), add_pooling_layer=False)
    ReportEncoder(bert, BertTokenizer(str(text_dir / "vocab.txt"))).save_pretrained(text_dir)
    save_stage(LowResUNet(UNetConfig(kind="lowres", dim=8, dim_mults=(1, 2), attn_heads=1, text_dim=16,
                                     mid_depth=1)), folder / "lowres")
    save_stage(SuperResUNet(UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=1, mid_depth=1)),
               folder / "superres")
    space = {"kind": "grid"}
    if atlas:
        mask_grid = Geometry((64, 64, 64), (2.0, 2.0, 2.0), (-63.0, 63.0, -63.0), ATLAS_GRID.direction)
        write_image(to_image(ellipsoids(mask_grid, **ATLAS_LUNGS), mask_grid), folder / "atlas_lung_mask.nii.gz",
                    description="tiny test atlas lung mask")
        space = {"kind": "atlas", "atlas_mask": "atlas_lung_mask.nii.gz"}
    write_model_spec(folder, name="tiny-test", title="tiny random test model", license="Apache-2.0",
                     grid=ATLAS_GRID if atlas else GRID, space=space,
                     defaults={"steps_lowres": 4, "steps_sr": 2, "guidance": 1.0, "sampler": "ddim"},
                     statement=TINY_STATEMENT)
    return folder
