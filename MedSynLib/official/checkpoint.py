"""Official MedSyn checkpoints -> this project's stage format.

The official training scripts save ``accelerator.save_state`` folders ``<N>_ckpt/`` holding
``pytorch_model.bin`` (training weights) and ``pytorch_model_1.bin`` (EMA weights): state_dicts of the whole
``GaussianDiffusion`` wrapper, keys prefixed ``denoise_fn.`` (``module.denoise_fn.`` from DDP runs), possibly with
non-network diffusion buffers. Official inference samples the low-res stage with EMA weights and the SR stage
with the training weights; that is our default too.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..models.blocks import HEAD_DIM
from ..models.unet import UNetConfig, build_unet
from ..modelstore.store import CheckpointError, check_state_dict, save_stage, sha256_file

PREFIXES = ("module.", "denoise_fn.")
DIFFUSION_BUFFERS = re.compile(
    r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|"
    r"posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|ddim_\w+)$")
TRAINING_FILE, EMA_FILE = "pytorch_model.bin", "pytorch_model_1.bin"
OFFICIAL_DEFAULT_EMA = {"lowres": True, "superres": False}


def find_checkpoint_file(path: Path, stage: str, use_ema: bool | None = None) -> Path:
    """The weights file to import: ``path`` itself if a file, else from a ``<N>_ckpt`` folder (or the one with the
    largest N inside a results folder). ``use_ema`` None = official choice (EMA for lowres, training for SR)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    ckpts = sorted((p for p in path.glob("*_ckpt") if p.is_dir() and p.name[:-5].isdigit()),
                   key=lambda p: int(p.name[:-5]))
    folder = ckpts[-1] if ckpts else path
    ema = OFFICIAL_DEFAULT_EMA[stage] if use_ema is None else use_ema
    name = EMA_FILE if ema else TRAINING_FILE
    if not (folder / name).is_file():
        raise FileNotFoundError(f"{folder} holds no {name} ({'EMA' if ema else 'training'} weights); "
                                f"found: {sorted(p.name for p in folder.iterdir())}")
    return folder / name


def read_official_file(file: Path) -> dict[str, torch.Tensor]:
    """Load a ``torch.save``d state_dict safely (``weights_only=True``) and check it is one."""
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                              "the file is corrupted, truncated or not a checkpoint") from exc
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise CheckpointError(f"{file} is not a state_dict (a dict of tensors); got {type(obj).__name__}")
    return obj


def network_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` / ``denoise_fn.`` prefixes and drop the wrapper's diffusion buffers."""
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            key = key.removeprefix(prefix)
        if not DIFFUSION_BUFFERS.match(key):
            out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor], up_order: str = "eval", resnet_groups: int = 8) -> UNetConfig:
    """The :class:`UNetConfig` whose state_dict has these shapes (GroupNorm's group count cannot be read: given)."""
    lowres = "init_conv.weight" in state
    stem = state["init_conv.weight" if lowres else "init_conv0.weight"]
    dim = stem.shape[0]
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"downs\.(\d+)\.0\.block1", k))})
    dim_mults = tuple(state[f"downs.{i}.0.block1.proj.weight"].shape[0] // dim for i in levels)
    attn = state["mid_spatial_attn1.fn.fn.fn.to_qkv.weight" if lowres else "mid_spatial_attn.fn.fn.fn.to_qkv.weight"]
    config = dict(kind="lowres" if lowres else "superres", dim=dim, dim_mults=dim_mults,
                  channels=state["final_conv.1.weight" if lowres else "final_conv0.1.weight"].shape[0],
                  attn_heads=attn.shape[0] // (3 * HEAD_DIM), init_kernel_size=stem.shape[-1],
                  resnet_groups=resnet_groups, up_order=up_order)
    if lowres:
        null = state["null_cond_emb"]
        config.update(text_tokens=null.shape[1], text_dim=null.shape[2],
                      mid_depth=sum(1 for k in state if re.match(r"mid_cross_attn\d+\.fn\.norm\.gamma$", k)))
    else:
        config.update(mid_depth=1)
    return UNetConfig(**config)


def check_tied_copies(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Tied parameters appear under several names; their copies in the file must agree."""
    params = net.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, p in params.items():
        groups.setdefault(id(p), []).append(key)
    for keys in groups.values():
        first = state[keys[0]]
        for other in keys[1:]:
            if not torch.equal(first, state[other]):
                raise CheckpointError(f"{source}: tied weights {keys[0]} and {other} differ; "
                                      "the file was not saved from the official network")


def load_official_network(path: Path, stage: str, config: UNetConfig | None = None, use_ema: bool | None = None,
                          up_order: str = "eval") -> tuple[torch.nn.Module, Path]:
    """Build and load a network from an official checkpoint; returns (net in eval mode, the file used).

    stage: "lowres" or "superres". config: None = inferred from the weights' shapes (the official inference
    configs are what the released files give).
    """
    if stage not in OFFICIAL_DEFAULT_EMA:
        raise ValueError(f"stage must be 'lowres' or 'superres', got {stage!r}")
    file = find_checkpoint_file(path, stage, use_ema)
    state = network_state(read_official_file(file))
    if config is None:
        kind_key = "init_conv.weight" if stage == "lowres" else "init_conv0.weight"
        if kind_key not in state:
            raise CheckpointError(f"{file} holds no {stage} network (key {kind_key!r} missing; "
                                  f"first keys: {', '.join(list(state)[:5])})")
        config = infer_config(state, up_order=up_order)
    net = build_unet(config)
    check_state_dict(net, state, str(file))
    check_tied_copies(net, state, str(file))
    net.load_state_dict(state, strict=True)
    return net.eval(), file


def import_official_stage(path: Path, out_dir: Path, stage: str, config: UNetConfig | None = None,
                          use_ema: bool | None = None, up_order: str = "eval") -> Path:
    """Convert an official checkpoint once into a stage folder (safetensors + config.json + sha256)."""
    net, file = load_official_network(path, stage, config, use_ema, up_order)
    provenance = {"source": "official MedSyn checkpoint", "file": str(file), "source_sha256": sha256_file(file),
                  "weights": "EMA" if file.name == EMA_FILE else "training",
                  "license": "CC-BY-NC 4.0 (official MedSyn weights)"}
    return save_stage(net, out_dir, provenance)
