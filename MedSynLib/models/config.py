"""The constructor arguments of the MedSyn UNets and the text encoder's token counts (plain data: reading a
model's config needs no torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..settings import settings_from_dict

UP_ORDERS = ("eval", "train")
TEXT_TOKENS = 192
"""Text feature tokens the low-res network attends to (the first 192 positions of the encoder's last state)."""
MAX_POSITIONS = 2048
"""Word-piece positions of the text encoder (the official CXR-BERT set-up extends its table to 2048 rows)."""


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of a MedSyn UNet; saved as JSON beside the weights.

    kind: "lowres" (text-conditioned, 4 input channels) or "superres" (no text, 8 input channels).
    dim: base width; dim_mults: width multiplier per level (each level but the last halves h and w).
    attn_heads: heads of 32 channels in the bottom attention.
    text_dim / text_tokens: width and count of the text feature tokens (lowres only).
    mid_depth: (self-attention, cross-attention, 3D block) triples at the bottom (lowres; superres has 1, no text).
    up_order: "eval" (official inference: block, block, 3D block, upsample) or "train" (official training code:
        block, upsample, block, 3D block). Same parameters, different function: pick the one a checkpoint needs.
    patch: space-to-depth factor (not in the official networks, which use 1). With p > 1 the network folds
        p x p x p voxel blocks into channels on the way in and unfolds them on the way out, so all its layers run
        on a grid p times coarser: how the CPU demo model does super-resolution with little work at 256³.
    """

    kind: str = "lowres"
    dim: int = 160
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    channels: int = 4
    attn_heads: int = 8
    text_dim: int = 768
    text_tokens: int = TEXT_TOKENS
    mid_depth: int = 4
    init_kernel_size: int = 7
    resnet_groups: int = 8
    up_order: str = "eval"
    patch: int = 1

    def __post_init__(self):
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        if self.kind not in ("lowres", "superres"):
            raise ValueError(f"UNetConfig.kind must be 'lowres' or 'superres', got {self.kind!r}")
        if self.up_order not in UP_ORDERS:
            raise ValueError(f"UNetConfig.up_order must be one of {UP_ORDERS}, got {self.up_order!r}")
        widths = [self.dim * m for m in self.dim_mults]
        bad = [w for w in widths if w % self.resnet_groups]
        if bad:
            raise ValueError(f"every width must be divisible by resnet_groups={self.resnet_groups}; got {bad}")

    @property
    def spatial_divisor(self) -> int:
        """h and w must be multiples of this (f of ``patch``)."""
        return 2 ** (len(self.dim_mults) - 1) * self.patch

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dim_mults"] = list(self.dim_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return settings_from_dict(cls, d, "UNetConfig fields")

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)


OFFICIAL_LOWRES = UNetConfig(kind="lowres", dim=160, dim_mults=(1, 2, 4, 8), attn_heads=8, text_dim=768, mid_depth=4)
OFFICIAL_SUPERRES = UNetConfig(kind="superres", dim=56, dim_mults=(1, 2, 4, 8), attn_heads=4, mid_depth=1)
