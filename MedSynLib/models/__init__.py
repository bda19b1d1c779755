"""Networks only: building blocks, the two denoising UNets and the report text encoder (no sampling, no I/O).

The names below load on first use, so that reading a config (:mod:`.config`) does not import torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for editors and type checkers (nothing is imported at run time)
    from .config import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, UNetConfig
    from .unet import LowResUNet, SuperResUNet, build_unet

_EXPORTS = {"UNetConfig": "config", "OFFICIAL_LOWRES": "config", "OFFICIAL_SUPERRES": "config",
            "LowResUNet": "unet", "SuperResUNet": "unet", "build_unet": "unet"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
