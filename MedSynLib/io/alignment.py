"""Finding the lungs of a chest CT and bringing it onto a model's grid.

Physical points are LPS (ITK): x grows towards the patient's left, so the right lung has the smaller x.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from .images import Geometry

AIR_HU = -400.0
RIGHT_LUNG, LEFT_LUNG = 50, 100  # the atlas mask's labels
WORK_SPACING_MM = 3.0
MIN_LUNG_ML = 5.0


def coarse_grid(image: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> Geometry:
    """``image``'s box and orientation on voxels of at least ``spacing_mm`` (finer axes are coarsened)."""
    spacing = tuple(max(s, spacing_mm) for s in image.GetSpacing())
    size = tuple(max(1, math.ceil(n * s / c)) for n, s, c in zip(image.GetSize(), image.GetSpacing(), spacing))
    return Geometry(size, spacing, image.GetOrigin(), image.GetDirection())


def _x_lps(grid: Geometry, index_zyx: np.ndarray) -> np.ndarray:
    """Physical x (mm, LPS) of voxels given as (n, 3) (z, y, x) indices of ``grid``."""
    row = np.array(grid.direction, float).reshape(3, 3)[0] * np.array(grid.spacing)
    return grid.origin[0] + index_zyx[:, ::-1] @ row


def lung_labels(ct: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> sitk.Image:
    """Right (50) / left (100) lung label map (UInt8) of a CT in HU, on :func:`coarse_grid` of the CT.

    Lungs = air-density voxels (< -400 HU) in components that do not touch the in-plane (x, y) border, where the
    air outside the body is; the trachea and lungs may leave the scan at the top or bottom. The two largest
    components are the lungs (right = smaller LPS x). When the airways join both lungs into one component (the
    second is under a quarter of the first), that component is split at its mean x.
    """
    grid = coarse_grid(ct, spacing_mm)
    hu = sitk.Resample(sitk.Cast(ct, sitk.sitkFloat32), grid.reference(), sitk.Transform(), sitk.sitkLinear, -1024.0)
    air = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(hu) < AIR_HU).astype(np.uint8))
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(air))
    border = np.unique(np.concatenate([cc[:, 0].ravel(), cc[:, -1].ravel(), cc[:, :, 0].ravel(),
                                       cc[:, :, -1].ravel()]))
    ids, counts = np.unique(cc[(cc > 0) & ~np.isin(cc, border)], return_counts=True)
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    if not len(ids) or counts.max() * voxel_ml < MIN_LUNG_ML:
        raise ValueError("no lungs found in the CT (no air-density region inside the body): is it a chest CT in "
                         "HU? Fix: give a chest CT whose air is about -1000 HU")
    order = np.argsort(counts)[::-1]
    labels = np.zeros(cc.shape, np.uint8)
    if len(order) > 1 and counts[order[1]] >= 0.25 * counts[order[0]]:
        parts = [np.argwhere(cc == ids[i]) for i in order[:2]]
        parts.sort(key=lambda idx: _x_lps(grid, idx).mean())
        for idx, value in zip(parts, (RIGHT_LUNG, LEFT_LUNG)):
            labels[tuple(idx.T)] = value
    else:
        idx = np.argwhere(cc == ids[order[0]])
        x = _x_lps(grid, idx)
        labels[tuple(idx.T)] = np.where(x < x.mean(), RIGHT_LUNG, LEFT_LUNG)
    return grid.apply(sitk.GetImageFromArray(labels))


def lung_centred_grid(ct: sitk.Image, grid: Geometry) -> Geometry:
    """``grid`` (size, spacing, direction kept) moved so that its centre is the centre of the lungs' bounding box.

    When ``grid`` and the CT share a direction, the origin snaps to the nearest CT voxel centre (a shift of at most
    half a CT voxel per axis): a grid whose spacing is a whole multiple of the CT's then samples CT voxels exactly,
    with no interpolation blur (as the official 4x nearest subsample of a 1 mm volume does).
    """
    lungs = lung_labels(ct)
    idx = np.argwhere(sitk.GetArrayViewFromImage(lungs))
    centre_index = (idx.min(0) + idx.max(0)) / 2.0  # (z, y, x)
    centre = np.array(lungs.TransformContinuousIndexToPhysicalPoint(centre_index[::-1].tolist()))
    direction = np.array(grid.direction).reshape(3, 3)
    half = (np.array(grid.size) - 1) / 2.0 * np.array(grid.spacing)
    origin = centre - direction @ half
    if np.allclose(direction, np.array(ct.GetDirection()).reshape(3, 3), atol=1e-6):
        voxel = np.round(ct.TransformPhysicalPointToContinuousIndex(origin.tolist())).astype(int)
        origin = np.array(ct.TransformIndexToPhysicalPoint(voxel.tolist()))
    return Geometry(grid.size, grid.spacing, tuple(origin.tolist()), grid.direction)


def resample(image: sitk.Image, grid: Geometry, interpolator=sitk.sitkNearestNeighbor, default: float = 0.0,
             transform: sitk.Transform | None = None) -> np.ndarray:
    """``image`` sampled on ``grid`` (keeping its pixel type): (z, y, x) array; ``transform`` maps grid points to
    image points (identity if None)."""
    out = sitk.Resample(image, grid.reference(), transform or sitk.Transform(), interpolator, default,
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)
