"""Thin wiring: text encoder + networks + sampler + codecs, one call each (generate, segment).

The names load on first use, so that the command line's parsers (:mod:`.cli`) do not import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {"GenerationResult": "generation", "generate": "generation", "segment": "generation"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
