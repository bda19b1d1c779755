"""Official checkpoints (as the official training scripts save them) -> our stage format, and clear errors."""

import json

import pytest
import torch

from MedSynLib.models import LowResUNet, SuperResUNet
from MedSynLib.modelstore.store import CheckpointError, load_stage, save_stage
from MedSynLib.official.checkpoint import import_official_stage, load_official_network

from conftest import TINY_LOWRES


def _save_official(net, folder, prefix="module.denoise_fn.", ema_offset=0.0):
    """Save ``net`` the way accelerate's save_state does in the official training (wrapper keys + buffers)."""
    folder.mkdir(parents=True)
    for name, offset in (("pytorch_model.bin", 0.0), ("pytorch_model_1.bin", ema_offset)):
        state = {prefix + k: v + offset for k, v in net.state_dict().items()}
        state[prefix.replace("denoise_fn.", "") + "betas"] = torch.linspace(0, 1, 10)
        state[prefix.replace("denoise_fn.", "") + "ddim_alphas"] = torch.ones(5)
        torch.save(state, folder / name)


def _inputs():
    torch.manual_seed(5)
    return torch.randn(1, 4, 2, 8, 8), torch.tensor([640.0]), torch.randn(1, 192, 16)


@pytest.mark.parametrize("prefix", ["module.denoise_fn.", "denoise_fn.", ""])
def test_converted_lowres_checkpoint_reproduces_outputs(tiny_lowres, tmp_path, prefix):
    """Weights are bit-identical after conversion; outputs agree to float rounding (memory alignment differs)."""
    results = tmp_path / "results_text_low_res"
    _save_official(tiny_lowres, results / "1000_ckpt", prefix, ema_offset=0.0)
    _save_official(tiny_lowres, results / "9000_ckpt", prefix, ema_offset=0.0)
    stage = import_official_stage(results, tmp_path / "lowres", "lowres")
    config = json.loads((stage / "config.json").read_text(encoding="utf-8"))
    assert config["provenance"]["weights"] == "EMA" and "9000_ckpt" in config["provenance"]["file"]
    assert config["unet"]["dim"] == 8 and config["unet"]["mid_depth"] == TINY_LOWRES.mid_depth
    loaded = load_stage(stage)
    x, t, text = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, text), tiny_lowres(x, t, text), atol=1e-5)
        assert torch.equal(loaded.null_text(1), tiny_lowres.null_text(1))
    assert loaded.mid_spatial_attn1.fn.fn.fn is loaded.mid_spatial_attn2.fn.fn.fn
    reference = tiny_lowres.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


def test_superres_uses_training_weights_by_default_and_ema_on_request(tiny_superres, tmp_path):
    _save_official(tiny_superres, tmp_path / "sr" / "500_ckpt", ema_offset=1.0)
    net, file = load_official_network(tmp_path / "sr", "superres")
    assert file.name == "pytorch_model.bin"
    assert torch.equal(net.init_conv0.weight, tiny_superres.init_conv0.weight)
    net, file = load_official_network(tmp_path / "sr", "superres", use_ema=True)
    assert file.name == "pytorch_model_1.bin"
    assert torch.equal(net.init_conv0.weight, tiny_superres.init_conv0.weight + 1.0)
    stage = import_official_stage(tmp_path / "sr", tmp_path / "sr_stage", "superres", up_order="train")
    assert load_stage(stage).config.up_order == "train"
    assert load_stage(stage, up_order="eval").config.up_order == "eval"


def test_missing_and_wrong_shaped_keys_are_named(tiny_lowres, tmp_path):
    state = dict(tiny_lowres.state_dict())
    del state["mid_block2.block1.proj.bias"]
    torch.save(state, tmp_path / "missing.bin")
    with pytest.raises(CheckpointError, match="missing keys.*mid_block2.block1.proj.bias"):
        load_official_network(tmp_path / "missing.bin", "lowres", config=TINY_LOWRES)
    state = dict(tiny_lowres.state_dict())
    state["final_conv.1.bias"] = torch.zeros(7)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "shape.bin")
    with pytest.raises(CheckpointError, match=r"unexpected keys.*extra.weight.*final_conv.1.bias: file \(7,\)"):
        load_official_network(tmp_path / "shape.bin", "lowres", config=TINY_LOWRES)


def test_wrong_stage_corrupt_file_and_untied_copies_are_refused(tiny_lowres, tiny_superres, tmp_path):
    torch.save(tiny_superres.state_dict(), tmp_path / "sr.bin")
    with pytest.raises(CheckpointError, match="holds no lowres network"):
        load_official_network(tmp_path / "sr.bin", "lowres")
    (tmp_path / "corrupt.bin").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_official_network(tmp_path / "corrupt.bin", "lowres")
    torch.save({"model": [1, 2]}, tmp_path / "notdict.bin")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_official_network(tmp_path / "notdict.bin", "lowres")
    state = dict(tiny_lowres.state_dict())
    state["mid_spatial_attn2.fn.fn.fn.to_qkv.weight"] = state["mid_spatial_attn2.fn.fn.fn.to_qkv.weight"] + 1
    torch.save(state, tmp_path / "untied.bin")
    with pytest.raises(CheckpointError, match="tied weights"):
        load_official_network(tmp_path / "untied.bin", "lowres", config=TINY_LOWRES)
    with pytest.raises(FileNotFoundError, match="holds no pytorch_model_1.bin"):
        (tmp_path / "7_ckpt").mkdir()
        load_official_network(tmp_path, "lowres")


def test_stage_folder_detects_corruption(tiny_superres, tmp_path):
    stage = save_stage(tiny_superres, tmp_path / "sr")
    assert not list(tmp_path.glob(".sr.partial-*"))
    weights = stage / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_stage(stage)
    weights.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_stage(stage, verify_hash=False)
    with pytest.raises(FileNotFoundError, match="not a MedSyn stage folder"):
        load_stage(tmp_path)


def test_stage_round_trip_keeps_outputs(tiny_lowres, tmp_path):
    stage = save_stage(tiny_lowres, tmp_path / "low", provenance={"note": "test"})
    x, t, text = _inputs()
    with torch.no_grad():
        assert torch.allclose(load_stage(stage)(x, t, text), tiny_lowres(x, t, text), atol=1e-5)
    assert isinstance(load_stage(stage), LowResUNet) and not isinstance(load_stage(stage), SuperResUNet)


def test_half_precision_storage_loads_as_float32(tiny_superres, tmp_path):
    stage = save_stage(tiny_superres, tmp_path / "half", dtype=torch.float16)
    full = save_stage(tiny_superres, tmp_path / "full")
    assert (stage / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_stage(stage)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert all(torch.allclose(p, q, atol=1e-3) for p, q in zip(loaded.parameters(), tiny_superres.parameters()))
    assert tiny_superres.init_conv0.weight.dtype == torch.float32  # the caller's network is untouched
