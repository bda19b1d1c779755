"""Networks only: building blocks, the two denoising UNets and the report text encoder (no sampling, no I/O)."""

from .unet import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, LowResUNet, SuperResUNet, UNetConfig, build_unet

__all__ = ["UNetConfig", "LowResUNet", "SuperResUNet", "build_unet", "OFFICIAL_LOWRES", "OFFICIAL_SUPERRES"]
