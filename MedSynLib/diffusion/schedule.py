"""Continuous-time cosine schedule and the x0-prediction objective (as the official code).

Time ``t`` is normalised to [0, 1]; networks are fed the raw time ``1000 t`` (:data:`TIME_SCALE`).
``a(t)`` ("alpha bar") is the cumulative signal level: ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TIME_SCALE = 1000.0
"""Raw network time = TIME_SCALE * normalised time."""

ALPHA_BAR_MIN = 1e-4
ALPHA_BAR_MAX = 1.0 - 1e-4


def cosine_alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """``a(t) = clamp(cos(((t + 0.008) / 1.008) pi / 2)^2, 1e-4, 1 - 1e-4)`` for t >= 0, and 1 (clamped) for t < 0.

    t: normalised time, any shape; computed in float32 as the official code does.
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    a = torch.where(t >= 0, torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2, torch.ones_like(t))
    return a.clamp(ALPHA_BAR_MIN, ALPHA_BAR_MAX)


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(a, dtype=torch.float32, device=like.device)
    return a.reshape(a.shape + (1,) * (like.dim() - a.dim())) if a.dim() else a


def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process at normalised time t (scalar or (b,)): ``sqrt(a) x0 + sqrt(1 - a) noise``."""
    a = _bcast(cosine_alpha_bar(t), x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The noise implied by a clean estimate: ``(x_t - sqrt(a) x0) / sqrt(1 - a)``."""
    a = _bcast(alpha_bar, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`eps_from_x0`: ``(x_t - sqrt(1 - a) eps) / sqrt(a)``."""
    a = _bcast(alpha_bar, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x0_loss(predicted_x0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The MedSyn objective: plain MSE against the clean volume, averaged over all elements."""
    return F.mse_loss(predicted_x0.float(), x0.float())
