"""Space-filling airway and pulmonary vessel trees (positions in mm, radii in mm).

Each lobe's territory is a cloud of lattice points inside it. A branch starting at ``p`` heads a fraction of the
way towards its territory's centroid, then the territory is cut in two across its longest axis and each half
grows a child (Kitaoka-style). Radii follow Murray's law with flow proportional to territory volume,
``r = k * V^(1/3)``, so they taper from the hila to the periphery. Airways stop at a lumen radius of 0.85 mm;
vessels go on to the lattice cells. Arteries share the airway topology (bronchovascular bundles), veins are
an independent tree draining to the left atrium.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import LLL, LUL, RLL, RML, RUL, Anatomy

TREE_DTYPE = np.dtype([("p0", "f8", 3), ("p1", "f8", 3), ("r0", "f8"), ("r1", "f8"), ("w", "f8"),
                       ("parent", "i4"), ("lobe", "u1"), ("gen", "i2")])


class _Builder:
    def __init__(self):
        self.rows = []

    def add(self, p0, p1, r0, r1, w, parent, lobe, gen) -> int:
        self.rows.append((tuple(p0), tuple(p1), r0, r1, w, parent, lobe, gen))
        return len(self.rows) - 1

    def array(self) -> np.ndarray:
        out = np.zeros(len(self.rows), dtype=TREE_DTYPE)
        for i, r in enumerate(self.rows):
            out[i] = r
        return out


@dataclass
class _Growth:
    """What stays fixed while one lobe's tree grows: the builder, the random generator, the lobe, the radius law
    ``r = k (n cell_vol)^(1/3)`` (stop below ``rmin``), the branch length fraction ``lam``, the wall fraction and
    the leaf size (lattice points)."""

    b: _Builder
    rng: np.random.Generator
    lobe: int
    k: float
    cell_vol: float
    rmin: float
    lam: float
    wall_frac: float
    leaf_n: int


def _grow(g: _Growth, p, pts, r_cap, parent, gen, lam_first=None):
    """Grow from ``p`` into the lattice points ``pts``: one segment towards their centroid, then two subtrees on
    either side of a cut through it (radius at most ``r_cap``, generation ``gen``)."""
    n = len(pts)
    c = pts.sum(0) / n
    r = min(g.k * (n * g.cell_vol) ** (1 / 3), r_cap)
    if r < g.rmin:
        return
    w = g.wall_frac * r + (0.3 if g.wall_frac > 0 else 0.0)
    if n <= g.leaf_n:
        g.b.add(p, c, r, 0.8 * r, w, parent, g.lobe, gen)
        return
    e = p + (g.lam if lam_first is None else lam_first) * (c - p)
    idx = g.b.add(p, e, r, 0.95 * r, w, parent, g.lobe, gen)
    ext = pts.max(0) - pts.min(0)
    axis = g.rng.normal(0, 0.35, 3)
    axis[int(np.argmax(ext))] += 1.0
    proj = (pts - c) @ axis
    side = proj > 0  # cut through the centroid, across the (jittered) longest axis
    n_side = int(side.sum())
    if n_side == 0 or n_side == n:
        side = np.zeros(n, bool)
        side[np.argsort(proj)[n // 2:]] = True
    for sub in (pts[side], pts[~side]):
        _grow(g, e, sub, 0.95 * r, idx, gen + 1)


def build_trees(an: Anatomy, lobe_pts: dict[int, np.ndarray], cell_mm: float, seed: int):
    """-> (airway, arteries, veins): ``TREE_DTYPE`` arrays, parents before children.

    ``lobe_pts`` maps lobe label -> (n, 3) lattice points (mm) inside it, spaced ``cell_mm``.
    """
    p = an.p
    rt = p.trachea_radius
    zc = an.z_carina
    car = np.array([0.0, an.y_trachea, zc])
    cell = cell_mm ** 3
    ss = np.random.SeedSequence(seed)
    topo_seeds, vein_seeds = ss.spawn(2)
    topo = {lobe: s for lobe, s in zip((LUL, LLL, RUL, RML, RLL), topo_seeds.spawn(5))}
    vseed = {lobe: s for lobe, s in zip((LUL, LLL, RUL, RML, RLL), vein_seeds.spawn(5))}

    # --- airways: trachea, main and intermediate bronchi, then per-lobe space filling
    air = _Builder()
    wf = 0.17
    t = air.add((0.0, an.y_trachea + 4, 200.0), car, rt, rt * 0.95, wf * rt + 0.5, -1, 0, 0)
    rmb_end = car + np.array([-11.0, 3.0, -20.0])
    rmb = air.add(car, rmb_end, 0.75 * rt, 0.72 * rt, wf * 0.75 * rt + 0.3, t, 0, 1)
    bi_end = rmb_end + np.array([-4.0, 4.0, -22.0])
    bi = air.add(rmb_end, bi_end, 0.6 * rt, 0.58 * rt, wf * 0.6 * rt + 0.3, rmb, 0, 2)
    lmb_end = car + np.array([33.0, 12.0, -33.0])
    lmb = air.add(car, lmb_end, 0.68 * rt, 0.65 * rt, wf * 0.68 * rt + 0.3, t, 0, 1)
    origins = {RUL: (rmb_end, rmb, 2), RML: (bi_end, bi, 3), RLL: (bi_end, bi, 3),
               LUL: (lmb_end, lmb, 2), LLL: (lmb_end, lmb, 2)}
    k_air, k_art, k_vein = 0.046, 0.050, 0.052
    art = _Builder()
    vein = _Builder()
    # arteries: pulmonary artery bifurcation -> hilum -> lobar roots (offset from the bronchi)
    off = {"R": np.array([0.0, -9.0, 3.0]), "L": np.array([4.0, 7.0, 12.0])}
    hil_idx = {}
    for side in ("R", "L"):
        h = an.hilum_art[side]
        hil_idx[side] = art.add(an.pa_bif, h, 10.5, 9.5, 0.0, -1, 0, 0)
    # veins: left atrium -> ostia -> lobar roots (below the bronchi)
    ost_idx = {}
    for side, dx in (("R", -28.0), ("L", 26.0)):
        o = an.la + np.array([dx, 4.0, 0.0])
        ost_idx[side] = (vein.add(an.la, o, 8.0, 7.5, 0.0, -1, 0, 0), o)
    for lobe in (RUL, RML, RLL, LUL, LLL):
        pts = lobe_pts.get(lobe)
        if pts is None or len(pts) < 2:
            continue
        side = "R" if lobe in (RUL, RML, RLL) else "L"
        o, par, gen = origins[lobe]
        _grow(_Growth(air, np.random.default_rng(topo[lobe]), lobe, k_air, cell, 0.85, 0.32, wf, 1),
              o, pts, 0.62 * rt, par, gen, lam_first=0.5)
        ao = o + off[side] + (np.array([0, 0, 8.0]) if lobe in (RUL, LUL) else 0)
        hi = hil_idx[side]
        a_idx = art.add(an.hilum_art[side], ao, 9.0, 8.0, 0.0, hi, lobe, 1)
        _grow(_Growth(art, np.random.default_rng(topo[lobe]), lobe, k_art, cell, 0.55, 0.32, 0.0, 1),
              ao, pts, 8.0, a_idx, 2, lam_first=0.5)
        oi, opt = ost_idx[side]
        vo = o + np.array([0.0, 6.0, -16.0 if lobe in (RLL, LLL) else -4.0])
        v_idx = vein.add(opt, vo, 7.0, 6.5, 0.0, oi, lobe, 1)
        _grow(_Growth(vein, np.random.default_rng(vseed[lobe]), lobe, k_vein, cell, 0.55, 0.42, 0.0, 1),
              vo, pts, 6.5, v_idx, 2)
    return air.array(), art.array(), vein.array()


def prune(tree: np.ndarray, drop_start: np.ndarray) -> np.ndarray:
    """Remove segments whose start is flagged in ``drop_start`` (bool per segment) together with their subtrees.

    Returns the boolean keep mask. Relies on parents preceding children.
    """
    keep = ~drop_start.copy()
    par = tree["parent"]
    for i in range(len(tree)):
        if keep[i] and par[i] >= 0 and not keep[par[i]]:
            keep[i] = False
    return keep


def subset(tree: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``tree[keep]`` with parent indices renumbered (-1 where the parent was dropped)."""
    new = np.cumsum(keep) - 1
    out = tree[keep].copy()
    par = out["parent"]
    valid = par >= 0
    par[valid] = np.where(keep[par[valid]], new[par[valid]], -1)
    out["parent"] = par
    return out
