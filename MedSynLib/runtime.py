"""Device and precision choices shared by pipelines, benchmarks and training."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .environment import PRECISION_ENV, PRECISIONS, pinned_precision

if TYPE_CHECKING:  # imported by the functions: the command line's parsers read PRECISIONS without torch
    import torch



def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the first CUDA GPU if one is usable, else the CPU; otherwise "cpu", "cuda" or "cuda:N"."""
    import torch

    from .arguments import DEVICE_PATTERN

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_PATTERN.fullmatch(name):  # torch would list its 20 device types
        raise ValueError(f"unsupported device {name!r}. Fix: use auto, cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but no CUDA GPU is usable here. Fix: use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}. Fix: use auto, cpu, cuda or cuda:N")
    return device


def cpu_runs_bf16_fast(capabilities: Mapping[str, object] | None = None) -> bool:
    """True on a CPU with AMX-BF16 matrix units, where bf16 inference was measured faster than fp32
    (docs/performance.md); without them (AVX512-BF16 alone, or none) bf16 is slower. ``capabilities``: the
    feature flags of ``torch.cpu.get_capabilities()`` (read here when not given; an older torch gives none)."""
    if capabilities is None:
        import torch

        read = getattr(torch.cpu, "get_capabilities", None)
        capabilities = read() if read is not None else {}
    return bool(capabilities.get("amx_bf16"))


def resolve_precision(precision: str, device: torch.device,
                      cpu_capabilities: Mapping[str, object] | None = None) -> torch.dtype:
    """"auto" -> $MEDSYN_PRECISION if set; else bf16 on GPUs that support it (else fp16), and on the CPU bf16 where
    it has AMX-BF16 (:func:`cpu_runs_bf16_fast`), else fp32. ``cpu_capabilities``: as for that function."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        precision = pinned_precision()
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_runs_bf16_fast(cpu_capabilities) else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning for a precision that is much slower than fp32 on ``device`` (fp16 on the CPU, asked for with
    ``--precision fp16`` or pinned by ``MEDSYN_PRECISION=fp16``), else None."""
    if device.type != "cpu":
        return None
    if precision == "fp16":
        return ("--precision fp16 on the CPU is emulated and many times slower than fp32 (15x measured on the demo "
                "model). Fix: use --precision fp32 or auto, or fp16 only on a GPU")
    if precision == "auto" and pinned_precision() == "fp16":
        return (f"{PRECISION_ENV}=fp16 on the CPU is emulated and many times slower than fp32 (15x measured on the "
                f"demo model). Fix: unset {PRECISION_ENV} or set it to fp32 or bf16, or use fp16 only on a GPU")
    return None


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for ``dtype`` on ``device`` (a no-op for fp32)."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def reuse_freed_memory() -> bool:
    """Make this process keep the memory it frees for its next allocations (glibc: large blocks from the heap, not
    from ``mmap``, and the heap never trimmed). A sampling loop frees and allocates full-size activations at every
    network evaluation; memory handed back to the system comes back as fresh pages the kernel zero-fills on first
    touch, a fifth of the CPU time of the demo's super-resolution stage (docs/performance.md). The process then
    holds its peak until it exits (a little more than its peak: the heap fragments), so the command line calls this
    for its sampling commands; a long-lived host process should not. Returns whether it applied (Linux glibc)."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # None with a C library other than glibc (musl)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
