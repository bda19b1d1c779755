"""Options of a text-encoder training run, and the seeds of its random draws."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from ...models.config import MAX_POSITIONS
from ...seeding import seeded_generator, stable_seed
from ...settings import settings_from_dict

if TYPE_CHECKING:  # the options are read by the command line's parser, which loads no torch
    import torch

RESUMABLE_CHANGES = {"log_every", "checkpoint_every", "stop_at", "eval_repeats", "skip_bad", "device", "val_every"}
"""Fields that may change between a run and its --resume (everything else must match the checkpoint)."""


@dataclasses.dataclass
class TextTrainConfig:
    """Training options (a JSON config file holds any subset of these fields)."""

    init: str | None = None            # BERT-family folder to start from; None = from scratch
    vocab_size: int = 3000             # WordPiece vocabulary learnt on the corpus (from scratch only)
    min_frequency: int = 2             # a pair seen fewer times is never merged
    hidden: int = 128                  # model size when training from scratch
    layers: int = 2
    heads: int = 4
    intermediate: int | None = None    # None: 4 * hidden
    max_positions: int = MAX_POSITIONS
    dropout: float = 0.1
    max_length: int = 256              # word pieces per example, specials included (longest section truncated)
    batch_size: int = 16
    steps: int | None = None           # optimisation steps; or
    epochs: float | None = None        # passes over the training split (default: 300 steps)
    lr: float | None = None            # None: 1e-4 with init, 5e-4 from scratch
    weight_decay: float = 0.01
    warmup_steps: int | None = None    # None: 10 % of the steps
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    swap_prob: float = 0.5
    heldout: float = 0.05              # fraction of the reports kept out of training, evaluated at the end
    eval_repeats: int = 4              # held-out passes with different masks / swaps
    val_every: int = 0                 # also evaluate the held-out reports every N steps (0: at the end only)
    seed: int = 0
    skip_bad: bool = False             # skip reports without both sections (logged) instead of failing
    log_every: int = 10
    checkpoint_every: int = 100
    stop_at: int | None = None         # stop after this step with a checkpoint (to --resume later)
    device: str = "cpu"                # "cpu", "auto", "cuda" or "cuda:N" (fp32; bit-exact resume on the CPU)

    @classmethod
    def from_dict(cls, values: dict) -> "TextTrainConfig":
        return settings_from_dict(cls, values, "text-training options")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.val_every < 0:
            raise ValueError(f"val_every must be 0 (at the end only) or more, got {self.val_every}")
        for name in ("vocab_size", "hidden", "layers", "heads", "batch_size", "log_every", "checkpoint_every",
                     "eval_repeats", "min_frequency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.init is None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.max_length < 8 or self.max_length > self.max_positions:
            raise ValueError(f"max_length must be in [8, {self.max_positions}], got {self.max_length}")
        if not 0 < self.mask_prob < 1 or not 0 <= self.swap_prob <= 1 or not 0 <= self.heldout < 0.5:
            raise ValueError("need 0 < mask_prob < 1, 0 <= swap_prob <= 1 and 0 <= heldout < 0.5")

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.init else 5e-4)

    def total_steps(self, train_reports: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * train_reports / self.batch_size))
        return 300


def draw_seed(*parts) -> int:
    """The seed of the draws named by ``parts``, keyed by their text joined with ':' (e.g. "0:step:5")."""
    return stable_seed(":".join(map(str, parts)))


def draw_generator(*parts) -> torch.Generator:
    """A generator seeded with :func:`draw_seed` of ``parts``."""
    return seeded_generator(":".join(map(str, parts)))
