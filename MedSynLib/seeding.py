"""Seeds derived from text keys: the same in every process, machine and Python version (unlike ``hash``).

Training draws every random number of a step from a generator keyed by (seed, step, ...), so a resumed or
distributed run computes what one uninterrupted process computes. The key's spelling is part of a recipe: a
different key gives different draws, so the packaged weights would no longer be reproduced.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # stable_seed needs no torch (the command line's parsers read configs that use it)
    import torch


def stable_seed(key: str) -> int:
    """A 63-bit seed from ``key`` (the first 8 bytes of its sha256, little-endian, shifted right by one)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def seeded_generator(key: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stable_seed` of ``key``."""
    import torch

    return torch.Generator().manual_seed(stable_seed(key))
