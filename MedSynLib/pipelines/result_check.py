"""Garbage is not a result: the checks every generated CT, edit and edit region pass before anything is written.

- :func:`check_generated_ct`: a CT (model units [-1, 1]) that is blank (one value) or saturated (almost every voxel
  at the clipping limits -1024 / 600 HU: what a huge guidance scale gives, two values and nothing between; measured
  on the demo and tiny models: 0 % of voxels between the limits at guidance 1e30, 88-96 % at the default).
- :func:`check_region_share`: an edit region that is (nearly) the whole CT, or is no label map at all (a CT given
  as the region).
- :func:`check_blend` / :func:`check_edit_changed`: an edit whose blend margin is deeper than the region, so that
  no voxel would be replaced, and an edit that changed no voxel.
"""

from __future__ import annotations

import numpy as np

from ..errors import MedSynError

SATURATED_SHARE = 0.02
"""A generated CT with fewer voxels than this strictly between the clipping limits is saturated (degenerate)."""
REGION_MAX_SHARE = 0.9
"""An edit region may cover at most this share of the CT's voxels (the rest is what the edit keeps)."""
REGION_MAX_LABELS = 256
"""A label map holds at most this many distinct values; more is an image (e.g. a CT) given as the region."""


def check_generated_ct(ct_model, fix: str) -> None:
    """Refuse a blank or saturated generated CT (``ct_model``: array or tensor in model units, any shape)."""
    values = np.asarray(ct_model, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise MedSynError(f"the generated CT is blank (every voxel {high:.3g} in model units), so there is no "
                          "result to write", fix)
    between = float(np.mean((values > -1.0) & (values < 1.0)))
    if between < SATURATED_SHARE:
        raise MedSynError(f"the generated CT is saturated: {100 * (1 - between):.1f} % of its voxels lie at the "
                          "clipping limits (-1024 / 600 HU), which is no CT, so there is no result to write",
                          "use a guidance scale near the model's default (e.g. --guidance 3; very large values "
                          "saturate the image); " + fix)


def check_region_share(values: np.ndarray, on_ct: np.ndarray, label: int | None) -> None:
    """Refuse a region image that is no label map (``values``: its voxels) and a region (``on_ct``: bool on the CT's
    grid) that covers more than :data:`REGION_MAX_SHARE` of the CT."""
    if label is None:
        finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
        distinct = np.unique(finite[:: max(1, finite.size // 1_000_000)])
        if len(distinct) > REGION_MAX_LABELS or not np.array_equal(distinct, np.round(distinct)):
            raise MedSynError(f"the region is not a label map: it holds {len(distinct)} distinct values"
                              f"{' (not whole numbers)' if len(distinct) <= REGION_MAX_LABELS else ''}, like an "
                              "image (a CT given as the region?)",
                              "give the label map of the region to replace (e.g. a Slicer segment exported as a "
                              "label map), or pick one label with --region-label")
    share = float(on_ct.mean())
    if share > REGION_MAX_SHARE:
        covered = "the whole CT" if share == 1.0 else f"{100 * share:.1f} % of the CT"
        raise MedSynError(f"the region covers {covered}, so almost nothing would be kept",
                          f"draw a region of at most {100 * REGION_MAX_SHARE:.0f} % of the CT, or use "
                          "'medsyn generate' for a whole new synthetic CT")


def check_blend(weight: np.ndarray, blend_mm: float) -> None:
    """Refuse blend weights (0 outside the region, up to 1 inside) that reach nowhere above 0.5: the blend margin
    is deeper than the region, so the edit would replace (almost) nothing."""
    if not float(weight.max(initial=0.0)) >= 0.5:
        raise MedSynError(f"the blend margin {blend_mm:g} mm is deeper than the region, so the edit would replace "
                          "nothing (no voxel gets even half of the generated value)",
                          "use a smaller --blend-mm (default: one voxel of the model grid) or draw a larger region")


def check_edit_changed(difference_hu: np.ndarray) -> None:
    """Refuse an edit that changed no voxel (``difference_hu``: edited minus input, 0 outside the region)."""
    if not np.any(difference_hu != 0):
        raise MedSynError("the edit changed no voxel of the region, so there is no edited CT to write",
                          "use another seed or report, or a smaller --blend-mm")
