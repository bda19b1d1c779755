"""The sampling loop in the network's folded layout, updating its state in place, gives exactly the numbers of the
straightforward loop: unfolded volumes, out-of-place sampler arithmetic (written out here), a copy per operation.

Compared with ``torch.equal`` in fp32 in one process, so the check does not depend on the CPU it runs on.
"""

import pytest
import torch

from MedSynLib.diffusion import (Denoiser, GuidedDenoiser, SuperResDenoiser, TiledSuperRes, hold_channels, make_sampler,
                                 sample)
from MedSynLib.diffusion.denoisers import FoldedLayout
from MedSynLib.models import LowResUNet, SuperResUNet
from MedSynLib.models.unet import space_to_depth

from conftest import TINY_LOWRES, TINY_SUPERRES


def _plain_step(sampler, x0, x, i, history):
    """The samplers' update out of place: DDIM, and DPM-Solver++(2M) with the previous x0 in ``history``."""
    if i == len(sampler.timesteps) - 1:
        return x0
    a, a_next = sampler.alpha_bar(i), sampler.alpha_bar(i + 1)
    if sampler.name == "ddim":
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    lam = lambda j: 0.5 * (torch.log(sampler.alpha_bar(j)) - torch.log1p(-sampler.alpha_bar(j)))  # noqa: E731
    h = lam(i + 1) - lam(i)
    d = x0
    if history:
        r = (lam(i) - lam(i - 1)) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * history[-1]
    history.append(x0)
    return ((1 - a_next) / (1 - a)).sqrt() * x - a_next.sqrt() * torch.expm1(-h) * d


def _plain_sample(forward, sampler, noise, held):
    x, history = noise, []
    for i, t in enumerate(sampler.timesteps.tolist()):
        x0 = forward(x, torch.full((x.shape[0],), t))
        x0 = held.apply(x0) if held is not None else x0
        x = _plain_step(sampler, x0.clamp(-1.0, 1.0), x, i, history)
    return x.clamp(-1.0, 1.0)


@pytest.mark.parametrize("sampler_name", ["ddim", "dpmpp2m"])
@pytest.mark.parametrize("patch", [1, 2])
@pytest.mark.parametrize("channels", [(), (1, 3)])
def test_folded_superres_loop_is_bit_identical_to_the_plain_one(sampler_name, patch, channels):
    torch.manual_seed(5)
    net = SuperResUNet(TINY_SUPERRES.replace(patch=patch)).eval()
    noise = torch.randn(1, 4, 8, 16, 16)
    lowres_up = torch.rand(1, 4, 8, 16, 16) * 2 - 1
    held = hold_channels(torch.rand(1, 4, 8, 16, 16) * 2 - 1, channels)
    with torch.no_grad():
        expected = _plain_sample(lambda x, t: net(x, t, lowres_up), make_sampler(sampler_name, 3), noise, held)
        for denoise in (SuperResDenoiser(net, lowres_up), TiledSuperRes(net, lowres_up, tiles=1)):
            kept = noise.clone()
            assert torch.equal(sample(denoise, make_sampler(sampler_name, 3), noise, held), expected)
            assert torch.equal(noise, kept)  # the caller's noise is not the loop's state


@pytest.mark.parametrize("sampler_name", ["ddim", "dpmpp2m"])
def test_in_place_lowres_loop_with_guidance_is_bit_identical_to_the_plain_one(sampler_name):
    torch.manual_seed(6)
    net = LowResUNet(TINY_LOWRES).eval()
    text, noise = torch.randn(1, 192, 16), torch.randn(1, 4, 4, 8, 8)
    denoise = GuidedDenoiser(net, text, guidance=2.0)
    with torch.no_grad():
        expected = _plain_sample(lambda x, t: denoise(x, t[0].item()), make_sampler(sampler_name, 4), noise, None)
        assert torch.equal(sample(denoise, make_sampler(sampler_name, 4), noise), expected)


@pytest.mark.parametrize("sampler_name", ["ddim", "dpmpp2m"])
def test_held_voxels_fold_like_the_volume(sampler_name):
    """A voxel mask (a held region of two channels) gives the plain loop's numbers in the folded loop too."""
    torch.manual_seed(5)
    net = SuperResUNet(TINY_SUPERRES.replace(patch=2)).eval()
    noise, lowres_up = torch.randn(1, 4, 8, 16, 16), torch.rand(1, 4, 8, 16, 16) * 2 - 1
    where = torch.zeros(8, 16, 16, dtype=torch.bool)
    where[2:6, 3:11, 5:9] = True
    held = hold_channels(torch.rand(1, 4, 8, 16, 16) * 2 - 1, (0, 2), where)
    with torch.no_grad():
        expected = _plain_sample(lambda x, t: net(x, t, lowres_up), make_sampler(sampler_name, 3), noise, held)
        assert torch.equal(sample(SuperResDenoiser(net, lowres_up), make_sampler(sampler_name, 3), noise, held),
                           expected)


class _FoldedOracle(Denoiser):
    """Any denoiser can say which layout it works in: here one that always predicts ``target``, folded by 2."""

    layout = FoldedLayout(2)

    def __init__(self, target):
        self.target = space_to_depth(target, 2)
        self.shapes = []

    def __call__(self, x, t_raw):
        self.shapes.append(tuple(x.shape))
        return self.target.clone()


@pytest.mark.parametrize("sampler_name", ["ddim", "dpmpp2m"])
def test_the_loop_runs_in_the_layout_the_denoiser_names(sampler_name):
    """The loop asks the denoiser for its layout, nothing else of its network: the state and the held voxels are
    laid out its way, and the result comes back as a volume."""
    target = torch.rand(1, 4, 4, 8, 8) * 2 - 1
    known = torch.rand(1, 4, 4, 8, 8) * 2 - 1
    oracle = _FoldedOracle(target)
    out = sample(oracle, make_sampler(sampler_name, 4), torch.randn(1, 4, 4, 8, 8), hold_channels(known, (2,)))
    assert set(oracle.shapes) == {(1, 32, 2, 4, 4)}
    assert torch.allclose(out[:, [0, 1, 3]], target[:, [0, 1, 3]], atol=1e-6)
    assert torch.equal(out[:, 2], known[:, 2])
