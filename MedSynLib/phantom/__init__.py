"""Synthetic chest CT phantoms (SYNTHETIC, not patients): anatomy, findings, HU, masks, reports, measurements.

``generate(seed, grid, **findings)`` -> :class:`Phantom` with ``ct`` (int16 HU), ``lobes`` (uint8 labels 1..5,
``MedSynLib.io.codecs.LOBE_LABELS``), ``airway`` (lumen) and ``vessels`` (uint8 {0, 1}) in (z, y, x) order on a
:class:`Grid` (default 256³ at 1 mm; x patient right -> left, y anterior -> posterior, z inferior -> superior,
identity direction), and a ``truth`` dict.

Modules: ``grid`` (coordinates, smooth fields, tube rasterisation), ``anatomy`` (shapes in mm), ``trees``
(airway and vessel trees), ``findings`` (what is wrong), ``generate`` (HU composition), ``measure``
(measurements on any CT + masks), ``report`` (report text), ``regions`` (where a finding would go, for
editing), ``dataset`` (``medsyn phantoms``), ``preview`` (``medsyn preview``), ``bench``.
"""

import importlib

_EXPORTS = {"AnatomyParams": "anatomy", "Findings": "findings", "Grid": "grid", "Phantom": "generate",
            "generate": "generate"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):  # on first use, so that ``medsyn --help`` does not load the phantom code (and torch)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # also replaces the submodule of the same name that the import bound here
    return value
