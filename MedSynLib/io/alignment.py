"""Placing a model's box on the lungs of a CT (or of masks), and resampling between grids.

Physical points are LPS (ITK) mm.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from .images import Geometry
from .lungs import ChestMasks, find_chest


def _window_centre(u: np.ndarray, length: float) -> float:
    """Centre of the interval of ``length`` that holds the most of the coordinates ``u``; among equals, the one
    nearest the middle of ``u``'s range."""
    lo, hi = float(u.min()), float(u.max())
    u = np.sort(u)
    starts = np.unique(np.concatenate([u, u - length]))
    counts = np.searchsorted(u, starts + length, side="right") - np.searchsorted(u, starts, side="left")
    best = starts[counts == counts.max()] + length / 2
    return float(best[np.argmin(np.abs(best - (lo + hi) / 2))])


def _box_centre(u: np.ndarray, length: float, view: tuple[float, float] | None) -> float:
    """Centre, along one axis, of a box of ``length`` mm for the coordinates ``u`` (mm) seen in the field of view
    ``view`` (lowest, highest mm; None: unbounded). When ``u`` fits: centred on ``u``, moved (keeping all of
    ``u`` inside) to lie within the view, or to cover it when the view is shorter than the box. Else where it
    holds the most of ``u``."""
    lo, hi = float(u.min()), float(u.max())
    if hi - lo > length:
        return _window_centre(u, length)
    centre = (lo + hi) / 2
    if view is not None:
        centre = float(np.clip(centre, *sorted((view[0] + length / 2, view[1] - length / 2))))
    return float(np.clip(centre, hi - length / 2, lo + length / 2))


def _view_along(image: sitk.Image, direction: np.ndarray) -> np.ndarray:
    """(3, 2): lowest and highest coordinate (mm) of ``image``'s field of view (its voxels' outer edges) along
    each column of ``direction``."""
    size = image.GetSize()
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in size])))
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    along = (np.array(image.GetOrigin()) + corners @ matrix.T) @ direction
    return np.stack([along.min(0), along.max(0)], axis=1)


def grid_on_points(points: np.ndarray, grid: Geometry, snap_to: sitk.Image | None = None,
                   view: sitk.Image | None = None) -> Geometry:
    """``grid`` (size, spacing, direction kept) moved so that its box holds as many of ``points`` (n, 3) (LPS mm)
    as it can. Along each of ``grid``'s axes, when the points fit: centred on them, but kept inside the field of
    view of the image ``view`` (or covering it, when shorter than the box) as far as that keeps every point
    inside; else where it holds the most. So an image already cut to the box's size keeps its framing: a CT the
    model generated comes back on the grid the model drew it on, with its lungs where the model put them.

    When ``snap_to`` (an image) shares ``grid``'s direction, the origin snaps to the nearest of its voxel centres (a
    shift of at most half a voxel per axis): a grid whose spacing is a whole multiple of the image's then samples
    its voxels exactly, with no interpolation blur (as the official 4x nearest subsample of a 1 mm volume does).
    """
    direction = np.array(grid.direction).reshape(3, 3)
    extent = np.array(grid.size) * np.array(grid.spacing)
    along = points @ direction  # coordinates along each grid axis
    views = _view_along(view, direction) if view is not None else [None] * 3
    centre = direction @ np.array([_box_centre(along[:, a], extent[a], views[a]) for a in range(3)])
    origin = centre - direction @ ((np.array(grid.size) - 1) / 2.0 * np.array(grid.spacing))
    if snap_to is not None and np.allclose(direction, np.array(snap_to.GetDirection()).reshape(3, 3), atol=1e-6):
        voxel = np.round(snap_to.TransformPhysicalPointToContinuousIndex(origin.tolist())).astype(int)
        origin = np.array(snap_to.TransformIndexToPhysicalPoint(voxel.tolist()))
    return Geometry(grid.size, grid.spacing, tuple(origin.tolist()), grid.direction)


def lung_centred_grid(ct: sitk.Image, grid: Geometry, chest: ChestMasks | None = None) -> Geometry:
    """``grid`` placed on the CT's lungs (:func:`grid_on_points` of :func:`~.lungs.find_chest`'s lungs, trachea
    left out, within the CT's field of view), snapped to the CT's voxels; ``chest`` when the lungs are already
    found."""
    chest = chest if chest is not None else find_chest(ct)
    return grid_on_points(chest.lung_points(), grid, snap_to=ct, view=ct)


def inside_fraction(points: np.ndarray, grid: Geometry, transform: sitk.Transform | None = None) -> float:
    """Fraction (0..1) of ``points`` (n, 3) LPS mm inside ``grid``'s box; ``transform`` maps grid points to the
    points' space (identity if None; then at most 20,000 of the points are used)."""
    if not len(points):
        return 1.0
    if transform is not None:
        inverse = transform.GetInverse()
        points = np.array([inverse.TransformPoint(p) for p in points[::max(1, len(points) // 20000)].tolist()])
    direction = np.array(grid.direction).reshape(3, 3)
    index = (points - np.array(grid.origin)) @ direction / np.array(grid.spacing)
    inside = ((index >= -0.5) & (index <= np.array(grid.size) - 0.5)).all(1)
    return float(inside.mean())


def resample(image: sitk.Image, grid: Geometry, interpolator=sitk.sitkNearestNeighbor, default: float = 0.0,
             transform: sitk.Transform | None = None) -> np.ndarray:
    """``image`` sampled on ``grid`` (keeping its pixel type): (z, y, x) array; ``transform`` maps grid points to
    image points (identity if None)."""
    out = sitk.Resample(image, grid.reference(), transform or sitk.Transform(), interpolator, default,
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)
