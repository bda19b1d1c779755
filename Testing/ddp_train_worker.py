"""Run under torchrun by the DDP test: records the first step's averaged gradients, trains, saves this rank's state."""

import json
import sys
from pathlib import Path

import torch

from MedSynLib.train.diffusion import DiffusionTrainer, TrainConfig
from train_cases import first_step_gradients

config = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
trainer = DiffusionTrainer(config)
grads = first_step_gradients(trainer)
metrics = trainer.run()
torch.save({"state": trainer.net.state_dict(), "grads": grads, "metrics": metrics},
           Path(sys.argv[2]) / f"rank{trainer.rank}.pt")
