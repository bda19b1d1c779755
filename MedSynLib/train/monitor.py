"""What a training run shows while it runs: ``train_log.jsonl`` and, when the optional ``tensorboard`` package is
installed (the ``[tensorboard]`` extra), the same scalars as TensorBoard events in ``tensorboard/``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

LOG_FILE, BOARD_DIR = "train_log.jsonl", "tensorboard"
NOT_PLOTTED = ("step", "elapsed_s", "eta_s")


def board_tag(key: str) -> str:
    """TensorBoard tag of a log field: ``val_loss`` -> ``val/loss``, ``loss`` -> ``train/loss``."""
    return f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"train/{key}"


class TrainingLog:
    """One JSON object per logged step in ``folder/train_log.jsonl`` (and TensorBoard scalars).

    Opened at ``step`` (0, or the step a run resumes from): entries after it, written by a killed run beyond its
    last checkpoint and replayed by the resumed run, are dropped from the log (rewritten atomically) and purged
    from TensorBoard, so each step is logged once.
    """

    def __init__(self, folder: Path, step: int = 0):
        self.path = Path(folder) / LOG_FILE
        self._trim(step)
        self._file = open(self.path, "a", encoding="utf-8")
        self._board = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the log file alone
            pass
        else:
            self._board = SummaryWriter(str(Path(folder) / BOARD_DIR), purge_step=step + 1 if step else None)

    def _trim(self, step: int) -> None:
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)

    def write(self, entry: dict) -> None:
        """Append ``entry`` (which holds ``step``); its finite numbers also go to TensorBoard."""
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if self._board is not None:
            for key, value in entry.items():
                if key not in NOT_PLOTTED and isinstance(value, (int, float)) and math.isfinite(value):
                    self._board.add_scalar(board_tag(key), value, entry["step"])

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()
