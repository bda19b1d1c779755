"""The sampling loop, classifier-free guidance and holding known channels fixed.

A *denoiser* is any callable ``(x, t_raw) -> x0`` with x (b, 4, f, h, w) and t_raw the raw time (a float,
or a (b,) tensor of per-sample times).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .samplers import Sampler
from .schedule import TIME_SCALE, cosine_alpha_bar, eps_from_x0, x0_from_eps

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
StepCallback = Callable[[int, int], None]

GUIDANCE_SPACES = ("x0", "eps-raw-time")


class GuidedDenoiser:
    """Classifier-free guidance around a text-conditioned network ``net(x, time, text)`` with ``null_text(b)``.

    scale 1: one forward with the text (official inference). scale s != 1: one forward on the doubled batch
    ``[x; x]`` with ``[text; null]`` and ``x0 = x0_null + s (x0_text - x0_null)`` (official x0-space guidance).
    ``space="eps-raw-time"`` reproduces ``conditional_generalization.py``: the combination is done in eps space
    with a(.) evaluated at the raw time (an official quirk; equal in exact arithmetic, noisier in float32).
    """

    def __init__(self, net, text: torch.Tensor, scale: float = 1.0, space: str = "x0"):
        if space not in GUIDANCE_SPACES:
            raise ValueError(f"guidance space must be one of {GUIDANCE_SPACES}, got {space!r}")
        self.net, self.text, self.scale, self.space = net, text, float(scale), space

    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        time = torch.as_tensor(t_raw, dtype=torch.float32, device=x.device).expand(b).contiguous()
        if self.scale == 1.0:
            return self.net(x, time, self.text)
        text = torch.cat((self.text, self.net.null_text(b).to(self.text.dtype)))
        x0_text, x0_null = self.net(torch.cat((x, x)), torch.cat((time, time)), text).chunk(2)
        if self.space == "x0":
            return x0_null + self.scale * (x0_text - x0_null)
        a = cosine_alpha_bar(time)
        eps_text, eps_null = eps_from_x0(x, x0_text, a), eps_from_x0(x, x0_null, a)
        return x0_from_eps(x, eps_null + self.scale * (eps_text - eps_null), a)


class SuperResDenoiser:
    """The super-resolution network as a denoiser: ``net(x, t, lowres_up)`` with a fixed conditioning volume.

    lowres_up: (b, 4, F, H, W) in [-1, 1], the low-res result upsampled (see :func:`upsample_lowres`).
    """

    def __init__(self, net, lowres_up: torch.Tensor):
        self.net, self.lowres_up = net, lowres_up

    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor) -> torch.Tensor:
        time = torch.as_tensor(t_raw, dtype=torch.float32, device=x.device).expand(x.shape[0]).contiguous()
        return self.net(x, time, self.lowres_up)


def upsample_lowres(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Official SR conditioning: nearest-neighbour upsampling by ``factor`` on all three axes, (b, c, f, h, w)."""
    return torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")


class HeldChannels:
    """Channels known in advance, held fixed: their x0 prediction is replaced by the known clean value at every step.

    known: (b, 4, f, h, w) in model space [-1, 1] (other channels are ignored); channels: indices to hold
    (0 CT, 1 lobes, 2 airway, 3 vessels). Holding lobes/airway/vessels = anatomy-conditioned generation;
    holding the CT = segmentation. The held channels of the result equal ``known`` exactly.
    """

    def __init__(self, known: torch.Tensor, channels: Sequence[int]):
        channels = sorted(set(int(c) for c in channels))
        if any(c < 0 or c >= known.shape[1] for c in channels):
            raise ValueError(f"held channel indices must be in 0..{known.shape[1] - 1}, got {channels}")
        if known.min() < -1 or known.max() > 1:
            raise ValueError("held channel values must lie in model space [-1, 1]; encode them with MedSynLib.io.codecs")
        self.known, self.channels = known, channels

    def apply(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.channels:
            return x0
        x0 = x0.clone()
        x0[:, self.channels] = self.known[:, self.channels].to(x0.dtype)
        return x0


def hold_channels(known: torch.Tensor | None, channels: Sequence[int]) -> HeldChannels | None:
    """A :class:`HeldChannels`, or None when nothing is held."""
    return HeldChannels(known, channels) if known is not None and len(channels) else None


def sample(
    denoise: Denoiser,
    sampler: Sampler,
    noise: torch.Tensor,
    held: HeldChannels | None = None,
    on_step: StepCallback | None = None,
    record: list | None = None,
) -> torch.Tensor:
    """Run the reverse process from ``noise`` (the only random input) and return x in model space [-1, 1].

    Each step: ``x0 = clamp(hold(denoise(x, t)), -1, 1)``, then ``x = sampler.step(x0, x, i)``.
    ``on_step(i, n)`` is called after each step; ``record`` (if given) receives ``(t, x0_raw, x)`` per step.
    """
    x = noise
    n = len(sampler.timesteps)
    for i, t in enumerate(sampler.timesteps.tolist()):
        x0_raw = denoise(x, t)
        x0 = held.apply(x0_raw) if held is not None else x0_raw
        x = sampler.step(x0.clamp(-1.0, 1.0), x, i)
        if record is not None:
            record.append((t, x0_raw, x))
        if on_step is not None:
            on_step(i, n)
    return x.clamp(-1.0, 1.0)


def draw_noise(shape: Sequence[int], seed: int | None = None, generator: torch.Generator | None = None,
               device=None, dtype=torch.float32) -> torch.Tensor:
    """Initial noise x_T ~ N(0, I), drawn on the CPU from ``seed`` (or ``generator``; a fresh random seed if neither)
    so that runs are reproducible across devices, then moved to ``device``."""
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


__all__ = ["GuidedDenoiser", "SuperResDenoiser", "upsample_lowres", "HeldChannels", "hold_channels", "sample", "draw_noise", "TIME_SCALE"]
