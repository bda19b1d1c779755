"""A phantom's chest on its voxel grid: mediastinal tubes, rib cage, heart and the lungs, before any finding.

Arrays are (z, y, x) on the phantom's :class:`~.grid.Grid`; points and distances are patient mm (see
:mod:`.grid`). Nothing here draws random numbers: the :class:`~.anatomy.Anatomy` already holds the random shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy
from .grid import Grid, make_segments, rasterize_tubes, tubes_sd_points

FAR_MM = np.float32(1e3)
"""Signed distance (mm) a tube-distance volume starts from: farther than any tube."""
MEDIASTINUM_MARGIN_MM = 6.0
"""Tube distances are computed this far around the mediastinal tubes (the lungs keep 4 mm away from them)."""


@dataclass
class Chest:
    """One phantom's anatomy laid on its grid (``findings`` are filled in by :mod:`.lesions`).

    ``Z`` (nz, 1, 1), ``Y`` (1, ny, 1), ``X`` (1, 1, nx): patient mm (float32), for broadcasting. ``cavity``
    (inside the rib cage), ``heart``, ``blood`` (great vessels), ``oesophagus``: bool (nz, ny, nx).
    ``central_airways``: trachea and main bronchi as tube segments (:data:`~.grid.SEG_DTYPE`); ``diaphragm_z``
    (1, ny, nx): mm height of the diaphragm; ``points``: lung and fluid tests at arbitrary points.
    """

    grid: Grid
    anatomy: Anatomy
    Z: np.ndarray
    Y: np.ndarray
    X: np.ndarray
    central_airways: np.ndarray
    blood: np.ndarray
    oesophagus: np.ndarray
    cavity: np.ndarray
    heart: np.ndarray
    diaphragm_z: np.ndarray
    points: LungPoints

    @property
    def finest_mm(self) -> float:
        return min(self.grid.spacing)

    @property
    def coarsest_mm(self) -> float:
        return max(self.grid.spacing)


class LungPoints:
    """Analytic lung / fluid tests at arbitrary points (n, 3) mm, matching the rasterised volume.

    ``fluid_threshold`` (side -> the fluid key's threshold) is filled in when an effusion is placed
    (:func:`~.lesions.fill_effusions`); until then no point is fluid.
    """

    def __init__(self, anatomy: Anatomy, mediastinal_tubes: np.ndarray):
        self.anatomy, self.mediastinal_tubes = anatomy, mediastinal_tubes
        self.fluid_threshold = {}

    def lung(self, P):
        X, Y, Z = P[:, 0], P[:, 1], P[:, 2]
        return self.anatomy.lung_region(X, Y, Z, tubes_sd_points(P, self.mediastinal_tubes))

    def fluid(self, P, lung=None):
        lung = self.lung(P) if lung is None else lung
        out = np.zeros(len(P), bool)
        key = fluid_key(self.anatomy, P[:, 0], P[:, 1], P[:, 2])
        for side, threshold in self.fluid_threshold.items():
            s = (P[:, 0] < 0) if side == "right" else (P[:, 0] >= 0)
            out |= lung & s & (key > threshold)
        return out


def fluid_key(an: Anatomy, X, Y, Z, r=None):
    """Gravity-dependent 'depth' (mm) of a point in the pleural space (supine: posterior is down) plus a meniscus;
    fluid fills the pleural space from the highest key down. ``r``: :meth:`~.anatomy.Anatomy.cavity_norm` there,
    when already computed."""
    r = an.cavity_norm(X, Y, Z) if r is None else r
    _, b = an.cavity_axes(Z)
    depth = np.clip(1.0 - r, 0, None) * b  # mm inside the rib cage, approx.
    return Y + 14.0 * np.exp(-depth / 9.0) + 0.35 * (an.z_dome_r - Z)


def central_airways(an: Anatomy) -> np.ndarray:
    """Trachea (from the top of the grid to the carina) and the two main bronchi, as tube segments."""
    rt = an.p.trachea_radius
    carina = np.array([0.0, an.y_trachea, an.z_carina])
    return make_segments([((0.0, an.y_trachea + 4, 200.0), carina, rt + 2, rt + 2),
                          (carina, carina + np.array([-11.0, 3.0, -20.0]), 0.75 * rt + 1.5, 0.72 * rt + 1.5),
                          (carina, carina + np.array([33.0, 12.0, -33.0]), 0.68 * rt + 1.5, 0.65 * rt + 1.5)])


def _heart_mask(an: Anatomy, grid: Grid, Z, Y, X) -> np.ndarray:
    """Heart (bool, full grid), evaluated inside its bounding box only."""
    out = np.zeros(grid.shape, bool)
    (x0, x1), (y0, y1), (z0, z1) = an.heart_box()
    zs = np.nonzero((Z[:, 0, 0] >= z0) & (Z[:, 0, 0] <= z1))[0]
    ys = np.nonzero((Y[0, :, 0] >= y0) & (Y[0, :, 0] <= y1))[0]
    xs = np.nonzero((X[0, 0, :] >= x0) & (X[0, 0, :] <= x1))[0]
    if len(zs) and len(ys) and len(xs):
        box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        out[box] = an.heart_norm(X[:, :, box[2]], Y[:, box[1]], Z[box[0]]) < 1.0
    return out


def _tube_distance(grid: Grid, segments: np.ndarray) -> np.ndarray:
    """Signed distance (mm, float32 (nz, ny, nx)) to ``segments``, within :data:`MEDIASTINUM_MARGIN_MM` of them."""
    sd = np.full(grid.shape, FAR_MM, np.float32)
    rasterize_tubes(grid, segments, sd, margin_mm=MEDIASTINUM_MARGIN_MM)
    return sd


def lay_out_chest(grid: Grid, an: Anatomy) -> tuple[Chest, np.ndarray, np.ndarray]:
    """The chest on ``grid``, the rib cage's normalised radius (float32 (nz, ny, nx), < 1 inside) and both lungs
    (bool (nz, ny, nx): inside the rib cage, above the diaphragm, clear of the heart, spine and mediastinum)."""
    Z, Y, X = grid.axes()
    airways = central_airways(an)
    sd_blood = _tube_distance(grid, an.segs_blood)
    sd_oesophagus = _tube_distance(grid, an.segs_eso)
    sd_mediastinum = np.minimum(sd_blood, sd_oesophagus)
    rasterize_tubes(grid, airways, sd_mediastinum, margin_mm=MEDIASTINUM_MARGIN_MM)
    cavity_r = an.cavity_norm(X, Y, Z)
    cavity = cavity_r < 1.0
    heart = _heart_mask(an, grid, Z, Y, X)
    lungs = an.lung_region(X, Y, Z, sd_mediastinum, cavity, heart)
    del sd_mediastinum
    points = LungPoints(an, np.concatenate([an.segs_blood, an.segs_eso, airways]))
    chest = Chest(grid, an, Z, Y, X, airways, sd_blood < 0, sd_oesophagus < 0, cavity, heart, an.diaphragm_z(X, Y),
                  points)
    return chest, cavity_r, lungs
