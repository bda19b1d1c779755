"""The environment variables MedSyn reads, each checked where it is read, with a message naming the variable and the
fix: torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and ``MEDSYN_PRECISION`` / ``MEDSYN_HOME``.

An empty variable counts as unset (``RANK= medsyn ...``); ``MEDSYN_DEBUG`` is read by :mod:`MedSynLib.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import MedSynError

PRECISION_ENV = "MEDSYN_PRECISION"
HOME_ENV = "MEDSYN_HOME"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _value(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _whole(environ: Mapping[str, str], name: str, default: int, low: int) -> int:
    text = _value(environ, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise MedSynError(f"the environment variable {name}={text!r} is not a whole number >= {low}",
                          f"unset {name}, or let torchrun set it (torchrun --nproc-per-node N ...)")
    return value


@dataclass(frozen=True)
class Distributed:
    """torchrun's process layout: this process is ``rank`` of ``world_size``, on GPU ``local_rank`` of its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def distributed(environ: Mapping[str, str] = os.environ) -> Distributed:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` checked together: whole numbers, 0 <= RANK < WORLD_SIZE, and
    RANK given whenever WORLD_SIZE > 1 (otherwise every process would do shard 0)."""
    world = _whole(environ, "WORLD_SIZE", 1, 1)
    rank = _whole(environ, "RANK", 0, 0)
    local = _whole(environ, "LOCAL_RANK", 0, 0)
    fix = "start the processes with torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK), or unset these variables"
    if world > 1 and _value(environ, "RANK") is None:
        raise MedSynError(f"WORLD_SIZE={world} is set but RANK is not: this process would not know its share", fix)
    if rank >= world:
        raise MedSynError(f"RANK={rank} is not below WORLD_SIZE={world} (ranks count from 0)", fix)
    return Distributed(rank, world, local)


def pinned_precision(environ: Mapping[str, str] = os.environ) -> str:
    """What ``--precision auto`` means: ``MEDSYN_PRECISION`` (fp32, bf16 or fp16), else ``auto``."""
    value = _value(environ, PRECISION_ENV) or "auto"
    if value not in PRECISIONS:
        raise MedSynError(f"{PRECISION_ENV}={value!r} is not a precision",
                          f"set it to one of {', '.join(PRECISIONS)}, or unset it")
    return value


def medsyn_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``MEDSYN_HOME`` (the folder holding ``models/``), else ``~/.medsyn``."""
    value = _value(environ, HOME_ENV)
    if value is None:
        return Path.home() / ".medsyn"
    home = Path(value).expanduser()
    if home.exists() and not home.is_dir():
        raise MedSynError(f"{HOME_ENV}={value!r} is a file, not a folder",
                          f"set {HOME_ENV} to a folder (it holds models/), or unset it for ~/.medsyn")
    return home
