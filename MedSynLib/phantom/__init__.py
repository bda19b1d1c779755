"""Synthetic chest CT phantoms (SYNTHETIC, not patients): anatomy, findings, HU, masks, reports, measurements.

``make_phantom(seed, grid, **findings)`` -> :class:`Phantom` with ``ct`` (int16 HU), ``lobes`` (uint8 labels 1..5,
``MedSynLib.io.codecs.LOBE_LABELS``), ``airway`` (lumen) and ``vessels`` (uint8 {0, 1}) in (z, y, x) order on a
:class:`Grid` (default 256³ at 1 mm; x patient right -> left, y anterior -> posterior, z inferior -> superior,
identity direction), and a ``truth`` dict.

Modules: ``grid`` (coordinates, smooth fields, tube rasterisation), ``anatomy`` (shapes in mm), ``trees``
(airway and vessel trees), ``findings`` (what is wrong), ``compose`` (one phantom, step by step: ``chest`` lays
the anatomy on the grid, ``tissues`` paints the normal HU, ``lesions`` the findings), ``measure`` (measurements
on any CT + masks), ``report`` (report text), ``regions`` (where a finding would go, for editing), ``dataset``
(``medsyn phantoms``), ``preview`` (``medsyn preview``), ``timing`` (generation speed).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for editors and type checkers (nothing is imported at run time)
    from .anatomy import AnatomyParams
    from .compose import Phantom, make_phantom
    from .findings import Findings
    from .grid import Grid

_EXPORTS = {"AnatomyParams": "anatomy", "Findings": "findings", "Grid": "grid", "Phantom": "compose",
            "make_phantom": "compose"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
