"""The sampling loop and holding known voxels fixed.

The loop runs a denoiser (:mod:`.denoisers`): ``(x, t_raw) -> x0`` in the denoiser's layout, t_raw the raw time
(a float, or a (b,) tensor of per-sample times).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..models.unet import space_to_depth
from .denoisers import Denoiser, layout_of
from .samplers import Sampler
from .schedule import TIME_SCALE

StepCallback = Callable[[int, int], None]

def hold(x0: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x0`` with the voxels where ``mask`` is True replaced by ``known``, in place (values copied bit for bit, no
    full-size volume allocated per step); returns ``x0``.

    Element-wise, so it applies unchanged to any layout in which ``x0``, ``known`` and ``mask`` are rearranged
    alike (e.g. folded into channels); ``mask`` may broadcast against ``x0``.
    """
    return torch.where(mask, known.to(x0.dtype), x0, out=x0)


class HeldChannels:
    """Voxels known in advance, held fixed: their x0 prediction is replaced by the known clean value at every step.

    known: (b, 4, f, h, w) in model space [-1, 1]; mask: bool, broadcastable to ``known``, True where a voxel of a
    channel is held (0 CT, 1 lobes, 2 airway, 3 vessels). Whole-channel holding is a mask that is True on whole
    channels (anatomy-conditioned generation holds lobes/airway/vessels, segmentation the CT); editing a region
    holds every channel outside it. The held voxels of the result equal ``known`` exactly.
    """

    def __init__(self, known: torch.Tensor, mask: torch.Tensor):
        mask = torch.as_tensor(mask, dtype=torch.bool, device=known.device)
        if mask.dim() != known.dim() or any(m not in (1, k) for m, k in zip(mask.shape, known.shape)):
            raise ValueError(f"held-voxel mask of shape {tuple(mask.shape)} does not broadcast to the known volume "
                             f"{tuple(known.shape)}")
        values = known[mask.expand(known.shape)]
        if values.numel() and (values.min() < -1 or values.max() > 1):
            raise ValueError("held channel values must lie in model space [-1, 1]; encode them with MedSynLib.io.codecs")
        self.known, self.mask = known, mask

    @property
    def channels(self) -> list[int]:
        """Channels with at least one held voxel."""
        return [c for c in range(self.known.shape[1]) if self.mask[:, min(c, self.mask.shape[1] - 1)].any()]

    def apply(self, x0: torch.Tensor) -> torch.Tensor:
        return hold(x0, self.known, self.mask)

    def folded(self, patch: int) -> HeldChannels:
        """The same holding in a network's folded layout (:func:`~MedSynLib.models.unet.space_to_depth`): known
        values and mask fold alike (a whole-channel mask becomes p³ whole channels)."""
        mask = self.mask.expand(self.mask.shape[0], self.known.shape[1], *self.mask.shape[2:])
        if all(n == 1 for n in mask.shape[2:]):
            mask = mask.repeat_interleave(patch ** 3, dim=1)
        else:
            mask = space_to_depth(mask.expand(self.known.shape[0], *mask.shape[1:]), patch)
        return HeldChannels(space_to_depth(self.known, patch), mask)

    def subsampled(self, factor: int) -> HeldChannels:
        """The same holding on a grid ``factor`` times coarser: known values by the nearest (every ``factor``-th)
        voxel, as the training data's low-res volumes were made; a coarse voxel is held only where its whole
        ``factor``³ block is held, so a free region stays free however small it is."""
        known = self.known[..., ::factor, ::factor, ::factor]
        if all(n == 1 for n in self.mask.shape[2:]):
            return HeldChannels(known, self.mask)
        b, c, *spatial = self.mask.shape
        pad = [n for s in reversed(spatial) for n in (0, -s % factor)]
        mask = torch.nn.functional.pad(self.mask, pad, value=True) if any(pad) else self.mask
        blocks = mask.reshape(b, c, *[n for s in mask.shape[2:] for n in (s // factor, factor)])
        return HeldChannels(known, blocks.all(7).all(5).all(3))


def hold_channels(known: torch.Tensor | None, channels: Sequence[int],
                  where: torch.Tensor | None = None) -> HeldChannels | None:
    """Hold ``channels`` of ``known`` (b, 4, f, h, w): everywhere, or only where the bool (f, h, w) mask ``where``
    is True. None when nothing is held."""
    if known is None or not len(channels):
        return None
    channels = sorted(set(int(c) for c in channels))
    if any(c < 0 or c >= known.shape[1] for c in channels):
        raise ValueError(f"held channel indices must be in 0..{known.shape[1] - 1}, got {channels}")
    on = torch.zeros((1, known.shape[1], 1, 1, 1), dtype=torch.bool, device=known.device)
    on[:, channels] = True
    if where is not None:
        where = torch.as_tensor(where, dtype=torch.bool, device=known.device)
        if tuple(where.shape) != tuple(known.shape[2:]):
            raise ValueError(f"held region of shape {tuple(where.shape)} differs from the volume {tuple(known.shape[2:])}")
        on = on & where[None, None]
    return HeldChannels(known, on)


def renoise(x: torch.Tensor, alpha_bar_from: torch.Tensor, alpha_bar_to: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """A jump back to a noisier level (RePaint): ``sqrt(a_to / a_from) x + sqrt(1 - a_to / a_from) z``, z ~ N(0, I)
    drawn on the CPU from ``generator`` (reproducible across devices)."""
    ratio = (alpha_bar_to / alpha_bar_from).to(torch.float32)
    z = draw_noise(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return ratio.sqrt() * x + (1 - ratio).sqrt() * z


def sample(
    denoise: Denoiser | Callable[[torch.Tensor, float], torch.Tensor],
    sampler: Sampler,
    noise: torch.Tensor,
    held: HeldChannels | None = None,
    on_step: StepCallback | None = None,
    record: list | None = None,
    resamples: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the reverse process from ``noise`` and return x in model space [-1, 1].

    The state is laid out once in the denoiser's layout (:func:`~.denoisers.layout_of`: a network's folded
    layout saves a full-size copy per step) and laid back once at the end; the held voxels are laid out alike.
    Each step: ``x0 = clamp(hold(denoise(x, t)), -1, 1)``, then ``x = sampler.step(x0, x, i)``. With
    ``resamples`` r > 0 (RePaint), every step but the last is then repeated r times from the state jumped back to
    its own noise level (:func:`renoise`, noise from ``generator``), so that held and generated voxels settle on
    each other; r + 1 network evaluations per step. Without resampling ``noise`` is the only random input.
    ``on_step(k, n)`` is called after each network evaluation k (from 0) of the run's n: ``steps + 1`` on the
    official grid (its end point t = 0 is evaluated too), ``(resamples + 1) * steps + 1`` with resampling.
    ``record`` (if given) receives ``(t, x0_raw, x)`` per step, in the denoiser's layout.
    """
    if resamples < 0:
        raise ValueError(f"resamples must be 0 or more, got {resamples}")
    if resamples and generator is None:
        raise ValueError("resampling draws noise: pass a seeded torch.Generator")
    layout = layout_of(denoise)
    x = layout.to_state(noise)  # the loop's own state, updated in place
    if held is not None:
        held = layout.held(held)
    n = len(sampler.timesteps)
    evaluations, done = n + resamples * (n - 1), 0
    for i, t in enumerate(sampler.timesteps.tolist()):
        for attempt in range(1 + (resamples if i < n - 1 else 0)):
            if attempt:
                x = renoise(x_next, sampler.alpha_bar(i + 1), sampler.alpha_bar(i), generator)
            x0 = denoise(x, t)
            x0_raw = x0.clone() if record is not None else None
            x0 = held.apply(x0) if held is not None else x0
            x_next = sampler.step(x0.clamp_(-1.0, 1.0), x, i)
            if on_step is not None:
                on_step(done, evaluations)
            done += 1
        x = x_next
        if record is not None:
            record.append((t, x0_raw, x.clone()))
    return layout.to_volume(x.clamp_(-1.0, 1.0))


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


__all__ = ["hold", "HeldChannels", "hold_channels", "renoise", "sample", "draw_noise", "TIME_SCALE"]
