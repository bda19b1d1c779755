"""The samples of each training step, drawn from generators seeded by the step (identical on every rank), and the
super-resolution stage's training condition."""

from __future__ import annotations

import torch

from ...data.preprocess import TextFeatureCache, VolumeCache, encode_volume
from ...seeding import seeded_generator
from .config import TrainConfig


def _generator(*seeds: int) -> torch.Generator:
    """The generator of the draws named by the integers ``seeds``, keyed by their tuple's repr, e.g. "(0, 5, 1)"."""
    return seeded_generator(repr(tuple(int(s) for s in seeds)))


class Batches:
    """The training samples of each step, as model-space tensors (global batch, identical on every rank)."""

    def __init__(self, config: TrainConfig, cases, volumes: VolumeCache, texts: TextFeatureCache | None):
        self.config, self.cases, self.volumes, self.texts = config, cases, volumes, texts

    def indices(self, consumed: int, count: int) -> list[int]:
        n = len(self.cases)
        out = []
        for k in range(consumed, consumed + count):
            epoch, pos = divmod(k, n)
            order = torch.randperm(n, generator=_generator(self.config.seed, epoch, 1))
            out.append(int(order[pos]))
        return out

    def sample(self, index: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        case = self.cases[index]
        arrays = self.volumes.get(case)
        if self.config.stage == "lowres":  # one of the case's reports (paraphrases), drawn per sample
            return encode_volume(arrays), self.texts.get(case, int(torch.randint(len(case.reports), (1,),
                                                                                 generator=gen)))
        f = self.config.lowres_factor
        crop = self.config.crop or list(arrays["ct"].shape)
        starts = [int(torch.randint(0, (s - c) // f + 1, (1,), generator=gen)) * f
                  for s, c in zip(arrays["ct"].shape, crop)]
        window = tuple(slice(s, s + c) for s, c in zip(starts, crop))
        return encode_volume({k: a[window] for k, a in arrays.items()}), None

    def batch(self, consumed: int, count: int, gen: torch.Generator):
        items = [self.sample(i, gen) for i in self.indices(consumed, count)]
        x = torch.stack([it[0] for it in items])
        text = torch.stack([it[1] for it in items]) if items[0][1] is not None else None
        return x, text


def sr_condition(x: torch.Tensor, factor: int, alpha: float, noise: torch.Tensor) -> torch.Tensor:
    """Official SR training conditioning: nearest x(1/f) (voxel f·i), nearest x f, then ``(1 - a) lr + a eps``."""
    low = x[..., ::factor, ::factor, ::factor]
    up = torch.nn.functional.interpolate(low, scale_factor=factor, mode="nearest")
    return (1 - alpha) * up + alpha * noise
