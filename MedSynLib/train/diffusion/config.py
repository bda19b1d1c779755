"""The options of a diffusion training run (:class:`TrainConfig`, saved as JSON in the run folder) and its learning
rate per step. Torch-free: the command line's parsers read it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...io.images import Geometry
from ...settings import settings_from_dict


@dataclass
class TrainConfig:
    """Everything a diffusion training run needs (saved as JSON in the run folder).

    grid: the full-resolution training grid (Geometry dict); the low-res stage trains on its ``lowres_factor``
    subsample (voxel f·i, as the official data). crop: SR training crop (f, h, w) at full resolution
    (multiples of lowres_factor); None = whole volume. batch_size is the global batch (all ranks, per micro-step).
    Validation: the cases the manifest's ``split`` column marks ``val``, else the ``val_fraction`` of cases chosen by
    a hash of their id (see :func:`held_out`), are kept out of training; every ``val_every`` steps (0 = never) their
    x0 loss at ``val_timesteps`` fixed diffusion times and fixed noise is logged as ``val_loss``.
    """

    stage: str = "lowres"
    manifest: str = ""
    out: str = ""
    unet: dict = field(default_factory=dict)
    text_encoder: str | None = None
    grid: dict = field(default_factory=lambda: Geometry((256, 256, 256), (1.0, 1.0, 1.0),
                                                        (-127.5, -127.5, -127.5)).to_dict())
    lowres_factor: int = 4
    crop: list[int] | None = None
    cache: str | None = None
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_min_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "fp32"
    ema_decay: float = 0.999
    ema_start: int = 0
    ema_every: int = 1
    text_dropout: float = 0.1
    sr_noise_aug: float = 0.4
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    preview_every: int = 0
    preview_steps: int = 10
    val_every: int = 0
    val_fraction: float = 0.0
    val_timesteps: int = 4
    skip_bad: bool = False
    init_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return settings_from_dict(cls, d, "training options")

    def validate(self) -> None:
        if self.stage not in ("lowres", "superres"):
            raise ValueError(f"stage must be lowres or superres, got {self.stage!r}")
        if self.stage == "lowres" and not self.text_encoder:
            raise ValueError("the low-res stage needs text_encoder (a folder written by `medsyn train-text`)")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.val_every < 0 or not 0 <= self.val_fraction < 1 or self.val_timesteps < 1:
            raise ValueError("need val_every >= 0 (0 = no validation), 0 <= val_fraction < 1 and val_timesteps >= 1")
        for name, example in (("manifest", "data/manifest.csv"), ("out", "runs/lowres")):
            if not str(getattr(self, name) or "").strip():
                raise ValueError(f"{name} is not set. Fix: --set {name}={example}")


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant
    or a cosine decay to ``lr_min_ratio * lr`` at ``steps`` (a pure function of the step, so resumes stay exact;
    a run resumed with a larger ``steps`` continues on the longer cosine from where it stands)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (config.lr_min_ratio + (1 - config.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
