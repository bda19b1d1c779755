"""A family of clinical-like CTs made from one phantom: other grids, orientations, fields of view, a table.

The phantom (:mod:`MedSynLib.phantom`) is built once on a base grid wide enough for the whole body; each variant
resamples it (CT linear, lobes nearest) onto a grid of its own, in scanner-like coordinates (the patient is
shifted by :data:`SCANNER_SHIFT_MM`). ``scale`` multiplies every spacing and divides every voxel count, so tests
run the same family at a few mm (``scale=4``) and the benchmark at full size (``scale=1``: 512² in-plane, 300-600
slices). Arrays are (z, y, x); physical points LPS mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from MedSynLib.io.images import Geometry, to_image
from MedSynLib.phantom.compose import make_phantom
from MedSynLib.phantom.grid import Grid

SCANNER_SHIFT_MM = np.array([13.0, -160.0, -1250.0])
"""Where the phantom's origin (its lungs' neighbourhood) lies in the variants' coordinates (table height, couch
position): grids placed at a fixed origin see nothing there."""
TABLE_HU, TABLE_GAP_MM, TABLE_MM = 150.0, 6.0, 14.0
CUT_MM = 40.0
"""How much lung the cut-apex and cut-bases variants lose, head-foot."""


@dataclass
class Variant:
    """One variant: CT (int16 HU) and true lobes (uint8 0..5) on the same grid; ``whole_lung`` when the field of
    view holds every lung voxel."""

    name: str
    ct: sitk.Image
    lobes: sitk.Image
    whole_lung: bool


@dataclass
class Base:
    """The phantom on its own grid, moved to scanner coordinates: CT int16 HU and lobes uint8 images."""

    ct: sitk.Image
    lobes: sitk.Image

    def lung_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical (LPS mm) lower and upper corners of the lungs' bounding box."""
        idx = np.argwhere(sitk.GetArrayViewFromImage(self.lobes) > 0)
        lo = np.array(self.lobes.TransformIndexToPhysicalPoint(idx.min(0)[::-1].tolist()))
        hi = np.array(self.lobes.TransformIndexToPhysicalPoint(idx.max(0)[::-1].tolist()))
        return np.minimum(lo, hi), np.maximum(lo, hi)


def base_phantom(seed: int = 0, spacing_mm: float = 1.0) -> Base:
    """Phantom ``seed`` on a (400 x 340 x 340 mm) z, y, x grid of ``spacing_mm`` voxels (neck to upper abdomen,
    the whole body width), in scanner coordinates."""
    n = lambda mm: int(round(mm / spacing_mm))  # noqa: E731
    grid = Grid((n(400), n(340), n(340)), (spacing_mm,) * 3)
    phantom = make_phantom(seed, grid)
    geometry = grid.geometry
    geometry = Geometry(geometry.size, geometry.spacing, tuple(np.array(geometry.origin) + SCANNER_SHIFT_MM))
    return Base(to_image(phantom.ct, geometry), to_image(phantom.lobes, geometry))


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _grid(centre, size_xyz, spacing_xyz, direction=np.eye(3)) -> Geometry:
    """A grid of ``size_xyz`` voxels of ``spacing_xyz`` mm whose centre is ``centre`` (LPS mm)."""
    half = (np.array(size_xyz) - 1) / 2 * np.array(spacing_xyz)
    origin = np.asarray(centre, float) - direction @ half
    return Geometry(tuple(int(s) for s in size_xyz), tuple(float(s) for s in spacing_xyz), tuple(origin.tolist()),
                    tuple(np.asarray(direction, float).ravel().tolist()))


def _on(base: Base, grid: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT, lobes, inside-the-base mask) arrays (z, y, x) resampled onto ``grid``."""
    reference = grid.reference()
    ct = sitk.Resample(base.ct, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    lobes = sitk.Resample(base.lobes, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ones = sitk.Image(base.ct.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(base.ct)
    inside = sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return (sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(lobes),
            sitk.GetArrayFromImage(inside).astype(bool))


def _extend_edges(ct: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Slices (axis 0) outside the base replaced by the nearest slice inside it: the body goes on (a tall scan)."""
    rows = np.nonzero(inside.any(axis=(1, 2)))[0]
    ct[:rows[0]] = ct[rows[0]]
    ct[rows[-1] + 1:] = ct[rows[-1]]
    return ct


def _add_table(ct: np.ndarray, spacing_y: float) -> np.ndarray:
    """A flat table (:data:`TABLE_HU`) under the patient's back (+y), :data:`TABLE_GAP_MM` below the skin."""
    body_rows = np.nonzero((ct > -400).any(axis=(0, 2)))[0]
    top = body_rows[-1] + 1 + int(round(TABLE_GAP_MM / spacing_y))
    ct[:, top:top + max(1, int(round(TABLE_MM / spacing_y)))] = TABLE_HU
    return ct


VARIANTS = ("1mm", "0.7x1.25", "air_padding", "tall", "table", "flipped", "permuted", "tilt10", "cut_apex",
            "cut_bases", "lost_orientation")


def make_variant(base: Base, name: str, scale: float = 1.0) -> Variant:
    """Variant ``name`` (one of :data:`VARIANTS`) of ``base``, ``scale`` times coarser than clinical.

    - ``1mm``: 1 mm voxels, 512² x 360 slices; ``0.7x1.25``: 0.7 x 0.7 x 1.25 mm, 512² x 300;
    - ``air_padding``: 0.7 x 1.25 mm, 600 slices, -1024 HU above the neck and below the abdomen;
    - ``tall``: the same 600 slices with the body going on (edge slices repeated), as neck-to-pelvis scans;
    - ``table``: 0.7 x 1.25 mm with a patient table under the back;
    - ``flipped``: 0.7 x 1.25 mm, slice axis running head to foot (z direction -1) and x flipped;
    - ``permuted``: sagittal acquisition, the CT's axes are (z, x, y) of the patient;
    - ``tilt10``: slices tilted 10° about the left-right axis;
    - ``cut_apex`` / ``cut_bases``: 0.7 x 1.25 mm with the top / bottom :data:`CUT_MM` mm of the lungs outside;
    - ``lost_orientation``: ``permuted`` with the direction matrix lost (identity): the chest lies on its side in
      the file, a CT no segmentation of which can be trusted.
    """
    lo, hi = base.lung_box()
    centre = (lo + hi) / 2
    fine, thick = 0.7 * scale, 1.25 * scale
    inplane = int(round(512 / scale))
    slices = lambda n: int(round(n / scale))  # noqa: E731
    clinical = ((inplane, inplane, slices(300)), (fine, fine, thick))
    direction, fill_edges, table, whole = np.eye(3), False, False, True
    size, spacing = clinical
    if name == "1mm":
        size, spacing = (inplane, inplane, slices(360)), (scale, scale, scale)
    elif name in ("air_padding", "tall"):
        size = (inplane, inplane, slices(600))
        fill_edges = name == "tall"
    elif name == "table":
        table = True
    elif name == "flipped":
        direction = np.diag([-1.0, 1.0, -1.0])
    elif name in ("permuted", "lost_orientation"):
        direction = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # i: z, j: x, k: y
        size, spacing = (slices(300), inplane, inplane), (thick, fine, fine)
    elif name == "tilt10":
        direction = _rotation_x(10.0)
    elif name in ("cut_apex", "cut_bases"):
        z0, z1 = (lo[2] - 30.0, hi[2] - CUT_MM) if name == "cut_apex" else (lo[2] + CUT_MM, hi[2] + 30.0)
        centre = np.array([centre[0], centre[1], (z0 + z1) / 2])
        size, whole = (inplane, inplane, int((z1 - z0) / thick) + 1), False
    elif name != "0.7x1.25":
        raise ValueError(f"unknown variant {name!r}; one of {', '.join(VARIANTS)}")
    grid = _grid(centre, size, spacing, direction)
    ct, lobes, inside = _on(base, grid)
    if fill_edges:
        ct = _extend_edges(ct, inside)
    if table:
        ct = _add_table(ct, spacing[1])
    if name == "lost_orientation":
        grid = Geometry(grid.size, grid.spacing, grid.origin)
    return Variant(name, to_image(ct, grid), to_image(lobes, grid), whole)
