"""Adult chest anatomy defined analytically in mm (see :mod:`.grid` for the axes), randomised per seed.

Every shape is a function of patient coordinates (X, Y, Z in mm; broadcastable arrays), so one phantom can be
rasterised at any size and spacing. Sizes are drawn from adult ranges at the small-to-average end so that the
rib cage fits in the default 256 mm field of view (the subcutaneous fat of large bodies may be cut, as in a
tight reconstruction field of view).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from MedSynLib.io.codecs import LOBE_LABELS

from .grid import make_segments, polyline

_LABEL = {name: value for value, name in LOBE_LABELS.items()}
LUL, LLL, RUL, RML, RLL = (_LABEL[f"{s} {p} lobe"] for s, p in
                           (("left", "upper"), ("left", "lower"), ("right", "upper"), ("right", "middle"),
                            ("right", "lower")))
"""Lobe label values, taken from the channel codec (``MedSynLib.io.codecs.LOBE_LABELS``)."""


@dataclass
class AnatomyParams:
    """Randomised anatomy (lengths in mm). ``sample`` draws one adult; any field may be overridden."""

    sex: str = "male"
    age: int = 55
    thorax_half_width: float = 115.0  # inner rib half width at the widest level
    thorax_depth_ratio: float = 0.74  # inner AP half depth / half width
    fat_mm: float = 18.0  # subcutaneous fat thickness
    muscle_mm: float = 12.0  # chest wall muscle thickness
    z_apex: float = 110.0  # lung apex height
    lung_height: float = 160.0  # apex -> right dome
    left_dome_drop: float = 14.0  # left dome below the right one
    carina_depth: float = 70.0  # apex -> carina
    trachea_radius: float = 9.0
    aorta_radius: float = 15.0
    heart_angle_deg: float = 35.0  # long axis rotation towards the left-anterior
    heart_shift: float = 18.0  # centre left of midline
    oblique_post_r: float = 15.0  # height of the right oblique fissure's posterior end above the carina
    oblique_post_l: float = 22.0
    horizontal_fissure: float = -35.0  # right horizontal fissure height relative to the carina
    fissure_tilt: tuple = (0.0, 0.0, 0.0)  # small random tilts
    rib_pitch: float = 26.0
    rib_drop: float = 40.0
    extras: dict = field(default_factory=dict)

    @staticmethod
    def sample(rng: np.random.Generator, sex: str | None = None, age: int | None = None) -> "AnatomyParams":
        sex = sex or ("male" if rng.random() < 0.5 else "female")
        age = int(age if age is not None else rng.integers(25, 86))
        male = sex == "male"
        f = float(np.clip(rng.normal(1.0 if male else 0.94, 0.035), 0.86, 1.06))
        return AnatomyParams(
            sex=sex, age=age,
            thorax_half_width=float(np.clip(112.0 * f, 98, 118)),
            thorax_depth_ratio=float(rng.uniform(0.66, 0.80)),
            fat_mm=float(np.clip(rng.gamma(4.0, 4.0) + (4 if not male else 0) + 0.05 * (age - 40), 4, 40)),
            muscle_mm=float(rng.uniform(9, 16) * (1.1 if male else 0.9) * (1.1 - 0.003 * age)),
            z_apex=float(rng.uniform(106, 116)),
            lung_height=float(np.clip(rng.normal(174, 8) * f, 155, 190)),
            left_dome_drop=float(rng.uniform(8, 18)),
            carina_depth=float(rng.uniform(58, 70) * f),
            trachea_radius=float(rng.uniform(8.2, 10.0) if male else rng.uniform(7.2, 8.8)),
            aorta_radius=float(rng.uniform(13.0, 15.0) + 0.03 * (age - 40)),
            heart_angle_deg=float(rng.uniform(25, 45)),
            heart_shift=float(rng.uniform(10, 24)),
            oblique_post_r=float(rng.uniform(5, 25)),
            oblique_post_l=float(rng.uniform(10, 30)),
            horizontal_fissure=float(rng.uniform(-22, -6)),
            fissure_tilt=tuple(float(v) for v in rng.uniform(-0.12, 0.12, 3)),
            rib_pitch=float(rng.uniform(23, 28) * f),
            rib_drop=float(rng.uniform(60, 85)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


class Anatomy:
    """Derived geometry of one phantom: analytic shape functions plus tube segments of the great vessels.

    ``ctr`` (cardiothoracic ratio) sets the heart's transverse diameter; everything else comes from ``p``.
    """

    def __init__(self, p: AnatomyParams, ctr: float, rng: np.random.Generator):
        self.p = p
        A = p.thorax_half_width
        B = A * p.thorax_depth_ratio
        self.A, self.B = A, B
        self.Yc = float(rng.uniform(-12, -4))  # cavity centre (anterior of the grid centre)
        self.z_apex = p.z_apex
        self.z_dome_r = p.z_apex - p.lung_height
        self.z_dome_l = self.z_dome_r - p.left_dome_drop
        self.z_w = self.z_dome_r + 15.0  # widest level
        self.z_carina = p.z_apex - p.carina_depth
        self.z_bottom = -250.0
        # spine
        self.r_vert = float(np.clip(A * 0.15, 15, 19))
        self.Yv = self.Yc + 1.12 * B - 0.15 * self.r_vert
        # heart: ellipse in the axial plane rotated by theta, half width along x = ctr * A
        th = np.deg2rad(p.heart_angle_deg)
        self.heart_theta = th
        hw = ctr * A  # transverse half width (thoracic width = 2A)
        y_trachea = self.Yv - self.r_vert - 17.0 - p.trachea_radius
        max_depth = (y_trachea - 10.0 - (self.Yc - B + 3.0)) / 2  # stay in front of the main bronchi
        for ratio in np.linspace(0.82, 0.7, 7):
            a = hw / np.sqrt(np.cos(th) ** 2 + (ratio * np.sin(th)) ** 2)
            half_depth = np.sqrt((a * np.sin(th)) ** 2 + (a * ratio * np.cos(th)) ** 2)
            if half_depth <= max_depth:
                break
        self.ha, self.hb = float(a), float(a * ratio)
        self.hc = float(np.clip(0.85 * a, 45, 75))
        shift = min(p.heart_shift, A - hw - 8.0)  # keep the heart inside the cavity
        shift = max(shift, -(A - hw - 8.0))
        self.Xh = float(shift)
        self.Yh = float(self.Yc - B + half_depth + 3.0)
        dome = max(self.z_dome_l, self.z_dome_r)
        self.hc = float(np.clip((self.z_carina - 42.0 - dome) / 1.35, 35.0, self.hc))  # top 30 mm below the carina
        self.Zh = float(dome + 0.35 * self.hc + 12.0)
        self.heart_half_width = float(hw)
        self.ctr = float(ctr)
        self._build_tubes(rng)

    # ------------------------------------------------------------------ body and cavity
    def cavity_axes(self, Z):
        """Half width / half depth (mm) of the inner rib cage at height Z; narrows towards the apex."""
        t = np.clip((Z - self.z_w) / (self.z_apex + 12 - self.z_w), 0.0, 1.2)
        fa = 1.0 - 0.50 * t ** 1.6
        fb = 1.0 - 0.25 * t ** 2
        return self.A * fa, self.B * fb

    def cavity_center_y(self, Z):
        t = np.clip((Z - self.z_w) / (self.z_apex - self.z_w), 0.0, 1.0)
        return self.Yc + 0.15 * self.B * t

    def cavity_norm(self, X, Y, Z):
        """Superellipse radius of the inner rib cage (< 1 inside)."""
        a, b = self.cavity_axes(Z)
        yc = self.cavity_center_y(Z)
        b = np.where(Y > yc, b * 1.12, b)  # deeper posteriorly: paravertebral gutters
        return np.sqrt((X / a) ** 2 + ((Y - yc) / b) ** 2)

    def body_axes(self, Z):
        p = self.p
        a, b = self.cavity_axes(np.minimum(Z, self.z_apex - 20))
        wall = 11.0 + p.muscle_mm
        ab = a + wall + p.fat_mm
        bb = b + (wall + 38.0 + 2 * p.fat_mm) / 2
        # neck above the apex
        s = _smoothstep((Z - (self.z_apex - 5)) / 25.0)
        ab = ab * (1 - s) + (52.0 + 0.5 * p.fat_mm) * s
        bb = bb * (1 - s) + (50.0 + 0.5 * p.fat_mm) * s
        return ab, bb

    def body_center_y(self, Z):
        a, b = self.cavity_axes(np.minimum(Z, self.z_apex - 20))
        yb = self.cavity_center_y(np.minimum(Z, self.z_apex - 20)) + (38.0 - 0.0) / 2 * 0.8
        s = _smoothstep((Z - (self.z_apex - 5)) / 25.0)
        return yb * (1 - s) + (self.Yv - 10) * s

    def body_norm_depth(self, X, Y, Z):
        """(superellipse radius of the skin, approx. depth below the skin in mm)."""
        a, b = self.body_axes(Z)
        yb = self.body_center_y(Z)
        dy = Y - yb
        r = np.sqrt((X / a) ** 2 + (dy / b) ** 2)  # one full-size pass per operation, float32
        depth = np.sqrt(X * X + dy * dy)
        depth *= 1.0 - r
        depth /= np.maximum(r, 1e-3)
        return r, depth

    # ------------------------------------------------------------------ lungs
    def diaphragm_z(self, X, Y):
        """Height (mm) of the diaphragm surface: two domes, lower posteriorly and laterally (recesses)."""
        A, B = self.A, self.B
        zr, zl = self.z_dome_r, self.z_dome_l
        xd = 0.45 * A
        yd = self.Yc - 0.1 * B
        qr = ((X + xd) / (0.55 * A)) ** 2
        ql = ((X - xd) / (0.55 * A)) ** 2
        qy = ((Y - yd) / (0.9 * B)) ** 2
        post = np.clip((Y - yd) / B, 0, None)
        zr_s = zr - 25.0 * qr - 15.0 * qy - 18.0 * post
        zl_s = zl - 25.0 * ql - 15.0 * qy - 18.0 * post
        w = _smoothstep((X + 10.0) / 20.0)  # blend across the midline
        return zr_s * (1 - w) + zl_s * w

    def lung_top_z(self, X, Y):
        A, B = self.A, self.B
        xa = 0.42 * A
        dx = np.minimum(np.abs(X - xa), np.abs(X + xa))
        return self.z_apex - 75.0 * (dx / (0.6 * A)) ** 2 - 30.0 * ((Y - (self.Yc + 0.2 * B)) / B) ** 2

    def heart_box(self, margin: float = 2.0):
        """Bounding box (mm) of the heart: ((x0, x1), (y0, y1), (z0, z1))."""
        r = max(self.ha, self.hb) + margin
        return ((self.Xh - r, self.Xh + r), (self.Yh - r, self.Yh + r),
                (self.Zh - self.hc - margin, self.Zh + self.hc + margin))

    def heart_norm(self, X, Y, Z, grow: float = 0.0):
        c, s = np.cos(self.heart_theta), np.sin(self.heart_theta)
        dx, dy = X - self.Xh, Y - self.Yh
        u = (dx * c - dy * s) / (self.ha + grow)
        v = (dx * s + dy * c) / (self.hb + grow)
        w = (Z - self.Zh) / (self.hc + grow)
        return np.sqrt(u * u + v * v + w * w)

    def spine_column(self, X, Y):
        """Vertebral column (body + posterior elements) region that lungs must avoid."""
        rv = self.r_vert
        body = (X ** 2 + (Y - self.Yv) ** 2) < (rv + 3) ** 2
        post = (np.abs(X) < rv * 0.8) & (Y > self.Yv)
        return body | post

    def lung_region(self, X, Y, Z, sd_med, cav=None, heart=None):
        """Both lungs (bool), given ``sd_med``: signed distance (mm) to mediastinal tubes at the same points.

        ``cav`` (inside the rib cage) and ``heart`` masks may be passed when already computed.
        """
        cav = self.cavity_norm(X, Y, Z) < 1.0 if cav is None else cav
        m = cav & (Z > self.diaphragm_z(X, Y)) & (Z < self.lung_top_z(X, Y))
        m &= ~(self.heart_norm(X, Y, Z) < 1.0 if heart is None else heart)
        m &= ~self.spine_column(X, Y)
        m &= sd_med > 4.0
        # mediastinal column behind the heart (oesophagus, aorta, azygos) and the upper mediastinum
        up = _smoothstep((Z - self.z_carina + 10) / 30.0)
        y_tr = self.Yv - self.r_vert - 17.0 - self.p.trachea_radius
        col = (np.abs(X - 6.0) < 13.0 + 10.0 * up) & (Y > y_tr - 12.0 - 25.0 * up)
        m &= ~col
        m &= np.abs(X - 2.0) > 1.5  # anterior junction line
        return m

    def lobe_of(self, X, Y, Z):
        """Lobe label (1..5) a lung point would have (no lung test); X < 0 is the right lung."""
        B = self.B
        tx, ty, tz = self.p.fissure_tilt
        YA, YP = self.Yc - 0.8 * B, self.Yc + 1.1 * B
        zA_r, zA_l = self.z_dome_r - 8.0, self.z_dome_l - 8.0
        zP_r = self.z_carina + self.p.oblique_post_r
        zP_l = self.z_carina + self.p.oblique_post_l
        f = np.clip((Y - YA) / (YP - YA), 0, None) ** 0.75
        wav = 4.0 * np.sin(X / 23.0 + 3 * tx) * np.cos(Y / 31.0 + 5 * ty)
        obl_r = zA_r + f * (zP_r - zA_r) + tx * np.abs(X) + wav
        obl_l = zA_l + f * (zP_l - zA_l) + ty * np.abs(X) + wav
        hor = self.z_carina + self.p.horizontal_fissure + 0.15 * (Y - self.Yc) + tz * X + 0.6 * wav
        right = X < 0  # thresholds and labels below do not depend on Z: cheap, then one 3-D pass
        obl = np.where(right, obl_r, obl_l)
        hor = np.where(right, hor, -np.inf)
        lower = np.where(right, np.uint8(RLL), np.uint8(LLL))
        mid = np.where(right, np.uint8(RML), np.uint8(LUL))
        upper = np.where(right, np.uint8(RUL), np.uint8(LUL))
        return np.where(Z < obl, lower, np.where(Z < hor, mid, upper)).astype(np.uint8, copy=False)

    # ------------------------------------------------------------------ mediastinal tubes
    def _build_tubes(self, rng):
        p, A, B = self.p, self.A, self.B
        zc = self.z_carina
        rv = self.r_vert
        y_eso = self.Yv - rv - 9.0
        self.y_trachea = y_eso - 8.0 - p.trachea_radius
        ra = p.aorta_radius
        Xh, Yh, Zh, hc = self.Xh, self.Yh, self.Zh, self.hc
        top = 200.0
        asc0 = (Xh - 0.35 * self.ha, Yh - 0.1 * self.hb, Zh + 0.45 * hc)
        ctrl = [asc0,
                (-8.0, self.Yc - 0.35 * B, zc + 5),
                (-2.0, self.Yc - 0.25 * B, zc + 28),
                (10.0, self.y_trachea, zc + 36),
                (20.0, y_eso + 8, zc + 22),
                (22.0, y_eso + 6, zc - 10),
                (18.0, self.Yv - rv - 6, self.z_dome_l - 10),
                (10.0, self.Yv - rv - 4, -250.0)]
        rads = [ra + 1, ra + 1, ra, ra - 1, ra - 2, ra - 2.5, ra - 3, ra - 3]
        aorta = polyline(ctrl, rads, 8.0)
        arch = np.array(ctrl[3])
        supra = []
        for dx, r in ((-14.0, 6.0), (4.0, 4.5), (16.0, 5.0)):
            supra += polyline([(arch[0] + dx * 0.6, arch[1] - 8, arch[2]), (dx * 1.6, self.y_trachea + 5, zc + 70),
                               (dx * 2.2, self.y_trachea + 8, top)], [r, r, r], 10.0)
        # pulmonary trunk and main pulmonary arteries
        pt0 = (Xh + 0.35 * self.ha, Yh - 0.55 * self.hb, Zh + 0.35 * hc)
        bif = np.array([14.0, self.y_trachea - 4, zc - 6])
        trunk = polyline([pt0, (12.0, self.Yc - 0.45 * B, zc - 15), tuple(bif)], [14.0, 14.0, 13.0], 8.0)
        self.hilum_art = {"R": np.array([-0.40 * A, self.y_trachea + 2, zc - 22]),
                          "L": np.array([0.40 * A, self.y_trachea + 10, zc - 8])}
        self.pa_bif = bif
        self.la = np.array([Xh - 5, Yh + 0.75 * self.hb, Zh + 0.25 * hc])
        svc = polyline([(-0.22 * A, self.Yc - 0.2 * B, top), (-0.2 * A, self.Yc - 0.3 * B, zc),
                        (Xh - 0.5 * self.ha, Yh - 0.1 * self.hb, Zh + 0.3 * hc)], [10.0, 10.0, 10.0], 10.0)
        eso = polyline([(2.0, y_eso, top), (4.0, y_eso, zc), (12.0, y_eso + 2, self.z_dome_l),
                        (30.0, y_eso - 10, self.z_dome_l - 40)], [7.0, 7.0, 7.0, 7.0], 12.0)
        self.segs_blood = make_segments(aorta + supra + trunk + svc)
        self.segs_aorta = make_segments(aorta)
        self.segs_eso = make_segments(eso)
        self.segs_trunk = make_segments(trunk)
