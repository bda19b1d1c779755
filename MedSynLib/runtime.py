"""Device and precision choices shared by pipelines, benchmarks and training."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the functions: the command line's parsers read PRECISIONS without torch
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the first CUDA GPU if one is usable, else the CPU; otherwise "cpu", "cuda" or "cuda:N"."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but no CUDA GPU is usable here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 on GPUs that support it (else fp16), fp32 on the CPU (bf16 is slower there for inference)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning for a precision that is much slower than fp32 on ``device`` (fp16 on the CPU), else None."""
    if precision == "fp16" and device.type == "cpu":
        return ("--precision fp16 on the CPU is emulated and many times slower than fp32 (15x measured on the demo "
                "model). Fix: use --precision fp32 (the CPU default), or fp16 only on a GPU")
    return None


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for ``dtype`` on ``device`` (a no-op for fp32)."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
