"""Bringing a patient CT into a model's plain grid: find the lungs, centre the grid on them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .images import Geometry


def lung_mask(ct: sitk.Image) -> np.ndarray:
    """Air-density voxels (< -400 HU) not connected to the image border: (z, y, x) bool."""
    air = sitk.BinaryThreshold(sitk.Cast(ct, sitk.sitkFloat32), -2000.0, -400.0, 1, 0)
    components = sitk.GetArrayViewFromImage(sitk.ConnectedComponent(air))
    faces = (components[0], components[-1], components[:, 0], components[:, -1], components[:, :, 0],
             components[:, :, -1])
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    return np.isin(components, border, invert=True) & (components > 0)


def lung_centred_grid(ct: sitk.Image, grid: Geometry) -> Geometry:
    """``grid`` (size, spacing, direction kept) moved so that its centre is the centre of the lungs' bounding box."""
    lungs = lung_mask(ct)
    if lungs.sum() < 100:
        raise ValueError("no lungs found in the CT (no air-density region inside the body); is it a chest CT in HU?")
    idx = np.argwhere(lungs)
    centre_index = (idx.min(0) + idx.max(0)) / 2.0  # (z, y, x)
    centre = np.array(ct.TransformContinuousIndexToPhysicalPoint(centre_index[::-1].tolist()))
    direction = np.array(grid.direction).reshape(3, 3)
    half = (np.array(grid.size) - 1) / 2.0 * np.array(grid.spacing)
    origin = centre - direction @ half
    return Geometry(grid.size, grid.spacing, tuple(origin.tolist()), grid.direction)


def resample(image: sitk.Image, grid: Geometry, interpolator=sitk.sitkNearestNeighbor, default: float = 0.0,
             transform: sitk.Transform | None = None) -> np.ndarray:
    """``image`` resampled onto ``grid`` (keeping its pixel type): (z, y, x) array."""
    out = sitk.Resample(image, grid.reference(), transform or sitk.Transform(), interpolator, default,
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)
