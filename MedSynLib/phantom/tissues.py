"""The HU of a phantom's normal tissues, painted in place into a float32 (nz, ny, nx) volume that starts as air.

Non-contrast HU: air -1000, fat -100, muscle 45, blood 42, heart 40, liver 58, oesophagus 35, cancellous bone
110-270 (less with age), cortical bone 650-850, costal cartilage 140, lung about -850 (denser posteriorly) with
texture. Each painter overwrites what an earlier one left where their tissues meet, so the order in
:func:`~.compose.make_phantom` is part of the result.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import trees as T
from .chest import FAR_MM, Chest
from .grid import SEG_DTYPE, rasterize_tubes

CENTRAL_BRONCHUS_GENERATION = 3
"""Bronchi up to this generation (main, intermediate, lobar) are never cut by a large heart or effusion."""


def paint_partial_volume(ct: np.ndarray, sd: np.ndarray, s: float, hu: float, where: np.ndarray | None = None) -> None:
    """Blend ``hu`` into ``ct`` with the analytic partial-volume fraction ``clip(0.5 - sd / s, 0, 1)`` (sparse).

    sd: signed distance (mm) to the structure, like ``ct``; s: the voxel size (mm) the fraction ramps over;
    ``where`` (bool, like ``ct``): only there."""
    idx = np.flatnonzero(sd < 0.5 * s)
    if where is not None:
        idx = idx[where.ravel()[idx]]
    fr = np.clip(0.5 - sd.ravel()[idx] / s, 0, 1)
    flat = ct.reshape(-1)
    flat[idx] += fr * (hu - flat[idx])


def paint_body_wall(ct: np.ndarray, chest: Chest) -> np.ndarray:
    """Muscle inside the body outline, subcutaneous fat (``fat_mm`` thick, thicker at the sides and back) and fat
    inside the rib cage. Returns the body (bool (nz, ny, nx))."""
    an, p, X, Y, Z = chest.anatomy, chest.anatomy.p, chest.X, chest.Y, chest.Z
    br, depth = an.body_norm_depth(X, Y, Z)
    body = br < 1.0
    ang = np.arctan2(Y - an.Yc, X)
    fat_local = p.fat_mm * (0.85 + 0.3 * np.sin(2 * ang + 0.7)) + 3.0 * (Y > an.Yc)
    ct[body] = 45.0
    ct[body & (depth < fat_local)] = -100.0
    del depth, ang, fat_local
    ct[chest.cavity] = -90.0
    return body


def paint_ribs_and_sternum(ct: np.ndarray, chest: Chest, cavity_r: np.ndarray, body: np.ndarray) -> None:
    """Ribs (9.5 mm bands in a 1-9 mm shell outside the rib cage, sloping down towards the front), costal
    cartilage at the front, and the sternum (cortex and marrow). ``cavity_r``: the rib cage's normalised radius."""
    an, p, X, Y, Z = chest.anatomy, chest.anatomy.p, chest.X, chest.Y, chest.Z
    a_z, b_z = an.cavity_axes(Z)
    yc = an.cavity_center_y(Z)
    rho = np.sqrt(X * X + (Y - yc) ** 2)
    dout = (cavity_r - 1.0) * rho / np.maximum(cavity_r, 1e-3)
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
    yfront = yc - b_z
    stz = (Z > an.z_carina - 115) & (Z < an.z_apex - 18)
    stw = np.where(Z > an.z_carina + 15, 24.0, 14.0)
    st = stz & (np.abs(X) < stw) & (Y > yfront - 14) & (Y < yfront - 2)
    st_in = stz & (np.abs(X) < stw - 1.5) & (Y > yfront - 12.5) & (Y < yfront - 3.5)
    ct[st] = 800.0
    ct[st_in] = 240.0


def paint_spine(ct: np.ndarray, chest: Chest) -> None:
    """Vertebral bodies (cortex, age-dependent marrow, 6 mm discs every 26 mm), the arch, spinous and transverse
    processes, and the spinal canal with its cord."""
    an, X, Y, Z = chest.anatomy, chest.X, chest.Y, chest.Z
    shape = chest.grid.shape
    rv = an.r_vert
    dv = np.broadcast_to(np.sqrt(X * X + (Y - an.Yv) ** 2), shape)
    canc = float(np.clip(270 - 2.2 * (an.p.age - 30), 110, 270))
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


def paint_mediastinum(ct: np.ndarray, chest: Chest) -> None:
    """Heart, great vessels and oesophagus."""
    ct[chest.heart] = 40.0
    ct[chest.blood] = 42.0
    ct[chest.oesophagus] = 35.0


def paint_abdomen(ct: np.ndarray, chest: Chest) -> None:
    """Under the diaphragm: liver on the right, spleen and bowel on the left, and the stomach's air bubble."""
    an, X, Y, Z = chest.anatomy, chest.X, chest.Y, chest.Z
    dz = chest.diaphragm_z
    abd = chest.cavity & (Z < dz)
    ct[abd] = 45.0
    abd2 = chest.cavity & (Z < dz - 4.0)
    ct[abd2 & (X < 25)] = 58.0
    ct[abd2 & (X >= 25)] = 44.0
    stomach_air = abd2 & (((X - 0.55 * an.A) / 30.0) ** 2 + ((Y - an.Yc + 0.1 * an.B) / 25.0) ** 2 < 1) & (Z > dz - 18)
    ct[stomach_air] = -1000.0


def paint_lung_parenchyma(ct: np.ndarray, chest: Chest, lungs: np.ndarray, texture: np.ndarray) -> None:
    """Aerated lung: -868 HU, up to 38 HU denser towards the back (gravity), plus 14 HU of ``texture`` (a smooth
    field, about unit variance)."""
    an = chest.anatomy
    lung_hu = -868.0 + 38.0 * np.clip((chest.Y - an.Yc) / an.B + 1, 0, 2) / 2 + 14.0 * texture
    ct[lungs] = lung_hu[lungs]


def where_tubes_show(chest: Chest, fluid: np.ndarray) -> np.ndarray:
    """Where pulmonary vessels and airways are drawn (bool (nz, ny, nx)): the rib cage above the diaphragm outside
    the heart and the fluid, and the neck above the carina (the trachea)."""
    Z, an = chest.Z, chest.anatomy
    return (chest.cavity & (Z > chest.diaphragm_z) & ~chest.heart & ~fluid) | ((Z > an.z_carina + 15) & ~chest.cavity)


def paint_vessels(ct: np.ndarray, chest: Chest, vessel_tree: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pulmonary arteries and veins (``vessel_tree``: tube segments) at 41 HU with partial volume, where
    ``allowed``. Returns their mask (bool); on grids coarser than 2 mm thin vessels are widened to half a voxel so
    that they stay visible in it."""
    grid, s_max = chest.grid, chest.coarsest_mm
    sd_v = np.full(grid.shape, FAR_MM, np.float32)
    rasterize_tubes(grid, vessel_tree, sd_v)
    paint_partial_volume(ct, sd_v, chest.finest_mm, 41.0, allowed)
    if s_max <= 2.0:
        return (sd_v < 0.0) & allowed & ~chest.heart
    del sd_v
    sd_m = np.full(grid.shape, FAR_MM, np.float32)
    thick = np.maximum(vessel_tree["r0"], vessel_tree["r1"]) >= 0.3 * s_max
    rasterize_tubes(grid, vessel_tree[thick], sd_m, min_radius=0.5 * s_max)
    return (sd_m < 0.0) & allowed & ~chest.heart


def paint_airways(ct: np.ndarray, chest: Chest, airway_tree: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Bronchial walls (42 HU) and lumen (air) with partial volume, where ``allowed`` or in a central bronchus.
    Returns the lumen mask (bool), kept 26-connected (see :func:`_lumen_mask`)."""
    grid, s_min = chest.grid, chest.finest_mm
    sd_l = np.full(grid.shape, FAR_MM, np.float32)
    sd_o = np.full(grid.shape, FAR_MM, np.float32)
    rasterize_tubes(grid, airway_tree, sd_l, sd_o)
    sd_c = np.full(grid.shape, FAR_MM, np.float32)
    central = airway_tree[airway_tree["gen"] <= CENTRAL_BRONCHUS_GENERATION][list(SEG_DTYPE.names)]
    rasterize_tubes(grid, np.concatenate([chest.central_airways, central]), sd_c)
    allowed = allowed | (sd_c < 0)
    del sd_c
    paint_partial_volume(ct, sd_o, s_min, 42.0, allowed)
    paint_partial_volume(ct, sd_l, s_min, -1000.0, allowed)
    del sd_o
    return _lumen_mask(chest, airway_tree, sd_l, allowed)


def _lumen_mask(chest: Chest, airway_tree: np.ndarray, sd_lumen: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The airway mask: the lumen where ``allowed``, its largest 26-connected part (bits cut off where a bronchus
    crosses fluid are dropped). On grids coarser than 1.2 mm thin bronchi are widened to 0.87 voxel and those
    thinner than 0.35 voxel beyond the lobar bronchi and 2 more generations are left out."""
    grid, s_max = chest.grid, chest.coarsest_mm
    if s_max > 1.2:
        sd_m = np.full(grid.shape, FAR_MM, np.float32)
        keep = (np.maximum(airway_tree["r0"], airway_tree["r1"]) >= 0.35 * s_max) | (airway_tree["gen"] <= 5)
        keep = T.prune(airway_tree, ~keep)
        rasterize_tubes(grid, airway_tree[keep], sd_m, min_radius=0.87 * s_max)
        airway = (sd_m < 0.0) & allowed
        del sd_m
    else:
        airway = (sd_lumen < 0.0) & allowed
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(airway.astype(np.uint8)), True)
    cc = sitk.RelabelComponent(cc)
    return sitk.GetArrayViewFromImage(cc) == 1
