"""How one run samples: :class:`RunSettings`, from the command line, the Slicer panel or Python, to the sampler.

A run of ``generate``, ``segment``, ``edit``, ``batch`` or the benchmarks is described by one frozen
:class:`RunSettings`. It is built from command-line arguments (:meth:`RunSettings.from_args`, the options of
:func:`add_arguments`), from the panel (keyword arguments) or from a sidecar (:meth:`RunSettings.from_dict`); it is
checked once, when it is made (:meth:`RunSettings.validate`); the sampler settings left as None take the model's
``model.json`` defaults (:meth:`RunSettings.resolved`); :meth:`RunSettings.to_argv` gives it back as ``medsyn``
arguments for a background process; the sidecar records :meth:`RunSettings.as_dict`.

Each setting has one default, here: the dataclass fields, and :data:`MODEL_DEFAULTS` for a model whose
``model.json`` does not say. Torch-free: the Slicer panel and the command-line parsers import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from . import arguments
from .arguments import DEVICE_PATTERN, SEED_MAX, STEPS_MAX
from .environment import PRECISIONS

SAMPLER_NAMES = ("ddim", "dpmpp2m")
"""The samplers of :data:`MedSynLib.diffusion.samplers.SAMPLERS` (a test keeps them equal)."""
SR_TILES_MAX = 256
MODEL_DEFAULTS = {"steps_lowres": 50, "steps_sr": 20, "guidance": 1.0, "sampler": "ddim"}
"""The sampler settings of a model whose ``model.json`` gives no ``defaults`` (the official inference: DDIM, no
guidance)."""
MODEL_KEYS = tuple(MODEL_DEFAULTS)
"""The settings a model's ``model.json`` may set; a run leaves them None to take the model's."""


FLAGS = {"seed": "--seed", "steps_lowres": "--steps-lowres", "steps_sr": "--steps-sr", "guidance": "--guidance",
         "sampler": "--sampler", "precision": "--precision", "device": "--device", "lowres_only": "--lowres-only",
         "max_gpu_memory_gb": "--max-gpu-memory", "sr_tiles": "--sr-tiles"}
"""Field -> ``medsyn`` option."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings of one run. None in a sampler setting (steps, guidance, sampler) means the model's default."""

    seed: int = 0
    """Seed of the low-res stage's noise; the super-resolution stage uses ``seed + 1``."""
    steps_lowres: int | None = None
    """Sampler steps of the 64³ stage (``steps + 1`` network evaluations)."""
    steps_sr: int | None = None
    """Sampler steps of the super-resolution stage."""
    guidance: float | None = None
    """Classifier-free guidance scale of the low-res stage, a finite number >= 0 (1 = none, 0 = unconditional)."""
    sampler: str | None = None
    """One of :data:`SAMPLER_NAMES`: ``ddim`` (official) or ``dpmpp2m``."""
    precision: str = "auto"
    """One of :data:`PRECISIONS` (``$MEDSYN_PRECISION`` pins what ``auto`` means)."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    lowres_only: bool = False
    """Stop after the 64³ stage (a fast preview, 4 mm voxels)."""
    max_gpu_memory_gb: float | None = None
    """Memory budget (GiB) the super-resolution stage is split to fit (None: on CUDA the GPU's free memory)."""
    sr_tiles: int | None = None
    """Force this many overlapping depth chunks in the super-resolution stage (None: planned from the budget)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the setting (and its ``medsyn`` option) and the fix for a value out of range."""
        problems = []

        def bad(name: str, what: str) -> None:
            problems.append(f"{name} ({FLAGS[name]}) must be {what}, got {getattr(self, name)!r}")

        if not (_is_int(self.seed) and 0 <= self.seed <= SEED_MAX):
            bad("seed", f"a whole number from 0 to {SEED_MAX}")
        for name in ("steps_lowres", "steps_sr"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and 1 <= value <= STEPS_MAX):
                bad(name, f"a whole number from 1 to {STEPS_MAX}")
        if self.guidance is not None and not (_is_number(self.guidance) and self.guidance >= 0):
            bad("guidance", "a finite number >= 0 (1 = no guidance)")
        if self.sampler is not None and self.sampler not in SAMPLER_NAMES:
            bad("sampler", f"one of {', '.join(SAMPLER_NAMES)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {', '.join(PRECISIONS)}")
        if not (isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device)):
            bad("device", "auto, cpu, cuda or cuda:N")
        if not isinstance(self.lowres_only, bool):
            bad("lowres_only", "True or False")
        if self.max_gpu_memory_gb is not None and not (_is_number(self.max_gpu_memory_gb) and
                                                       self.max_gpu_memory_gb > 0):
            bad("max_gpu_memory_gb", "a positive number of GiB")
        if self.sr_tiles is not None and not (_is_int(self.sr_tiles) and 1 <= self.sr_tiles <= SR_TILES_MAX):
            bad("sr_tiles", f"a whole number from 1 to {SR_TILES_MAX}")
        if problems:
            raise ValueError("; ".join(problems) + ". Fix: change that setting")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunSettings:
        """The settings of parsed ``medsyn`` arguments (:func:`add_arguments`); options not given keep the
        defaults here."""
        values = {name: getattr(args, flag[2:].replace("-", "_"), None) for name, flag in FLAGS.items()}
        return cls(**{name: value for name, value in values.items() if value is not None})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSettings:
        """The settings :meth:`as_dict` recorded (a sidecar's ``settings``); an unknown key is a ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; known: {sorted(names)}")
        return cls(**values)

    def replace(self, **changes) -> RunSettings:
        """A copy with ``changes`` (checked like any new settings)."""
        return dataclasses.replace(self, **changes)

    def resolved(self, model) -> RunSettings:
        """These settings with each sampler setting left as None taken from ``model``: a loaded model (its
        ``defaults``) or the ``defaults`` mapping of a ``model.json``; :data:`MODEL_DEFAULTS` where it has none."""
        defaults = model if isinstance(model, Mapping) else model.defaults
        return self.replace(**{name: (defaults.get(name, MODEL_DEFAULTS[name]) if getattr(self, name) is None
                                      else getattr(self, name)) for name in MODEL_KEYS})

    def sampling(self) -> dict:
        """The sampler settings (steps per stage, guidance, sampler): what a model's defaults may set."""
        return {name: getattr(self, name) for name in MODEL_KEYS}

    def as_dict(self) -> dict:
        """Every setting by field name (JSON-ready; :meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    def to_argv(self) -> list[str]:
        """The ``medsyn generate / segment / edit / batch`` options that give these settings back (settings at
        their default, e.g. sampler settings left to the model, are left out)."""
        argv = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if isinstance(value, bool):
                argv.append(FLAGS[field.name])
            else:
                argv += [FLAGS[field.name], repr(float(value)) if isinstance(value, float) else str(value)]
        return argv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :class:`RunSettings` (read back by :meth:`RunSettings.from_args`; their defaults are the
    dataclass's, so the parser leaves them None). Their types (:mod:`MedSynLib.arguments`) refuse what
    :meth:`RunSettings.validate` refuses, at parse time with the usage line."""
    p = parser
    p.add_argument("--seed", type=arguments.seed, default=None, help=f"noise seed (default: {RunSettings.seed})")
    p.add_argument("--steps-lowres", type=arguments.steps, default=None,
                   help="low-res sampler steps (default: the model's, from its model.json)")
    p.add_argument("--steps-sr", type=arguments.steps, default=None,
                   help="super-resolution sampler steps (default: the model's)")
    p.add_argument("--guidance", type=arguments.guidance, default=None,
                   help="classifier-free guidance scale (1 = none; default: the model's)")
    p.add_argument("--sampler", default=None, choices=SAMPLER_NAMES,
                   help="ddim (official) or dpmpp2m (default: the model's)")
    p.add_argument("--device", type=arguments.device, default=None,
                   help=f"auto, cpu, cuda or cuda:N (default: {RunSettings.device})")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="auto = bf16 (fp16 on older GPUs) on CUDA; on the CPU bf16 where it has AMX-BF16, else fp32 "
                        "($MEDSYN_PRECISION pins what auto means)")
    p.add_argument("--lowres-only", action="store_true", default=None, help="stop after the 64³ stage (fast preview)")
    p.add_argument("--max-gpu-memory", type=arguments.gigabytes, default=None, metavar="GB",
                   help="memory budget: the super-resolution stage is split into as many depth chunks as needed "
                        "(default on CUDA: the GPU's free memory)")
    p.add_argument("--sr-tiles", type=arguments.count(1, SR_TILES_MAX), default=None, metavar="N",
                   help="force N overlapping depth chunks in the super-resolution stage")
