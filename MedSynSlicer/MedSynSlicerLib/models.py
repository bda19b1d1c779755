"""The models the panel offers: registry entries with their sampler defaults, size and measured run times.

Read in this process from the model registry and each model's ``model.json`` (no torch, no subprocess), so the
list is there when the panel opens, before the first Generate installs anything.
"""

from __future__ import annotations

import dataclasses
import os

DEFAULT_MODEL = "default"
"""Alias of the registry's default model (``medsyn --model default``)."""


@dataclasses.dataclass
class ModelInfo:
    """What the panel shows about a model, and the sampler defaults that run unless the user changes them."""

    name: str
    title: str
    license: str = ""
    available: bool = True
    requires_license_acceptance: bool = False
    path: str = ""
    steps_lowres: int | None = None
    steps_sr: int | None = None
    guidance: float | None = None
    size_bytes: int = 0
    timings_s: dict = dataclasses.field(default_factory=dict)
    """Measured seconds per run kind, from ``model.json`` ``timings_s`` (e.g. ``{"cpu_lowres": 8.9}``)."""
    default: bool = False


def _folder_size(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def list_models() -> list[ModelInfo]:
    """The registry's models and the user's imported ones, the default model first."""
    from MedSynLib.modelstore.bundle import read_model_spec
    from MedSynLib.modelstore.registry import list_models as registry_models, registry

    default_name = registry().get("default", "")
    models = []
    for entry in registry_models():
        info = ModelInfo(name=entry["name"], title=entry.get("title") or entry["name"],
                         license=entry.get("license") or "", available=bool(entry.get("available")),
                         requires_license_acceptance=bool(entry.get("requires_license_acceptance")),
                         path=entry.get("path") or "", default=entry["name"] == default_name)
        if info.available:
            spec = read_model_spec(info.path)
            defaults = spec.get("defaults", {})
            info.steps_lowres, info.steps_sr = defaults.get("steps_lowres"), defaults.get("steps_sr")
            info.guidance = defaults.get("guidance")
            info.timings_s = dict(spec.get("timings_s", {}))
            info.size_bytes = _folder_size(info.path)
        models.append(info)
    return sorted(models, key=lambda m: not m.default)


def find_model(models: list[ModelInfo], name: str) -> ModelInfo | None:
    """The entry named ``name`` (``"default"``: the registry's default), or None."""
    for m in models:
        if m.name == name or (name == DEFAULT_MODEL and m.default):
            return m
    return None


def model_from_folder(path: str) -> ModelInfo:
    """A model folder given by path (scripts, tests): its ``model.json`` as a :class:`ModelInfo`."""
    from MedSynLib.modelstore.bundle import read_model_spec

    spec = read_model_spec(path)
    defaults = spec.get("defaults", {})
    return ModelInfo(name=str(path), title=spec.get("title") or spec.get("name") or os.path.basename(path),
                     license=spec.get("license", ""), path=str(path), steps_lowres=defaults.get("steps_lowres"),
                     steps_sr=defaults.get("steps_sr"), guidance=defaults.get("guidance"),
                     timings_s=dict(spec.get("timings_s", {})), size_bytes=_folder_size(path))


def import_weights_arguments(model_folder: str, text_encoder: str, name: str, atlas: str | None = None) -> list[str]:
    """``medsyn models import``: the official ``model/`` folder (checkpoints + pretrained_lm), a local CXR-BERT
    folder, optionally the atlas lung mask; the user has accepted the licence in the panel."""
    args = ["models", "import", model_folder, "--text-encoder", text_encoder, "--name", name, "--accept-license"]
    return args + (["--atlas", atlas] if atlas else [])


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def describe(info: ModelInfo | None) -> str:
    """One paragraph for the panel: title, licence, size, defaults, measured times (where known)."""
    if info is None:
        return ""
    parts = [info.title]
    if info.license:
        parts.append(f"Licence: {info.license}")
    if not info.available:
        parts.append("Not installed: use 'Import weights...'")
        return ". ".join(parts) + "."
    if info.size_bytes:
        parts.append(f"Size: {_size(info.size_bytes)}")
    if info.steps_lowres is not None:
        parts.append(f"Defaults: {info.steps_lowres} / {info.steps_sr} steps, guidance {info.guidance}")
    labels = {"cpu_lowres": "64³ preview on CPU", "cpu_full": "256³ on CPU",
              "gpu_lowres": "64³ preview on GPU", "gpu_full": "256³ on GPU"}
    times = [f"{label} {info.timings_s[key]:.0f} s" for key, label in labels.items() if key in info.timings_s]
    if times:
        parts.append("Measured: " + ", ".join(times))
    return ". ".join(parts) + "."
