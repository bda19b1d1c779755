"""The run folder: the finished encoder, the metrics file and the resumable checkpoint, each replaced atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

ENCODER_DIR, CHECKPOINT_DIR, METRICS_FILE = "text_encoder", "checkpoint", "training.json"


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, keeping the previous one until the new one is in place."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(out: Path, name: str) -> Path:
    """A fresh folder beside its final place, with the permissions a plain mkdir would give (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def checkpoint_dir(out: Path) -> Path | None:
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):  # .old: a crash between the two renames
        if (out / name / "state.pt").is_file():
            return out / name
    return None


def write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
