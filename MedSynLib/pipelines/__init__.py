"""Thin wiring: text encoder + networks + sampler + codecs, one call each (generate, segment).

The names load on first use, so that the command line's parsers (:mod:`.cli`) do not import torch.
"""

import importlib

_EXPORTS = {"GenerationResult": "generate", "generate": "generate", "segment": "generate"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # also replaces the submodule of the same name that the import bound here
    return value
