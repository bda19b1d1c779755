"""Regions of a phantom to edit: where a finding would go (masks (z, y, x) uint8 on the phantom's grid)."""

from __future__ import annotations

import copy

import numpy as np
import SimpleITK as sitk

from .findings import EFFUSION_SIZES, Findings
from .compose import Phantom, make_phantom


def _dilate_mm(mask: np.ndarray, spacing_zyx, mm: float) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    radius = [max(0, int(round(mm / s))) for s in spacing_zyx[::-1]]
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, radius, sitk.sitkBall)) > 0


def dependent_pleural_space(phantom: Phantom, side: str, ml: float = EFFUSION_SIZES["large"][1],
                            margin_mm: float = 6.0) -> np.ndarray:
    """The dependent (posterior, basal) pleural space of one side: where an effusion of ``ml`` mL would lie in this
    phantom (the same seed and anatomy rebuilt with that effusion), grown by ``margin_mm`` and kept on that side.

    side: "right" or "left". The phantom must come from :func:`~.compose.make_phantom` (its truth names the seed).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    findings = Findings.from_dict(copy.deepcopy(phantom.truth["findings"]))
    findings.effusion_ml = {"right": 0.0, "left": 0.0, side: float(ml)}
    filled = make_phantom(seed=phantom.truth["seed"], grid=phantom.grid, findings=findings)
    region = _dilate_mm(filled.effusion > 0, phantom.grid.spacing_zyx, margin_mm)
    x = phantom.grid.axes()[2]  # LPS: the right side has x < 0
    return (region & np.broadcast_to((x < 0) if side == "right" else (x >= 0), region.shape)).astype(np.uint8)


def ball_in_lobe(phantom: Phantom, lobe: int, radius_mm: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A ball of ``radius_mm`` around the point of lobe ``lobe`` (1 LUL .. 5 RLL) deepest inside it, and that
    centre (z, y, x voxel index). The region for a nodule of up to about ``radius_mm`` in that lobe."""
    inside = phantom.lobes == lobe
    if not inside.any():
        raise ValueError(f"the phantom has no lobe {lobe}")
    image = sitk.GetImageFromArray(inside.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in phantom.grid.spacing_zyx[::-1]))
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False,
                                                                useImageSpacing=True))
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    zz, yy, xx = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in
                               zip(depth.shape, centre, phantom.grid.spacing_zyx)], indexing="ij")
    return (zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2).astype(np.uint8), tuple(int(c) for c in centre)
