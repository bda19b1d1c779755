"""The model-folder verifier: what a model folder must be before anything in it is used.

- ``model.json`` follows its schema (:func:`check_spec`): each key of the right type and range, named in the
  message with the fix, never a ``KeyError`` or a ``ZeroDivisionError`` later.
- every path it names (the three parts, the atlas mask, each entry of ``files``) lies inside the model folder,
  links resolved: a model folder never makes MedSyn read elsewhere.
- every file listed in ``files`` (the sha256 of every file the model loads, written by ``medsyn models package``)
  matches its hash (:func:`check_files`): a changed ``vocab.txt`` is refused like a changed weights file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..arguments import STEPS_MAX
from ..errors import MedSynError
from ..run_settings import SAMPLER_NAMES

FIX = "repair model.json (or restore the model folder), or re-import / re-package the model"
PARTS = ("text_encoder", "lowres", "superres")
HEX64 = re.compile(r"[0-9a-f]{64}")


def _problem(path: Path, text: str) -> MedSynError:
    return MedSynError(f"{path}: {text}", FIX)


def _numbers(value, count: int, positive: bool = False) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > 0 or not positive) for v in value))


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def inside(folder: Path, name: object, what: str, spec_path: Path) -> Path:
    """``folder / name`` when ``name`` is a relative path that stays inside ``folder`` (links resolved)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise _problem(spec_path, f"{what} must be a relative path inside the model folder, got {name!r}")
    path = Path(folder) / name
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise _problem(spec_path, f"{what} {name!r} points outside the model folder (to {real}); a model folder "
                                  "must hold all its files")
    return path


def check_spec(spec: Mapping, folder: Path) -> None:
    """Refuse a ``model.json`` that does not follow the schema (see the module docstring)."""
    path = Path(folder) / "model.json"
    for part in PARTS:
        if part not in spec:
            raise _problem(path, f"the key {part!r} is missing (the {part} folder's name)")
        if not inside(folder, spec[part], part, path).is_dir():
            raise _problem(path, f"{part} {spec[part]!r} is not a folder of the model")
    grid = spec.get("grid")
    if not isinstance(grid, Mapping) or "size" not in grid:
        raise _problem(path, "the key 'grid' is missing or holds no 'size' (the full-resolution grid)")
    if not _numbers(grid["size"], 3, positive=True) or not all(isinstance(v, int) for v in grid["size"]):
        raise _problem(path, f"grid.size must be 3 positive whole numbers, got {grid['size']!r}")
    for key, count, positive in (("spacing", 3, True), ("origin", 3, False), ("direction", 9, False)):
        if key in grid and not _numbers(grid[key], count, positive):
            raise _problem(path, f"grid.{key} must be {count} finite{' positive' if positive else ''} numbers, got "
                                 f"{grid[key]!r}")
    factor = spec.get("lowres_factor", 4)
    if not _whole(factor, 1, 64) or any(s % factor for s in grid["size"]):
        raise _problem(path, f"lowres_factor must be a whole number from 1 to 64 dividing grid.size {grid['size']}, "
                             f"got {factor!r}")
    defaults = spec.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise _problem(path, f"defaults must be an object, got {defaults!r}")
    for key in ("steps_lowres", "steps_sr"):
        if key in defaults and not _whole(defaults[key], 1, STEPS_MAX):
            raise _problem(path, f"defaults.{key} must be a whole number from 1 to {STEPS_MAX}, got "
                                 f"{defaults[key]!r}")
    guidance = defaults.get("guidance", 1.0)
    if not _numbers([guidance], 1) or guidance < 0:
        raise _problem(path, f"defaults.guidance must be a finite number >= 0, got {guidance!r}")
    if defaults.get("sampler", "ddim") not in SAMPLER_NAMES:
        raise _problem(path, f"defaults.sampler must be one of {', '.join(SAMPLER_NAMES)}, got "
                             f"{defaults.get('sampler')!r}")
    space = spec.get("space", {"kind": "grid"})
    if not isinstance(space, Mapping) or space.get("kind", "grid") not in ("grid", "atlas"):
        raise _problem(path, f"space must be {{\"kind\": \"grid\"}} or {{\"kind\": \"atlas\", ...}}, got {space!r}")
    if space.get("atlas_mask") is not None:
        inside(folder, space["atlas_mask"], "space.atlas_mask", path)
    text_sha = spec.get("text_encoder_sha256")
    if text_sha is not None and not (isinstance(text_sha, str) and HEX64.fullmatch(text_sha)):
        raise _problem(path, f"text_encoder_sha256 must be 64 hexadecimal digits, got {text_sha!r}")
    files = spec.get("files", {})
    if not isinstance(files, Mapping) or not all(isinstance(d, str) and HEX64.fullmatch(d) for d in files.values()):
        raise _problem(path, "files must map each file of the model to its sha256 (64 hexadecimal digits)")
    for name in files:
        inside(folder, name, "files entry", path)


def check_files(spec: Mapping, folder: Path, known: Mapping[str, str], skip: tuple[str, ...] = ()) -> None:
    """Compare every file listed in ``files`` with its sha256. ``known``: digests already computed this load
    (relative path -> sha256), not computed again; ``skip``: parts not loaded this time (e.g. ``superres``)."""
    from .store import sha256_file

    for name, digest in spec.get("files", {}).items():
        if name.split("/")[0] in skip:
            continue
        path = Path(folder) / name
        if not path.is_file():
            raise MedSynError(f"{path} is missing: model.json lists it among the model's files",
                              "restore the model folder, or re-import / re-package the model")
        if (known.get(name) or sha256_file(path)) != digest:
            raise MedSynError(f"{path} is corrupted or was altered: its sha256 does not match the one "
                              f"{Path(folder) / 'model.json'} lists", "re-import or re-download the model")
