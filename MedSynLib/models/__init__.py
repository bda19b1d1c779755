"""Networks only: building blocks, the two denoising UNets and the report text encoder (no sampling, no I/O).

The names below load on first use, so that reading a config (:mod:`.config`) does not import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {"UNetConfig": "config", "OFFICIAL_LOWRES": "config", "OFFICIAL_SUPERRES": "config",
            "LowResUNet": "unet", "SuperResUNet": "unet", "build_unet": "unet"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
