"""One codec per channel: how CT (HU), lobe labels and binary masks map into model space [-1, 1] and back.

Every encoding follows the official MedSyn implementation (spec §5.2). Training, sampling, tests and the
phantom generator all go through these functions; nothing else converts channel values.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
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


LOBE_VOTE_MM = 20.0
"""Side (mm) of the cube over which :func:`majority_lobes` votes: wider than the transition rims of a generated lobe
channel (a low-res voxel, 4 mm, or a few mm at 1 mm), narrower than a lobe."""


def _box_sum(mask: np.ndarray, sizes: tuple[int, int, int]) -> np.ndarray:
    """Sum of a 0/1 array over an odd-sized box around every voxel (zero outside), by cumulative sums."""
    out = mask.astype(np.int32)
    for axis, k in enumerate(sizes):
        n, r = out.shape[axis], k // 2
        padding = [(0, 0)] * 3
        padding[axis] = (1, 0)
        c = np.pad(np.cumsum(out, axis=axis, dtype=np.int32), padding)
        index = np.arange(n)
        out = np.take(c, np.minimum(index + r + 1, n), axis=axis) - np.take(c, np.maximum(index - r, 0), axis=axis)
    return out


def majority_lobes(labels: np.ndarray, spacing_zyx, window_mm: float = LOBE_VOTE_MM) -> np.ndarray:
    """Lobe labels (z, y, x) -> the same lung voxels, each relabelled with the most common lobe label in the
    ``window_mm`` cube around it (a tie keeps the voxel's own label); background voxels stay background.

    Why: the lobe channel is one ordinal code (label / 5), so wherever a generated lobe meets the background or a
    lobe two or more labels away, its values pass through the labels in between, and :func:`model_to_lobes` leaves
    a rim of wrong labels along the lung border and the fissures. Such rims are thinner than the window and lose
    the vote; a lobe boundary, a surface through the window, stays where it is. Not part of the official method.
    """
    labels = np.asarray(labels, dtype=np.uint8)
    if not labels.any():
        return labels.copy()
    extent = [np.nonzero(labels.any(axis=others))[0] for others in ((1, 2), (0, 2), (0, 1))]
    box = tuple(slice(a[0], a[-1] + 1) for a in extent)  # votes come from lung voxels only: their box suffices
    sizes = tuple(2 * int(window_mm / (2 * s)) + 1 for s in spacing_zyx)  # odd, about window_mm wide
    crop = labels[box]
    best, winner = np.full(crop.shape, -1, np.int32), np.zeros(crop.shape, np.uint8)
    for label in range(1, NUM_LOBES + 1):
        own = crop == label
        score = 2 * _box_sum(own, sizes) + own
        better = score > best
        best[better], winner[better] = score[better], label
    out = labels.copy()
    out[box] = np.where(crop > 0, winner, crop)
    return out


LOBE_ISLAND_ML = 5.0
"""Lung fragments smaller than this (mL) are dropped by :func:`drop_lobe_islands`: far below a lobe (the phantoms'
smallest lobes are 140 mL and more), far above the specks a noisy lobe channel leaves (0.1-0.2 mL at 1 mm)."""


def drop_lobe_islands(labels: np.ndarray, spacing_zyx, min_ml: float = LOBE_ISLAND_ML) -> np.ndarray:
    """Lobe labels (z, y, x) -> the same, with every connected piece of lung (any label, 26-connected) smaller than
    ``min_ml`` set to background.

    Why: wherever the generated lobe channel is noisy outside the lungs (body wall, volume edges), rounding leaves
    specks of lobe labels (thousands at 256³), which :func:`majority_lobes` keeps (it never changes the lungs'
    extent); they make a segmentation of thousands of islands and spoil width measurements such as the CTR. Not
    part of the official method.
    """
    labels = np.asarray(labels, dtype=np.uint8)
    components = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray((labels > 0).astype(np.uint8)), True))
    keep = np.bincount(components.ravel()) >= min_ml * 1000.0 / float(np.prod(spacing_zyx))
    keep[0] = True  # background stays as it is
    return np.where(keep[components], labels, 0).astype(np.uint8)


def decode_generated_lobes(x: Array, spacing_zyx) -> np.ndarray:
    """A generated lobe channel (z, y, x) in model space -> lobe labels uint8, as ``generate`` and ``segment``
    write them: rounded (:func:`model_to_lobes`), lung pieces under :data:`LOBE_ISLAND_ML` dropped
    (:func:`drop_lobe_islands`), rims voted away over :data:`LOBE_VOTE_MM` (:func:`majority_lobes`)."""
    return majority_lobes(drop_lobe_islands(model_to_lobes(x), spacing_zyx), spacing_zyx)


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
