"""The body, lungs and trachea of a chest CT, found on a coarse copy of it (about 3 mm voxels).

1. Air: voxels below :data:`AIR_HU`. Lung candidates: the air opened with a ball of :data:`LUNG_CORE_MM` radius
   (which the trachea, main bronchi and small pockets do not survive), the pieces of at least :data:`MIN_LUNG_ML`,
   grown back by the same radius within the air. A piece is lung when it looks like lung: fewer than
   :data:`MAX_PURE_AIR` of its voxels below :data:`PURE_AIR_HU` (aerated lung holds tissue and vessels and lies
   near -850 HU at 3 mm; the outside air, stomach and bowel gas and the airway lumen are pure air near -1000 HU).
   So bowel gas is never taken for lung, and lung cut by the image's border is lung. The two largest are the lungs
   (right = smaller LPS x); one piece holding both lungs (the second under a quarter of the first) is split at
   its mean x.
2. Body: voxels of at least :data:`AIR_HU` (soft tissue, bone), opened by one voxel (so a patient table or a
   cushion touching the skin along a thin line comes loose); the largest component, grown back by that voxel
   within the dense voxels, with the lungs; then every axial slice's holes filled, the image's border counting as
   closed where body or lung touches it (a chest wider than the field of view). Air outside the patient (beside,
   above the head, below the feet), the table and an airway open to the outside air are thereby outside the body.
3. Trachea: the largest piece of the remaining air below :data:`TRACHEA_LUMEN_HU` (the lumen) inside the body
   shaped like a tube along the head-foot axis, above the lungs' centre and between them.
4. Gas: the other air pieces of at least :data:`MIN_LUNG_ML` inside the body (stomach, bowel).
5. Cut lungs: lung of at least :data:`CUT_LUNG_ML` in the first or last axial slice means the field of view cuts
   the lungs there ("apex" or "bases"); on the image's side faces, "sides".

"Axial" is the CT's own axis closest to the patient's head-foot (LPS z) axis, so any axis order, flips and a
tilt of the slices work. Physical points are LPS (ITK): x grows towards the patient's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .images import Geometry
from .morphology import dilate, fill_slice_holes, opened

AIR_HU = -400.0
"""Lung parenchyma and airway lumen lie below, soft tissue, fluid and bone above."""
RIGHT_LUNG, LEFT_LUNG = 50, 100
"""Lung labels (as the official atlas lung mask uses)."""
WORK_SPACING_MM = 3.0
LUNG_CORE_MM = 10.0
"""Radius (mm) of the ball that separates the lungs from the trachea and main bronchi (radius 7-12 mm)."""
MIN_LUNG_ML = 5.0
MIN_BODY_ML = 50.0
TRACHEA_MIN_ML = 0.5
TRACHEA_MIN_MM, TRACHEA_MAX_CM2, TRACHEA_MAX_FLATNESS = 20.0, 8.0, 2.0
TRACHEA_LUMEN_HU = -900.0
"""The trachea is looked for in air below this: its lumen, pure air near -1000 HU. Lung the lung finder left out
(next to consolidation, at the apices) lies near -650 HU at 3 mm; in air below :data:`AIR_HU` it joined the
trachea or was taken for it (held-out consolidation phantoms: 5 % and 36 % of such a "trachea" was airway)."""
CUT_LUNG_ML = 2.0
PURE_AIR_HU = -950.0
MAX_PURE_AIR = 0.15
MAX_PURE_AIR_LARGE, LARGE_LUNG_ML = 0.5, 300.0
"""Lung has fewer than :data:`MAX_PURE_AIR` of its (3 mm) voxels below :data:`PURE_AIR_HU` (measured 0.00 in
TotalSegmentator's test CTs); a piece of at least :data:`LARGE_LUNG_ML` (a lung, not a bowel loop) fewer than
:data:`MAX_PURE_AIR_LARGE` (emphysema). Stomach and bowel gas measured 0.29-0.76, the outside air 0.44-0.82
(docs/segmentation.md). Emphysema beyond about half of the lung below -950 HU at 3 mm would read as gas."""


def coarse_grid(image: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> Geometry:
    """``image``'s box and orientation on voxels of at least ``spacing_mm`` (finer axes are coarsened)."""
    spacing = tuple(max(s, spacing_mm) for s in image.GetSpacing())
    size = tuple(max(1, math.ceil(n * s / c)) for n, s, c in zip(image.GetSize(), image.GetSpacing(), spacing))
    return Geometry(size, spacing, image.GetOrigin(), image.GetDirection())


@dataclass
class ChestMasks:
    """Masks (z, y, x) uint8 on ``grid`` (the CT's :func:`coarse_grid`): ``body`` (holes filled, 0/1),
    ``lungs`` (0, :data:`RIGHT_LUNG`, :data:`LEFT_LUNG`), ``trachea`` (0/1; empty when none is seen);
    ``lungs_cut``: where the field of view cuts the lungs ("apex", "bases", "sides"; empty when it holds them
    whole); ``gas_ml``: air pockets inside the body that are neither lung nor trachea (stomach, bowel);
    ``cut_cm2``: lung area (cm²) on each cut face; ``axial``: the numpy axis closest to head-foot."""

    grid: Geometry
    body: np.ndarray
    lungs: np.ndarray
    trachea: np.ndarray
    lungs_cut: list[str]
    gas_ml: float = 0.0
    cut_cm2: dict = field(default_factory=dict)
    axial: int = 0

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.grid.spacing)) / 1000.0

    @property
    def lung_ml(self) -> float:
        return float((self.lungs > 0).sum()) * self.voxel_ml

    def image(self, name: str) -> sitk.Image:
        """``body``, ``lungs`` or ``trachea`` as a SimpleITK image on :attr:`grid`."""
        return self.grid.apply(sitk.GetImageFromArray(getattr(self, name)))

    @property
    def trachea_ml(self) -> float:
        return float((self.trachea > 0).sum()) * self.voxel_ml

    @property
    def body_ml(self) -> float:
        return float((self.body > 0).sum()) * self.voxel_ml

    def lung_extent_mm(self) -> float:
        """Head-foot extent (mm) of the lungs; 0 without lungs."""
        rows = np.nonzero(np.moveaxis(self.lungs > 0, self.axial, 0).any(axis=(1, 2)))[0]
        return 0.0 if not len(rows) else float(rows[-1] - rows[0] + 1) * self.grid.spacing[2 - self.axial]

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
    """Bool: binary opening of ``mask`` (z, y, x) by a ball of ``radius`` (x, y, z) voxels, with the edge slices
    repeated beyond the scan, so that lung cut by the field of view's edge stays as thick as it is there."""
    pad = [(r, r) for r in radius[::-1]]
    return opened(np.pad(mask, pad, mode="edge"), radius)[tuple(slice(r, r + n) for r, n in
                                                                 zip(radius[::-1], mask.shape))]


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(connected-component labels (z, y, x) of ``mask``, voxel count per label with 0 for the background)."""
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    counts = np.bincount(cc.ravel())
    counts[0] = 0
    return cc, counts


def _side_faces(shape: tuple[int, ...], axial: int) -> np.ndarray:
    """Bool (z, y, x): the voxels on the image's faces other than the two axial end faces."""
    faces = np.zeros(shape, bool)
    for axis in range(3):
        if axis != axial:
            index = [slice(None)] * 3
            for end in (0, -1):
                index[axis] = end
                faces[tuple(index)] = True
    return faces


def hu_on_coarse_grid(ct: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> tuple[Geometry, np.ndarray]:
    """(the CT's :func:`coarse_grid`, its HU there as float32 (z, y, x); -1024 outside the CT)."""
    grid = coarse_grid(ct, spacing_mm)
    image = ct
    factors = [max(1, int(round(c / s))) for s, c in zip(ct.GetSpacing(), grid.spacing)]
    if any(f > 1 for f in factors):  # average first (a linear resample at 3 mm would alias thin slices)
        image = sitk.BinShrink(ct, factors)
    hu = sitk.Resample(image, grid.reference(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return grid, sitk.GetArrayFromImage(hu)


def survey_chest(ct: sitk.Image, spacing_mm: float = WORK_SPACING_MM,
                 coarse: tuple[Geometry, np.ndarray] | None = None) -> ChestMasks:
    """Body, lungs, trachea and gas of a CT in HU (module docstring) on :func:`coarse_grid` of the CT (``coarse``:
    :func:`hu_on_coarse_grid`'s result when already computed); masks may be empty (no body, no lung): it never
    refuses. :func:`find_chest` refuses instead."""
    grid, hu = coarse if coarse is not None else hu_on_coarse_grid(ct, spacing_mm)
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    direction = np.array(grid.direction).reshape(3, 3)
    axial = 2 - int(np.argmax(np.abs(direction[2])))  # numpy axis of the CT axis closest to head-foot
    air = hu < AIR_HU
    radius = _radius(grid, LUNG_CORE_MM)
    core_cc, core_counts = _components(_opened(air.astype(np.uint8), radius))
    keep = core_counts * voxel_ml >= MIN_LUNG_ML
    lungs = np.zeros(hu.shape, np.uint8)
    if keep.any():
        grown = dilate(keep[core_cc], [r + 1 for r in radius])
        piece_cc, piece_counts = _components(air & grown)
        pure = np.bincount(piece_cc.ravel(), weights=(hu < PURE_AIR_HU).ravel(), minlength=len(piece_counts))
        pure_share = pure / np.maximum(piece_counts, 1)
        lung_like = (piece_counts * voxel_ml >= MIN_LUNG_ML) & ((pure_share < MAX_PURE_AIR) | (
            (piece_counts * voxel_ml >= LARGE_LUNG_ML) & (pure_share < MAX_PURE_AIR_LARGE)))
        lung_like[0] = False
        order = [int(i) for i in np.argsort(piece_counts)[::-1] if lung_like[i]]
        if len(order) >= 2 and piece_counts[order[1]] >= 0.25 * piece_counts[order[0]]:
            parts = [np.argwhere(piece_cc == i) for i in order[:2]]
            parts.sort(key=lambda idx: _points(grid, idx)[:, 0].mean())
            for idx, value in zip(parts, (RIGHT_LUNG, LEFT_LUNG)):
                lungs[tuple(idx.T)] = value
        elif order:
            idx = np.argwhere(piece_cc == order[0])
            x = _points(grid, idx)[:, 0]
            lungs[tuple(idx.T)] = np.where(x < x.mean(), RIGHT_LUNG, LEFT_LUNG)
    dense = (hu >= AIR_HU).astype(np.uint8)
    step = _radius(grid, spacing_mm)
    cc, counts = _components(_opened(dense, step))
    body = np.zeros(hu.shape, np.uint8)
    if counts.max(initial=0) * voxel_ml >= MIN_BODY_ML:
        grown = dilate(cc == np.argmax(counts), step)
        tissue = (grown & (dense > 0)) | (lungs > 0)
        body = fill_slice_holes(tissue, axial, tissue & _side_faces(hu.shape, axial))
    rest = air & (body > 0) & (lungs == 0)
    lumen = rest & (hu < TRACHEA_LUMEN_HU)
    trachea = _trachea(grid, lumen, lungs, voxel_ml, axial) if lungs.any() else np.zeros(hu.shape, np.uint8)
    gas_cc, gas_counts = _components(rest & (trachea == 0))
    gas_ml = float(gas_counts[gas_counts * voxel_ml >= MIN_LUNG_ML].sum()) * voxel_ml
    along = np.moveaxis(lungs > 0, axial, 0)
    area_cm2 = float(np.prod([s for i, s in enumerate(grid.spacing) if i != 2 - axial])) / 100.0
    ends = ("bases", "apex") if direction[2, 2 - axial] > 0 else ("apex", "bases")  # first, last slice
    cut_cm2 = {}
    for end, plane in zip(ends, (along[0], along[-1])):
        if plane.sum() * voxel_ml >= CUT_LUNG_ML:
            cut_cm2[end] = round(float(plane.sum()) * area_cm2, 1)
    sides = (lungs > 0) & _side_faces(hu.shape, axial)
    if sides.sum() * voxel_ml >= CUT_LUNG_ML:
        cut_cm2["sides"] = round(float(sides.sum()) * area_cm2, 1)
    cut = [end for end in ("apex", "bases", "sides") if end in cut_cm2]
    return ChestMasks(grid, body, lungs, trachea, cut, round(gas_ml, 1), cut_cm2, axial)


def find_chest(ct: sitk.Image, spacing_mm: float = WORK_SPACING_MM) -> ChestMasks:
    """:func:`survey_chest`, refusing a CT without a body or without lungs (ValueError naming the fix)."""
    chest = survey_chest(ct, spacing_mm)
    if not chest.body.any():
        raise ValueError(f"no body found in the CT (no soft-tissue region of at least {MIN_BODY_ML:g} mL above "
                         f"{AIR_HU:g} HU): is it a CT in HU? Fix: give a chest CT in Hounsfield units (air about "
                         "-1000 HU)")
    if not chest.lungs.any():
        raise ValueError("no lungs found in the CT (no aerated lung of at least 5 mL): is it a chest CT in HU? Fix: "
                         "give a chest CT whose air is about -1000 HU and whose field of view holds the lungs")
    return chest


def _flatness(points: np.ndarray, slices: np.ndarray) -> float:
    """Median over a piece's axial slices of its front-back (LPS y) extent over its left-right (x) extent."""
    ratios = []
    for k in np.unique(slices):
        p = points[slices == k]
        ratios.append((np.ptp(p[:, 1]) + 1.0) / (np.ptp(p[:, 0]) + 1.0))
    return float(np.median(ratios))


def _trachea(grid: Geometry, rest: np.ndarray, lungs: np.ndarray, voxel_ml: float, axial: int) -> np.ndarray:
    """The largest air piece of ``rest`` shaped like a trachea (at least :data:`TRACHEA_MIN_MM` long head to foot,
    at most :data:`TRACHEA_MAX_CM2` across on average, its slices at most :data:`TRACHEA_MAX_FLATNESS` times
    deeper front to back than wide) whose centre lies above the lungs' centre and between the lungs' centres in x
    (LPS); zeros when there is none of :data:`TRACHEA_MIN_ML` (e.g. a scan below the carina: stomach and bowel
    gas are not taken for it)."""
    out = np.zeros(rest.shape, np.uint8)
    if not rest.any() or not ((lungs == RIGHT_LUNG).any() and (lungs == LEFT_LUNG).any()):
        return out
    cc, counts = _components(rest)
    right, left = (_points(grid, np.argwhere(lungs == v)).mean(0) for v in (RIGHT_LUNG, LEFT_LUNG))
    centre_z = (right[2] + left[2]) / 2
    slice_mm = grid.spacing[2 - axial]
    slice_cm2 = float(np.prod(grid.spacing)) / slice_mm / 100.0
    for label in np.argsort(counts)[::-1]:
        if counts[label] * voxel_ml < TRACHEA_MIN_ML:
            break
        index = np.argwhere(cc == label)
        slices = len(np.unique(index[:, axial]))
        if slices * slice_mm < TRACHEA_MIN_MM or counts[label] / slices * slice_cm2 > TRACHEA_MAX_CM2:
            continue
        points = _points(grid, index)
        centre = points.mean(0)
        if _flatness(points, index[:, axial]) > TRACHEA_MAX_FLATNESS:  # a gas-filled gut, not an airway
            continue
        if centre[2] > centre_z and right[0] < centre[0] < left[0]:
            out[tuple(index.T)] = 1
            break
    return out
