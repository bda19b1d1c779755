"""Building blocks of the MedSyn denoising UNets.

Tensors are ``(b, c, f, h, w)``: f is the inferior->superior axis, (h, w) the axial plane. Module and
parameter names follow the official state_dict so that official checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 32
"""Width of one attention head; the official code always uses 32, whatever ``attn_dim_head`` says."""


class SinusoidalTimeEmbedding(nn.Module):
    """Raw diffusion time (b,) -> (b, dim): ``[sin(t w_k), cos(t w_k)]``, ``w_k = exp(-k ln(1e4) / (dim/2 - 1))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=time.device) * -(math.log(10000) / (half - 1)))
        angles = time.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ConvNormAct(nn.Module):
    """Conv3d -> GroupNorm -> optional FiLM ``x (scale + 1) + shift`` -> SiLU.

    ``kernel_f=1`` gives the per-slice (1, 3, 3) kernel of the official "Block", ``kernel_f=3`` the 3x3x3 one.
    """

    def __init__(self, dim_in: int, dim_out: int, groups: int, kernel_f: int):
        super().__init__()
        self.proj = nn.Conv3d(dim_in, dim_out, (kernel_f, 3, 3), padding=(kernel_f // 2, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # One operation per statement, so that each input is freed as soon as it is used (peak memory); without
        # autograd the FiLM and SiLU run in place: the same arithmetic without a temporary per operation.
        x = self.proj(x)
        x = self.norm(x)
        inplace = not torch.is_grad_enabled()
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x.mul_(scale + 1).add_(shift) if inplace else x * (scale + 1) + shift
        return F.silu(x, inplace=inplace)


class ResnetBlock(nn.Module):
    """Two ConvNormAct blocks, time-modulated first block, residual (1x1x1 conv when widths differ).

    ``kernel_f=1``: the per-slice ("2D") block; ``kernel_f=3``: the 3D ("temporal") block.
    ``time_dim=None``: no time input (the official ``final_conv`` block).
    """

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int | None, groups: int, kernel_f: int = 1):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2)) if time_dim is not None else None
        self.block1 = ConvNormAct(dim_in, dim_out, groups, kernel_f)
        self.block2 = ConvNormAct(dim_out, dim_out, groups, kernel_f)
        self.res_conv = nn.Conv3d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.mlp is not None and time_emb is not None:
            scale, shift = self.mlp(time_emb)[:, :, None, None, None].chunk(2, dim=1)
            scale_shift = (scale, shift)
        # ``forward`` directly: ``nn.Module.__call__`` would hold block1's output in its argument tuple until
        # block2 ends, one more full-size activation at the network's peak.
        h = self.block2.forward(self.block1.forward(x, scale_shift))
        return h + self.res_conv(x) if torch.is_grad_enabled() else h.add_(self.res_conv(x))


def downsample(dim: int) -> nn.Module:
    """Halve h and w (never f): Conv3d kernel (1, 4, 4), stride (1, 2, 2)."""
    return nn.Conv3d(dim, dim, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))


def upsample(dim: int) -> nn.Module:
    """Double h and w (never f): ConvTranspose3d kernel (1, 4, 4), stride (1, 2, 2)."""
    return nn.ConvTranspose3d(dim, dim, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (b, c, f, h, w), per voxel, gain only (key ``gamma``), eps 1e-5."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma


class PreNorm(nn.Module):
    """``fn(norm(x), *args)``."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.fn(self.norm(x), *args)


class Residual(nn.Module):
    """``x + fn(x, *args)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x + self.fn(x, *args)


class PerSlice(nn.Module):
    """Runs a token module on each axial slice: (b, c, f, h, w) -> tokens (b f, h w, c) -> back."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)
        out = self.fn(tokens)
        return out.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(n, tokens, heads * 32) -> (n, heads, tokens, 32), head-major channel order."""
    n, tokens, _ = t.shape
    return t.view(n, tokens, heads, HEAD_DIM).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    n, heads, tokens, d = t.shape
    return t.transpose(1, 2).reshape(n, tokens, heads * d)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over tokens (n, L, dim), no bias, no positional encoding, fused SDPA."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        inner = heads * HEAD_DIM
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(tokens).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(_merge_heads(out))


class TextCrossAttention(nn.Module):
    """Every voxel attends to the text tokens (b, n_text, text_dim); the same keys serve every slice.

    Parameters keep the official shapes (1x1 Conv2d for ``to_q`` / ``to_out``) but are applied as per-voxel
    linear maps, and all f·h·w queries of a sample share one fused SDPA call.
    """

    def __init__(self, dim: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        inner = heads * HEAD_DIM
        self.to_q = nn.Conv2d(dim, inner, 1, bias=False)
        self.to_kv = nn.Linear(text_dim, inner * 2, bias=False)
        self.to_out = nn.Conv2d(inner, dim, 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b, f * h * w, c)
        q = _split_heads(F.linear(tokens, self.to_q.weight.flatten(1)), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(text.to(x.dtype)).chunk(2, dim=-1))
        out = _merge_heads(F.scaled_dot_product_attention(q, k, v))
        out = F.linear(out, self.to_out.weight.flatten(1), self.to_out.bias)
        return out.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)
