"""Networks only: building blocks, the two denoising UNets and the report text encoder (no sampling, no I/O).

The names below load on first use, so that reading a config (:mod:`.config`) does not import torch.
"""

import importlib

_EXPORTS = {"UNetConfig": "config", "OFFICIAL_LOWRES": "config", "OFFICIAL_SUPERRES": "config",
            "LowResUNet": "unet", "SuperResUNet": "unet", "build_unet": "unet"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # also replaces the submodule of the same name that the import bound here
    return value
