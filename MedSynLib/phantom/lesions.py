"""The findings of a phantom painted into its volume: pleural effusion, emphysema and bullae, consolidation,
ground glass and nodules; each records what it really became (mL, placed or not) in the :class:`~.findings.Findings`.

Volumes are (z, y, x) on the phantom's grid; ``ct`` is float32 HU, painted in place. Each painter draws from the
random stream it is given, in a fixed order: changing what or when one draws changes every phantom after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import LUL, RUL
from .chest import FAR_MM, Chest, fluid_key
from .findings import Findings
from .grid import make_segments, rasterize_tubes, smooth_field
from .measure import dilate
from .tissues import paint_partial_volume

ATELECTASIS_ABOVE_ML = 190
"""An effusion larger than this (mL, per side) collapses a 9 mm rim of lung above it (-180 HU)."""
BULLA_TRIES = 40
NODULE_TRIES = 60


@dataclass
class Effusion:
    """``fluid`` and the compressed lung above a large effusion (``atelectasis``): bool (nz, ny, nx);
    ``volume_ml``: the fluid volume placed per side (mL)."""

    fluid: np.ndarray
    atelectasis: np.ndarray
    volume_ml: dict


def fill_effusions(chest: Chest, findings: Findings, lungs: np.ndarray, cavity_r: np.ndarray) -> Effusion:
    """Fill the dependent pleural space of each side with the requested mL (at most half that side's lung), from
    the highest :func:`~.chest.fluid_key` down; records each side's threshold in ``chest.points``."""
    grid, X, Y, Z = chest.grid, chest.X, chest.Y, chest.Z
    fluid = np.zeros(grid.shape, bool)
    atelectasis = np.zeros(grid.shape, bool)
    volume_ml = {"right": 0.0, "left": 0.0}
    key = None
    for side in ("right", "left"):
        ml = float(findings.effusion_ml.get(side, 0.0))
        if ml <= 0:
            continue
        if key is None:
            key = fluid_key(chest.anatomy, X, Y, Z, cavity_r).astype(np.float32)
        side_mask = (X < 0) if side == "right" else (X >= 0)
        cand = lungs & side_mask
        kv = key[cand]
        n = int(round(ml * 1000.0 / grid.voxel_volume))
        n = min(n, int(0.5 * kv.size))
        if n <= 0:
            continue
        thr = float(np.partition(kv, kv.size - n)[kv.size - n])
        chest.points.fluid_threshold[side] = thr
        fl = cand & (key >= thr)
        fluid |= fl
        volume_ml[side] = float(fl.sum()) * grid.voxel_volume / 1000.0
        if volume_ml[side] > ATELECTASIS_ABOVE_ML:
            atelectasis |= cand & (key >= thr - 9.0) & ~fl
    return Effusion(fluid, atelectasis, volume_ml)


def paint_effusion(ct: np.ndarray, effusion: Effusion, texture: np.ndarray, rng: np.random.Generator) -> None:
    """Fluid at one HU drawn from 5-15 (drawn even without fluid), collapsed lung at -180 HU with ``texture``."""
    ct[effusion.fluid] = float(rng.uniform(5, 15))
    ct[effusion.atelectasis] = -180.0 + 60.0 * texture[effusion.atelectasis]


def _place_bullae(chest: Chest, findings: Findings, upper_lobe_points: np.ndarray, rng) -> list[tuple]:
    """Up to ``findings.bullae`` spheres (8-18 mm radius) centred on upper-lobe lattice points above the carina
    - 20 mm, each with at least 5 of its 6 poles in lung; ``findings.bullae`` becomes the number placed."""
    rows = []
    for _ in range(findings.bullae):
        if len(upper_lobe_points) == 0:
            break
        c0 = upper_lobe_points[rng.integers(len(upper_lobe_points), size=BULLA_TRIES)]
        rr = rng.uniform(8, 18, BULLA_TRIES)
        offs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
        probe = (c0[:, None, :] + rr[:, None, None] * offs[None]).reshape(-1, 3)
        in_lung = chest.points.lung(probe).reshape(BULLA_TRIES, 6).sum(1) >= 5
        ok = in_lung & (c0[:, 2] > chest.anatomy.z_carina - 20)
        if ok.any():
            j = int(np.argmax(ok))
            rows.append((c0[j], c0[j], float(rr[j]), float(rr[j])))
    findings.bullae = len(rows)
    return rows


def paint_emphysema(ct: np.ndarray, chest: Chest, findings: Findings, lungs: np.ndarray, lobe_points: dict,
                    texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bullae (air) and centrilobular lucencies (-985 HU with ``texture``) in the upper-zone-weighted top
    ``emphysema_laa`` % of a smooth field over the lungs. Returns that field (float32 (nz, ny, nx)), whose order
    :func:`top_up_emphysema` continues."""
    grid, an, Z = chest.grid, chest.anatomy, chest.Z
    laa_target = float(findings.emphysema_laa)
    bul = np.full(grid.shape, FAR_MM, np.float32)
    rows = _place_bullae(chest, findings, np.concatenate([lobe_points[LUL], lobe_points[RUL]]), rng)
    if rows:
        rasterize_tubes(grid, make_segments(rows), bul)
    bull = (bul < 0) & lungs
    del bul
    # lucencies coalesce as emphysema advances (Fleischner: mild centrilobular -> confluent -> advanced
    # destructive): their scale grows from ~5 mm (mild) to ~14 mm (severe), so severe emphysema stays visible
    # as low-attenuation areas at the 4 mm stage-1 grid rather than dissolving into voxel noise
    em = smooth_field(rng, grid, max(1.2 * chest.coarsest_mm, 3.2 + 0.3 * laa_target))
    em += 1.2 * np.clip((Z - an.z_dome_r) / (an.z_apex - an.z_dome_r), 0, 1)
    n_l = int(lungs.sum())
    n_t = int(round(n_l * min(0.6, laa_target / 100.0))) - int(bull.sum())
    ev = em[lungs]
    if n_t > 0:
        thr = float(np.partition(ev, ev.size - n_t)[ev.size - n_t])
        lucent = lungs & (em >= thr)
        ct[lucent] = -985.0 + 8.0 * texture[lucent]
    ct[bull] = -1000.0
    return em


def paint_airspace_disease(ct: np.ndarray, chest: Chest, findings: Findings, lobes: np.ndarray, texture: np.ndarray,
                           rng: np.random.Generator) -> None:
    """Ground glass (+270 HU, at most -430) and then consolidation (48 HU with ``texture``, at least 37), each in
    the top ``extent`` share of a smooth field over its lobe (consolidation: weighted to the back); records each
    one's ``volume_ml``."""
    grid, an = chest.grid, chest.anatomy
    for kind, items in (("ggo", findings.ggo), ("consolidation", findings.consolidation)):
        for it in items:
            reg = lobes == int(it["lobe"])
            nreg = int(reg.sum())
            if nreg == 0:
                continue
            fld = smooth_field(rng, grid, 18.0 if kind == "consolidation" else 10.0)
            if kind == "consolidation":
                fld += 1.5 * np.clip((chest.Y - an.Yc) / an.B, -1, 1)
            vals = fld[reg]
            n = int(round(float(it["extent"]) * nreg))
            if n <= 0:
                continue
            thr = float(np.partition(vals, nreg - n)[nreg - n])
            area = reg & (fld >= thr)
            if kind == "consolidation":
                ct[area] = np.maximum(48.0 + 5.0 * texture[area], 37.0)
            else:
                ct[area] = np.minimum(ct[area] + 270.0, -430.0)
            it["volume_ml"] = round(float(area.sum()) * grid.voxel_volume / 1000.0, 1)
            del fld, vals, area, reg


def _nodule_centre(ct: np.ndarray, chest: Chest, nodule: dict, lobe_points: dict, rng) -> np.ndarray | None:
    """A centre (mm) for ``nodule`` in its lobe: of :data:`NODULE_TRIES` jittered lattice points tested at once,
    the first whose centre and 6 poles 4 mm outside the sphere lie in aerated lung of that lobe (not fluid, not
    consolidation); None if none fits."""
    lobe, r = int(nodule["lobe"]), float(nodule["diameter_mm"]) / 2
    cand = lobe_points.get(lobe, np.zeros((0, 3)))
    if not len(cand):
        return None
    grid, pts = chest.grid, chest.points
    c0 = cand[rng.integers(len(cand), size=NODULE_TRIES)] + rng.uniform(-4, 4, (NODULE_TRIES, 3))
    m = r + 4.0
    offs = np.array([[0, 0, 0], [m, 0, 0], [-m, 0, 0], [0, m, 0], [0, -m, 0], [0, 0, m], [0, 0, -m]])
    probe = (c0[:, None, :] + offs[None]).reshape(-1, 3)
    pl = pts.lung(probe)
    ijk = np.clip(np.rint(grid.to_index(probe)).astype(int), 0, np.array(grid.shape[::-1]) - 1)
    aerated = ct[ijk[:, 2], ijk[:, 1], ijk[:, 0]] < -600  # not hidden in consolidation
    ok = pl & aerated & ~pts.fluid(probe, pl) & (chest.anatomy.lobe_of(*probe.T) == lobe)
    ok = ok.reshape(NODULE_TRIES, len(offs)).all(1)
    return c0[int(np.argmax(ok))] if ok.any() else None


def paint_nodules(ct: np.ndarray, chest: Chest, findings: Findings, lobe_points: dict, rng) -> None:
    """Solid spheres (45 HU, partial volume) well inside their lobe; records ``placed`` and ``center_mm``."""
    rows = []
    for nodule in findings.nodules:
        r = float(nodule["diameter_mm"]) / 2
        placed = _nodule_centre(ct, chest, nodule, lobe_points, rng)
        nodule["placed"] = placed is not None
        if placed is not None:
            nodule["center_mm"] = [round(float(v), 1) for v in placed]
            rows.append((placed, placed, r, r))
    if rows:
        sd_n = np.full(chest.grid.shape, FAR_MM, np.float32)
        rasterize_tubes(chest.grid, make_segments(rows), sd_n)
        paint_partial_volume(ct, sd_n, chest.finest_mm, 45.0)


def top_up_emphysema(ct16: np.ndarray, lungs: np.ndarray, airway: np.ndarray, laa_target: float, em: np.ndarray,
                     rng: np.random.Generator) -> None:
    """Bring the %LAA-950 of the scanned int16 CT back up to ``laa_target``: lucent voxels lost to blur and
    overlays are added, next in the order of ``em`` (the field :func:`paint_emphysema` returned), in aerated lung
    (-950 to -700 HU) away from the airway, at -975 ± 20 HU."""
    m = lungs & ~dilate(airway, 1)
    n_m = int(m.sum())
    need = int(round(laa_target / 100.0 * n_m)) - int((ct16[m] < -950).sum())
    if need <= 0:
        return
    cand = m & (ct16 >= -950) & (ct16 < -700)  # aerated lung only (not consolidation, nodules)
    ev = em[cand]
    need = min(need, ev.size)
    thr = float(np.partition(ev, ev.size - need)[ev.size - need])
    add = cand & (em >= thr)
    ct16[add] = (-975 + 10 * np.clip(rng.standard_normal(int(add.sum())), -2, 2)).astype(np.int16)
