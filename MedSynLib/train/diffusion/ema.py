"""The exponential moving average of a network's parameters."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Exponential moving average of a network's parameters (the weights that are sampled from)."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, net: torch.nn.Module, decay: float | None = None) -> None:
        d = self.decay if decay is None else decay
        for ema_p, p in zip(self.net.parameters(), net.parameters()):
            ema_p.lerp_(p.detach(), 1 - d)
