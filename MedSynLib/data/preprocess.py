"""Cases -> model space, cached.

A case passes the scan check (:func:`MedSynLib.io.scan.check_chest_ct`: a chest CT in HU with whole lungs; else
it is a :class:`BadCase`), is resampled onto the training grid (CT linear with -1024 HU outside, masks nearest),
placed on its lungs as a CT to segment is (:func:`MedSynLib.io.alignment.lung_centred_grid`), and stored
compactly (int16 HU, uint8 labels) in ``<cache>/volumes/<grid key>/<case_id>/``; report features go to ``<cache>/text/`` keyed by
the text encoder's weights hash. Later epochs read only the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..io.alignment import lung_centred_grid, resample
from ..io.codecs import hu_to_model, lobes_to_model, mask_to_model
from ..io.files import atomic_write
from ..io.images import Geometry, read_image
from ..io.scan import check_chest_ct
from .manifest import Case

log = logging.getLogger(__name__)


class BadCase(ValueError):
    """A case whose files are unreadable or inconsistent (the message names the case)."""


def load_case(case: Case, grid: Geometry) -> dict[str, np.ndarray]:
    """Read and resample one case onto ``grid``, placed on its lungs as a CT to segment is: arrays (z, y, x)."""
    try:
        ct = read_image(case.ct, "CT")
        masks = {k: read_image(getattr(case, k), k) for k in ("lobes", "airway", "vessels")}
        for name, image in masks.items():
            if image.GetSize() != ct.GetSize() or not np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3) \
                    or not np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4):
                raise ValueError(f"{name} mask geometry {image.GetSize()} / {image.GetSpacing()} does not match "
                                 f"the CT {ct.GetSize()} / {ct.GetSpacing()}")
        check = check_chest_ct(ct)  # the scan check every command runs: a case the model cannot learn from is bad
        if not check.passed:
            raise ValueError(f"the CT fails the scan check: {check.reason}")
        target = lung_centred_grid(ct, grid, check.chest)
        out = {"ct": resample(sitk.Cast(ct, sitk.sitkInt16), target, sitk.sitkLinear, -1024)}
        for name, image in masks.items():
            out[name] = resample(sitk.Cast(image, sitk.sitkUInt8), target)
        if out["lobes"].max() > 5:
            raise ValueError(f"lobe labels must be 0..5, found {int(out['lobes'].max())}")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise BadCase(f"case {case.case_id}: {exc}") from exc
    return out


def encode_volume(arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """Cached arrays (or crops of them) -> model-space tensor (4, z, y, x) float32 in [-1, 1]."""
    return torch.from_numpy(np.stack([
        hu_to_model(np.asarray(arrays["ct"], dtype=np.float32)), lobes_to_model(arrays["lobes"]),
        mask_to_model(arrays["airway"]), mask_to_model(arrays["vessels"])]).astype(np.float32))


PREPROCESSING = 4
"""Version of what :func:`load_case` computes, part of the cache key, so that volumes cached by an earlier version
are not reused (1: the lung-centred grid was not snapped to CT voxels, so a CT on the grid's spacing was blurred;
2: the box was centred on the lungs and airways found by a border test, not kept within the field of view; 3: lungs
were any large air inside the body, bowel gas included, and no scan check refused partial scans)."""


def grid_key(grid: Geometry) -> str:
    """Cache folder name of a training grid (and of :data:`PREPROCESSING`)."""
    key = {"grid": grid.to_dict(), "preprocessing": PREPROCESSING}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


class VolumeCache:
    """Preprocessed volumes on disk: ``<folder>/volumes/<grid>/<case_id>/{ct,lobes,airway,vessels}.npy``.

    ``.npy`` files are memory-mapped on read, so a training crop touches only the voxels it uses.
    """

    NAMES = ("ct", "lobes", "airway", "vessels")

    def __init__(self, folder: Path, grid: Geometry):
        self.folder = Path(folder) / "volumes" / grid_key(grid)
        self.grid = grid

    def _case_dir(self, case: Case) -> Path:
        return self.folder / case.case_id

    def _complete(self, case: Case) -> bool:
        return all((self._case_dir(case) / f"{n}.npy").is_file() for n in self.NAMES)

    def get(self, case: Case) -> dict[str, np.ndarray]:
        """The case's arrays (z, y, x), memory-mapped; preprocessed and cached on first use."""
        if not self._complete(case):
            arrays = load_case(case, self.grid)
            for name in self.NAMES:
                atomic_write(self._case_dir(case) / f"{name}.npy",
                             lambda tmp, a=arrays[name]: np.save(open(tmp, "wb"), a))
        return {n: np.load(self._case_dir(case) / f"{n}.npy", mmap_mode="r") for n in self.NAMES}

    def prepare(self, cases: list[Case], skip_bad: bool = False) -> list[Case]:
        """Fill the cache; returns the usable cases (bad ones are logged and dropped with ``skip_bad``)."""
        good = []
        for i, case in enumerate(cases):
            try:
                self.get(case)
                good.append(case)
            except BadCase as exc:
                if not skip_bad:
                    raise
                log.warning("skipping %s", exc)
            if (i + 1) % 50 == 0:
                log.info("preprocessed %d / %d cases", i + 1, len(cases))
        if not good:
            raise ValueError("no usable case in the manifest")
        return good


class TextFeatureCache:
    """Report features (reports, 192, d) float16 per case, keyed by the encoder's identity and the report texts."""

    def __init__(self, folder: Path, encoder_key: str):
        self.folder = Path(folder) / "text" / encoder_key

    def _path(self, case: Case) -> Path:
        digest = hashlib.sha256("\0".join(case.reports).encode()).hexdigest()[:12]
        return self.folder / f"{case.case_id}-{digest}.pt"

    def prepare(self, cases: list[Case], encoder, batch: int = 16) -> None:
        """Encode the reports of the cases not cached yet, ``batch`` reports per encoder call."""
        todo = [c for c in cases if not self._path(c).is_file()]
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            texts = [r for c in chunk for r in c.reports]
            feats = torch.cat([encoder(texts[i:i + batch]).to(torch.float16).cpu()
                               for i in range(0, len(texts), batch)])
            for case, f in zip(chunk, feats.split([len(c.reports) for c in chunk])):
                atomic_write(self._path(case), lambda tmp, f=f: torch.save(f.clone(), tmp))

    def get(self, case: Case, report: int = 0) -> torch.Tensor:
        """Features (192, d) float32 of the case's report number ``report`` (memory-mapped: only it is read)."""
        return torch.load(self._path(case), weights_only=True, mmap=True)[report].float()
