"""This project's weight format for one denoising network ("stage").

A stage folder holds ``model.safetensors`` (tied weights stored once) and ``config.json``::

    {"format": "medsyn-stage/1", "unet": {...UNetConfig...}, "weights": "model.safetensors",
     "sha256": "<hex of the weights file>", "provenance": {...}}

Folders are written through :class:`~MedSynLib.io.files.OutputFolder`: a crash never leaves a half-written stage,
and only an earlier stage folder (one holding ``config.json``) is replaced, and only with ``overwrite``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from ..io.files import output_folder, plain_permissions
from ..models.unet import UNetConfig, build_unet
from .jsonfiles import CheckpointError, read_json

STAGE_FORMAT = "medsyn-stage/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_stage(net: torch.nn.Module, folder: Path, provenance: dict | None = None,
               dtype: torch.dtype = torch.float32, overwrite: bool = False) -> Path:
    """Write ``net`` (a LowResUNet or SuperResUNet) as a stage folder; returns the folder.

    dtype: storage precision (float16 halves packaged files; loading always gives float32 networks).
    overwrite: replace an earlier stage folder at ``folder`` (anything else there is refused).
    """
    folder = Path(folder)
    with output_folder(folder, CONFIG_FILE, overwrite, what="stage folder") as tmp:
        stored = copy.deepcopy(net).to(dtype) if dtype != torch.float32 else net
        save_model(stored, str(tmp / WEIGHTS_FILE), metadata={"format": STAGE_FORMAT})
        plain_permissions(tmp / WEIGHTS_FILE)  # safetensors creates it 0600
        config = {
            "format": STAGE_FORMAT,
            "unet": net.config.to_dict(),
            "weights": WEIGHTS_FILE,
            "sha256": sha256_file(tmp / WEIGHTS_FILE),
            "provenance": provenance or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def read_stage_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a MedSyn stage folder: {CONFIG_FILE} is missing "
                                "(convert official checkpoints with `medsyn models import`)")
    config = read_json(path)
    if config.get("format") != STAGE_FORMAT:
        raise CheckpointError(f"{path}: unknown format {config.get('format')!r}, expected {STAGE_FORMAT!r}")
    return config


def check_state_dict(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming missing / unexpected keys and wrong shapes."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if shapes:
        problems.append(f"{len(shapes)} wrong shapes ({'; '.join(shapes[:5])})")
    if problems:
        raise CheckpointError(f"{source} does not fit a {type(net).__name__} with this config: "
                              + "; ".join(problems)
                              + ". Check that the file belongs to this stage and that the config matches it.")


def load_stage(folder: Path, device: torch.device | str = "cpu", verify_hash: bool = True,
               up_order: str | None = None) -> torch.nn.Module:
    """Build the network a stage folder describes and load its weights (eval mode, float32).

    verify_hash: compare the weights file with the sha256 in config.json (detects corrupted/altered files).
    up_order: override the config's decoder ordering ("eval" / "train").
    """
    folder = Path(folder)
    config = read_stage_config(folder)
    weights = folder / config.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the stage folder {folder} is incomplete")
    if verify_hash and not config.get("sha256"):
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE} records no sha256 of {weights.name}: every weight file "
                              "is checked before use. Fix: re-import or re-export the stage")
    if verify_hash and sha256_file(weights) != config["sha256"]:
        raise CheckpointError(f"{weights} is corrupted or was altered: its sha256 does not match {CONFIG_FILE}. "
                              "Re-import or re-download the model.")
    unet = UNetConfig.from_dict(config["unet"])
    if up_order is not None:
        unet = unet.replace(up_order=up_order)
    with torch.device("meta"):
        net = build_unet(unet)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} cannot be read as safetensors ({exc}); the file is corrupted") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    net = load_tied_state(net, state, str(weights))
    return net.to(device).eval()


def load_tied_state(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Load ``state`` into ``net`` (possibly on the meta device), filling tied aliases from one stored copy."""
    expected = net.state_dict(keep_vars=True)
    full = dict(state)
    for key, param in expected.items():  # tied parameters are stored once (safetensors drops aliases)
        if key not in full:
            for other, other_param in expected.items():
                if other in state and other_param is param:
                    full[key] = state[other]
                    break
    check_state_dict(net, full, source)
    net.load_state_dict(full, strict=True, assign=True)
    return net
