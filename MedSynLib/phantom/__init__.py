"""Synthetic chest CT phantoms (SYNTHETIC, not patients): anatomy, findings, HU, masks, reports, measurements.

``generate(seed, grid)`` -> :class:`Phantom` with ``ct`` (int16 HU), ``lobes`` (uint8 labels 1..5),
``airway`` and ``vessels`` (uint8 {0,1}) in (z, y, x) order, and a ``truth`` dict.
"""

from .anatomy import AnatomyParams
from .findings import Findings
from .generate import Phantom, generate
from .grid import Grid

__all__ = ["AnatomyParams", "Findings", "Grid", "Phantom", "generate"]
