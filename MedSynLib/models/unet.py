"""The two MedSyn denoising networks, built from one config.

Both predict the clean volume x0 from a noisy one. ``LowResUNet`` denoises the 4 channels at 64³ with text
cross-attention at the bottom; ``SuperResUNet`` denoises them at 256³ given the upsampled low-res volume, without
text. Inputs are ``(b, c, f, h, w)`` in model space [-1, 1]; h and w must be divisible by ``2 ** (levels - 1)``.
With :data:`OFFICIAL_LOWRES` / :data:`OFFICIAL_SUPERRES` the ``state_dict`` keys and shapes are the official ones.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import (
    PerSlice,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalTimeEmbedding,
    SpatialSelfAttention,
    TextCrossAttention,
    downsample,
    upsample,
)
from .config import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, UNetConfig

class _MedSynUNet(nn.Module):
    """Shared encoder/decoder. Subclasses name the stem, the per-level slots and the bottom.

    ``_slots`` gives the module-list index of (2D block, 2D block, 3D block, resample) in each level, so that the
    official key names (``downs.L.i``) come out unchanged. Subclasses also define ``_build_bottom(mid_dim,
    time_dim)`` and ``_bottom(x, t, text)``, the part between encoder and decoder.
    """

    _slots: tuple[int, int, int, int]
    _stem_name: str
    _head_name: str
    in_factor: int  # input channels = in_factor * channels

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        dim, groups = config.dim, config.resnet_groups
        dims = [dim] + [dim * m for m in config.dim_mults]
        pairs = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        k = config.init_kernel_size

        setattr(self, self._stem_name,
                nn.Conv3d(config.channels * self.in_factor * config.patch ** 3, dim, k, padding=k // 2))
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))

        def level(d_in: int, d_out: int, resample: nn.Module) -> nn.ModuleList:
            mods: list[nn.Module] = [nn.Identity()] * (max(self._slots) + 1)
            a, b, c, r = self._slots
            mods[a] = ResnetBlock(d_in, d_out, time_dim=time_dim, groups=groups)
            mods[b] = ResnetBlock(d_out, d_out, time_dim=time_dim, groups=groups)
            mods[c] = ResnetBlock(d_out, d_out, time_dim=time_dim, groups=groups, kernel_f=3)
            mods[r] = resample
            return nn.ModuleList(mods)

        n = len(pairs)
        self.downs = nn.ModuleList(
            level(d_in, d_out, downsample(d_out) if i < n - 1 else nn.Identity())
            for i, (d_in, d_out) in enumerate(pairs))
        self.ups = nn.ModuleList(
            level(d_out * 2, d_in, upsample(d_in) if i < n - 1 else nn.Identity())
            for i, (d_in, d_out) in enumerate(reversed(pairs)))
        self._build_bottom(dims[-1], time_dim)
        setattr(self, self._head_name, nn.Sequential(
            ResnetBlock(dim * 2, dim, time_dim=None, groups=groups),
            nn.Conv3d(dim, config.channels * config.patch ** 3, 1)))

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, f, h, w) -> the layout the layers work in, (b, c p³, f/p, h/p, w/p) (the same tensor for p = 1).

        Element-wise work (sampler arithmetic, holding voxels) gives the same numbers in either layout, so a
        sampling loop can fold once, run every step folded and :meth:`unfold` once at the end.
        """
        self._check_divisible(x.shape[-3:])
        return space_to_depth(x, self.config.patch)

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`fold`."""
        return depth_to_space(x, self.config.patch)

    def _check_divisible(self, fhw) -> None:
        div, p = self.config.spatial_divisor, self.config.patch
        if fhw[2] % div or fhw[1] % div or fhw[0] % p:
            raise ValueError(f"h and w must be multiples of {div} (and f of {p}) for this network; got {tuple(fhw)}")

    def _unet(self, x: torch.Tensor, time: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """Network input -> x0, both folded (:meth:`fold`)."""
        p = self.config.patch
        self._check_divisible((x.shape[-3] * p, x.shape[-2] * p, x.shape[-1] * p))
        a, b, c, r = self._slots
        x = getattr(self, self._stem_name)(x)
        t = self.time_mlp(time)
        skips = [x]  # the stem's output joins the head; each level's output joins its up level
        # One block per statement: a nested call would keep the previous activation alive (peak memory).
        for lvl in self.downs:
            x = lvl[a](x, t)
            x = lvl[b](x, t)
            skips.append(x)
            x = lvl[r](x)
            x = lvl[c](x, t)
        x = self._bottom(x, t, text)
        for lvl in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = lvl[a](x, t)
            if self.config.up_order == "eval":
                x = lvl[b](x, t)
                x = lvl[c](x, t)
                x = lvl[r](x)
            else:
                x = lvl[r](x)
                x = lvl[b](x, t)
                x = lvl[c](x, t)
        head = getattr(self, self._head_name)
        x = torch.cat((x, skips.pop()), dim=1)
        x = head[0](x)
        return head[1](x)


def space_to_depth(x: torch.Tensor, p: int) -> torch.Tensor:
    """(b, c, f, h, w) -> (b, c p³, f/p, h/p, w/p): each p x p x p block becomes channels (identity for p = 1)."""
    if p == 1:
        return x
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // p, p, h // p, p, w // p, p).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p**3, f // p, h // p, w // p)


def depth_to_space(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    if p == 1:
        return x
    b, cp, f, h, w = x.shape
    c = cp // p**3
    x = x.reshape(b, c, p, p, p, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, f * p, h * p, w * p)


class LowResUNet(_MedSynUNet):
    """Text-conditioned 64³ denoiser (official ``Unet3D`` of ``eval_low_res_given_prompt.py``).

    forward(x (b, 4, f, h, w), time (b,) raw in [0, 1000], text (b, 192, text_dim)) -> x0 (b, 4, f, h, w).
    The learned ``null_cond_emb`` (1, 192, text_dim) is the unconditional text (classifier-free guidance).
    """

    _slots = (0, 1, 2, 3)
    _stem_name = "init_conv"
    _head_name = "final_conv"
    in_factor = 1

    def __init__(self, config: UNetConfig = OFFICIAL_LOWRES):
        if config.kind != "lowres":
            raise ValueError(f"LowResUNet needs a config of kind 'lowres', got {config.kind!r}")
        super().__init__(config)
        self.null_cond_emb = nn.Parameter(torch.randn(1, config.text_tokens, config.text_dim))

    def _build_bottom(self, mid_dim: int, time_dim: int) -> None:
        cfg = self.config
        groups = cfg.resnet_groups
        self.mid_block1 = ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups)
        shared_attention = SpatialSelfAttention(mid_dim, cfg.attn_heads)  # weights shared by every bottom level (official)
        for i in range(1, cfg.mid_depth + 1):
            setattr(self, f"mid_spatial_attn{i}", Residual(PreNorm(mid_dim, PerSlice(shared_attention))))
            setattr(self, f"mid_cross_attn{i}",
                    Residual(PreNorm(mid_dim, TextCrossAttention(mid_dim, cfg.text_dim, cfg.attn_heads))))
            setattr(self, f"mid_temporal_attn{i}",
                    ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups, kernel_f=3))
        self.mid_block2 = ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups)

    def _bottom(self, x, t, text):
        x = self.mid_block1(x, t)
        for i in range(1, self.config.mid_depth + 1):
            x = getattr(self, f"mid_spatial_attn{i}")(x)
            x = getattr(self, f"mid_cross_attn{i}")(x, text)
            x = getattr(self, f"mid_temporal_attn{i}")(x, t)
        return self.mid_block2(x, t)

    def null_text(self, batch: int) -> torch.Tensor:
        """The unconditional text features, (batch, 192, text_dim)."""
        return self.null_cond_emb.expand(batch, -1, -1)

    def forward(self, x: torch.Tensor, time: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if text.shape[1:] != self.null_cond_emb.shape[1:]:
            raise ValueError(f"text features must have shape (b, {self.config.text_tokens}, {self.config.text_dim}); "
                             f"got {tuple(text.shape)}")
        return self.unfold(self._unet(self.fold(x), time, text))


class SuperResUNet(_MedSynUNet):
    """256³ super-resolution denoiser without text (official ``Unet3D`` of ``eval_super_res.py``).

    forward(x (b, 4, F, H, W) noisy, time (b,) raw, lowres_up (b, 4, F, H, W) upsampled low-res in [-1, 1])
    -> x0 (b, 4, F, H, W). The network input is ``cat([lowres_up, x])``, conditioning first.
    """

    _slots = (0, 1, 4, 5)
    _stem_name = "init_conv0"
    _head_name = "final_conv0"
    in_factor = 2

    def __init__(self, config: UNetConfig = OFFICIAL_SUPERRES):
        if config.kind != "superres":
            raise ValueError(f"SuperResUNet needs a config of kind 'superres', got {config.kind!r}")
        super().__init__(config)

    def _build_bottom(self, mid_dim: int, time_dim: int) -> None:
        groups = self.config.resnet_groups
        self.mid_block1 = ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups)
        self.mid_spatial_attn = Residual(PreNorm(mid_dim, PerSlice(SpatialSelfAttention(mid_dim, self.config.attn_heads))))
        self.mid_temporal_conv = ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups, kernel_f=3)
        self.mid_block2 = ResnetBlock(mid_dim, mid_dim, time_dim=time_dim, groups=groups)

    def _bottom(self, x, t, text):
        x = self.mid_block1(x, t)
        x = self.mid_spatial_attn(x)
        x = self.mid_temporal_conv(x, t)
        return self.mid_block2(x, t)

    def forward(self, x: torch.Tensor, time: torch.Tensor, lowres_up: torch.Tensor) -> torch.Tensor:
        if lowres_up.shape != x.shape:
            raise ValueError(f"lowres_up {tuple(lowres_up.shape)} must have the shape of x {tuple(x.shape)}")
        return self.unfold(self.forward_folded(self.fold(torch.cat((lowres_up.to(x.dtype), x), dim=1)), time))

    def forward_folded(self, net_input: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in the folded layout: ``fold(cat([lowres_up, x]))`` (b, 8 p³, F/p, H/p, W/p) -> folded
        x0 (b, 4 p³, F/p, H/p, W/p). For a sampling loop that keeps its state folded."""
        return self._unet(net_input, time, None)


def build_unet(config: UNetConfig) -> _MedSynUNet:
    """The network class a config names."""
    return (LowResUNet if config.kind == "lowres" else SuperResUNet)(config)
