"""One codec per channel: how CT (HU), lobe labels and binary masks map into model space [-1, 1] and back.

Every encoding follows the official MedSyn implementation. Training, sampling, tests and the
phantom generator all go through these functions; nothing else converts channel values.
"""

from __future__ import annotations

import numpy as np
import torch

HU_MIN = -1024.0
HU_MAX = 600.0
HU_RANGE = HU_MAX - HU_MIN  # 1624 HU

NUM_LOBES = 5
LOBE_LABELS = {
    1: "left upper lobe",
    2: "left lower lobe",
    3: "right upper lobe",
    4: "right middle lobe",
    5: "right lower lobe",
}
"""Lobe label map values (TotalSegmentator's order, as the official lobe channel uses); 0 is background."""

Array = np.ndarray | torch.Tensor


def _lib(x: Array):
    return torch if isinstance(x, torch.Tensor) else np


def hu_to_model(hu: Array) -> Array:
    """CT in HU -> model space: clip to [-1024, 600] HU, then map linearly to [-1, 1]."""
    lib = _lib(hu)
    v = (lib.clip(hu, HU_MIN, HU_MAX) - HU_MIN) / HU_RANGE
    return v * 2.0 - 1.0


def model_to_hu(x: Array) -> Array:
    """Model space [-1, 1] -> HU as float (clamped first), the inverse of :func:`hu_to_model`."""
    lib = _lib(x)
    v = (lib.clip(x, -1.0, 1.0) + 1.0) / 2.0
    return v * HU_RANGE + HU_MIN


def model_to_hu_int16(x: Array) -> np.ndarray:
    """Model space -> int16 HU, truncating toward zero as the official writer does."""
    hu = model_to_hu(x)
    if isinstance(hu, torch.Tensor):
        hu = hu.detach().float().cpu().numpy()
    return np.trunc(hu).astype(np.int16)


def lobes_to_model(labels: Array) -> Array:
    """Lobe label map (0 background, 1..5 lobes) -> model space: ``label / 5 * 2 - 1``."""
    lib = _lib(labels)
    if isinstance(labels, torch.Tensor):
        labels = labels.float()
    else:
        labels = np.asarray(labels, dtype=np.float32)
    return lib.clip(labels, 0, NUM_LOBES) / NUM_LOBES * 2.0 - 1.0


def model_to_lobes(x: Array) -> np.ndarray:
    """Model space -> lobe labels uint8: ``round(5 v)`` with ``v = (x + 1) / 2``, clipped to 0..5 (our decoding)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    v = (np.clip(x, -1.0, 1.0) + 1.0) / 2.0
    return np.clip(np.rint(v * NUM_LOBES), 0, NUM_LOBES).astype(np.uint8)


def mask_to_model(mask: Array) -> Array:
    """Binary mask {0, 1} -> model space {-1, +1}."""
    if isinstance(mask, torch.Tensor):
        return (mask > 0).float() * 2.0 - 1.0
    return (np.asarray(mask) > 0).astype(np.float32) * 2.0 - 1.0


def model_to_mask(x: Array) -> np.ndarray:
    """Model space -> binary uint8 mask: ``(x + 1) / 2 > 0.5``, i.e. ``x > 0``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return (np.asarray(x) > 0.0).astype(np.uint8)
