"""Lobe labels from a generated lobe channel: round, drop lung specks, vote transition rims away.

None of this is part of the official method, which only rounds; :func:`decode_generated_lobes` is what
``generate`` and ``segment`` write.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .codecs import NUM_LOBES, Array, model_to_lobes


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
