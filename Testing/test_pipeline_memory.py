"""Memory options of the pipeline: SR tiling along f, the tile planner, and the out-of-memory answer of the CLI."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from MedSynLib.cli import main
from MedSynLib.models import SuperResUNet, UNetConfig
from MedSynLib.models.unet import OFFICIAL_SUPERRES
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.modelstore.store import load_stage
from MedSynLib.pipelines import generate
from MedSynLib.diffusion.denoisers import TiledSuperRes, blend_weights, default_overlap, halo_slices, tile_bounds
from MedSynLib.pipelines.memory import GIB, plan_sr_tiles, sr_peak_bytes
from MedSynLib.run_settings import RunSettings

from tiny_model import build_tiny_model

REPORT = "FINDINGS: Large bilateral pleural effusions."
# x0 of 2 tiles vs none, random 2-level SR network below (f = 48, 16 x 16, t = 500): measured mean 0.014-0.015,
# max 0.25-0.26 in model units ([-1, 1] spans 1624 HU) for seeds 1 and 2. A 4-level network (the official depth;
# f = 64, 32 x 32) gave mean 0.0042, max 0.13 (README).
TILED_MEAN_TOL, TILED_MAX_TOL = 0.03, 0.4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_tiles_cover_the_volume_and_weights_blend_linearly():
    bounds = tile_bounds(256, 4, 42)
    assert bounds[0][0] == 0 and bounds[-1][1] == 256
    assert all(b0[1] - b1[0] >= 42 for b0, b1 in zip(bounds, bounds[1:]))
    weights = blend_weights(bounds)
    total = torch.zeros(256)
    for (a, b), w in zip(bounds, weights):
        total[a:b] += w
    torch.testing.assert_close(total, torch.ones(256))
    ramp = weights[1][: bounds[0][1] - bounds[1][0]]
    assert torch.all(ramp[1:] > ramp[:-1]) and torch.allclose(ramp.diff(), ramp.diff()[0].expand_as(ramp.diff()))
    assert tile_bounds(32, 1, 26) == [(0, 32)]
    with pytest.raises(ValueError, match="fewer tiles"):
        tile_bounds(40, 2, 42)


def test_tiled_superres_matches_untiled_within_tolerance():
    torch.manual_seed(1)
    net = SuperResUNet(UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=1, mid_depth=1)).eval()
    assert halo_slices(net.config) == 13 and default_overlap(net.config) == 26
    assert halo_slices(OFFICIAL_SUPERRES) == 21
    g = torch.Generator().manual_seed(0)
    lowres_up = torch.rand(1, 4, 48, 16, 16, generator=g) * 2 - 1
    x = torch.randn(1, 4, 48, 16, 16, generator=g)
    with torch.no_grad():
        whole = TiledSuperRes(net, lowres_up, 1)(x, 500.0)
        tiled = TiledSuperRes(net, lowres_up, 2)
        diff = (tiled(x, 500.0) - whole).abs()
    assert len(tiled.bounds) == 2
    assert diff.mean() < TILED_MEAN_TOL and diff.max() < TILED_MAX_TOL, (diff.mean(), diff.max())


DEMO = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "medsyn-demo"


def test_tiles_keep_the_networks_folded_blocks_whole():
    for tiles in range(2, 6):
        bounds = tile_bounds(256, tiles, 112, multiple=4)
        assert bounds[0][0] == 0 and bounds[-1][1] == 256
        assert all(a % 4 == 0 and b % 4 == 0 for a, b in bounds)
        assert all(b0[1] - b1[0] >= 112 for b0, b1 in zip(bounds, bounds[1:]))


def test_the_packaged_model_tiles_at_2_3_and_4_tiles():
    """The packaged SR network (patch 4: f in blocks of 4, h and w multiples of 16) over its full 256-slice depth;
    in-plane 64 x 64 instead of 256 x 256 to keep the test cheap (tiling only cuts along f). At 256³ the measured
    difference of 2 tiles was mean 0.0011, max 0.031 in model units."""
    net = load_stage(DEMO / "superres")
    g = torch.Generator().manual_seed(0)
    lowres_up = torch.rand(1, 4, 256, 64, 64, generator=g) * 2 - 1
    x = torch.randn(1, 4, 256, 64, 64, generator=g)
    with torch.no_grad():
        whole = TiledSuperRes(net, lowres_up, 1)(net.fold(x), 500.0)  # denoisers work in the folded layout
        for tiles in (2, 3, 4):
            tiled = TiledSuperRes(net, lowres_up, tiles)
            diff = (tiled(net.fold(x), 500.0) - whole).abs()
            assert len(tiled.bounds) == tiles
            assert diff.mean() < TILED_MEAN_TOL and diff.max() < TILED_MAX_TOL, (tiles, diff.mean(), diff.max())
    assert halo_slices(net.config) == 56 and default_overlap(net.config) == 112  # 14 folded slices of 4


def test_generate_with_forced_sr_tiles(tiny_model):
    model = load_model(tiny_model)
    whole = generate(REPORT, model, settings=RunSettings(seed=2, steps_lowres=1, steps_sr=1, max_gpu_memory_gb=1.0))
    tiled = generate(REPORT, model, settings=RunSettings(seed=2, steps_lowres=1, steps_sr=1, sr_tiles=2))
    assert whole.metadata["sr_tiles"] == 1 and tiled.metadata["sr_tiles"] == 2  # 1: the planner, within 1 GiB
    assert np.array_equal(whole.lowres, tiled.lowres)
    hu = np.abs(whole.ct_hu.astype(np.float32) - tiled.ct_hu)
    assert hu.mean() < 100, hu.mean()  # random tiny weights, 2 SR evaluations
    with pytest.raises(ValueError, match="sr-tiles"):
        generate(REPORT, model, settings=RunSettings(seed=2, sr_tiles=0))


def test_planner_uses_the_documented_estimate():
    shape = (256, 256, 256)
    fp32 = sr_peak_bytes(OFFICIAL_SUPERRES, shape, torch.float32)
    assert 26 * GIB < fp32 < 28 * GIB  # 7.3 * 56 * 256 * 256 * 4 bytes per slice (25.5 GiB) + sampling state
    assert sr_peak_bytes(OFFICIAL_SUPERRES, shape, torch.bfloat16) < fp32
    assert plan_sr_tiles(OFFICIAL_SUPERRES, shape, torch.float32, 80 * GIB) == 1
    tiles = [plan_sr_tiles(OFFICIAL_SUPERRES, shape, torch.bfloat16, gb * GIB, 3 * GIB) for gb in (40, 20, 14, 11)]
    assert tiles == sorted(tiles) and tiles[0] == 1 and tiles[-1] > 2
    with pytest.raises(ValueError, match="--max-gpu-memory"):
        plan_sr_tiles(OFFICIAL_SUPERRES, shape, torch.float32, 4 * GIB, 3 * GIB)
    smallest = plan_sr_tiles(OFFICIAL_SUPERRES, shape, torch.float32, 4 * GIB, 3 * GIB, strict=False)
    assert smallest == 5 and tile_bounds(256, 5, 42)[0] == (0, 85)  # the automatic CUDA budget still tries


def test_max_gpu_memory_budget_is_checked_on_any_device(tiny_model):
    model = load_model(tiny_model)
    with pytest.raises(ValueError, match="raise --max-gpu-memory"):  # 32 slices are too few to tile
        generate(REPORT, model, settings=RunSettings(seed=0, max_gpu_memory_gb=1e-3))
    with pytest.raises(ValueError, match="must be a positive number"):
        generate(REPORT, model, settings=RunSettings(seed=0, max_gpu_memory_gb=0))


def test_cuda_out_of_memory_is_answered_with_exit_code_3(tiny_model, tmp_path, monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(sys.modules["MedSynLib.pipelines.generation"], "generate", out_of_memory)  # the command
    # imports it from that module when it runs
    code = main(["generate", "--report", REPORT, "--model", str(tiny_model), "--progress", "json",
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 3
    for option in ("--max-gpu-memory", "--precision bf16", "--lowres-only", "--device cpu"):
        assert option in captured.err
    assert '"kind": "out_of_memory"' in captured.out
    assert list(tmp_path.iterdir()) == []
