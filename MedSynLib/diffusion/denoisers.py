"""Denoisers: what the sampling loop (:func:`~.sampling.sample`) evaluates at every step.

A denoiser maps the loop's state x at raw time t_raw (a float, or a (b,) tensor of per-sample times) to its x0
prediction, both in the denoiser's :class:`StateLayout`: the volume (b, 4, f, h, w) itself, or the volume folded
into a network's channels (:class:`FoldedLayout`). The loop lays its state out once, runs every step in that
layout (element-wise sampler arithmetic and holding give the same numbers in any layout) and lays it back once;
it knows nothing else of the network. A plain function ``(x, t_raw) -> x0`` is a denoiser on the volume.

Tiling (:class:`TiledSuperRes`): the SR network mixes slices only through its 3×3×3 convolutions
(``init_conv0`` and the 3D ResNet blocks) and through GroupNorm statistics; attention is per slice and f is
never resampled. So the x0 prediction can be made chunk by chunk of overlapping slices and blended linearly
across the overlaps; peak activation memory then scales with the chunk length instead of the volume depth. The
result is not bit-identical (GroupNorm statistics of a chunk differ from those of the volume, and zero padding
replaces the neighbours at a chunk's cut edge, which the blending weights fade out); docs/cli.md states the
measured difference. :mod:`MedSynLib.pipelines.memory` picks the tile count.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from ..models.unet import depth_to_space, space_to_depth
from .schedule import cosine_alpha_bar, eps_from_x0, x0_from_eps

if TYPE_CHECKING:
    from .sampling import HeldChannels

GUIDANCE_SPACES = ("x0", "eps-raw-time")


class StateLayout:
    """How a denoiser lays out the sampling state: here the volume (b, 4, f, h, w) as it is."""

    def to_state(self, volume: torch.Tensor) -> torch.Tensor:
        """The loop's own state (a new tensor: the loop updates it in place)."""
        return volume.clone()

    def to_volume(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def held(self, held: HeldChannels) -> HeldChannels:
        """The held voxels in this layout."""
        return held


VOLUME = StateLayout()


class FoldedLayout(StateLayout):
    """The volume folded by :func:`~MedSynLib.models.unet.space_to_depth` with ``patch`` p:
    (b, 4 p³, f/p, h/p, w/p), the layout a folding network's layers work in."""

    def __init__(self, patch: int):
        if patch < 2:
            raise ValueError(f"a folded layout folds blocks of 2 or more voxels, got {patch} (use VOLUME)")
        self.patch = patch

    def to_state(self, volume: torch.Tensor) -> torch.Tensor:
        return space_to_depth(volume, self.patch)

    def to_volume(self, state: torch.Tensor) -> torch.Tensor:
        return depth_to_space(state, self.patch)

    def held(self, held: HeldChannels) -> HeldChannels:
        return held.folded(self.patch)


def network_layout(net) -> StateLayout:
    """The layout ``net`` works in: folded by its ``config.patch``, or the volume for a patch of 1."""
    return FoldedLayout(net.config.patch) if net.config.patch > 1 else VOLUME


class Denoiser(ABC):
    """A denoiser with a layout: ``denoiser(x, t_raw) -> x0``, both in :attr:`layout`."""

    layout: StateLayout = VOLUME

    @abstractmethod
    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor) -> torch.Tensor:
        """The x0 prediction for state ``x`` at raw time ``t_raw``, in :attr:`layout`."""


def layout_of(denoise) -> StateLayout:
    """The layout ``denoise`` works in: a :class:`Denoiser`'s own, the volume for a plain function."""
    return denoise.layout if isinstance(denoise, Denoiser) else VOLUME


class GuidedDenoiser(Denoiser):
    """Classifier-free guidance around a text-conditioned network ``net(x, time, text)`` with ``null_text(b)``.

    guidance 1: one forward with the text (official inference). guidance s != 1: one forward on the doubled batch
    ``[x; x]`` with ``[text; null]`` and ``x0 = x0_null + s (x0_text - x0_null)`` (official x0-space guidance).
    ``space="eps-raw-time"`` reproduces ``conditional_generalization.py``: the combination is done in eps space
    with a(.) evaluated at the raw time (an official quirk; equal in exact arithmetic, noisier in float32).
    """

    def __init__(self, net, text: torch.Tensor, guidance: float, space: str = "x0"):
        if space not in GUIDANCE_SPACES:
            raise ValueError(f"guidance space must be one of {GUIDANCE_SPACES}, got {space!r}")
        self.net, self.text, self.guidance, self.space = net, text, float(guidance), space

    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        time = torch.as_tensor(t_raw, dtype=torch.float32, device=x.device).expand(b).contiguous()
        if self.guidance == 1.0:
            return self.net(x, time, self.text)
        text = torch.cat((self.text, self.net.null_text(b).to(self.text.dtype)))
        x0_text, x0_null = self.net(torch.cat((x, x)), torch.cat((time, time)), text).chunk(2)
        if self.space == "x0":
            return x0_null + self.guidance * (x0_text - x0_null)
        a = cosine_alpha_bar(time)
        eps_text, eps_null = eps_from_x0(x, x0_text, a), eps_from_x0(x, x0_null, a)
        return x0_from_eps(x, eps_null + self.guidance * (eps_text - eps_null), a)


class SuperResDenoiser(Denoiser):
    """The super-resolution network as a denoiser in its own layout (:func:`network_layout`; with ``patch`` p,
    see :meth:`~MedSynLib.models.unet.SuperResUNet.fold`): folded x (b, 4 p³, F/p, H/p, W/p) -> folded x0.

    The conditioning is folded once, into the first half of the network's input, which each call fills with x:
    no full-size volume is made per step but the network's own, and no copy of the conditioning is kept beside
    that input.
    lowres_up: (b, 4, F, H, W) in [-1, 1], the low-res result upsampled (see :func:`upsample_lowres`).
    ``f_range`` (a slice of the folded f axis) evaluates one chunk (:class:`TiledSuperRes`).
    """

    def __init__(self, net, lowres_up: torch.Tensor):
        self.net, self.layout = net, network_layout(net)
        condition = net.fold(lowres_up)
        self._held = condition.shape[1]  # the input's channels that hold the conditioning
        self._input = torch.cat((condition, torch.empty_like(condition)), dim=1)

    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor, f_range: slice = slice(None)) -> torch.Tensor:
        time = torch.as_tensor(t_raw, dtype=torch.float32, device=x.device).expand(x.shape[0]).contiguous()
        if self._input.dtype != x.dtype:
            self._input = self._input.to(x.dtype)
        self._input[:, self._held:, f_range].copy_(x)
        return self.net.forward_folded(self._input[:, :, f_range], time)


def upsample_lowres(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Official SR conditioning: nearest-neighbour upsampling by ``factor`` on all three axes, (b, c, f, h, w)."""
    return torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")


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


class TiledSuperRes(Denoiser):
    """The SR network as a denoiser in its own layout (as :class:`SuperResDenoiser`), evaluated over ``tiles``
    overlapping chunks along f.

    lowres_up: (b, 4, f, h, w); ``overlap`` defaults to :func:`default_overlap`. The chunks (cut on multiples of
    the network's ``patch``) are evaluated and blended on its folded grid. With one tile this is exactly the
    :class:`SuperResDenoiser`.
    """

    def __init__(self, net, lowres_up: torch.Tensor, tiles: int = 1, overlap: int | None = None):
        self.whole = SuperResDenoiser(net, lowres_up)
        self.layout = self.whole.layout
        p = net.config.patch
        self.overlap = default_overlap(net.config) if overlap is None else overlap
        self.bounds = [(a // p, b // p) for a, b in tile_bounds(lowres_up.shape[2], tiles, self.overlap, p)]
        self.weights = [w.to(lowres_up.device) for w in blend_weights(self.bounds)]

    def __call__(self, x: torch.Tensor, t_raw: float | torch.Tensor) -> torch.Tensor:
        if len(self.bounds) == 1:
            return self.whole(x, t_raw)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for (a, b), w in zip(self.bounds, self.weights):
            part = self.whole(x[:, :, a:b], t_raw, slice(a, b))
            out[:, :, a:b] += part.float() * w[:, None, None]
        return out
