"""Training of the two diffusion stages: x0 objective, AdamW, clipping, AMP, accumulation, EMA (:mod:`.trainer`).

Files: ``config`` (the run's options, the learning rate per step), ``split`` (training and validation cases),
``ema`` (the moving average sampled from), ``batches`` (each step's samples, the SR condition), ``trainer`` (the
run: steps, checkpoints, validation, previews, export).

The names below load on first use, so that the command line's parsers read :class:`TrainConfig` without torch.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for editors and type checkers (nothing is imported at run time)
    from .batches import Batches, sr_condition
    from .config import LR_SCHEDULES, TrainConfig, learning_rate
    from .ema import EMA
    from .split import held_out, split_cases
    from .trainer import CHECKPOINT, DiffusionTrainer

_EXPORTS = {"Batches": "batches", "sr_condition": "batches", "LR_SCHEDULES": "config", "TrainConfig": "config",
            "learning_rate": "config", "EMA": "ema", "held_out": "split", "split_cases": "split",
            "CHECKPOINT": "trainer", "DiffusionTrainer": "trainer"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
