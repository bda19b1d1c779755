"""Compatibility with the official MedSyn code: its constructor arguments, checkpoints and writer conventions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.config import UNetConfig

if TYPE_CHECKING:
    import torch


def config_from_official_kwargs(kwargs: dict, up_order: str = "eval") -> UNetConfig:
    """Our :class:`UNetConfig` from the official ``Unet3D`` constructor arguments.

    ``use_sparse_linear_attn`` tells the networks apart: True = low-res (text), False = super-resolution.
    ``attn_dim_head`` is ignored, as in the official code (heads are always 32 wide).
    """
    if kwargs.get("init_dim") not in (None, kwargs["dim"]):
        raise ValueError("the official network requires init_dim == dim")
    lowres = bool(kwargs.get("use_sparse_linear_attn", True))
    return UNetConfig(
        kind="lowres" if lowres else "superres",
        dim=int(kwargs["dim"]),
        dim_mults=tuple(kwargs.get("dim_mults", (1, 2, 4, 8))),
        channels=int(kwargs.get("channels", 4)),
        attn_heads=int(kwargs.get("attn_heads", 8)),
        text_dim=int(kwargs.get("cond_dim", 768)),
        mid_depth=4 if lowres else 1,
        init_kernel_size=int(kwargs.get("init_kernel_size", 7)),
        resnet_groups=int(kwargs.get("resnet_groups", 8)),
        up_order=up_order,
    )


def official_written_arrays(final: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the official SR writer hands to SimpleITK for sample 0 of ``final`` (b, 4, f, h, w) in [-1, 1].

    CT: HU int16 (truncated), flipped along h; masks: raw [0, 1] floats, not flipped; vessels keep a leading 1.
    Our writers do not copy these quirks (they write geometry instead); this exists to check against them.
    """
    import torch

    v = (final[0].clamp(-1, 1) + 1) / 2
    return {
        "ct_hu_int16": (v[0].flip(1) * 1624 - 1024).to(torch.int16),
        "lobe_array_written": v[1],
        "airway_array_written": v[2],
        "vessel_array_written": v[3:4],
    }
