"""One synthetic chest CT phantom: HU volume, lobe / airway / vessel masks and ground truth, from a seed.

Output arrays are (z, y, x) on a :class:`~.grid.Grid` (default 256³ at 1 mm). HU values (non-contrast):
air -1000, lung about -850 (denser posteriorly) with texture, fat -100, muscle 45, blood/heart 40, liver 58,
pleural fluid 5-15, cancellous bone 120-260, cortical bone 750-850, then partial-volume blur and noise
(about 18 HU at 1 mm, less on coarser grids). Every output is SYNTHETIC.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from . import trees as T
from .anatomy import LUL, RUL, Anatomy, AnatomyParams
from .findings import Findings, effusion_size_word, emphysema_grade
from .grid import (SEG_DTYPE, Grid, blur3, blur_weights, make_segments, noise_gain, rasterize_tubes, smooth_field,
                   tubes_sd_points)

BIG = np.float32(1e3)
SYNTHETIC_NOTE = "SYNTHETIC MedSyn phantom"


@dataclass
class Phantom:
    """``ct`` int16 HU; ``lobes`` uint8 labels 0..5; ``airway`` (lumen) / ``vessels`` / ``effusion`` uint8 {0,1}."""

    grid: Grid
    ct: np.ndarray
    lobes: np.ndarray
    airway: np.ndarray
    vessels: np.ndarray
    effusion: np.ndarray
    truth: dict = field(default_factory=dict)


def _ps(seq: np.random.SeedSequence, n: int):
    return [np.random.default_rng(s) for s in seq.spawn(n)]


class _Points:
    """Analytic lung / fluid tests at arbitrary points (n, 3) mm, matching the rasterised volume."""

    def __init__(self, an: Anatomy, excl_segs: np.ndarray):
        self.an, self.excl = an, excl_segs
        self.fluid_thr = {}

    def lung(self, P):
        X, Y, Z = P[:, 0], P[:, 1], P[:, 2]
        return self.an.lung_region(X, Y, Z, tubes_sd_points(P, self.excl))

    def fluid(self, P, lung=None):
        lung = self.lung(P) if lung is None else lung
        out = np.zeros(len(P), bool)
        key = _fluid_key(self.an, P[:, 0], P[:, 1], P[:, 2])
        for side, thr in self.fluid_thr.items():
            s = (P[:, 0] < 0) if side == "right" else (P[:, 0] >= 0)
            out |= lung & s & (key > thr)
        return out


def _paint(ct: np.ndarray, sd: np.ndarray, s: float, hu: float, where: np.ndarray | None = None) -> None:
    """Blend ``hu`` into ``ct`` with the analytic partial-volume fraction ``clip(0.5 - sd / s, 0, 1)`` (sparse)."""
    idx = np.flatnonzero(sd < 0.5 * s)
    if where is not None:
        idx = idx[where.ravel()[idx]]
    fr = np.clip(0.5 - sd.ravel()[idx] / s, 0, 1)
    flat = ct.reshape(-1)
    flat[idx] += fr * (hu - flat[idx])


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


def _fluid_key(an: Anatomy, X, Y, Z, r=None):
    """Gravity-dependent 'depth' of a point in the pleural space (supine: posterior is down) plus a meniscus."""
    r = an.cavity_norm(X, Y, Z) if r is None else r
    _, b = an.cavity_axes(Z)
    depth = np.clip(1.0 - r, 0, None) * b  # mm inside the rib cage, approx.
    return Y + 14.0 * np.exp(-depth / 9.0) + 0.35 * (an.z_dome_r - Z)


def make_phantom(seed: int = 0, grid: Grid | None = None, anatomy: AnatomyParams | None = None,
             findings: Findings | None = None, sex: str | None = None, age: int | None = None,
             **findings_force) -> Phantom:
    """Build one phantom. Same seed (and arguments) -> identical arrays, on any grid the anatomy is the same in mm."""
    grid = grid or Grid.cube(256, 1.0)
    ss = np.random.SeedSequence(int(seed))
    r_anat, r_find, r_geo, r_tex, r_noise, r_nod = _ps(ss, 6)
    tree_seed = int(ss.spawn(1)[0].generate_state(1)[0])
    p = anatomy or AnatomyParams.sample(r_anat, sex=sex, age=age)
    f = copy.deepcopy(findings) if findings is not None else Findings.sample(r_find, age=p.age, **findings_force)
    an = Anatomy(p, f.ctr, r_geo)
    Z, Y, X = grid.axes()
    s_min, s_max = min(grid.spacing), max(grid.spacing)
    shape = grid.shape
    vv = grid.voxel_volume

    # ---- mediastinal tubes (blood, oesophagus, central airways) and the lungs
    rt = p.trachea_radius
    car = np.array([0.0, an.y_trachea, an.z_carina])
    central_air = make_segments([((0.0, an.y_trachea + 4, 200.0), car, rt + 2, rt + 2),
                                 (car, car + np.array([-11.0, 3.0, -20.0]), 0.75 * rt + 1.5, 0.72 * rt + 1.5),
                                 (car, car + np.array([33.0, 12.0, -33.0]), 0.68 * rt + 1.5, 0.65 * rt + 1.5)])
    excl = np.concatenate([an.segs_blood, an.segs_eso, central_air])
    sd_blood = np.full(shape, BIG, np.float32)
    rasterize_tubes(grid, an.segs_blood, sd_blood, margin_mm=6.0)
    sd_eso = np.full(shape, BIG, np.float32)
    rasterize_tubes(grid, an.segs_eso, sd_eso, margin_mm=6.0)
    sd_med = np.minimum(sd_blood, sd_eso)
    rasterize_tubes(grid, central_air, sd_med, margin_mm=6.0)
    cr = an.cavity_norm(X, Y, Z)
    cav = cr < 1.0
    heart = _heart_mask(an, grid, Z, Y, X)
    lung0 = an.lung_region(X, Y, Z, sd_med, cav, heart)
    del sd_med
    lobe_lab = an.lobe_of(X, Y, Z)
    pts = _Points(an, excl)

    # ---- lattice points per lobe (grid independent) and trees
    cell = 12.0
    jr = np.random.default_rng(tree_seed)
    ax = np.arange(-130, 131, cell)
    P = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    P = P + jr.uniform(-0.3, 0.3, P.shape) * cell
    inside = an.cavity_norm(P[:, 0], P[:, 1], P[:, 2]) < 1
    P = P[inside]
    P = P[pts.lung(P)]
    plab = an.lobe_of(P[:, 0], P[:, 1], P[:, 2])
    lobe_pts = {k: P[plab == k] for k in range(1, 6)}
    air, art, vein = T.build_trees(an, lobe_pts, cell, tree_seed)

    # ---- pleural effusion: fill the dependent pleural space of each side to the requested volume
    fluid = np.zeros(shape, bool)
    atelect = np.zeros(shape, bool)
    eff_true = {"right": 0.0, "left": 0.0}
    key = None
    for side in ("right", "left"):
        ml = float(f.effusion_ml.get(side, 0.0))
        if ml <= 0:
            continue
        if key is None:
            key = _fluid_key(an, X, Y, Z, cr).astype(np.float32)
        sidem = (X < 0) if side == "right" else (X >= 0)
        cand = lung0 & sidem
        kv = key[cand]
        n = int(round(ml * 1000.0 / vv))
        n = min(n, int(0.5 * kv.size))
        if n <= 0:
            continue
        thr = float(np.partition(kv, kv.size - n)[kv.size - n])
        pts.fluid_thr[side] = thr
        fl = cand & (key >= thr)
        fluid |= fl
        eff_true[side] = float(fl.sum()) * vv / 1000.0
        if eff_true[side] > 190:
            atelect |= cand & (key >= thr - 9.0) & ~fl
    lung = lung0 & ~fluid
    lobes = np.where(lung, lobe_lab, 0).astype(np.uint8)
    del lobe_lab

    # ---- prune tree parts outside the lungs or in fluid
    def _prune(tree, keep_gen):
        p1 = tree["p1"]
        X1, Y1, Z1 = p1[:, 0], p1[:, 1], p1[:, 2]
        ok = (an.cavity_norm(X1, Y1, Z1) < 1) & (Z1 > an.diaphragm_z(X1, Y1)) & (an.heart_norm(X1, Y1, Z1) >= 1)
        ok &= ~pts.fluid(p1)
        ok |= tree["gen"] <= keep_gen
        return T.subset(tree, T.prune(tree, ~ok))
    air = _prune(air, 2)
    art = _prune(art, 1)
    vein = _prune(vein, 1)

    # ---- HU composition
    ct = np.full(shape, -1000.0, np.float32)
    br, depth = an.body_norm_depth(X, Y, Z)
    body = br < 1.0
    ang = np.arctan2(Y - an.Yc, X)
    fat_local = p.fat_mm * (0.85 + 0.3 * np.sin(2 * ang + 0.7)) + 3.0 * (Y > an.Yc)
    ct[body] = 45.0
    ct[body & (depth < fat_local)] = -100.0
    del depth, ang, fat_local
    ct[cav] = -90.0
    # ribs and costal cartilage
    a_z, b_z = an.cavity_axes(Z)
    yc = an.cavity_center_y(Z)
    rho = np.sqrt(X * X + (Y - yc) ** 2)
    dout = (cr - 1.0) * rho / np.maximum(cr, 1e-3)
    shell = (dout > 1.0) & (dout < 9.0)
    anter = np.clip((yc - Y) / b_z, -1, 1)
    u = (Z + p.rib_drop * (anter + 1) / 2 - an.z_carina) / p.rib_pitch
    band = (u - np.floor(u)) < (9.5 / p.rib_pitch)
    zr = (Z < an.z_apex + 5) & (Z > an.z_dome_l - 60)
    ribs = shell & band & zr & body
    cart = ribs & (anter > 0.55)
    ct[ribs] = 760.0
    ct[cart & (np.abs(X) < 0.5 * a_z)] = 140.0
    del rho, dout, shell, anter, u, band, ribs, cart
    # sternum
    yfront = yc - b_z
    stz = (Z > an.z_carina - 115) & (Z < an.z_apex - 18)
    stw = np.where(Z > an.z_carina + 15, 24.0, 14.0)
    st = stz & (np.abs(X) < stw) & (Y > yfront - 14) & (Y < yfront - 2)
    st_in = stz & (np.abs(X) < stw - 1.5) & (Y > yfront - 12.5) & (Y < yfront - 3.5)
    ct[st] = 800.0
    ct[st_in] = 240.0
    del st, st_in, stz, yfront
    # spine
    rv = an.r_vert
    dv = np.broadcast_to(np.sqrt(X * X + (Y - an.Yv) ** 2), shape)
    canc = float(np.clip(270 - 2.2 * (p.age - 30), 110, 270))
    vb = dv < rv
    ct[vb] = 850.0
    ct[dv < rv - 1.5] = canc
    vz = (Z - an.z_carina) / 26.0
    disc = (vz - np.floor(vz)) < (6.0 / 26.0)
    ct[vb & disc] = 90.0
    yca = an.Yv + rv + 9.0
    dc = np.broadcast_to(np.sqrt(X * X + (Y - yca) ** 2), shape)
    arch = (dc > 8.0) & (dc < 14.0) & (Y > an.Yv + rv - 2) & ~disc
    spin = (np.abs(X) < 4.0) & (Y > yca) & (Y < yca + 38.0) & ~disc
    trans = (np.abs(X) < rv + 18) & (np.abs(Y - yca + 2) < 4.5) & ~disc & (Y > an.Yv)
    ct[arch | spin | trans] = 650.0
    ct[dc < 8.0] = 12.0
    ct[dc < 5.0] = 35.0
    del dv, vb, vz, disc, dc, arch, spin, trans
    # heart, great vessels, oesophagus
    ct[heart] = 40.0
    ct[sd_blood < 0] = 42.0
    ct[sd_eso < 0] = 35.0
    del sd_eso
    # abdomen under the diaphragm
    dz = an.diaphragm_z(X, Y)
    abd = cav & (Z < dz)
    ct[abd] = 45.0
    abd2 = cav & (Z < dz - 4.0)
    ct[abd2 & (X < 25)] = 58.0
    ct[abd2 & (X >= 25)] = 44.0
    stomach_air = abd2 & (((X - 0.55 * an.A) / 30.0) ** 2 + ((Y - an.Yc + 0.1 * an.B) / 25.0) ** 2 < 1) & (Z > dz - 18)
    ct[stomach_air] = -1000.0
    del abd, abd2, stomach_air, cr
    # lung parenchyma with a dependent gradient and texture
    tex = smooth_field(r_tex, grid, 6.0)
    lung_hu = -868.0 + 38.0 * np.clip((Y - an.Yc) / an.B + 1, 0, 2) / 2 + 14.0 * tex
    ct[lung] = lung_hu[lung]
    del lung_hu
    ct[fluid] = float(r_tex.uniform(5, 15))
    ct[atelect] = -180.0 + 60.0 * tex[atelect]
    # emphysema (centrilobular lucencies, upper zones) and bullae
    laa_target = float(f.emphysema_laa)
    if laa_target > 0:
        bul = np.full(shape, BIG, np.float32)
        bl_rows = []
        upper = np.concatenate([lobe_pts[LUL], lobe_pts[RUL]])
        for i in range(f.bullae):
            if len(upper) == 0:
                break
            c0 = upper[r_tex.integers(len(upper), size=40)]
            rr = r_tex.uniform(8, 18, 40)
            offs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
            probe = (c0[:, None, :] + rr[:, None, None] * offs[None]).reshape(-1, 3)
            ok = (pts.lung(probe).reshape(40, 6).sum(1) >= 5) & (c0[:, 2] > an.z_carina - 20)
            if ok.any():
                j = int(np.argmax(ok))
                bl_rows.append((c0[j], c0[j], float(rr[j]), float(rr[j])))
        f.bullae = len(bl_rows)
        if bl_rows:
            rasterize_tubes(grid, make_segments(bl_rows), bul)
        bull = (bul < 0) & lung
        del bul
        # lucencies coalesce as emphysema advances (Fleischner: mild centrilobular -> confluent -> advanced
        # destructive): their scale grows from ~5 mm (mild) to ~14 mm (severe), so severe emphysema stays visible
        # as low-attenuation areas at the 4 mm stage-1 grid rather than dissolving into voxel noise
        em = smooth_field(r_tex, grid, max(1.2 * s_max, 3.2 + 0.3 * laa_target))
        em += 1.2 * np.clip((Z - an.z_dome_r) / (an.z_apex - an.z_dome_r), 0, 1)
        boost = 1.0
        n_l = int(lung.sum())
        n_t = int(round(n_l * min(0.6, laa_target / 100.0 * boost))) - int(bull.sum())
        ev = em[lung]
        if n_t > 0:
            thr = float(np.partition(ev, ev.size - n_t)[ev.size - n_t])
            lucent = lung & (em >= thr)
            ct[lucent] = -985.0 + 8.0 * tex[lucent]
        ct[bull] = -1000.0
        del ev
    lobes_present = {int(k) for k in np.unique(lobes) if k}
    # consolidation and ground glass, each confined to its lobe
    for kind, items in (("ggo", f.ggo), ("consolidation", f.consolidation)):
        for it in items:
            lb = int(it["lobe"])
            reg = lobes == lb
            nreg = int(reg.sum())
            if nreg == 0:
                continue
            fld = smooth_field(r_tex, grid, 18.0 if kind == "consolidation" else 10.0)
            if kind == "consolidation":
                fld += 1.5 * np.clip((Y - an.Yc) / an.B, -1, 1)
            vals = fld[reg]
            n = int(round(float(it["extent"]) * nreg))
            if n <= 0:
                continue
            thr = float(np.partition(vals, nreg - n)[nreg - n])
            area = reg & (fld >= thr)
            if kind == "consolidation":
                ct[area] = np.maximum(48.0 + 5.0 * tex[area], 37.0)
            else:
                ct[area] = np.minimum(ct[area] + 270.0, -430.0)
            it["volume_ml"] = round(float(area.sum()) * vv / 1000.0, 1)
            del fld, vals, area, reg
    del tex
    # nodules (solid spheres well inside their lobe)
    nod_rows = []
    for nd in f.nodules:
        lb, r = int(nd["lobe"]), float(nd["diameter_mm"]) / 2
        cand = lobe_pts.get(lb, np.zeros((0, 3)))
        placed = None
        if len(cand):  # 60 candidate centres tested at once; the first that fits wins
            c0 = cand[r_nod.integers(len(cand), size=60)] + r_nod.uniform(-4, 4, (60, 3))
            m = r + 4.0
            offs = np.array([[0, 0, 0], [m, 0, 0], [-m, 0, 0], [0, m, 0], [0, -m, 0], [0, 0, m], [0, 0, -m]])
            probe = (c0[:, None, :] + offs[None]).reshape(-1, 3)
            pl = pts.lung(probe)
            ijk = np.clip(np.rint(grid.to_index(probe)).astype(int), 0, np.array(shape[::-1]) - 1)
            aerated = ct[ijk[:, 2], ijk[:, 1], ijk[:, 0]] < -600  # not hidden in consolidation
            ok = pl & aerated & ~pts.fluid(probe, pl) & (an.lobe_of(*probe.T) == lb)
            ok = ok.reshape(60, len(offs)).all(1)
            if ok.any():
                placed = c0[int(np.argmax(ok))]
        nd["placed"] = placed is not None
        if placed is not None:
            nd["center_mm"] = [round(float(v), 1) for v in placed]
            nod_rows.append((placed, placed, r, r))
    if nod_rows:
        sd_n = np.full(shape, BIG, np.float32)
        rasterize_tubes(grid, make_segments(nod_rows), sd_n)
        _paint(ct, sd_n, s_min, 45.0)
        del sd_n

    # ---- vessels and airways with analytic partial volume
    allowed = (cav & (Z > dz) & ~heart & ~fluid) | ((Z > an.z_carina + 15) & ~cav)
    allowed |= np.zeros(shape, bool)
    sd_v = np.full(shape, BIG, np.float32)
    rasterize_tubes(grid, np.concatenate([art, vein]), sd_v)
    _paint(ct, sd_v, s_min, 41.0, allowed)
    vessels = ((sd_v < 0.0) & allowed & ~heart) if s_max <= 2.0 else None
    if vessels is None:  # coarse grid: keep thin vessels visible in the mask
        sd_m = np.full(shape, BIG, np.float32)
        vt = np.concatenate([art, vein])
        rasterize_tubes(grid, vt[np.maximum(vt["r0"], vt["r1"]) >= 0.3 * s_max], sd_m, min_radius=0.5 * s_max)
        vessels = (sd_m < 0.0) & allowed & ~heart
        del sd_m
    del sd_v
    sd_l = np.full(shape, BIG, np.float32)
    sd_o = np.full(shape, BIG, np.float32)
    rasterize_tubes(grid, air, sd_l, sd_o)
    # trachea, main, intermediate and lobar bronchi are never cut (by a large heart or a large effusion)
    sd_c = np.full(shape, BIG, np.float32)
    rasterize_tubes(grid, np.concatenate([central_air, air[air["gen"] <= 3][list(SEG_DTYPE.names)]]), sd_c)
    allowed |= sd_c < 0
    del sd_c
    _paint(ct, sd_o, s_min, 42.0, allowed)
    _paint(ct, sd_l, s_min, -1000.0, allowed)
    del sd_o
    # airway mask = lumen; thin bronchi are widened to 0.87 voxel so the mask stays 26-connected
    if s_max > 1.2:
        sd_m = np.full(shape, BIG, np.float32)
        keep = (np.maximum(air["r0"], air["r1"]) >= 0.35 * s_max) | (air["gen"] <= 5)  # lobar + 2 generations
        keep = T.prune(air, ~keep)
        rasterize_tubes(grid, air[keep], sd_m, min_radius=0.87 * s_max)
        airway = (sd_m < 0.0) & allowed
        del sd_m
    else:
        airway = (sd_l < 0.0) & allowed
    del sd_l, sd_blood
    # keep the tree connected: drop bits cut off where a bronchus crosses fluid (26-connectivity)
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(airway.astype(np.uint8)), True)
    cc = sitk.RelabelComponent(cc)
    airway = sitk.GetArrayViewFromImage(cc) == 1

    # ---- scanner: partial-volume blur + correlated noise
    sigma = 18.0 / max(s_min, 0.5) * (1.0 + 0.01 * (p.fat_mm - 15))
    noise = r_noise.standard_normal(shape, dtype=np.float32)
    bw = blur_weights(grid.spacing_zyx)
    ct += noise * np.float32(sigma / noise_gain(bw))
    del noise
    ct = blur3(ct, bw)
    np.clip(ct, -1024, 3071, out=ct)
    ct16 = np.rint(ct).astype(np.int16)
    del ct
    if laa_target > 0:  # top up lucent voxels (next in the emphysema field's order) lost to blur and overlays
        from .measure import _dilate
        m = lung & ~_dilate(airway, 1)
        n_m = int(m.sum())
        need = int(round(laa_target / 100.0 * n_m)) - int((ct16[m] < -950).sum())
        if need > 0:
            cand = m & (ct16 >= -950) & (ct16 < -700)  # aerated lung only (not consolidation, nodules)
            ev = em[cand]
            need = min(need, ev.size)
            thr = float(np.partition(ev, ev.size - need)[ev.size - need])
            add = cand & (em >= thr)
            ct16[add] = (-975 + 10 * np.clip(r_noise.standard_normal(int(add.sum())), -2, 2)).astype(np.int16)
        del em

    truth = {
        "synthetic": True,
        "note": SYNTHETIC_NOTE + ": procedurally generated, not a patient",
        "seed": int(seed),
        "grid": {"shape_zyx": list(shape), "spacing_xyz": list(grid.spacing), "origin_xyz": list(grid.origin),
                 "direction": list(grid.direction), "orientation": "x R->L, y A->P, z I->S (LPS, identity direction)"},
        "age": p.age, "sex": p.sex,
        "anatomy": p.to_dict(),
        "findings": f.to_dict(),
        "effusion_ml_true": {k: round(v, 1) for k, v in eff_true.items()},
        "effusion_size": {k: effusion_size_word(v) for k, v in eff_true.items()},
        "cardiomegaly": bool(f.cardiomegaly),
        "emphysema_grade": emphysema_grade(f.emphysema_laa),
        "lobes_present": sorted(lobes_present),
        "airway_mask": "lumen (air inside the bronchial wall); on grids coarser than 1.2 mm thin bronchi are widened "
                       "to 0.87 voxel and bronchi thinner than 0.35 voxel (beyond the first segmental generations) "
                       "are left out, keeping it 26-connected",
        "vessel_mask": "pulmonary arteries and veins from the hila outwards (not the pulmonary trunk, not the heart)",
        "n_segments": {"airway": int(len(air)), "arteries": int(len(art)), "veins": int(len(vein))},
    }
    return Phantom(grid, ct16, lobes, airway.astype(np.uint8), vessels.astype(np.uint8), fluid.astype(np.uint8),
                   truth)
