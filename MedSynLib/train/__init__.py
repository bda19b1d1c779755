"""Training: the report text encoder and both diffusion stages (single process, or torchrun / DDP)."""
