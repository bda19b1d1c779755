"""Where a patient's CT, or masks drawn on a patient, go in a model's space; and whether a segmentation fits the CT.

- :func:`place_ct`: a CT (to segment or edit, or the reference CT of condition masks) goes onto the model's grid
  through its lungs (:func:`MedSynLib.io.lungs.find_chest`): grid models get their box placed on the lungs,
  within the CT's field of view (:func:`MedSynLib.io.alignment.lung_centred_grid`), atlas models an affine
  alignment of the lungs to the atlas lung mask (:mod:`.atlas`). Lung that stays outside the box is measured and warned about.
- :func:`place_masks`: condition masks without a CT. Grid models keep their box where the masks fit in it, else
  move it onto the lungs the masks outline; a crop that loses more than :data:`MAX_LOST_FRACTION` of them is
  refused. Atlas models take masks as drawn in model space.
- :func:`segmentation_quality`: after a segmentation is mapped back, the share of the CT's aerated lung the lobes
  cover, the share of the lobes on the CT's lungs (dense disease included) and the share of the CT's tracheal air
  the airway covers, inside the model's box; below :data:`LUNG_COVER_MIN` / :data:`LOBES_ON_LUNG_MIN` /
  :data:`TRACHEA_COVER_MIN` the segmentation is not to be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import Refusal
from ..io.alignment import grid_on_points, inside_fraction, lung_centred_grid, resample
from ..io.images import Geometry, read_image
from ..io.lungs import LEFT_LUNG, RIGHT_LUNG, ChestMasks, coarse_grid, find_chest
from ..modelstore.bundle import LoadedModel, ModelSpace
from .atlas import align_to_atlas

ModelSpaceLike = LoadedModel | ModelSpace
"""What placement needs of a model: its ``grid``, ``space`` and atlas mask (weights loaded or not)."""

MAX_LOST_FRACTION = 0.01
"""Condition masks may lose at most this share of their lungs (lobes, else all masks) to the model's box."""
WARN_OUTSIDE_FRACTION = 0.002
"""Lung outside the model's box above this share (0.2 %, a few mL) is warned about."""
LUNG_COVER_MIN, LOBES_ON_LUNG_MIN = 0.85, 0.68
"""The lobes must cover this share of the CT's aerated lung and lie this much on its lungs (dense disease
included); calibrated on held-out phantoms (docs/segmentation.md)."""
TRACHEA_COVER_MIN = 0.5
TRACHEA_MIN_ML = 1.0
"""The airway check needs at least this much tracheal air inside the model's box."""


class UntrustedSegmentation(Refusal):
    """A segmentation that fails :func:`segmentation_quality` (exit code 4); ``quality`` holds the figures."""

    kind = "untrusted_segmentation"

    def __init__(self, message: str, quality: dict):
        super().__init__(message)
        self.quality = quality

    def details(self) -> dict:
        return {"quality": self.quality}


@dataclass
class Placement:
    """A model grid in patient space.

    ``grid``: the model grid used (grid models: moved onto the lungs); ``transform`` maps its points to patient
    points (identity for grid models, the atlas alignment for atlas models); ``chest``: the CT's body / lungs /
    trachea when placed from a CT; ``metadata``: what the sidecar records; ``warnings``: for the user.
    """

    grid: Geometry
    transform: sitk.Transform
    metadata: dict
    chest: ChestMasks | None = None
    warnings: list[str] = field(default_factory=list)

    def to_model(self, image: sitk.Image, interpolator=sitk.sitkNearestNeighbor, default: float = 0.0,
                 grid: Geometry | None = None) -> np.ndarray:
        """A patient-space image sampled on the model grid (or on ``grid``, e.g. its low-res subsample):
        (z, y, x) array of the image's pixel type."""
        return resample(image, grid or self.grid, interpolator, default, self.transform)

    def to_patient(self, array: np.ndarray, target: Geometry, grid: Geometry | None = None) -> np.ndarray:
        """A model-grid label map (z, y, x) on the model grid (or on ``grid``) -> (z, y, x) on ``target``
        (nearest neighbour, 0 outside the model's box)."""
        image = (grid or self.grid).apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))
        return resample(image, target, sitk.sitkNearestNeighbor, 0, self.transform.GetInverse())


def _box_mm(grid: Geometry) -> str:
    return " x ".join(f"{n * s:g}" for n, s in zip(grid.size, grid.spacing))


def place_ct(ct: sitk.Image, model: ModelSpaceLike, chest: ChestMasks | None = None) -> Placement:
    """Where the CT (HU) goes in ``model``'s space (module docstring); ``chest`` when its lungs are already found.
    Metadata: ``placement`` (lung mL, lung outside the box in mL and as a fraction), and ``model_grid_used`` (grid
    models) or ``alignment`` (atlas)."""
    chest = chest if chest is not None else find_chest(ct)
    if model.space == "atlas":
        alignment = align_to_atlas(chest.image("lungs"), read_image(model.atlas_mask_file(), "atlas lung mask"))
        grid, transform = model.grid, alignment.transform
        metadata = {"alignment": alignment.to_dict()}
        on = "the CT's lungs aligned to the atlas lung mask (affine)"
    else:
        grid, transform = lung_centred_grid(ct, model.grid, chest), sitk.Transform()
        metadata = {"model_grid_used": grid.to_dict()}
        on = "the CT's lungs (trachea left out), within the CT's field of view"
    outside = 1.0 - inside_fraction(chest.lung_points(), grid, transform if model.space == "atlas" else None)
    metadata["placement"] = {"on": on, "lung_ml": round(chest.lung_ml, 1),
                             "lung_outside_ml": round(outside * chest.lung_ml, 1),
                             "lung_outside_fraction": round(outside, 4), "lungs_cut_by_scan": chest.lungs_cut}
    placement = Placement(grid, transform, metadata, chest)
    if outside > WARN_OUTSIDE_FRACTION:
        placement.warnings.append(
            f"{outside * chest.lung_ml:.0f} mL ({100 * outside:.1f} %) of the CT's lungs lie outside the model's "
            f"{_box_mm(model.grid)} mm box and are not segmented")
    return placement


def _mask_points(image: sitk.Image) -> np.ndarray:
    """Physical points (n, 3) of a mask's non-zero voxels, on its :func:`coarse_grid` (about 3 mm)."""
    grid = coarse_grid(image)
    array = sitk.GetArrayFromImage(sitk.Resample(image, grid.reference(), sitk.Transform(),
                                                 sitk.sitkNearestNeighbor, 0))
    index = np.argwhere(array > 0)
    matrix = np.array(grid.direction).reshape(3, 3) * np.array(grid.spacing)
    return np.array(grid.origin) + index[:, ::-1] @ matrix.T


def place_masks(masks: dict[str, sitk.Image], model: LoadedModel) -> Placement:
    """Where condition masks without a CT go in ``model``'s space (module docstring).

    Raises ValueError when more than :data:`MAX_LOST_FRACTION` of the lobes (or, without lobes, of all masks)
    would fall outside the model's box; smaller losses of any mask become warnings. Metadata: ``placement``
    (how, and each mask's share and mL outside) and ``model_grid_used``.
    """
    points = {name: _mask_points(image) for name, image in masks.items()}
    outline = points["lobes"] if "lobes" in points else np.concatenate(list(points.values()))
    grid, on = model.grid, "the model's own box (the masks are taken as drawn in model space)"
    if model.space != "atlas" and inside_fraction(outline, grid) < 1.0:
        grid = grid_on_points(outline, model.grid, view=masks["lobes"] if "lobes" in masks else None)
        on = f"the lungs the {'lobes' if 'lobes' in points else 'masks'} outline (the masks did not fit the box)"
    fix = ("draw the masks on a CT the model generated, or pass the patient CT they were drawn on as "
           "--reference-ct" if model.space == "atlas" else "crop the masks to the lungs (the box must hold them)")
    placement = Placement(grid, sitk.Transform(), {"model_grid_used": grid.to_dict(), "placement": {"on": on}})
    hold_masks(placement, masks, model, fix, points=points, how="even with the box placed on them")
    return placement


def hold_masks(placement: Placement, masks: dict[str, sitk.Image], model: ModelSpaceLike, fix: str,
               force: bool = False, points: dict | None = None, how: str = "") -> None:
    """Measure, per mask, what the placed box would drop of the masks to hold; the rule everywhere: more than
    :data:`MAX_LOST_FRACTION` of the lobes (without lobes, of all masks) is refused (ValueError naming ``fix``)
    unless ``force``; any other loss is a warning. Records ``placement.metadata["placement"]["outside"]`` (per
    mask: fraction and mL outside, and whether it was forced)."""
    points = points if points is not None else {name: _mask_points(image) for name, image in masks.items()}
    transform = placement.transform if model.space == "atlas" else None
    lost = {name: 1.0 - inside_fraction(p, placement.grid, transform) for name, p in points.items()}
    voxel_ml = {name: float(np.prod(coarse_grid(masks[name]).spacing)) / 1000.0 for name in masks}
    ml = {name: f * len(points[name]) * voxel_ml[name] for name, f in lost.items()}
    box = _box_mm(model.grid)
    outline = ["lobes"] if "lobes" in points else list(points)
    total = sum(len(points[n]) for n in outline)
    lost_outline = sum(lost[n] * len(points[n]) for n in outline) / max(total, 1)
    refused = lost_outline > MAX_LOST_FRACTION
    placement.metadata.setdefault("placement", {})["outside"] = {
        name: {"fraction": round(f, 4), "ml": round(ml[name], 1)} for name, f in lost.items()}
    if refused and not force:
        what = "lobes" if "lobes" in points else "condition masks"
        raise ValueError(f"{100 * lost_outline:.1f} % of the {what} lie outside the model's {box} mm field of view"
                         f"{' ' + how if how else ''}; the model would drop that part. Fix: {fix}"
                         + ("; --force holds what fits and records the loss" if how == "" else ""))
    for name, f in lost.items():
        if f > 0:
            placement.warnings.append(f"{100 * f:.1f} % ({ml[name]:.0f} mL) of the {name} mask lies outside the "
                                      f"model's {box} mm box and is dropped" + (" (--force)" if refused else ""))


def _hull_2d(points: np.ndarray) -> np.ndarray:
    """Convex hull (k, 2) of 2-D integer points (n, 2), counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return np.array(pts, float)

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    return np.array(half(pts)[:-1] + half(pts[::-1])[:-1], float)


def _filled_hull(mask2d: np.ndarray) -> np.ndarray:
    """The convex hull of a 2-D mask's pixels, filled (bool, same shape)."""
    points = np.argwhere(mask2d)
    hull = _hull_2d(points)
    out = mask2d.copy()
    if len(hull) < 3:
        return out
    lo, hi = points.min(0), points.max(0) + 1
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij"), -1)
    inside = np.ones(grid.shape[:2], bool)
    for p, q in zip(hull, np.roll(hull, -1, axis=0)):
        inside &= (q[0] - p[0]) * (grid[..., 1] - p[1]) - (q[1] - p[1]) * (grid[..., 0] - p[0]) >= -1e-9
    out[lo[0]:hi[0], lo[1]:hi[1]] |= inside
    return out


def lung_envelope(chest: ChestMasks) -> np.ndarray:
    """Bool (z, y, x) on the chest grid: each lung's axial slices filled to their convex hull, within the body, so
    that lung made dense by disease (consolidation, a collapsed lobe beside an effusion, a mass) counts as lung."""
    out = np.moveaxis(chest.lungs > 0, chest.axial, 0).copy()
    lungs = np.moveaxis(chest.lungs, chest.axial, 0)
    for k in range(out.shape[0]):
        for value in (RIGHT_LUNG, LEFT_LUNG):
            if (lungs[k] == value).any():
                out[k] |= _filled_hull(lungs[k] == value)
    return np.moveaxis(out, 0, chest.axial) & ((chest.body > 0) | (chest.lungs > 0))


def segmentation_quality(placement: Placement, lobes: np.ndarray, airway: np.ndarray, geometry: Geometry) -> dict:
    """How well a segmentation (lobes 0..5 and airway 0/1, (z, y, x) on the CT's ``geometry``) fits the CT's own
    lungs and trachea (``placement.chest``), inside the model's box, on the chest masks' ~3 mm grid.

    Returns ``lung_covered`` (share of the CT's aerated lung inside the lobes), ``lobes_on_lung`` (share of the
    lobes on the CT's lungs, dense disease included: :func:`lung_envelope`), ``lung_dice`` (lobes' union vs. the
    aerated lung, for information: dense disease lowers it), ``trachea_covered`` (share of the CT's tracheal air
    inside the airway; None when under :data:`TRACHEA_MIN_ML` of trachea is in the box), the thresholds,
    ``lungs_cut_by_scan``, ``passed`` and ``problems`` (sentences naming what looks wrong; lungs cut by the field
    of view are one).
    """
    chest = placement.chest
    reference = chest.grid.reference()

    def on_chest(array: np.ndarray) -> np.ndarray:
        image = geometry.apply(sitk.GetImageFromArray((np.asarray(array) > 0).astype(np.uint8)))
        return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0)) > 0

    box = placement.grid.apply(sitk.Image(list(placement.grid.size), sitk.sitkUInt8) + 1)
    inside = sitk.GetArrayFromImage(sitk.Resample(box, reference, placement.transform.GetInverse(),
                                                  sitk.sitkNearestNeighbor, 0)) > 0
    segmented, lungs = on_chest(lobes) & inside, (chest.lungs > 0) & inside
    total = int(segmented.sum() + lungs.sum())
    overlap = float((segmented & lungs).sum())
    lung_dice = 2.0 * overlap / total if total else 0.0
    lung_covered = overlap / float(lungs.sum()) if lungs.any() else 0.0
    lobes_on_lung = float((segmented & lung_envelope(chest)).sum()) / float(segmented.sum()) \
        if segmented.any() else 0.0
    trachea = (chest.trachea > 0) & inside
    covered = None
    if trachea.sum() * chest.voxel_ml >= TRACHEA_MIN_ML:
        covered = float((on_chest(airway) & trachea).sum()) / float(trachea.sum())
    problems = []
    if chest.lungs_cut:
        problems.append(f"the CT's field of view cuts the lungs ({' and '.join(chest.lungs_cut)}): the model needs "
                        "whole lungs to place the lobes (with the bases cut, lobe Dice fell from 0.90 to 0.77)")
    if lung_covered < LUNG_COVER_MIN or lobes_on_lung < LOBES_ON_LUNG_MIN:
        problems.append(f"the lobes do not match the CT's own lungs (they cover {100 * lung_covered:.0f} % of its "
                        f"aerated lung, needs {100 * LUNG_COVER_MIN:.0f} %; {100 * lobes_on_lung:.0f} % of them lie "
                        f"on its lungs, needs {100 * LOBES_ON_LUNG_MIN:.0f} %): the lungs may be unusual for the "
                        "model (orientation, field of view) or the CT not a chest CT in HU")
    if covered is not None and covered < TRACHEA_COVER_MIN:
        problems.append(f"the airway misses the trachea (it covers {100 * covered:.0f} % of the CT's tracheal air, "
                        f"needs {100 * TRACHEA_COVER_MIN:.0f} %)")
    return {"lung_covered": round(lung_covered, 4), "lobes_on_lung": round(lobes_on_lung, 4),
            "lung_dice": round(lung_dice, 4), "trachea_covered": None if covered is None else round(covered, 4),
            "lung_covered_min": LUNG_COVER_MIN, "lobes_on_lung_min": LOBES_ON_LUNG_MIN,
            "trachea_covered_min": TRACHEA_COVER_MIN, "lungs_cut_by_scan": chest.lungs_cut, "passed": not problems,
            "problems": problems}
