"""Memory of the super-resolution (SR) stage: the estimate that picks the tile count of
:class:`~MedSynLib.diffusion.TiledSuperRes` (why tiling along f works: :mod:`MedSynLib.diffusion.denoisers`).

Estimate (fp32, ``torch.no_grad``, this implementation with fused attention): the peak of live activations of
one SR forward is ``7.3 · dim · h · w · 4`` bytes per slice, measured by tracking tensor lifetimes on the meta
device for the official SR network (dim 56) at 256×256 in-plane: 102 MiB per slice, 25 GiB for 256 slices. In
bf16/fp16 autocast the convolution outputs are 2-byte but GroupNorm runs in fp32; we assume 0.75 of the fp32
cost (not measured on a GPU).
"""

from __future__ import annotations

import torch

from ..diffusion.denoisers import default_overlap, tile_bounds

SLICE_COST_FP32 = 7.3
"""Peak live activation bytes per slice of one SR forward, in units of ``dim · h · w · 4`` bytes."""
HALF_PRECISION_FACTOR = 0.75
STATE_VOLUMES = 6
"""Full-size 4-channel fp32 volumes alive besides the network during SR sampling (x, noise, conditioning, x0...)."""
GIB = 2 ** 30


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
