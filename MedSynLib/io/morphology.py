"""Binary morphology on numpy masks (z, y, x), the same voxels as SimpleITK's filters but several times faster.

:func:`erode`, :func:`dilate` and :func:`opened` use ITK's ball (``sitk.BinaryDilate(image, radius)``: the voxels
whose offsets satisfy sum((d_i / (r_i + 0.5))²) <= 1) and ITK's border rule (outside the image counts as set for an
erosion, unset for a dilation). The ball is taken apart into runs along x, one per (z, y) offset, so a radius-3
ball costs about 40 array operations instead of ITK's per-voxel neighbourhood walk (a 3 mm chest: 0.09 s instead
of 0.56 s of CPU). :func:`fill_slice_holes` fills the holes of every slice with one call instead of one per slice.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk


def _ball_runs(radius: list[int]) -> dict[tuple[int, int], int]:
    """ITK's ball of voxel radii ``radius`` (x, y, z) as {(dz, dy): half-length of its run along x}."""
    rx, ry, rz = radius
    runs = {}
    for dz in range(-rz, rz + 1):
        for dy in range(-ry, ry + 1):
            rest = 1.0 - (dz / (rz + 0.5)) ** 2 - (dy / (ry + 0.5)) ** 2
            if rest >= 0:
                runs[(dz, dy)] = math.floor((rx + 0.5) * math.sqrt(rest) + 1e-9)
    return runs


def _ball_filter(mask: np.ndarray, radius: list[int], grow: bool) -> np.ndarray:
    """Dilation (``grow``) or erosion of bool-like ``mask`` (z, y, x) by the ball of ``radius`` (x, y, z) voxels."""
    rx, ry, rz = radius
    outside = not grow
    padded = np.pad(mask.astype(bool), ((rz, rz), (ry, ry), (rx, rx)), constant_values=outside)
    combine = np.logical_or if grow else np.logical_and
    runs = [padded]  # runs[w]: the mask combined over x offsets -w..w
    for w in range(1, rx + 1):
        run = runs[-1].copy()
        combine(run[..., w:], padded[..., :-w], out=run[..., w:])
        combine(run[..., :-w], padded[..., w:], out=run[..., :-w])
        runs.append(run)
    nz, ny, nx = mask.shape
    out = np.full(mask.shape, outside)
    for (dz, dy), w in _ball_runs(radius).items():
        combine(out, runs[w][rz + dz:rz + dz + nz, ry + dy:ry + dy + ny, rx:rx + nx], out=out)
    return out


def erode(mask: np.ndarray, radius: list[int]) -> np.ndarray:
    """Bool (z, y, x): ``mask`` eroded by the ball of ``radius`` (x, y, z) voxels (as ``sitk.BinaryErode``)."""
    return _ball_filter(mask, radius, grow=False)


def dilate(mask: np.ndarray, radius: list[int]) -> np.ndarray:
    """Bool (z, y, x): ``mask`` dilated by the ball of ``radius`` (x, y, z) voxels (as ``sitk.BinaryDilate``)."""
    return _ball_filter(mask, radius, grow=True)


def opened(mask: np.ndarray, radius: list[int]) -> np.ndarray:
    """Bool (z, y, x): ``mask`` opened by the ball of ``radius`` (x, y, z) voxels (as
    ``sitk.BinaryMorphologicalOpening``)."""
    return dilate(erode(mask, radius), radius)


def fill_slice_holes(mask: np.ndarray, axis: int, closed_edge: np.ndarray | None = None) -> np.ndarray:
    """Uint8 0/1: the holes of every 2-D slice of ``mask`` across numpy ``axis`` filled (as ``sitk.BinaryFillhole``
    on each slice). Where ``closed_edge`` (same shape) is set on a slice's edge, the edge counts as closed there.

    The slices, each framed by a one-voxel ring (set where ``closed_edge`` is) and parted by an empty row that
    reaches the picture's border, are laid one under the other into one picture and filled at once.
    """
    slices = np.moveaxis(mask, axis, 0).astype(np.uint8)
    n, h, w = slices.shape
    framed = np.zeros((n, h + 3, w + 2), np.uint8)  # ring of one voxel around each slice, then an empty row
    framed[:, 1:h + 1, 1:w + 1] = slices
    if closed_edge is not None:
        edge = np.pad(np.moveaxis(closed_edge, axis, 0).astype(np.uint8), ((0, 0), (1, 1), (1, 1)), mode="edge")
        ring = np.ones((h + 2, w + 2), bool)
        ring[1:-1, 1:-1] = False
        framed[:, :h + 2][:, ring] = edge[:, ring]
    picture = sitk.GetImageFromArray(framed.reshape(n * (h + 3), w + 2))
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(picture)).reshape(n, h + 3, w + 2)[:, 1:h + 1, 1:w + 1]
    return np.ascontiguousarray(np.moveaxis(filled, 0, axis))
