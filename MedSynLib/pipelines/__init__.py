"""Thin wiring: text encoder + networks + sampler + codecs, one call each (generate, segment).

The names load on first use, so that the command line's parsers (:mod:`.cli`) do not import torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for editors and type checkers (nothing is imported at run time)
    from .generation import GenerationResult, generate, segment

_EXPORTS = {"GenerationResult": "generation", "generate": "generation", "segment": "generation"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
