"""One synthetic chest CT phantom: HU volume, lobe / airway / vessel masks and ground truth, from a seed.

Output arrays are (z, y, x) on a :class:`~.grid.Grid` (default 256³ at 1 mm). HU values (non-contrast):
air -1000, lung about -850 (denser posteriorly) with texture, fat -100, muscle 45, blood/heart 40, liver 58,
pleural fluid 5-15, cancellous bone 120-260, cortical bone 750-850, then partial-volume blur and noise
(about 18 HU at 1 mm, less on coarser grids). Every output is SYNTHETIC.

:func:`make_phantom` runs the steps in order: the chest (:mod:`.chest`), the airway and vessel trees, the
effusions, the normal tissues (:mod:`.tissues`), the other findings (:mod:`.lesions`), the trees, then the
scanner's blur and noise. The phantoms are the demo model's training data: the steps and the order in which they
draw random numbers must not change (the same seed gives the same arrays, bit for bit).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from . import trees as T
from .anatomy import Anatomy, AnatomyParams
from .chest import Chest, lay_out_chest
from .findings import Findings, effusion_size_word, emphysema_grade
from .grid import Grid, blur3, blur_weights, noise_gain, smooth_field
from .lesions import (Effusion, fill_effusions, paint_airspace_disease, paint_effusion, paint_emphysema,
                      paint_nodules, top_up_emphysema)
from .tissues import (paint_abdomen, paint_airways, paint_body_wall, paint_lung_parenchyma, paint_mediastinum,
                      paint_ribs_and_sternum, paint_spine, paint_vessels, where_tubes_show)

SYNTHETIC_NOTE = "SYNTHETIC MedSyn phantom"
LATTICE_MM = 12.0
"""Spacing (mm) of the jittered lattice of lung points the airway and vessel trees grow through."""
AIRWAY_MASK_NOTE = ("lumen (air inside the bronchial wall); on grids coarser than 1.2 mm thin bronchi are widened to "
                    "0.87 voxel and bronchi thinner than 0.35 voxel (beyond the first segmental generations) are "
                    "left out, keeping it 26-connected")
VESSEL_MASK_NOTE = "pulmonary arteries and veins from the hila outwards (not the pulmonary trunk, not the heart)"


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


@dataclass
class _RandomStreams:
    """The independent random streams of one phantom, spawned from its seed (in this order)."""

    anatomy: np.random.Generator
    findings: np.random.Generator
    geometry: np.random.Generator
    texture: np.random.Generator
    noise: np.random.Generator
    nodules: np.random.Generator
    tree_seed: int

    @staticmethod
    def of(seed: int) -> _RandomStreams:
        sequence = np.random.SeedSequence(int(seed))
        streams = [np.random.default_rng(s) for s in sequence.spawn(6)]
        return _RandomStreams(*streams, int(sequence.spawn(1)[0].generate_state(1)[0]))


@dataclass
class _Trees:
    """Airway, artery and vein trees: tube segments (:data:`~.trees.TREE_DTYPE`) in mm."""

    airway: np.ndarray
    arteries: np.ndarray
    veins: np.ndarray


def make_phantom(seed: int = 0, grid: Grid | None = None, anatomy: AnatomyParams | None = None,
                 findings: Findings | None = None, sex: str | None = None, age: int | None = None,
                 **findings_force) -> Phantom:
    """Build one phantom. Same seed (and arguments) -> identical arrays, on any grid the anatomy is the same in mm.

    ``anatomy`` / ``findings`` replace the sampled ones (``findings`` is copied); ``findings_force``: keyword
    overrides of :meth:`~.findings.Findings.sample` (``effusion``, ``emphysema``, ``nodules``, ...)."""
    grid = grid or Grid.cube(256, 1.0)
    rng = _RandomStreams.of(seed)
    params = anatomy or AnatomyParams.sample(rng.anatomy, sex=sex, age=age)
    found = copy.deepcopy(findings) if findings is not None else Findings.sample(rng.findings, age=params.age,
                                                                                  **findings_force)
    chest, cavity_r, lungs_before_fluid = lay_out_chest(grid, Anatomy(params, found.ctr, rng.geometry))
    lobe_points = _lobe_lattice(chest, rng.tree_seed)
    grown = T.build_trees(chest.anatomy, lobe_points, LATTICE_MM, rng.tree_seed)

    effusion = fill_effusions(chest, found, lungs_before_fluid, cavity_r)
    lungs = lungs_before_fluid & ~effusion.fluid
    lobes = np.where(lungs, chest.anatomy.lobe_of(chest.X, chest.Y, chest.Z), 0).astype(np.uint8)
    trees = _Trees(*(_inside_aerated_lung(chest, tree, keep) for tree, keep in zip(grown, (2, 1, 1))))

    ct = np.full(grid.shape, -1000.0, np.float32)
    body = paint_body_wall(ct, chest)
    paint_ribs_and_sternum(ct, chest, cavity_r, body)
    del body, cavity_r
    paint_spine(ct, chest)
    paint_mediastinum(ct, chest)
    paint_abdomen(ct, chest)
    texture = smooth_field(rng.texture, grid, 6.0)
    paint_lung_parenchyma(ct, chest, lungs, texture)
    paint_effusion(ct, effusion, texture, rng.texture)
    emphysema = None
    if found.emphysema_laa > 0:
        emphysema = paint_emphysema(ct, chest, found, lungs, lobe_points, texture, rng.texture)
    paint_airspace_disease(ct, chest, found, lobes, texture, rng.texture)
    del texture
    paint_nodules(ct, chest, found, lobe_points, rng.nodules)

    allowed = where_tubes_show(chest, effusion.fluid)
    vessels = paint_vessels(ct, chest, np.concatenate([trees.arteries, trees.veins]), allowed)
    airway = paint_airways(ct, chest, trees.airway, allowed)
    ct16 = _scan(ct, chest, rng.noise)
    del ct
    if emphysema is not None:
        top_up_emphysema(ct16, lungs, airway, float(found.emphysema_laa), emphysema, rng.noise)
    truth = _truth(seed, chest, found, effusion, lobes, trees)
    return Phantom(grid, ct16, lobes, airway.astype(np.uint8), vessels.astype(np.uint8),
                   effusion.fluid.astype(np.uint8), truth)


def _lobe_lattice(chest: Chest, tree_seed: int) -> dict[int, np.ndarray]:
    """Lung points (n, 3) mm per lobe (1..5): a lattice of :data:`LATTICE_MM` over ±130 mm, each point jittered by
    up to 0.3 cells (from ``tree_seed``), kept where it is lung. The same in mm on any grid."""
    an = chest.anatomy
    jitter = np.random.default_rng(tree_seed)
    ax = np.arange(-130, 131, LATTICE_MM)
    P = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    P = P + jitter.uniform(-0.3, 0.3, P.shape) * LATTICE_MM
    P = P[an.cavity_norm(P[:, 0], P[:, 1], P[:, 2]) < 1]
    P = P[chest.points.lung(P)]
    labels = an.lobe_of(P[:, 0], P[:, 1], P[:, 2])
    return {k: P[labels == k] for k in range(1, 6)}


def _inside_aerated_lung(chest: Chest, tree: np.ndarray, keep_generation: int) -> np.ndarray:
    """``tree`` without the branches that leave the rib cage, go under the diaphragm, into the heart or into
    fluid (with everything beyond them); branches up to ``keep_generation`` are always kept."""
    an, pts = chest.anatomy, chest.points
    p1 = tree["p1"]
    X1, Y1, Z1 = p1[:, 0], p1[:, 1], p1[:, 2]
    ok = (an.cavity_norm(X1, Y1, Z1) < 1) & (Z1 > an.diaphragm_z(X1, Y1)) & (an.heart_norm(X1, Y1, Z1) >= 1)
    ok &= ~pts.fluid(p1)
    ok |= tree["gen"] <= keep_generation
    return T.subset(tree, T.prune(tree, ~ok))


def _scan(ct: np.ndarray, chest: Chest, rng: np.random.Generator) -> np.ndarray:
    """The scanner: correlated noise (about 18 HU at 1 mm, more with more fat, less on coarser grids), then the
    partial-volume blur, clipped to -1024..3071 and rounded to int16. ``ct`` is changed."""
    grid = chest.grid
    sigma = 18.0 / max(chest.finest_mm, 0.5) * (1.0 + 0.01 * (chest.anatomy.p.fat_mm - 15))
    noise = rng.standard_normal(grid.shape, dtype=np.float32)
    bw = blur_weights(grid.spacing_zyx)
    ct += noise * np.float32(sigma / noise_gain(bw))
    del noise
    ct = blur3(ct, bw)
    np.clip(ct, -1024, 3071, out=ct)
    return np.rint(ct).astype(np.int16)


def _truth(seed: int, chest: Chest, found: Findings, effusion: Effusion, lobes: np.ndarray, trees: _Trees) -> dict:
    """What the phantom really holds (JSON-ready): grid, anatomy, findings as placed, effusion mL, masks' rules."""
    grid, p = chest.grid, chest.anatomy.p
    return {
        "synthetic": True,
        "note": SYNTHETIC_NOTE + ": procedurally generated, not a patient",
        "seed": int(seed),
        "grid": {"shape_zyx": list(grid.shape), "spacing_xyz": list(grid.spacing), "origin_xyz": list(grid.origin),
                 "direction": list(grid.direction), "orientation": "x R->L, y A->P, z I->S (LPS, identity direction)"},
        "age": p.age, "sex": p.sex,
        "anatomy": p.to_dict(),
        "findings": found.to_dict(),
        "effusion_ml_true": {k: round(v, 1) for k, v in effusion.volume_ml.items()},
        "effusion_size": {k: effusion_size_word(v) for k, v in effusion.volume_ml.items()},
        "cardiomegaly": bool(found.cardiomegaly),
        "emphysema_grade": emphysema_grade(found.emphysema_laa),
        "lobes_present": sorted({int(k) for k in np.unique(lobes) if k}),
        "airway_mask": AIRWAY_MASK_NOTE,
        "vessel_mask": VESSEL_MASK_NOTE,
        "n_segments": {"airway": int(len(trees.airway)), "arteries": int(len(trees.arteries)),
                       "veins": int(len(trees.veins))},
    }
