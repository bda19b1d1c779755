"""Schedule, samplers, guidance, holding of known channels, determinism."""

import itertools

import pytest
import torch

from MedSynLib.diffusion import (
    DDIMSampler,
    DPMSolverPP2M,
    GuidedDenoiser,
    HeldChannels,
    SuperResDenoiser,
    add_noise,
    cosine_alpha_bar,
    draw_noise,
    hold_channels,
    make_sampler,
    official_time_grid,
    sample,
    upsample_lowres,
    x0_loss,
)


def test_schedule_endpoints_and_grids():
    a = cosine_alpha_bar(torch.tensor([-0.5, 0.0, 0.98, 1.0]))
    assert a[0] == pytest.approx(1 - 1e-4) and a[1] == pytest.approx(0.999845, abs=1e-6)
    assert a[2] == pytest.approx(9.71e-4, rel=1e-2) and a[3] == pytest.approx(1e-4)
    assert official_time_grid(50).tolist() == list(range(1000, -1, -20))
    assert official_time_grid(30)[0] == 990 and official_time_grid(30)[-1] == 0
    with pytest.raises(ValueError):
        official_time_grid(0)


def test_loss_is_mse_against_x0():
    x0 = torch.rand(2, 4, 2, 4, 4)
    assert x0_loss(x0, x0) == 0
    assert x0_loss(x0 + 0.5, x0) == pytest.approx(0.25)
    noisy = add_noise(x0, torch.tensor([0.0, 1.0]), torch.zeros_like(x0))
    assert torch.allclose(noisy[0], x0[0], atol=1e-3) and noisy[1].abs().max() < 0.02


@pytest.mark.parametrize("name", ["ddim", "dpmpp2m"])
def test_oracle_denoiser_is_recovered_exactly(name):
    """If the network always predicts the same clean volume, every sampler must return it."""
    target = torch.rand(1, 4, 2, 4, 4) * 2 - 1
    out = sample(lambda x, t: target, make_sampler(name, 10), draw_noise(target.shape, seed=3))
    assert torch.allclose(out, target, atol=1e-6)


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_sampler("euler", 10)


def test_guidance_scale_one_is_a_single_conditional_forward(tiny_lowres):
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 192, 16)
    with torch.no_grad():
        cond = tiny_lowres(x, torch.tensor([400.0]), text)
        null = tiny_lowres(x, torch.tensor([400.0]), tiny_lowres.null_text(1))
        g1 = GuidedDenoiser(tiny_lowres, text, guidance=1.0)(x, 400.0)
        g3 = GuidedDenoiser(tiny_lowres, text, guidance=3.0)(x, 400.0)
        g3_eps = GuidedDenoiser(tiny_lowres, text, guidance=3.0, space="eps-raw-time")(x, 400.0)
    assert torch.equal(g1, cond)
    assert torch.allclose(g3, null + 3 * (cond - null), atol=1e-5)
    assert not torch.allclose(g3, cond, atol=1e-3)
    assert torch.allclose(g3_eps, g3, atol=1e-3)  # equal in exact arithmetic


def test_seeded_sampling_is_reproducible(tiny_lowres):
    text = torch.randn(1, 192, 16)

    def run(seed):
        with torch.no_grad():
            return sample(GuidedDenoiser(tiny_lowres, text, 2.0), DDIMSampler(5), draw_noise((1, 4, 2, 8, 8), seed))

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


SUBSETS = [list(s) for r in range(5) for s in itertools.combinations(range(4), r)]


@pytest.mark.parametrize("channels", SUBSETS, ids=lambda c: "hold" + "".join(map(str, c)) or "none")
def test_every_subset_of_held_channels_comes_out_exactly(channels, tiny_lowres, tiny_superres):
    torch.manual_seed(0)
    known = torch.rand(1, 4, 2, 8, 8) * 2 - 1
    known[:, 1] = torch.randint(0, 6, (1, 2, 8, 8)) / 5 * 2 - 1  # a lobe channel
    held = hold_channels(known, channels)
    with torch.no_grad():
        for sampler in (DDIMSampler(4), DPMSolverPP2M(4)):
            out = sample(GuidedDenoiser(tiny_lowres, torch.randn(1, 192, 16), 3.0), sampler,
                         draw_noise(known.shape, seed=1), held=held)
            assert torch.equal(out[:, channels], known[:, channels])
            free = [c for c in range(4) if c not in channels]
            if free:
                assert not torch.equal(out[:, free], known[:, free])
        lowres = upsample_lowres(known[..., :2, :2], factor=4)[..., :2, :, :]
        sr_known = torch.rand(1, 4, 2, 8, 8) * 2 - 1
        out = sample(SuperResDenoiser(tiny_superres, lowres), DDIMSampler(3), draw_noise(sr_known.shape, seed=2),
                     held=hold_channels(sr_known, channels))
        assert torch.equal(out[:, channels], sr_known[:, channels])


def test_held_values_outside_model_space_are_refused():
    with pytest.raises(ValueError, match=r"model space \[-1, 1\]"):
        hold_channels(torch.full((1, 4, 1, 2, 2), 3.0), [1])
    with pytest.raises(ValueError, match="indices"):
        hold_channels(torch.zeros(1, 4, 1, 2, 2), [4])


def _region(shape, seed=0):
    """A random bool (f, h, w) region with both held and free voxels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < 0.5


@pytest.mark.parametrize("channels", [[0], [1, 3], [0, 1, 2, 3]], ids=lambda c: "hold" + "".join(map(str, c)))
@pytest.mark.parametrize("resamples", [0, 2])
def test_held_voxels_come_out_exactly_and_free_ones_are_generated(channels, resamples, tiny_lowres, tiny_superres):
    torch.manual_seed(0)
    known = torch.rand(1, 4, 2, 8, 8) * 2 - 1
    outside = _region(known.shape[2:])
    held = hold_channels(known, channels, where=outside)
    assert held.channels == channels
    with torch.no_grad():
        for sampler in (DDIMSampler(4), DPMSolverPP2M(4)):
            out = sample(GuidedDenoiser(tiny_lowres, torch.randn(1, 192, 16), 3.0), sampler,
                         draw_noise(known.shape, seed=1), held=held, resamples=resamples,
                         generator=torch.Generator().manual_seed(5))
            for c in range(4):
                if c in channels:
                    assert torch.equal(out[0, c][outside], known[0, c][outside])
                assert not torch.equal(out[0, c][~outside], known[0, c][~outside])
        lowres = upsample_lowres(known[..., :2, :2], factor=4)[..., :2, :, :]
        out = sample(SuperResDenoiser(tiny_superres, lowres), DDIMSampler(3), draw_noise(known.shape, seed=2),
                     held=held, resamples=resamples, generator=torch.Generator().manual_seed(6))
        assert torch.equal(out[:, channels][..., outside], known[:, channels][..., outside])


def test_a_full_voxel_mask_is_whole_channel_holding_bit_for_bit(tiny_lowres):
    torch.manual_seed(0)
    known = torch.rand(1, 4, 2, 8, 8) * 2 - 1
    full = torch.zeros(known.shape, dtype=torch.bool)
    full[:, [0, 2]] = True
    denoise = GuidedDenoiser(tiny_lowres, torch.randn(1, 192, 16), 3.0)
    with torch.no_grad():
        for sampler in (DDIMSampler(4), DPMSolverPP2M(4)):
            a = sample(denoise, sampler, draw_noise(known.shape, seed=1), held=hold_channels(known, [0, 2]))
            b = sample(denoise, sampler, draw_noise(known.shape, seed=1), held=HeldChannels(known, full))
            c = sample(denoise, sampler, draw_noise(known.shape, seed=1),
                       held=hold_channels(known, [0, 2], where=torch.ones(2, 8, 8, dtype=torch.bool)))
            assert torch.equal(a, b) and torch.equal(a, c)


def test_subsampled_holding_keeps_a_small_free_region_free():
    known = torch.rand(1, 4, 8, 8, 8) * 2 - 1
    outside = torch.ones(8, 8, 8, dtype=torch.bool)
    outside[5, 6, 1] = False  # one free voxel, not on the every-4th subsample
    low = hold_channels(known, [0, 3], where=outside).subsampled(4)
    assert torch.equal(low.known, known[..., ::4, ::4, ::4])
    assert low.mask.shape == (1, 4, 2, 2, 2) and low.channels == [0, 3]
    assert not low.mask[0, 0, 1, 1, 0] and low.mask[0, 0].sum() == 7 and not low.mask[0, 1].any()
    whole = hold_channels(known, [1]).subsampled(4)
    assert torch.equal(whole.known, known[..., ::4, ::4, ::4]) and whole.channels == [1]


@pytest.mark.parametrize("name", ["ddim", "dpmpp2m"])
def test_resampling_is_seeded_and_keeps_an_oracle_exact(name, tiny_lowres):
    target = torch.rand(1, 4, 2, 4, 4) * 2 - 1
    out = sample(lambda x, t: target, make_sampler(name, 6), draw_noise(target.shape, seed=3), resamples=3,
                 generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-6)
    denoise = GuidedDenoiser(tiny_lowres, torch.randn(1, 192, 16), 2.0)

    def run(resamples, seed):
        with torch.no_grad():
            return sample(denoise, make_sampler(name, 4), draw_noise((1, 4, 2, 8, 8), 7), resamples=resamples,
                          generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(2, 1), run(2, 1)) and not torch.equal(run(2, 1), run(2, 2))
    assert torch.equal(run(0, 1), run(0, 2)) and not torch.equal(run(0, 1), run(2, 1))
    with pytest.raises(ValueError, match="seeded torch.Generator"):
        sample(denoise, make_sampler(name, 2), draw_noise((1, 4, 2, 8, 8), 7), resamples=1)


def test_a_held_mask_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not broadcast"):
        HeldChannels(torch.zeros(1, 4, 2, 2, 2), torch.ones(1, 4, 3, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="differs from the volume"):
        hold_channels(torch.zeros(1, 4, 2, 2, 2), [0], where=torch.ones(2, 2, 3, dtype=torch.bool))


@pytest.mark.parametrize("steps, resamples", [(12, 0), (2, 0), (4, 2)])
def test_progress_counts_every_network_evaluation(steps, resamples):
    evaluations, seen = [], []
    target = torch.zeros(1, 4, 2, 4, 4)

    def denoise(x, t):
        evaluations.append(t)
        return target

    sample(denoise, make_sampler("dpmpp2m", steps), draw_noise(target.shape, seed=1), resamples=resamples,
           generator=torch.Generator().manual_seed(0), on_step=lambda k, n: seen.append((k + 1, n)))
    total = (resamples + 1) * steps + 1  # the official grid evaluates its end point t = 0 too
    assert len(evaluations) == total and seen == [(k, total) for k in range(1, total + 1)]
