"""Small chest-like training cases written with SimpleITK for the training tests (not the phantom generator), and a
probe of a trainer's first gradients."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from MedSynLib.io.images import Geometry, to_image, write_image
from MedSynLib.train.diffusion import DiffusionTrainer

REPORTS = ("FINDINGS: Large bilateral pleural effusions. IMPRESSION: Bilateral effusions.",
           "FINDINGS: The lungs are clear. No pleural effusion. IMPRESSION: Normal chest CT.",
           "FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.")


def write_cases(folder: Path, n: int = 3, size: int = 32, spacing: float = 4.0) -> Path:
    """``n`` cases (body, two lungs with lobes, an airway, vessels) and ``manifest.csv``; returns the manifest."""
    folder = Path(folder)
    geometry = Geometry((size,) * 3, (spacing,) * 3, (-(size - 1) / 2 * spacing,) * 3)
    z, y, x = np.mgrid[:size, :size, :size] / size
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        body = ((x - 0.5) ** 2 / 0.2 + (y - 0.5) ** 2 / 0.15) < 1
        shift = rng.uniform(-0.03, 0.03)
        right = ((x - 0.3 - shift) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2 / 2) < 0.03
        left = ((x - 0.7 + shift) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2 / 2) < 0.03
        ct = np.where(body, 40, -1000).astype(np.int16)
        ct[right | left] = -850
        lobes = np.zeros(ct.shape, np.uint8)
        lobes[left & (z >= 0.5)], lobes[left & (z < 0.5)] = 1, 2
        lobes[right & (z >= 0.6)], lobes[right & (z < 0.6) & (z >= 0.45)], lobes[right & (z < 0.45)] = 3, 4, 5
        airway = ((np.abs(x - 0.5) < 0.05) & (np.abs(y - 0.5) < 0.05) & (z > 0.4)).astype(np.uint8)
        vessels = ((right | left) & (np.abs(y - 0.55) < 0.04)).astype(np.uint8)
        case = folder / f"case{i:03d}"
        case.mkdir(parents=True)
        for name, array in (("ct", ct), ("lobes", lobes), ("airway", airway), ("vessels", vessels)):
            write_image(to_image(array, geometry), case / f"{name}.nii.gz")
        (case / "report.txt").write_text(REPORTS[i % len(REPORTS)], encoding="utf-8")
        rows.append({"case_id": case.name, **{k: f"{case.name}/{k}.nii.gz" for k in
                                               ("ct", "lobes", "airway", "vessels")},
                     "report": f"{case.name}/report.txt"})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def first_step_gradients(trainer: DiffusionTrainer) -> dict[str, torch.Tensor]:
    """The (all-reduced) gradients of the first micro-batch, without changing the trainer's state."""
    consumed = trainer.consumed
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer._micro_batch_loss(0).backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.net.named_parameters() if p.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.consumed = consumed
    return grads
