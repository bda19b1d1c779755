"""Quantitative measurements on any chest CT + masks (phantoms, generated CTs, real CTs).

Inputs are numpy arrays in (z, y, x) order in LPS orientation (x: patient right -> left, i.e. index 0 is the
patient's right; y: anterior -> posterior; z: inferior -> superior) and ``spacing_zyx`` in mm (the reverse of
SimpleITK's ``GetSpacing()``). CT in HU; lobes as labels 1..5 (``MedSynLib.io.codecs.LOBE_LABELS``) or any
binary lung mask; other masks binary. Volumes are returned in mL (airway in mm³), ratios as fractions,
%LAA-950 in percent.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedSynLib.io.codecs import LOBE_LABELS

RIGHT_LOBES = tuple(k for k, v in LOBE_LABELS.items() if v.startswith("right"))
LEFT_LOBES = tuple(k for k, v in LOBE_LABELS.items() if v.startswith("left"))


def _vv(spacing_zyx) -> float:
    return float(np.prod(spacing_zyx))


def lobe_volumes(lobes: np.ndarray, spacing_zyx) -> dict[int, float]:
    """mL per lobe label 1..5."""
    counts = np.bincount(np.asarray(lobes, dtype=np.int64).ravel(), minlength=6)
    return {k: float(counts[k]) * _vv(spacing_zyx) / 1000.0 for k in range(1, 6)}


def dice(a: np.ndarray, b: np.ndarray, label: int | None = None) -> float:
    """Dice overlap of two binary masks (or of one label of two label maps); 1.0 when both are empty."""
    a = (np.asarray(a) == label) if label is not None else np.asarray(a) > 0
    b = (np.asarray(b) == label) if label is not None else np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def airway_volume(airway: np.ndarray, spacing_zyx) -> float:
    """Airway mask volume in mm³."""
    return float((np.asarray(airway) > 0).sum()) * _vv(spacing_zyx)


def _sides(lobes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right lung, left lung) boolean masks from lobe labels, or from a binary mask split at its x centre."""
    lobes = np.asarray(lobes)
    if lobes.max() > 1:
        return np.isin(lobes, RIGHT_LOBES), np.isin(lobes, LEFT_LOBES)
    lung = lobes > 0
    xs = np.nonzero(lung.any(axis=(0, 1)))[0]
    mid = (xs.min() + xs.max()) / 2 if len(xs) else lung.shape[2] / 2
    right = lung.copy()
    right[..., int(np.ceil(mid)):] = False
    return right, lung & ~right


def dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation by a (2r+1)³ cube, separable (fast on 256³)."""
    out = np.array(m, dtype=bool)
    for ax in range(3):
        src = out.copy()
        for k in range(1, r + 1):
            hi = [slice(None)] * 3
            lo = [slice(None)] * 3
            hi[ax], lo[ax] = slice(k, None), slice(None, -k)
            out[tuple(hi)] |= src[tuple(lo)]
            out[tuple(lo)] |= src[tuple(hi)]
    return out


def laa950(ct: np.ndarray, lungs: np.ndarray, airway: np.ndarray | None = None, threshold: float = -950.0) -> float:
    """%LAA-950: percent of lung voxels below -950 HU; airway lumen (dilated by one voxel) is left out if given."""
    lung = np.asarray(lungs) > 0
    if airway is not None:
        lung &= ~dilate(np.asarray(airway) > 0, 1)
    n = int(lung.sum())
    return 0.0 if n == 0 else 100.0 * float((np.asarray(ct)[lung] < threshold).sum()) / n


def cardiothoracic_ratio(lobes: np.ndarray, spacing_zyx, ct: np.ndarray | None = None) -> dict:
    """Axial cardiothoracic ratio from the lung masks (and the CT, if given, to check the gap is soft tissue).

    Cardiac diameter: per slice, the distance (mm) from the most rightward to the most leftward medial lung
    border over the rows that have lung on both sides of a soft-tissue gap (the heart's transverse extent);
    the maximum over the slices above the right hemidiaphragm's dome (the highest slice in the lower half of the
    lung where a row crosses right lung, at least 25 mm of non-lung, and right lung again) where both lungs have
    at least 20 % of their largest area. Thoracic diameter: the widest lateral extent of the lungs (= inner rib margin).
    Returns {"ctr", "cardiac_mm", "thoracic_mm", "slice"}.
    """
    sz, sy, sx = spacing_zyx
    right, left = _sides(lobes)
    nx = right.shape[2]
    idx = np.arange(nx)
    lung = right | left
    if not right.any() or not left.any():
        return {"ctr": float("nan"), "cardiac_mm": float("nan"), "thoracic_mm": float("nan"), "slice": -1}
    ar, al = right.sum((1, 2)), left.sum((1, 2))
    valid_z = (ar >= 0.2 * ar.max()) & (al >= 0.2 * al.max())
    # the right dome: slices where a row crosses right lung, then non-lung (liver), then right lung again
    rmin = np.where(right, idx, nx).min(-1)
    rmx = np.where(right, idx, -1).max(-1)
    holes = (rmx - rmin + 1 - right.sum(-1)) * sx >= 25.0  # wider than most vessels next to the lung
    zr = np.nonzero(ar)[0]
    holes[(zr[0] + zr[-1]) // 2:] = False  # the dome is in the lower half of the lung
    dome = np.nonzero(holes.any(-1))[0]
    if len(dome):
        valid_z[: dome.max() + 1] = False
    r_max = np.where(right, idx, -1).max(-1)  # (z, y)
    l_min = np.where(left, idx, nx).min(-1)
    ok = (r_max >= 0) & (l_min < nx) & valid_z[:, None]
    gap = (l_min - r_max - 1).astype(np.float64)
    if ct is not None:
        soft = (np.asarray(ct) > -200).astype(np.int32)
        cs = np.concatenate([np.zeros(soft.shape[:2] + (1,), np.int32), np.cumsum(soft, -1)], -1)
        a = np.clip(r_max + 1, 0, nx)
        b = np.clip(l_min, 0, nx)
        n_soft = np.take_along_axis(cs, b[..., None], -1)[..., 0] - np.take_along_axis(cs, a[..., None], -1)[..., 0]
        ok &= n_soft >= 0.85 * np.maximum(gap, 1)
    ok &= gap > 0
    if not ok.any():
        return {"ctr": float("nan"), "cardiac_mm": float("nan"), "thoracic_mm": float("nan"), "slice": -1}
    # per slice: from the most rightward right border to the most leftward left border (bounding width)
    rb = np.where(ok, r_max + 1, nx).min(-1)
    lb = np.where(ok, l_min - 1, -1).max(-1)
    width_z = np.where(ok.any(-1), lb - rb + 1, 0)
    zi = int(np.argmax(width_z))
    cardiac = float(width_z[zi]) * sx
    lx = lung.any(1)  # (z, x)
    xmin = np.where(lx, idx, nx).min(-1)
    xmax = np.where(lx, idx, -1).max(-1)
    width = np.where(xmax >= 0, xmax - xmin + 1, 0)
    thoracic = float(width.max()) * sx
    return {"ctr": cardiac / thoracic, "cardiac_mm": cardiac, "thoracic_mm": thoracic, "slice": zi}


ANALYSIS_SPACING_MM = 4.0


def analysis_grid(ct: np.ndarray, lobes: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(CT, lobes, spacing) on a grid of about ``ANALYSIS_SPACING_MM`` (the stage-1 grid) for density measures.

    Each axis finer than that is reduced by the whole factor k = round(4 mm / spacing): the CT by the mean of each
    k-voxel block (HU), the lobes by the block's centre voxel (nearest); a remainder of under k voxels at the far
    end is dropped. A coarser or equal axis is kept. One grid for every input makes a density-range measure
    nearly independent of resolution and voxel noise: a 1 mm and a 4 mm CT of the same chest read alike.
    """
    ks = [max(1, int(round(ANALYSIS_SPACING_MM / float(s)))) for s in spacing_zyx]
    if ks == [1, 1, 1]:
        return ct, lobes, tuple(spacing_zyx)
    n = [d // k for d, k in zip(np.shape(ct), ks)]
    ct = np.asarray(ct, dtype=np.float32)[: n[0] * ks[0], : n[1] * ks[1], : n[2] * ks[2]]
    ct = ct.reshape(n[0], ks[0], n[1], ks[1], n[2], ks[2]).mean(axis=(1, 3, 5))
    lobes = np.asarray(lobes)[ks[0] // 2:: ks[0], ks[1] // 2:: ks[1], ks[2] // 2:: ks[2]][: n[0], : n[1], : n[2]]
    return ct, lobes, tuple(float(s) * k for s, k in zip(spacing_zyx, ks))


def effusion_volume(ct: np.ndarray, spacing_zyx, lobes: np.ndarray, effusion: np.ndarray | None = None,
                    hu_range=(-10.0, 30.0), hu_mean_max: float = 25.0) -> dict[str, float]:
    """Pleural effusion volume (mL) per side {"right", "left", "total"}.

    With an effusion mask: its voxel volume per side. Without (e.g. a generated CT): on the analysis grid of
    about 4 mm (:func:`analysis_grid`), voxels of the smoothed CT in the fluid range (default -10..30 HU) outside
    the lungs, the mediastinum (the gap between the lungs' medial borders) and a 24 mm midline band, grouped in
    face-connected components that touch the lung, average at most ``hu_mean_max`` HU and lie in its dependent
    (posterior) half; their volume plus the non-lung voxels between them and the lung that smoothing pulled below
    the range (raw HU > -50). Sides are split at the midline.
    """
    out = {"right": 0.0, "left": 0.0}
    if effusion is None:
        ct, lobes, spacing_zyx = analysis_grid(ct, lobes, spacing_zyx)
    vv = _vv(spacing_zyx) / 1000.0
    right, left = _sides(lobes)
    lung = right | left
    nz, ny, nx = lung.shape
    if effusion is not None:
        e = np.asarray(effusion) > 0
        xs = np.nonzero(lung.any(axis=(0, 1)))[0]
        mid = int(round((xs.min() + xs.max()) / 2)) if len(xs) else nx // 2
        out["right"] = float(e[..., :mid].sum()) * vv
        out["left"] = float(e[..., mid:].sum()) * vv
        out["total"] = out["right"] + out["left"]
        return out
    if not lung.any():
        out["total"] = 0.0
        return out
    # work inside the lungs' bounding box grown by 40 mm (60 mm posteriorly, where fluid collects)
    sz_, sy_, sx_ = spacing_zyx
    zz, yy_, xx = (np.nonzero(lung.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    box = (slice(max(0, zz[0] - int(40 / sz_)), zz[-1] + 1 + int(40 / sz_)),
           slice(max(0, yy_[0] - int(40 / sy_)), yy_[-1] + 1 + int(60 / sy_)),
           slice(max(0, xx[0] - int(40 / sx_)), xx[-1] + 1 + int(40 / sx_)))
    ct, right, left, lung = np.asarray(ct)[box], right[box], left[box], lung[box]
    nz, ny, nx = lung.shape
    img = sitk.GetImageFromArray(np.asarray(ct, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sigma = 0.5 * max(spacing_zyx)
    sm = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, sigma))
    cand = (sm >= hu_range[0]) & (sm <= hu_range[1]) & ~lung
    # leave out the mediastinum: voxels between the two lungs' medial borders on the same row
    idx = np.arange(nx)
    r_max = np.where(right, idx, -1).max(-1)[..., None]
    l_min = np.where(left, idx, nx).min(-1)[..., None]
    cand &= ~((idx > r_max) & (idx < l_min) & (r_max >= 0) & (l_min < nx))
    # and a 24 mm midline band (spinal canal, spinous processes): pleural fluid never crosses the midline
    xs_l = np.nonzero(lung.any(axis=(0, 1)))[0]
    mid_x = (xs_l[0] + xs_l[-1]) / 2
    cand[..., np.abs(idx - mid_x) * sx_ < 12.0] = False
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    cand[: zs.min()] = False
    cand[zs.max() + 1:] = False
    ci = sitk.GetImageFromArray(cand.astype(np.uint8))
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(ci, False))
    ncomp = int(cc.max())
    if ncomp == 0:
        out["total"] = 0.0
        return out
    r_t = max(1, int(np.ceil(2 * sigma / min(spacing_zyx))))  # smoothing pushes the fluid's lung side out of range
    rd, ld = dilate(right, r_t), dilate(left, r_t)
    cnt = np.bincount(cc.ravel(), minlength=ncomp + 1)
    touch_r = np.bincount(cc[rd], minlength=ncomp + 1)
    touch_l = np.bincount(cc[ld], minlength=ncomp + 1)
    yy = np.arange(ny)[None, :, None]
    ysum = np.bincount(cc.ravel(), weights=np.broadcast_to(yy, cc.shape).ravel(), minlength=ncomp + 1)
    ly = {s: float(np.nonzero(m)[1].mean()) if m.any() else 0.0 for s, m in (("right", right), ("left", left))}
    husum = np.bincount(cc.ravel(), weights=np.asarray(ct, dtype=np.float64).ravel(), minlength=ncomp + 1)
    ok = np.zeros(ncomp + 1, bool)
    for k in range(1, ncomp + 1):
        touch = touch_r[k] + touch_l[k]
        if cnt[k] == 0 or touch < max(1, 0.01 * cnt[k]):  # walled off from the lung (e.g. spinal canal)
            continue
        if husum[k] / cnt[k] > hu_mean_max:  # soft-tissue rims (vessels, oesophagus) rather than fluid
            continue
        side = "right" if touch_r[k] >= touch_l[k] else "left"
        ok[k] = ysum[k] / cnt[k] >= ly[side]  # dependent
    if not ok.any():
        out["total"] = 0.0
        return out
    fl = ok[cc]
    # fluid next to the lung that smoothing pulled below the range: not lung, not yet counted, above -400 HU
    shell = dilate(fl, r_t) & ~fl & ~lung & (sm > -400.0) & (sm < hu_range[0]) & (np.asarray(ct) > -50)
    frac = (fl | shell).astype(np.float32)
    xs = np.nonzero(lung.any(axis=(0, 1)))[0]
    mid = int(round((xs.min() + xs.max()) / 2))
    out["right"] = float(frac[..., :mid].sum()) * vv
    out["left"] = float(frac[..., mid:].sum()) * vv
    out["total"] = out["right"] + out["left"]
    return out


def measure_all(ct, spacing_zyx, lobes, airway=None, effusion=None) -> dict:
    """Every measurement at once (the phantom's ``truth["measured"]``)."""
    res = {
        "lobe_volumes_ml": {str(k): round(v, 1) for k, v in lobe_volumes(lobes, spacing_zyx).items()},
        "laa950_percent": round(laa950(ct, lobes, airway), 2),
        "cardiothoracic": {k: (round(v, 4) if isinstance(v, float) else v)
                           for k, v in cardiothoracic_ratio(lobes, spacing_zyx, ct).items()},
        "effusion_ml_from_ct": {k: round(v, 1) for k, v in effusion_volume(ct, spacing_zyx, lobes).items()},
    }
    if airway is not None:
        res["airway_volume_mm3"] = round(airway_volume(airway, spacing_zyx), 1)
    if effusion is not None:
        res["effusion_ml_from_mask"] = {k: round(v, 1) for k, v in
                                        effusion_volume(ct, spacing_zyx, lobes, effusion).items()}
    return res
