"""The two MedSyn networks: official state_dict layout, orderings, fused attention, input checks."""

import json

import pytest
import torch
import torch.nn.functional as F

from MedSynLib.models import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, LowResUNet, SuperResUNet, UNetConfig, build_unet
from MedSynLib.models.blocks import HEAD_DIM, SpatialSelfAttention, TextCrossAttention

from conftest import DATA, TINY_LOWRES, TINY_SUPERRES


@pytest.mark.parametrize("config, manifest", [(OFFICIAL_LOWRES, "official_lowres_keys.json"),
                                              (OFFICIAL_SUPERRES, "official_sr_keys.json")])
def test_official_config_state_dict_equals_manifest(config, manifest):
    reference = json.loads((DATA / manifest).read_text(encoding="utf-8"))
    with torch.device("meta"):
        net = build_unet(config)
    keys = {k: list(v.shape) for k, v in net.state_dict().items()}
    expected = {k: v for k, v in reference.items() if not k.startswith("__")}
    assert keys == expected
    assert sum(p.numel() for p in net.parameters()) == reference["__param_count__"]


def test_lowres_bottom_attention_is_tied():
    with torch.device("meta"):
        net = LowResUNet(OFFICIAL_LOWRES)
    first = net.mid_spatial_attn1.fn.fn.fn
    assert all(getattr(net, f"mid_spatial_attn{i}").fn.fn.fn is first for i in range(2, 5))
    assert net.mid_spatial_attn1.fn.norm is not net.mid_spatial_attn2.fn.norm


def test_up_orders_share_parameters_but_not_function(tiny_lowres):
    other = LowResUNet(TINY_LOWRES.replace(up_order="train")).eval()
    other.load_state_dict(tiny_lowres.state_dict())
    x, t, text = torch.randn(1, 4, 3, 8, 8), torch.tensor([300.0]), torch.randn(1, 192, 16)
    with torch.no_grad():
        a, b = tiny_lowres(x, t, text), other(x, t, text)
    assert a.shape == b.shape == x.shape
    assert (a - b).abs().max() > 1e-3


def test_superres_shapes_and_no_text(tiny_superres):
    x, lr = torch.randn(1, 4, 4, 8, 8), torch.rand(1, 4, 4, 8, 8) * 2 - 1
    with torch.no_grad():
        out = tiny_superres(x, torch.tensor([50.0]), lr)
    assert out.shape == x.shape
    assert not any("cross" in k or "null" in k for k in tiny_superres.state_dict())


def test_fused_attention_matches_reference_computation():
    torch.manual_seed(0)
    attn = SpatialSelfAttention(16, heads=2)
    tokens = torch.randn(3, 10, 16)
    q, k, v = attn.to_qkv(tokens).chunk(3, dim=-1)
    split = lambda t: t.view(3, 10, 2, HEAD_DIM).transpose(1, 2)  # noqa: E731
    scores = (split(q) * HEAD_DIM ** -0.5) @ split(k).transpose(-1, -2)
    ref = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(3, 10, 2 * HEAD_DIM)
    assert torch.allclose(attn(tokens), attn.to_out(ref), atol=1e-6)

    cross = TextCrossAttention(16, text_dim=12, heads=2)
    x, text = torch.randn(1, 16, 2, 3, 3), torch.randn(1, 5, 12)
    q = F.conv2d(x.permute(0, 2, 1, 3, 4).reshape(2, 16, 3, 3), cross.to_q.weight)  # per slice, as official
    q = q.flatten(2).transpose(1, 2).reshape(2, 9, 2, HEAD_DIM).transpose(1, 2)
    kk, vv = cross.to_kv(text).chunk(2, dim=-1)
    kk = kk.view(1, 5, 2, HEAD_DIM).transpose(1, 2)
    vv = vv.view(1, 5, 2, HEAD_DIM).transpose(1, 2)
    o = ((q @ kk.transpose(-1, -2)) / HEAD_DIM ** 0.5).softmax(-1) @ vv  # (2 slices, heads, 9, 32)
    o = o.transpose(1, 2).reshape(2, 9, 64).transpose(1, 2).reshape(2, 64, 3, 3)
    o = F.conv2d(o, cross.to_out.weight, cross.to_out.bias).reshape(1, 2, 16, 3, 3).permute(0, 2, 1, 3, 4)
    assert torch.allclose(cross(x, text), o, atol=1e-5)


def test_bad_inputs_are_named(tiny_lowres):
    with pytest.raises(ValueError, match="multiples of 2"):
        tiny_lowres(torch.randn(1, 4, 2, 7, 8), torch.tensor([1.0]), torch.randn(1, 192, 16))
    with pytest.raises(ValueError, match="text features must have shape"):
        tiny_lowres(torch.randn(1, 4, 2, 8, 8), torch.tensor([1.0]), torch.randn(1, 100, 16))
    with pytest.raises(ValueError, match="resnet_groups"):
        UNetConfig(dim=12)
    with pytest.raises(ValueError, match="kind 'superres'"):
        SuperResUNet(TINY_LOWRES)


def test_config_round_trips_through_json():
    d = json.loads(json.dumps(TINY_SUPERRES.to_dict()))
    assert UNetConfig.from_dict(d) == TINY_SUPERRES
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**d, "bogus": 1})


def test_patch_networks_run_on_a_coarser_grid():
    from MedSynLib.models.unet import depth_to_space, space_to_depth

    x = torch.randn(1, 3, 8, 8, 12)
    assert torch.equal(depth_to_space(space_to_depth(x, 4), 4), x)
    net = SuperResUNet(UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=1, mid_depth=1, patch=4,
                                  init_kernel_size=1)).eval()
    vol = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert net(vol, torch.tensor([10.0]), vol).shape == vol.shape
    assert net.init_conv0.weight.shape[1] == 8 * 64
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.randn(1, 4, 16, 12, 16), torch.tensor([1.0]), torch.randn(1, 4, 16, 12, 16))
