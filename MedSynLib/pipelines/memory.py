"""Memory of the super-resolution (SR) stage: tiling along f (depth) and the estimate that picks the tile count.

The SR network mixes slices only through its 3×3×3 convolutions (``init_conv0`` and the 3D ResNet blocks) and
through GroupNorm statistics; attention is per slice and f is never resampled. So the x0 prediction can be made
chunk by chunk of overlapping slices and blended linearly across the overlaps. Peak activation memory then
scales with the chunk length instead of the volume depth. The result is not bit-identical (GroupNorm statistics
of a chunk differ from those of the volume, and zero padding replaces the neighbours at a chunk's cut edge,
which the blending weights fade out); docs/cli.md states the measured difference.

Estimate (fp32, ``torch.no_grad``, this implementation with fused attention): the peak of live activations of
one SR forward is ``7.3 · dim · h · w · 4`` bytes per slice, measured by tracking tensor lifetimes on the meta
device for the official SR network (dim 56) at 256×256 in-plane: 102 MiB per slice, 25 GiB for 256 slices. In
bf16/fp16 autocast the convolution outputs are 2-byte but GroupNorm runs in fp32; we assume 0.75 of the fp32
cost (not measured on a GPU).
"""

from __future__ import annotations

import math

import torch

from ..diffusion import SuperResDenoiser

SLICE_COST_FP32 = 7.3
"""Peak live activation bytes per slice of one SR forward, in units of ``dim · h · w · 4`` bytes."""
HALF_PRECISION_FACTOR = 0.75
STATE_VOLUMES = 6
"""Full-size 4-channel fp32 volumes alive besides the network during SR sampling (x, noise, conditioning, x0...)."""
GIB = 2 ** 30


def halo_slices(config) -> int:
    """Slices on each side that one output slice depends on: the stem's kernel radius + 2 per 3D ResNet block
    (one per level down, one per level up, one at the bottom), in the network's folded slices (``patch`` input
    slices each)."""
    return (config.init_kernel_size // 2 + 2 * (2 * len(config.dim_mults) + 1)) * config.patch


def default_overlap(config) -> int:
    """Slices shared by neighbouring tiles: twice :func:`halo_slices` (42 for the official network), so that the
    slices a cut edge disturbs get small blending weights."""
    return 2 * halo_slices(config)


def tile_bounds(length: int, tiles: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """``tiles`` chunks [start, stop) covering 0..length, equally long, neighbours overlapping by >= ``overlap``;
    starts and lengths are multiples of ``multiple`` (the slices the network folds into one: its ``patch``)."""
    if length % multiple:
        raise ValueError(f"a volume of {length} slices cannot be cut into chunks of whole {multiple}-slice blocks")
    if tiles <= 1:
        return [(0, length)]
    size = math.ceil(math.ceil((length + (tiles - 1) * overlap) / tiles) / multiple) * multiple
    while True:
        size = min(length, size)
        if size <= overlap:
            raise ValueError(f"{tiles} SR tiles of a {length}-slice volume leave {size} slices per tile, not more "
                             f"than the {overlap}-slice overlap. Fix: ask for fewer tiles (--sr-tiles) or more memory")
        starts = [round(i * (length - size) / (tiles - 1) / multiple) * multiple for i in range(tiles)]
        if size == length or all(a + size - b >= overlap for a, b in zip(starts, starts[1:])):
            return [(a, a + size) for a in starts]
        size += multiple


def blend_weights(bounds: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-tile weights along f (each (stop - start,)), linear ramps across each overlap, summing to 1 per slice."""
    weights = []
    for i, (a, b) in enumerate(bounds):
        w = torch.ones(b - a)
        if i > 0 and bounds[i - 1][1] > a:
            n = bounds[i - 1][1] - a
            w[:n] = torch.minimum(w[:n], (torch.arange(n) + 1) / (n + 1))
        if i + 1 < len(bounds) and bounds[i + 1][0] < b:
            n = b - bounds[i + 1][0]
            w[-n:] = torch.minimum(w[-n:], (n - torch.arange(n)) / (n + 1))
        weights.append(w)
    total = torch.zeros(bounds[-1][1])
    for (a, b), w in zip(bounds, weights):
        total[a:b] += w
    return [w / total[a:b] for (a, b), w in zip(bounds, weights)]


class TiledSuperRes:
    """The SR network as a denoiser in its folded layout (as :class:`~MedSynLib.diffusion.SuperResDenoiser`,
    whose ``patch`` it has), evaluated over ``tiles`` overlapping chunks along f.

    lowres_up: (b, 4, f, h, w); ``overlap`` defaults to :func:`default_overlap`. The chunks (cut on multiples of
    the patch) are evaluated and blended on the network's folded grid. With one tile this is exactly the
    :class:`~MedSynLib.diffusion.SuperResDenoiser`.
    """

    def __init__(self, net, lowres_up: torch.Tensor, tiles: int = 1, overlap: int | None = None):
        self.whole = SuperResDenoiser(net, lowres_up)
        self.patch = p = self.whole.patch
        self.overlap = default_overlap(net.config) if overlap is None else overlap
        self.bounds = [(a // p, b // p) for a, b in tile_bounds(lowres_up.shape[2], tiles, self.overlap, p)]
        self.weights = [w.to(lowres_up.device) for w in blend_weights(self.bounds)]

    def __call__(self, x: torch.Tensor, t_raw) -> torch.Tensor:
        if len(self.bounds) == 1:
            return self.whole(x, t_raw)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for (a, b), w in zip(self.bounds, self.weights):
            part = self.whole(x[:, :, a:b], t_raw, slice(a, b))
            out[:, :, a:b] += part.float() * w[:, None, None]
        return out


def sr_peak_bytes(config, shape_fhw: tuple[int, int, int], dtype: torch.dtype, tile_slices: int | None = None) -> int:
    """Estimated activation + sampling-state bytes of the SR stage at ``shape_fhw`` with chunks of ``tile_slices``."""
    f, h, w = shape_fhw
    per_slice = SLICE_COST_FP32 * config.dim * h * w * 4
    if dtype in (torch.bfloat16, torch.float16):
        per_slice *= HALF_PRECISION_FACTOR
    return int(per_slice * (tile_slices or f) + STATE_VOLUMES * config.channels * f * h * w * 4)


def plan_sr_tiles(config, shape_fhw: tuple[int, int, int], dtype: torch.dtype, budget_bytes: float,
                  resident_bytes: int = 0, strict: bool = True) -> int:
    """The fewest tiles whose estimated peak (``resident_bytes``, e.g. loaded weights, + :func:`sr_peak_bytes`)
    fits ``budget_bytes``. When even the smallest chunks (a little over twice the overlap) do not fit: a clear
    error if ``strict``, else the tile count of the smallest chunks (the estimate may be pessimistic)."""
    f = shape_fhw[0]
    overlap = default_overlap(config)
    tiles = 1
    while True:
        size = tile_bounds(f, tiles, overlap, config.patch)[0]
        need = resident_bytes + sr_peak_bytes(config, shape_fhw, dtype, size[1] - size[0])
        if need <= budget_bytes:
            return tiles
        if (size[1] - size[0]) <= 2 * overlap + 1:
            if not strict:
                return tiles
            raise ValueError(f"the super-resolution stage needs about {need / GIB:.1f} GiB even in {tiles} tiles, "
                             f"more than the {budget_bytes / GIB:.1f} GiB allowed. Fix: raise --max-gpu-memory, "
                             "use --precision bf16, --lowres-only, or --device cpu")
        tiles += 1


def parameter_bytes(*modules) -> int:
    """Bytes of the parameters and buffers of the given modules (None entries are skipped)."""
    return sum(t.numel() * t.element_size() for m in modules if m is not None
               for t in (*m.parameters(), *m.buffers()))


def gpu_budget_bytes(device: torch.device, max_gpu_memory_gb: float | None) -> float | None:
    """The memory the SR stage may plan for: ``max_gpu_memory_gb``; on CUDA without it, the device's free memory
    plus what this process already holds; None (no limit) on the CPU without it."""
    if max_gpu_memory_gb is not None:  # a positive number (RunSettings checks it)
        return max_gpu_memory_gb * GIB
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_allocated(device)
    return None
