"""Findings of a phantom: what is wrong with it, as controllable parameters (random by default).

Volumes in mL, lengths in mm, %LAA-950 in percent of lung volume. Lobes use the official labels
(1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

EFFUSION_SIZES = {"small": (60.0, 160.0), "moderate": (220.0, 420.0), "large": (520.0, 800.0)}
"""Per-side effusion volume ranges (mL) for each size word, scaled to the phantom's lungs (about 1.2 L per side,
roughly half a real adult's inspiratory volume); the report's size word is derived from the volume."""

CTR_NORMAL = (0.40, 0.49)
CTR_ENLARGED = (0.56, 0.63)
CTR_THRESHOLD = 0.52
"""Cardiomegaly is reported when CTR > 0.52; sampled values avoid 0.49..0.56 so that the label is unambiguous."""

EMPHYSEMA_LAA = {"mild": (6.0, 12.0), "moderate": (13.0, 22.0), "severe": (24.0, 35.0)}
"""Target %LAA-950 ranges per emphysema grade; a lung without emphysema has %LAA-950 below ~2 %."""


def effusion_size_word(ml: float) -> str:
    if ml <= 0:
        return "none"
    if ml < 190:
        return "small"
    if ml < 470:
        return "moderate"
    return "large"


def emphysema_grade(laa: float) -> str:
    if laa <= 0:
        return "none"
    if laa < 12.5:
        return "mild"
    if laa < 23:
        return "moderate"
    return "severe"


@dataclass
class Findings:
    """Ground truth findings. ``effusion_ml`` maps "right"/"left" to mL (0 = none)."""

    effusion_ml: dict = field(default_factory=lambda: {"right": 0.0, "left": 0.0})
    ctr: float = 0.45
    emphysema_laa: float = 0.0  # target %LAA-950 (0 = no emphysema)
    bullae: int = 0
    consolidation: list = field(default_factory=list)  # [{"lobe": 5, "extent": 0.6}]
    ggo: list = field(default_factory=list)  # [{"lobe": 1, "extent": 0.3}]
    nodules: list = field(default_factory=list)  # [{"lobe": 3, "diameter_mm": 8.0}]

    @property
    def cardiomegaly(self) -> bool:
        return self.ctr > CTR_THRESHOLD

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Findings":
        return Findings(**{k: d[k] for k in Findings.__dataclass_fields__ if k in d})

    @staticmethod
    def sample(rng: np.random.Generator, age: int = 55, **force) -> "Findings":
        """Random findings; keyword overrides: effusion=("left"|"right"|"bilateral"|"none", size word or mL),
        cardiomegaly=bool, emphysema=grade word or %LAA, consolidation=n lobes, ggo=n lobes, nodules=count."""
        f = Findings()
        # effusion
        eff = force.get("effusion")
        if eff is None:
            eff = "none"
            if rng.random() < 0.35:
                side = rng.choice(["right", "left", "bilateral"], p=[0.4, 0.25, 0.35])
                size = rng.choice(list(EFFUSION_SIZES), p=[0.45, 0.35, 0.2])
                eff = (str(side), str(size))
        if eff != "none" and eff is not False:
            side, size = eff
            sides = ["right", "left"] if side == "bilateral" else [side]
            for s in sides:
                if isinstance(size, str):
                    lo, hi = EFFUSION_SIZES[size]
                    f.effusion_ml[s] = round(float(rng.uniform(lo, hi)), 1)
                else:
                    f.effusion_ml[s] = float(size)
        # heart
        cm = force.get("cardiomegaly")
        if cm is None:
            cm = rng.random() < 0.22 + 0.003 * (age - 50)
        if isinstance(cm, float) and not isinstance(cm, bool):
            f.ctr = float(cm)
        else:
            f.ctr = round(float(rng.uniform(*(CTR_ENLARGED if cm else CTR_NORMAL))), 3)
        # emphysema
        em = force.get("emphysema")
        if em is None:
            em = "none"
            if rng.random() < 0.12 + 0.006 * max(0, age - 40):
                em = str(rng.choice(list(EMPHYSEMA_LAA), p=[0.45, 0.35, 0.2]))
        if isinstance(em, str):
            if em != "none":
                f.emphysema_laa = round(float(rng.uniform(*EMPHYSEMA_LAA[em])), 1)
        else:
            f.emphysema_laa = float(em)
        if f.emphysema_laa > 0:
            f.bullae = int(force.get("bullae", rng.choice([0, 0, 1, 2, 3])))
        # consolidation / GGO
        n_cons = force.get("consolidation")
        if n_cons is None:
            n_cons = int(rng.random() < 0.2) + int(rng.random() < 0.05)
        lobes = list(rng.permutation([1, 2, 3, 4, 5]))
        for i in range(int(n_cons)):
            f.consolidation.append({"lobe": int(lobes.pop()), "extent": round(float(rng.uniform(0.35, 0.9)), 2)})
        n_ggo = force.get("ggo")
        if n_ggo is None:
            n_ggo = int(rng.choice([1, 2, 3])) if rng.random() < 0.2 else 0
        for i in range(int(n_ggo)):
            if not lobes:
                break
            f.ggo.append({"lobe": int(lobes.pop()), "extent": round(float(rng.uniform(0.2, 0.6)), 2)})
        # nodules
        n_nod = force.get("nodules")
        if n_nod is None:
            n_nod = int(rng.choice([1, 1, 1, 2, 3, 4])) if rng.random() < 0.3 else 0
        for i in range(int(n_nod)):
            d = float(np.clip(rng.lognormal(np.log(8.0), 0.5), 4.0, 28.0))
            f.nodules.append({"lobe": int(rng.integers(1, 6)), "diameter_mm": round(d, 1)})
        return f
