"""``edit(ct, region, report, model)``: replace a region of a CT by what the model generates for a report.

The CT goes into model space exactly as for :func:`~.generation.segment`, through :func:`.placement.place_ct` (grid
models: the box placed on the lungs; atlas models: the affine alignment). There every channel is held outside the
region (the CT, and any anatomy masks given to keep); inside it the model generates CT, lobes, airway and vessels
that follow the report (:class:`~MedSynLib.diffusion.HeldChannels` with a voxel mask, in both stages). The generated
CT goes back onto the input's own grid and replaces only the region, with a linear blend over a narrow margin inside
the region's border; every voxel outside the region keeps the input's value and pixel type bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..io.alignment import resample
from ..io.codecs import hu_to_model
from ..io.images import Geometry, Provenance
from ..modelstore.bundle import LoadedModel
from ..run_settings import RunSettings
from .generation import CONDITION_CHANNELS, Progress, _Run, encode_condition, hold_channels
from .placement import hold_masks
from .scan_check import ScanCheck
from .result_check import check_blend, check_edit_changed, check_region_share

EDITED_DESCRIPTION = "EDITED by MedSyn: a region replaced by generated content; not the original scan"
"""Header description of an edited CT (NIfTI keeps its first 79 characters)."""


@dataclass
class EditResult:
    """Arrays (z, y, x) on the input CT's ``geometry``: ``ct`` the edited CT in the input's pixel type (HU);
    ``region`` uint8 {0, 1}; ``lobes`` (0..5) / ``airway`` / ``vessels`` uint8, generated inside the region and 0
    outside it; ``difference_hu`` float32, edited minus input (0 outside the region)."""

    ct: np.ndarray
    region: np.ndarray
    lobes: np.ndarray
    airway: np.ndarray
    vessels: np.ndarray
    difference_hu: np.ndarray
    geometry: Geometry
    metadata: dict = field(default_factory=dict)
    source: Provenance = field(default_factory=Provenance)
    """What the input CT's header says it is (a SYNTHETIC input gives a SYNTHETIC_EDITED result)."""


def region_on_ct(region: sitk.Image, ct: sitk.Image, label: int | None = None) -> np.ndarray:
    """The region (nonzero voxels, or voxels equal to ``label``) of a label map in any geometry, as a bool (z, y, x)
    array on the CT's grid (nearest neighbour). Refuses an empty region and one that misses the CT."""
    if region.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"the region has {region.GetNumberOfComponentsPerPixel()} layers; export the one segment "
                         "to edit as a label map")
    values = sitk.GetArrayViewFromImage(region)
    if not np.isfinite(values).all():
        raise ValueError("the region mask contains NaN or infinite values")
    inside = values == label if label is not None else values != 0
    if not inside.any():
        what = f"no voxel with label {label}" if label is not None else "no nonzero voxel"
        raise ValueError(f"the region is empty ({what}): draw the region to edit, or pick its label with "
                         "--region-label")
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(region)
    if Geometry.of(region) == Geometry.of(ct):
        on_ct = inside
    else:
        on_ct = resample(mask, Geometry.of(ct), sitk.sitkNearestNeighbor, 0).astype(bool)
    if not on_ct.any():
        raise ValueError("the region lies outside the CT's field of view: draw it on this CT (or give the label "
                         "map that belongs to it)")
    check_region_share(values, on_ct, label)
    return on_ct


def _region_extent(region: np.ndarray, ct: sitk.Image) -> dict:
    """Volume (mL, voxels) and bounding box (voxel indices x, y, z; LPS mm of the corner voxel centres)."""
    idx = np.argwhere(region)
    lo, hi = idx.min(0)[::-1].tolist(), idx.max(0)[::-1].tolist()
    corners = np.array([ct.TransformIndexToPhysicalPoint([(lo, hi)[b >> a & 1][a] for a in range(3)])
                        for b in range(8)])
    return {"volume_ml": round(float(len(idx)) * float(np.prod(ct.GetSpacing())) / 1000.0, 3),
            "voxels": int(len(idx)), "bbox_index_xyz": [lo, hi],
            "bbox_lps_mm": [corners.min(0).round(2).tolist(), corners.max(0).round(2).tolist()]}


def blend_weight(region: np.ndarray, geometry: Geometry, margin_mm: float) -> np.ndarray:
    """Weight (z, y, x) float32 of the generated CT: 0 outside the region, rising linearly with the distance (mm)
    from the region's border to 1 at ``margin_mm`` inside it."""
    image = geometry.apply(sitk.GetImageFromArray(region.astype(np.uint8)))
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False,
                                                                useImageSpacing=True))
    return np.where(region, np.clip((depth + 0.5 * min(geometry.spacing)) / margin_mm, 0.0, 1.0), 0.0) \
        .astype(np.float32)


def paste(ct: np.ndarray, generated_hu: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``ct`` with ``weight * generated + (1 - weight) * ct`` where ``weight > 0``, in ``ct``'s dtype (integers
    rounded and clipped to the type's range); voxels of weight 0 are the input's, bit for bit."""
    out = ct.copy()
    where = weight > 0
    mixed = weight[where] * generated_hu[where] + (1.0 - weight[where]) * ct[where].astype(np.float32)
    if np.issubdtype(ct.dtype, np.integer):
        info = np.iinfo(ct.dtype)
        mixed = np.clip(np.rint(mixed), info.min, info.max)
    out[where] = mixed.astype(ct.dtype)
    return out


@dataclass(frozen=True)
class EditOptions:
    """How an edit treats its CT and region: ``keep`` holds lobe / airway / vessel label maps of this CT (its
    geometry or any other) outside the region; ``region_label`` picks the voxels of one label of the region's label
    map (None: every nonzero voxel); ``resamples`` R repeats each sampler step R times from its own noise level
    (RePaint; R + 1 times the network evaluations); ``blend_mm`` is the width of the blend inside the region's
    border (None: one voxel of the grid the model generated on, 1 mm, or 4 mm with ``lowres_only``); ``force`` runs
    on a CT that failed the scan check (its problems become warnings) and keeps masks partly outside the box."""

    keep: dict[str, sitk.Image] | None = None
    region_label: int | None = None
    resamples: int = 0
    blend_mm: float | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.blend_mm is not None and not (np.isfinite(self.blend_mm) and self.blend_mm > 0):
            raise ValueError(f"the blend margin must be a positive number of mm, got {self.blend_mm}")
        if self.resamples < 0:
            raise ValueError(f"resamples must be 0 or more, got {self.resamples}")


def edit(ct: sitk.Image, region: sitk.Image, report: str, model: LoadedModel, settings: RunSettings | None = None, *,
         options: EditOptions | None = None, progress: Progress | None = None,
         scan: ScanCheck | None = None) -> EditResult:
    """Replace ``region`` (a label map in any geometry) of the CT (HU) by content generated for ``report``.

    settings: as for :func:`~.generation.generate`. options: :class:`EditOptions` (masks to keep, region label,
    RePaint resampling, blend width, force). Raises ValueError, before any sampling, for an empty region, a region
    outside the CT or the model's field of view, and a region that covers everything. The CT passes the scan check
    first, as for :func:`~.generation.segment` (``scan`` when the caller ran it; :class:`.scan_check.ScanRefused` unless
    ``options.force``, whose problems then become warnings); kept masks follow the rule of
    :func:`.placement.hold_masks` (more than 1 % of the lobes outside the model's box refused unless forced).
    """
    options = options or EditOptions()
    if not isinstance(report, str) or not report.strip():
        raise ValueError("the report is empty: describe the edited scan (Findings / Impression)")
    if ct.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("the CT must be a scalar volume in HU")
    values = sitk.GetArrayFromImage(ct)
    if not np.isfinite(values).all():
        raise ValueError("the CT contains NaN or infinite values")
    keep, force = {k: v for k, v in (options.keep or {}).items() if v is not None}, options.force
    unknown = set(keep) - set(CONDITION_CHANNELS)
    if unknown:
        raise ValueError(f"unknown anatomy mask {sorted(unknown)}; use lobes, airway, vessels")
    inside = region_on_ct(region, ct, options.region_label)
    run = _Run(model, settings, progress)
    scan = run.scanned(ct, force, "CT", scan)
    placement = scan.placement
    if keep:
        known_warnings = len(placement.warnings)
        hold_masks(placement, keep, model, "give the masks of this CT's lungs (the box holds the lungs)", force=force)
        run.warnings += placement.warnings[known_warnings:]
    grid, transform = placement.grid, placement.transform
    target, inverse = Geometry.of(ct), transform.GetInverse()
    generated_grid = grid.subsampled(model.lowres_factor) if run.settings.lowres_only else grid
    margin = float(max(generated_grid.spacing)) if options.blend_mm is None else float(options.blend_mm)
    weight = blend_weight(inside, target, margin)
    if options.blend_mm is not None:  # before any sampling (the default margin is one voxel of the grid generated on)
        check_blend(weight, margin)
    region_image = target.apply(sitk.GetImageFromArray(inside.astype(np.uint8)))
    outside_box = inside & ~placement.to_patient(np.ones(grid.size[::-1], np.uint8), target).astype(bool)
    if outside_box.any():
        ml = outside_box.sum() * float(np.prod(ct.GetSpacing())) / 1000.0
        raise ValueError(f"{ml:.1f} mL of the region lies outside the model's field of view ({grid.size} voxels of "
                         f"{grid.spacing} mm placed on the lungs): draw the region inside the chest")
    free = placement.to_model(region_image)
    free = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(free), [1, 1, 1])).astype(bool)
    if not free.any():
        raise ValueError(f"the region is smaller than one voxel of the model's grid ({grid.spacing} mm): draw it "
                         "larger")
    if free.all():
        raise ValueError("the region covers the model's whole field of view, so nothing would be kept: draw a "
                         "smaller region, or use 'medsyn generate'")
    x, y, z = grid.size
    known = np.zeros((1, 4, z, y, x), np.float32)
    hu = placement.to_model(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkLinear, -1024.0)
    known[0, 0] = hu_to_model(hu)
    for name, image in keep.items():
        known[0, CONDITION_CHANNELS[name]] = encode_condition(name, image, grid, transform)
    held_channels = [0] + sorted(CONDITION_CHANNELS[k] for k in keep)
    held = hold_channels(torch.from_numpy(known).to(run.device), held_channels, where=torch.from_numpy(~free))
    tiles = run.sr_tiles()
    text = run.encode_report(report)
    x64, x256 = run.sample_both_stages(text, held, tiles, options.resamples)
    generated = run.decode(x64, x256, grid, report, [], with_ct=True)
    source = generated.geometry
    generated_hu = resample(source.apply(sitk.GetImageFromArray(generated.ct_hu.astype(np.float32))), target,
                            sitk.sitkLinear, -1024.0, inverse)
    edited = paste(values, generated_hu, weight)
    masks = {name: np.where(inside, placement.to_patient(getattr(generated, name), target, source), 0)
             .astype(np.uint8) for name in ("lobes", "airway", "vessels")}
    metadata = {**generated.metadata, **placement.metadata, "mode": "edit", "scan_check": scan.to_dict(),
                "edited": True, "held_channels": held_channels, "held": "outside the region",
                "kept_anatomy": sorted(keep), "resamples": options.resamples,
                "blend_mm": margin, "region": _region_extent(inside, ct), "sr_tiles": tiles,
                "timings_s": dict(run.timings)}
    difference = np.where(inside, edited.astype(np.float32) - values.astype(np.float32), 0).astype(np.float32)
    check_edit_changed(difference)
    return EditResult(edited, inside.astype(np.uint8), masks["lobes"], masks["airway"], masks["vessels"],
                      difference, target, metadata, Provenance.of(ct))
