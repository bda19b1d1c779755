"""The models the panel offers: registry entries with their sampler defaults, size and measured run times.

Read in this process from the model registry and each model's ``model.json`` (no torch, no subprocess), so the
list is there when the panel opens, before the first Generate installs anything.
"""

from __future__ import annotations

import dataclasses
import json
import os

from .progress import format_duration

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
    """Measured seconds per run kind (:data:`RUN_KINDS`), from ``model.json`` ``timings_s`` when its packager
    measured them."""
    measured_here_s: dict = dataclasses.field(default_factory=dict)
    """Seconds of the last Generate on this computer per run kind (:func:`record_run_time`)."""
    default: bool = False


RUN_KINDS = {"cpu_lowres": "64³ preview on CPU", "cpu_full": "256³ on CPU",
             "gpu_lowres": "64³ preview on GPU", "gpu_full": "256³ on GPU"}
"""Run kinds whose duration is shown: device and resolution."""
RUN_TIMES_FILE = "run_times.json"
"""In the MedSyn home folder (``$MEDSYN_HOME``, ``~/.medsyn``): model name -> run kind -> seconds."""


def _run_times_path() -> str:
    from MedSynLib.modelstore.registry import user_models_dir

    return os.path.join(os.path.dirname(user_models_dir()), RUN_TIMES_FILE)


def _run_times() -> dict:
    try:
        with open(_run_times_path(), encoding="utf-8") as f:
            times = json.load(f)
    except (OSError, ValueError):
        return {}
    return times if isinstance(times, dict) else {}


def record_run_time(sidecar: dict, seconds: float | None = None) -> None:
    """Remember how long a finished Generate took on this computer, per model and run kind, so the model
    description can say it next time: ``seconds`` as the panel measured it (from the click to the loaded result,
    the figure it shows as "Done in"), else the sum of the sidecar's stage timings."""
    from MedSynLib.io.files import atomic_write

    if sidecar.get("mode") != "generate":
        return
    name = (sidecar.get("model") or {}).get("name")
    if seconds is None:
        timings = sidecar.get("timings_s") if isinstance(sidecar.get("timings_s"), dict) else {}
        seconds = sum(v for v in timings.values() if isinstance(v, (int, float)))
    if not name or seconds <= 0:
        return
    kind = ("gpu" if sidecar.get("device") == "cuda" else "cpu") + ("_lowres" if sidecar.get("lowres_only") else "_full")
    times = _run_times()
    times.setdefault(name, {})[kind] = round(seconds)  # whole seconds, as the panel says "Done in"
    atomic_write(_run_times_path(), json.dumps(times, indent=1, sort_keys=True))


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
    measured = _run_times()
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
            info.measured_here_s = dict(measured.get(spec.get("name", info.name), {}))
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
                     timings_s=dict(spec.get("timings_s", {})), size_bytes=_folder_size(path),
                     measured_here_s=dict(_run_times().get(spec.get("name", ""), {})))


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
    for title, times in (("Measured by its packager", info.timings_s), ("Last run here", info.measured_here_s)):
        shown = [f"{label} {format_duration(times[key])}" for key, label in RUN_KINDS.items() if key in times]
        if shown:
            parts.append(f"{title}: " + ", ".join(shown))
    return ". ".join(parts) + "."
