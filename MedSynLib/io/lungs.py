"""The body, lungs and trachea of a chest CT, found on a coarse copy of it (about 3 mm voxels).

1. Body: voxels of at least :data:`AIR_HU` (soft tissue, bone), opened by one voxel (so a patient table or a
   cushion touching the skin along a thin line comes loose); the largest component, grown back by that voxel within
   the dense voxels (a chest wall thinner than the opening stays closed); then every axial slice's holes filled.
   Air outside the patient (beside, above the head, below the feet), the table and an airway open to the outside
   air are thereby outside the body, whatever the scan's length or how much of it is air.
2. Lungs: air (< :data:`AIR_HU`) inside the body, opened with a ball of :data:`LUNG_CORE_MM` radius (which the
   trachea, main bronchi, bowel gas and small pockets do not survive), the pieces of at least
   :data:`MIN_LUNG_ML`, grown back by the same radius within the air. The two largest are the lungs (right =
   smaller LPS x); one piece holding both lungs (the second is under a quarter of the first) is split at its
   mean x.
3. Trachea: the largest remaining air piece inside the body, above the lungs' centre and between them.
4. Cut lungs: lung of at least :data:`CUT_LUNG_ML` in the first or last axial slice means the field of view cuts
   the lungs there ("apex" or "bases").

"Axial" is the CT's own axis closest to the patient's head-foot (LPS z) axis, so any axis order, flips and a
tilt of the slices work. Physical points are LPS (ITK): x grows towards the patient's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .images import Geometry

AIR_HU = -400.0
"""Lung parenchyma and airway lumen lie below, soft tissue, fluid and bone above."""
RIGHT_LUNG, LEFT_LUNG = 50, 100
"""Lung labels (as the official atlas lung mask uses)."""
WORK_SPACING_MM = 3.0
LUNG_CORE_MM = 10.0
"""Radius (mm) of the ball that separates the lungs from the trachea and main bronchi (radius 7-12 mm)."""
MIN_LUNG_ML = 5.0
TRACHEA_MIN_ML = 0.5
CUT_LUNG_ML = 2.0


def coarse_grid(image: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> Geometry:
    """``image``'s box and orientation on voxels of at least ``spacing_mm`` (finer axes are coarsened)."""
    spacing = tuple(max(s, spacing_mm) for s in image.GetSpacing())
    size = tuple(max(1, math.ceil(n * s / c)) for n, s, c in zip(image.GetSize(), image.GetSpacing(), spacing))
    return Geometry(size, spacing, image.GetOrigin(), image.GetDirection())


@dataclass
class ChestMasks:
    """Masks (z, y, x) uint8 on ``grid`` (the CT's :func:`coarse_grid`): ``body`` (holes filled, 0/1),
    ``lungs`` (0, :data:`RIGHT_LUNG`, :data:`LEFT_LUNG`), ``trachea`` (0/1; empty when none is seen);
    ``lungs_cut``: where the field of view cuts the lungs ("apex", "bases"; empty when it holds them whole)."""

    grid: Geometry
    body: np.ndarray
    lungs: np.ndarray
    trachea: np.ndarray
    lungs_cut: list[str]

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.grid.spacing)) / 1000.0

    @property
    def lung_ml(self) -> float:
        return float((self.lungs > 0).sum()) * self.voxel_ml

    def image(self, name: str) -> sitk.Image:
        """``body``, ``lungs`` or ``trachea`` as a SimpleITK image on :attr:`grid`."""
        return self.grid.apply(sitk.GetImageFromArray(getattr(self, name)))

    def lung_points(self) -> np.ndarray:
        """Physical points (n, 3), LPS mm, of the lung voxels."""
        return _points(self.grid, np.argwhere(self.lungs > 0))


def _points(grid: Geometry, index_zyx: np.ndarray) -> np.ndarray:
    """Physical points (n, 3) LPS mm of voxels given as (n, 3) (z, y, x) indices of ``grid``."""
    matrix = np.array(grid.direction, float).reshape(3, 3) * np.array(grid.spacing)
    return np.array(grid.origin) + index_zyx[:, ::-1] @ matrix.T


def _radius(grid: Geometry, mm: float) -> list[int]:
    return [max(1, round(mm / s)) for s in grid.spacing]


def _opened(mask: np.ndarray, radius: list[int]) -> np.ndarray:
    """Binary opening of ``mask`` (z, y, x) by a ball of ``radius`` (x, y, z) voxels, with the edge slices repeated
    beyond the scan, so that lung cut by the field of view's edge stays as thick as it is there."""
    pad = [(r, r) for r in radius[::-1]]
    opened = sitk.BinaryMorphologicalOpening(sitk.GetImageFromArray(np.pad(mask, pad, mode="edge")), radius)
    return sitk.GetArrayFromImage(opened)[tuple(slice(r, r + n) for r, n in zip(radius[::-1], mask.shape))]


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(connected-component labels (z, y, x) of ``mask``, voxel count per label with 0 for the background)."""
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    counts = np.bincount(cc.ravel())
    counts[0] = 0
    return cc, counts


def _fill_axial_holes(mask: np.ndarray, axis: int) -> np.ndarray:
    """Holes of every slice of ``mask`` across numpy axis ``axis`` filled (2-D)."""
    out = np.moveaxis(mask.copy(), axis, 0)
    for k in range(out.shape[0]):
        if out[k].any():
            out[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(out[k])))
    return np.moveaxis(out, 0, axis)


def find_chest(ct: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> ChestMasks:
    """Body, lungs and trachea of a CT in HU (module docstring) on :func:`coarse_grid` of the CT.

    Raises ValueError when no body or no air-density region of lung size inside it is found.
    """
    grid = coarse_grid(ct, spacing_mm)
    hu = sitk.GetArrayFromImage(sitk.Resample(ct, grid.reference(), sitk.Transform(), sitk.sitkLinear, -1024.0,
                                              sitk.sitkFloat32))
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    dense = (hu >= AIR_HU).astype(np.uint8)
    radius = _radius(grid, spacing_mm)
    cc, counts = _components(_opened(dense, radius))
    if counts.max(initial=0) * voxel_ml < 50.0:
        raise ValueError("no body found in the CT (no soft-tissue region of at least 50 mL above -400 HU): is it a "
                         "CT in HU? Fix: give a chest CT in Hounsfield units (air about -1000 HU)")
    direction = np.array(grid.direction).reshape(3, 3)
    axial = 2 - int(np.argmax(np.abs(direction[2])))  # numpy axis of the CT axis closest to head-foot
    core = sitk.GetImageFromArray((cc == np.argmax(counts)).astype(np.uint8))
    grown = sitk.GetArrayFromImage(sitk.BinaryDilate(core, radius)) > 0
    body = _fill_axial_holes((grown & (dense > 0)).astype(np.uint8), axial)
    air = (body > 0) & (hu < AIR_HU)
    radius = _radius(grid, LUNG_CORE_MM)
    core_cc, core_counts = _components(_opened(air.astype(np.uint8), radius))
    keep = core_counts * voxel_ml >= MIN_LUNG_ML
    if not keep.any():
        raise ValueError("no lungs found in the CT (no air-density region of lung size inside the body): is it a "
                         "chest CT in HU? Fix: give a chest CT whose air is about -1000 HU and whose field of view "
                         "holds the lungs")
    core = sitk.GetImageFromArray(keep[core_cc].astype(np.uint8))
    grown = sitk.GetArrayFromImage(sitk.BinaryDilate(core, [r + 1 for r in radius])) > 0
    lung_cc, lung_counts = _components(air & grown)
    order = np.argsort(lung_counts)[::-1]
    lungs = np.zeros(hu.shape, np.uint8)
    if lung_counts[order[1]] >= 0.25 * lung_counts[order[0]]:
        parts = [np.argwhere(lung_cc == i) for i in order[:2]]
        parts.sort(key=lambda idx: _points(grid, idx)[:, 0].mean())
        for idx, value in zip(parts, (RIGHT_LUNG, LEFT_LUNG)):
            lungs[tuple(idx.T)] = value
    else:
        idx = np.argwhere(lung_cc == order[0])
        x = _points(grid, idx)[:, 0]
        lungs[tuple(idx.T)] = np.where(x < x.mean(), RIGHT_LUNG, LEFT_LUNG)
    trachea = _trachea(grid, air & (lungs == 0), lungs, voxel_ml)
    edges = np.moveaxis(lungs > 0, axial, 0)[[0, -1]].sum(axis=(1, 2)) * voxel_ml >= CUT_LUNG_ML
    ends = ("bases", "apex") if direction[2, 2 - axial] > 0 else ("apex", "bases")  # first, last slice
    return ChestMasks(grid, body, lungs, trachea, [end for end, cut in zip(ends, edges) if cut])


def _trachea(grid: Geometry, rest: np.ndarray, lungs: np.ndarray, voxel_ml: float) -> np.ndarray:
    """The largest air piece of ``rest`` whose centre lies above the lungs' centre and between the lungs' centres
    in x (LPS); zeros when there is none of :data:`TRACHEA_MIN_ML`."""
    out = np.zeros(rest.shape, np.uint8)
    if not rest.any():
        return out
    cc, counts = _components(rest)
    right, left = (_points(grid, np.argwhere(lungs == v)).mean(0) for v in (RIGHT_LUNG, LEFT_LUNG))
    centre_z = (right[2] + left[2]) / 2
    for label in np.argsort(counts)[::-1]:
        if counts[label] * voxel_ml < TRACHEA_MIN_ML:
            break
        centre = _points(grid, np.argwhere(cc == label)).mean(0)
        if centre[2] > centre_z and right[0] < centre[0] < left[0]:
            out[cc == label] = 1
            break
    return out
