"""The phantom's voxel grid, patient coordinates in mm, smooth random fields and tube rasterisation.

Arrays are (z, y, x). Patient coordinates (mm, origin at the grid centre):

- ``X``: patient right -> left (image x; LPS +x), 0 on the midline;
- ``Y``: anterior -> posterior (image y; LPS +y);
- ``Z``: inferior -> superior (image z; LPS +z).

So the ITK direction is the identity and ``origin = -(n - 1) / 2 * spacing`` per axis (LPS, as SimpleITK uses).
This equals the official MedSyn writer's (h-flipped) array orientation under an identity direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.images import Geometry


@dataclass(frozen=True)
class Grid:
    """``shape`` is (nz, ny, nx); ``spacing`` is (sx, sy, sz) in mm, in SimpleITK's (x, y, z) order."""

    shape: tuple[int, int, int] = (256, 256, 256)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @staticmethod
    def cube(size: int = 256, spacing: float = 1.0) -> "Grid":
        return Grid((size, size, size), (float(spacing),) * 3)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of voxel (0, 0, 0), in (x, y, z) order."""
        nz, ny, nx = self.shape
        sx, sy, sz = self.spacing
        return (-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz)

    @property
    def direction(self) -> tuple[float, ...]:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def geometry(self) -> Geometry:
        """The same grid as an image :class:`~MedSynLib.io.images.Geometry` (size in (x, y, z) order)."""
        nz, ny, nx = self.shape
        return Geometry((nx, ny, nz), tuple(map(float, self.spacing)), self.origin, self.direction)

    @property
    def voxel_volume(self) -> float:
        """mm³."""
        return float(np.prod(self.spacing))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D coordinate vectors (mm, float32) shaped for broadcasting: Z (nz,1,1), Y (1,ny,1), X (1,1,nx)."""
        nz, ny, nx = self.shape
        sx, sy, sz = self.spacing
        z = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)
        y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
        x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def to_index(self, p: np.ndarray) -> np.ndarray:
        """Patient mm (..., 3) in (x, y, z) -> continuous voxel index (..., 3) in (x, y, z)."""
        nz, ny, nx = self.shape
        c = np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2])
        return np.asarray(p, dtype=np.float64) / np.asarray(self.spacing) + c


def _interp_matrix(n_out: int, step_out: float, n_in: int, step_in: float, sigma: float) -> np.ndarray:
    """Gaussian interpolation weights (n_out, n_in) from a centred coarse axis to a centred fine axis."""
    xo = (np.arange(n_out) - (n_out - 1) / 2) * step_out
    xi = (np.arange(n_in) - (n_in - 1) / 2) * step_in
    w = np.exp(-0.5 * ((xo[:, None] - xi[None, :]) / sigma) ** 2)
    return (w / np.sqrt((w ** 2).sum(1, keepdims=True))).astype(np.float32)


def smooth_field(rng: np.random.Generator, grid: Grid, scale_mm: float) -> np.ndarray:
    """Smooth random field (nz, ny, nx) float32, about zero mean and unit variance, correlation length ~scale_mm.

    A coarse white-noise lattice (step ``scale_mm``) is interpolated with Gaussian weights, separably (three
    small matrix products), so the cost is a few passes over the volume whatever the scale.
    """
    nz, ny, nx = grid.shape
    sx, sy, sz = grid.spacing
    step = float(scale_mm)
    dims = []
    for n, s in ((nz, sz), (ny, sy), (nx, sx)):
        dims.append(int(np.ceil(n * s / step)) + 3)
    coarse = rng.standard_normal(dims, dtype=np.float32)
    sig = 0.6 * step
    wz = _interp_matrix(nz, sz, dims[0], step, sig)
    wy = _interp_matrix(ny, sy, dims[1], step, sig)
    wx = _interp_matrix(nx, sx, dims[2], step, sig)
    a = coarse @ wx.T  # (cz, cy, nx)
    a = np.einsum("yj,zjx->zyx", wy, a, optimize=True)  # (cz, ny, nx)
    out = (wz @ a.reshape(dims[0], ny * nx)).reshape(nz, ny, nx)
    return out


def blur3(a: np.ndarray, w=(0.25, 0.25, 0.25)) -> np.ndarray:
    """Separable [w, 1 - 2w, w] blur along axes (z, y, x) (w = 1/4: sigma ~0.7 voxel), edges replicated."""
    for ax in range(3):
        wa = float(w[ax])
        if wa <= 0:
            continue
        b = np.moveaxis(a, ax, 0)
        out = np.empty_like(b)
        out[1:-1] = b[1:-1] * (1 - 2 * wa)
        out[1:-1] += (b[:-2] + b[2:]) * wa
        out[0] = b[0] * (1 - wa) + b[1] * wa
        out[-1] = b[-1] * (1 - wa) + b[-2] * wa
        a = np.moveaxis(out, 0, ax)
    return np.ascontiguousarray(a)


def blur_weights(spacing_zyx) -> tuple[float, float, float]:
    """Kernel weights for a scanner point-spread of sigma ~0.7 mm: w = sigma² / 2 / spacing², at most 1/4."""
    return tuple(min(0.25, 0.245 / float(s) ** 2) for s in spacing_zyx)


def noise_gain(w) -> float:
    """Standard deviation of white noise after :func:`blur3` with weights ``w``."""
    g = 1.0
    for wa in w:
        g *= 2 * wa * wa + (1 - 2 * wa) ** 2
    return float(np.sqrt(g))


# ---------------------------------------------------------------------------------------------- tubes

SEG_DTYPE = np.dtype([("p0", "f8", 3), ("p1", "f8", 3), ("r0", "f8"), ("r1", "f8"), ("w", "f8")])
"""A tube segment: end points (mm, x y z), radii at both ends (mm), wall thickness (mm, 0 for none)."""


def make_segments(rows: list[tuple]) -> np.ndarray:
    """rows of (p0, p1, r0, r1[, wall]) -> structured array of ``SEG_DTYPE``."""
    out = np.zeros(len(rows), dtype=SEG_DTYPE)
    for i, r in enumerate(rows):
        out[i]["p0"], out[i]["p1"], out[i]["r0"], out[i]["r1"] = r[0], r[1], r[2], r[3]
        out[i]["w"] = r[4] if len(r) > 4 else 0.0
    return out


def rasterize_tubes(grid: Grid, segs: np.ndarray, sd: np.ndarray, sd_outer: np.ndarray | None = None,
                    margin_mm: float = 0.0, min_radius: float = 0.0) -> None:
    """Lower ``sd`` (nz, ny, nx) to the signed distance (mm, approx.) to the union of tubes, in place.

    ``sd = |v - axis| - r(t)``; it is exact to within the tube's bounding box grown by ``margin_mm`` plus one
    voxel and +inf-like further away. ``sd_outer`` gets the same with ``r + wall``. ``min_radius`` (mm)
    raises thin radii (used for masks, so that thin tubes stay 26-connected on coarse grids).
    Only each tube's bounding box is touched, so the cost scales with the tubes' volume, not the grid's.
    """
    if len(segs) == 0:
        return
    nz, ny, nx = grid.shape
    sp = np.asarray(grid.spacing, dtype=np.float64)
    cen = np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2])
    hi_lim = np.array([nx, ny, nz])
    pad = margin_mm + 0.6 * sp.max()
    # small tubes (most of a vessel tree): many at once in fixed-size boxes, scattered with np.minimum.at
    rr = np.maximum(np.maximum(segs["r0"], segs["r1"]), min_radius) + segs["w"] + pad
    ext = np.ceil((np.abs(segs["p1"] - segs["p0"]) + 2 * rr[:, None]) / sp).max(1) + 2
    done = np.zeros(len(segs), bool)
    for k in (3, 4, 6, 8):
        sel = ~done & (ext <= k)
        if sel.sum() >= 8:
            _raster_batch(segs[sel], k, sp, cen, sd, sd_outer, margin_mm, min_radius)
            done |= sel
    for s in segs[~done]:
        p0, p1 = s["p0"], s["p1"]
        r0, r1, w = max(s["r0"], min_radius), max(s["r1"], min_radius), s["w"]
        rmax = max(r0, r1) + w + pad
        lo = np.floor((np.minimum(p0, p1) - rmax) / sp + cen).astype(int)
        hi = np.ceil((np.maximum(p0, p1) + rmax) / sp + cen).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, hi_lim)
        if np.any(hi <= lo):
            continue
        xs = ((np.arange(lo[0], hi[0]) - cen[0]) * sp[0] - p0[0]).astype(np.float32)[None, None, :]
        ys = ((np.arange(lo[1], hi[1]) - cen[1]) * sp[1] - p0[1]).astype(np.float32)[None, :, None]
        zs = ((np.arange(lo[2], hi[2]) - cen[2]) * sp[2] - p0[2]).astype(np.float32)[:, None, None]
        d = p1 - p0
        l2 = float(d @ d)
        if l2 > 1e-9:
            t = (xs * (d[0] / l2) + ys * (d[1] / l2)) + zs * (d[2] / l2)
            np.clip(t, 0.0, 1.0, out=t)
            qx = xs - t * d[0]
            qy = ys - t * d[1]
            qz = zs - t * d[2]
            dist = np.sqrt(qx * qx + qy * qy + qz * qz)
            r = r0 + t * (r1 - r0)
        else:
            dist = np.sqrt((xs * xs + ys * ys) + zs * zs)
            r = np.float32(r0)
        box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        v = dist - r
        np.minimum(sd[box], v, out=sd[box])
        if sd_outer is not None:
            v -= w
            np.minimum(sd_outer[box], v, out=sd_outer[box])


_RASTER_CHUNK = 4096
"""Tubes rasterised together by :func:`_raster_batch` (bounds its temporary arrays)."""


def _raster_batch(segs, k, sp, cen, sd, sd_outer, margin_mm, min_radius):
    """:func:`rasterize_tubes` for tubes whose boxes fit ``k`` voxels a side, many at once (``sp`` spacing and
    ``cen`` centre voxel, x, y, z)."""
    nz, ny, nx = sd.shape
    chunk = _RASTER_CHUNK
    flat = sd.reshape(-1)
    flat_o = sd_outer.reshape(-1) if sd_outer is not None else None
    o = np.arange(k)
    for c0 in range(0, len(segs), chunk):
        sg = segs[c0:c0 + chunk]
        p0, p1 = sg["p0"], sg["p1"]
        r0 = np.maximum(sg["r0"], min_radius)
        r1 = np.maximum(sg["r1"], min_radius)
        rmax = np.maximum(r0, r1) + sg["w"] + margin_mm + 0.6 * sp.max()
        lo = np.floor((np.minimum(p0, p1) - rmax[:, None]) / sp + cen).astype(np.int64)
        ix, iy, iz = lo[:, 0:1] + o, lo[:, 1:2] + o, lo[:, 2:3] + o  # (n, k)
        xs = ((ix - cen[0]) * sp[0] - p0[:, 0:1]).astype(np.float32)[:, None, None, :]
        ys = ((iy - cen[1]) * sp[1] - p0[:, 1:2]).astype(np.float32)[:, None, :, None]
        zs = ((iz - cen[2]) * sp[2] - p0[:, 2:3]).astype(np.float32)[:, :, None, None]
        d = (p1 - p0).astype(np.float32)
        l2 = np.maximum((d * d).sum(1), 1e-9)
        dd = (d / l2[:, None])
        t = xs * dd[:, 0, None, None, None] + ys * dd[:, 1, None, None, None] + zs * dd[:, 2, None, None, None]
        np.clip(t, 0.0, 1.0, out=t)
        qx = xs - t * d[:, 0, None, None, None]
        qy = ys - t * d[:, 1, None, None, None]
        qz = zs - t * d[:, 2, None, None, None]
        v = np.sqrt(qx * qx + qy * qy + qz * qz)
        v -= (r0[:, None, None, None] + t * (r1 - r0)[:, None, None, None]).astype(np.float32)
        valid = (((ix >= 0) & (ix < nx))[:, None, None, :] & ((iy >= 0) & (iy < ny))[:, None, :, None]
                 & ((iz >= 0) & (iz < nz))[:, :, None, None])
        idx = (iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :]
        idx, vv = idx[valid], v[valid]
        np.minimum.at(flat, idx, vv)
        if flat_o is not None:
            w = np.broadcast_to(sg["w"].astype(np.float32)[:, None, None, None], v.shape)[valid]
            np.minimum.at(flat_o, idx, vv - w)


def tubes_sd_points(pts: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Signed distance (mm) from points (n, 3) to the union of tubes (brute force; for few tubes or points)."""
    out = np.full(len(pts), np.inf)
    for s in segs:
        p0, d = s["p0"], s["p1"] - s["p0"]
        l2 = float(d @ d)
        t = np.clip(((pts - p0) @ d) / l2, 0, 1) if l2 > 1e-9 else np.zeros(len(pts))
        dist = np.linalg.norm(pts - p0 - t[:, None] * d, axis=1)
        np.minimum(out, dist - (s["r0"] + t * (s["r1"] - s["r0"])), out=out)
    return out


def polyline(ctrl: list, radii: list, step_mm: float = 8.0, wall: float = 0.0) -> list[tuple]:
    """Catmull-Rom spline through control points (mm) -> tube segment rows of about ``step_mm`` length."""
    c = np.asarray(ctrl, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    pts, rs = [c[0]], [r[0]]
    ext = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    for i in range(len(c) - 1):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        n = max(1, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        for k in range(1, n + 1):
            t = k / n
            q = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                       + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
            pts.append(q)
            rs.append(r[i] + (r[i + 1] - r[i]) * t)
    return [(pts[i], pts[i + 1], rs[i], rs[i + 1], wall) for i in range(len(pts) - 1)]
