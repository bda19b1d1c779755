"""The run folder: the finished encoder, the metrics file and the resumable checkpoint, each replaced atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ...io.files import atomic_write, umask

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


def temp_dir(out: Path, name: str) -> Path:
    """A fresh folder beside its final place, with the permissions a plain mkdir would give (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    tmp.chmod(0o777 & ~umask())
    return tmp


def checkpoint_dir(out: Path) -> Path | None:
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):  # .old: a crash between the two renames
        if (out / name / "state.pt").is_file():
            return out / name
    return None


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON in ``path``, replaced atomically."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")
