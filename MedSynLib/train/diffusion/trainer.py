"""Training of the two diffusion stages: x0 objective, AdamW, clipping, AMP, accumulation, EMA.

Single process or ``torchrun --nproc-per-node N`` (PyTorch DDP; gloo on CPU, NCCL on GPUs). Every random draw of
step ``s`` (diffusion times, noise, text dropout, SR crops and noise augmentation) comes from a generator seeded by
``(seed, s)``, and the data order from one seeded by ``(seed, epoch)``; the *global* batch is drawn identically on
every rank and each rank takes its slice. So a run resumed from a checkpoint, or spread over several processes,
computes what one uninterrupted process computes.

The run folder (``out``) follows the output-folder rule of :mod:`MedSynLib.io.files`: it must be new, empty, or an
earlier run of the same stage (its ``train_config.json``, written first), which is continued; a separate ``cache``
must be new, empty or an earlier cache. Links are resolved, and neither may hold an input of the run.

What a run shows: ``train_log.jsonl`` holds one line per step (loss, learning rate, steps/s, ETA, and the validation
loss at every ``val_every`` steps); the terminal shows the same every ``log_every`` steps; with ``tensorboard``
installed (the ``[tensorboard]`` extra) the same scalars go to ``tensorboard/``; ``previews/`` holds samples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ...data.manifest import read_manifest
from ...data.preprocess import TextFeatureCache, VolumeCache, encode_volume
from ...diffusion.schedule import TIME_SCALE, add_noise, x0_loss
from ...environment import distributed
from ...errors import MedSynError
from ...io.files import atomic_write, check_collection_folder
from ...io.images import Geometry
from ...models.text_encoder import ReportEncoder
from ...models.unet import UNetConfig, build_unet
from ...modelstore.store import check_state_dict, load_stage, save_stage, sha256_file
from ..monitor import TrainingLog
from .batches import Batches, _generator, sr_condition
from .config import TrainConfig, learning_rate
from .ema import EMA
from .split import split_cases

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
RUN_CONFIG = "train_config.json"
COMMANDS = {"lowres": "train-lowres", "superres": "train-sr"}
CACHE_PARTS = ("volumes", "text")


def run_stage(folder: Path) -> str | None:
    """The stage of the training run in ``folder`` (read from its ``train_config.json``), or None if it is none."""
    try:
        stage = json.loads((folder / RUN_CONFIG).read_text(encoding="utf-8")).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
    return stage if stage in COMMANDS else None


def claim_run_folder(config: TrainConfig, inputs: tuple = ()) -> Path:
    """``config.out`` (absolute) if this run may write it, else :class:`MedSynError`: a new or empty folder, or an
    earlier run of the same stage (continued). ``inputs``: files the run reads besides those of ``config``. A
    separate ``config.cache`` must be new, empty, or hold only a cache's ``volumes/`` and ``text/``."""
    inputs = [config.manifest, config.text_encoder, config.init_from, *inputs]
    out = check_collection_folder(config.out, lambda f: run_stage(f) is not None, inputs, what="training run")
    stage = run_stage(out)
    if stage is not None and stage != config.stage:
        raise MedSynError(f"{out} is a {COMMANDS[stage]} run; `medsyn {COMMANDS[config.stage]}` cannot continue it",
                          f"give a new folder with --set out=..., or continue it with `medsyn {COMMANDS[stage]}`")
    if config.cache:
        check_collection_folder(config.cache, lambda f: all(p.name in CACHE_PARTS for p in f.iterdir()), inputs,
                                what="training cache (volumes/, text/)")
    return out


class DiffusionTrainer:
    """One training run; ``run()`` trains to ``config.steps`` (resuming from the run folder's checkpoint)."""

    def __init__(self, config: TrainConfig, inputs: tuple = ()):
        """``inputs``: files the run reads besides those ``config`` names (e.g. the config file)."""
        config.validate()
        self.config = config
        layout = distributed()
        self.distributed = dist.is_available() and layout.active
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.out = claim_run_folder(config, inputs) if self.rank == 0 else Path(os.path.abspath(config.out))
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.world} processes")
        if torch.cuda.is_available():
            self.device = torch.device("cuda", layout.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]

        torch.manual_seed(config.seed)
        self.unet_config = UNetConfig.from_dict({**config.unet, "kind": config.stage})
        self.net = build_unet(self.unet_config).to(self.device)
        self.ema = EMA(self.net, config.ema_decay)
        self.model = DistributedDataParallel(self.net) if self.distributed else self.net
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step, self.consumed = 0, 0
        self.batches = self._data()

    def _data(self) -> Batches:
        cfg = self.config
        cases = read_manifest(cfg.manifest)
        encoder_dir = Path(cfg.text_encoder) if cfg.stage == "lowres" else None
        weights = _text_encoder_weights(encoder_dir) if encoder_dir else None  # checked before anything is written
        if self.rank == 0:  # the run's config first: from here on the folder is recognised as this run
            atomic_write(self.out / RUN_CONFIG, json.dumps(dataclasses.asdict(cfg), indent=2))
        cache = Path(cfg.cache or self.out / "cache")
        grid = Geometry.from_dict(cfg.grid)
        # the low-res stage reads its grid directly: sampling the CT at voxel f·i of the full grid is the same
        # linear interpolation of the original as the official 4x nearest subsample of the resampled volume
        volumes = VolumeCache(cache, grid.subsampled(cfg.lowres_factor) if cfg.stage == "lowres" else grid)
        texts = None
        if self.rank == 0:
            cases = volumes.prepare(cases, cfg.skip_bad)
        if encoder_dir:
            texts = TextFeatureCache(cache, sha256_file(weights)[:16])
            if self.rank == 0:
                texts.prepare(cases, ReportEncoder.from_pretrained(encoder_dir))
        if self.distributed:
            dist.barrier()
            if self.rank != 0:
                cases = [c for c in cases if volumes._complete(c)]
        cases, self.val_cases = split_cases(cases, cfg.val_fraction)
        if cfg.val_every and not self.val_cases:
            raise ValueError("val_every needs validation cases: set val_fraction, or mark cases split=val in the "
                             "manifest")
        return Batches(cfg, cases, volumes, texts)

    # --- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "consumed": self.consumed, "model": self.net.state_dict(),
                "ema": self.ema.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "config": json.dumps(dataclasses.asdict(self.config))}

    def save_checkpoint(self) -> Path:
        path = self.out / "checkpoints" / CHECKPOINT
        if self.rank == 0:
            state = self.state()
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def load_checkpoint(self) -> bool:
        path = self.out / "checkpoints" / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.net.load_state_dict(state["model"])
        self.ema.net.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.consumed = int(state["step"]), int(state["consumed"])
        return True

    def init_weights(self, folder: Path) -> None:
        """Start a fresh run from the weights of a stage folder (warm start: fine-tune a packaged model, or official
        weights converted with ``medsyn models import``, on your own data). The network must be the same; the
        optimizer and the data position start fresh, the EMA from the loaded weights."""
        state = load_stage(folder).state_dict()
        check_state_dict(self.net, state, f"init_from {folder}")
        self.net.load_state_dict(state)
        self.ema.net.load_state_dict(state)
        if self.rank == 0:
            log.info("initialised from %s", folder)

    # --- one optimisation step ------------------------------------------------------------------------
    def _loss(self, x0: torch.Tensor, text: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """Loss of this rank's slice of the global micro-batch (draws made for the whole batch, then sliced)."""
        cfg = self.config
        b = x0.shape[0]
        t = torch.rand(b, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        lo, hi = self.rank * b // self.world, (self.rank + 1) * b // self.world
        x0, t, noise = x0[lo:hi].to(self.device), t[lo:hi].to(self.device), noise[lo:hi].to(self.device)
        x_t = add_noise(x0, t, noise)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            if cfg.stage == "lowres":
                drop = (torch.rand(b, generator=gen) < cfg.text_dropout)[lo:hi].to(self.device)
                text = text[lo:hi].to(self.device)
                text = torch.where(drop[:, None, None], self.net.null_text(hi - lo).to(text.dtype), text)
                pred = self.model(x_t, t * TIME_SCALE, text)
            else:
                alpha = float(torch.rand(1, generator=gen)) * cfg.sr_noise_aug
                aug = torch.randn((b,) + x0.shape[1:], generator=gen)[lo:hi].to(self.device)
                pred = self.model(x_t, t * TIME_SCALE, sr_condition(x0, cfg.lowres_factor, alpha, aug))
        return x0_loss(pred, x0)

    def _micro_batch_loss(self, micro: int) -> torch.Tensor:
        cfg = self.config
        gen = _generator(cfg.seed, self.step, micro, 2)
        x0, text = self.batches.batch(self.consumed, cfg.batch_size, gen)
        self.consumed += cfg.batch_size
        return self._loss(x0, text, gen) / cfg.grad_accum

    def train_step(self) -> float:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            loss = self._micro_batch_loss(micro)
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.step >= cfg.ema_start and self.step % cfg.ema_every == 0:
            self.ema.update(self.net, 0.0 if self.step == cfg.ema_start else None)
        if self.distributed:
            value = torch.tensor([total], device=self.device)
            dist.all_reduce(value)
            total = float(value) / self.world
        return total

    def run(self, stop_after: int | None = None) -> dict:
        """Train until ``config.steps`` (or ``stop_after`` more steps); checkpoints atomically; returns metrics."""
        cfg = self.config
        resumed = self.load_checkpoint()
        if resumed:
            if self.rank == 0:
                log.info("resumed at step %d", self.step)
        elif cfg.init_from:
            self.init_weights(Path(cfg.init_from))
        start_step, t0 = self.step, time.perf_counter()
        last = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        losses = []
        training_log = TrainingLog(self.out, self.step) if self.rank == 0 else None
        try:
            while self.step < last:
                lr = learning_rate(cfg, self.step)
                loss = self.train_step()
                losses.append(loss)
                elapsed = time.perf_counter() - t0
                rate = (self.step - start_step) / elapsed
                eta = (last - self.step) / rate if rate > 0 else math.inf
                if self.rank == 0:
                    entry = {"step": self.step, "loss": loss, "lr": lr, "steps_per_s": round(rate, 4),
                             "eta_s": round(eta, 1), "elapsed_s": round(elapsed, 3)}
                    if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == last):
                        entry["val_loss"] = self.validation_loss()
                    training_log.write(entry)
                    if self.step % cfg.log_every == 0 or self.step == last:
                        val = f" val {entry['val_loss']:.5f}" if "val_loss" in entry else ""
                        print(f"[{cfg.stage}] step {self.step}/{cfg.steps} loss {loss:.5f}{val} lr {lr:.3g} "
                              f"{rate:.2f} steps/s ETA {eta:.0f} s", flush=True)
                if self.step % cfg.checkpoint_every == 0 or self.step == last:
                    self.save_checkpoint()
                if cfg.preview_every and self.rank == 0 and (self.step % cfg.preview_every == 0 or self.step == last):
                    self.write_preview()
        finally:
            if training_log is not None:
                training_log.close()
        return {"step": self.step, "last_loss": losses[-1] if losses else None,
                "mean_loss_last_10": sum(losses[-10:]) / max(1, len(losses[-10:])),
                "wall_s": time.perf_counter() - t0, "resumed": resumed}

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean x0 loss of the training weights on the validation cases, at ``val_timesteps`` evenly spaced
        diffusion times with noise fixed per case and time (seed ``config.seed``): comparable across steps and
        runs; the training RNG is not touched. Low-res: each case's first report, no text dropout. SR: the
        central crop, conditioned on the clean low-res volume (as at inference)."""
        cfg = self.config
        net = self.net.eval()
        total = 0.0
        for i, case in enumerate(self.val_cases):
            x0 = encode_volume(self.batches.volumes.get(case))[None]
            if cfg.stage == "superres" and cfg.crop:
                start = [(s - c) // 2 // cfg.lowres_factor * cfg.lowres_factor for s, c in zip(x0.shape[2:], cfg.crop)]
                x0 = x0[(..., *(slice(a, a + c) for a, c in zip(start, cfg.crop)))]
            x0 = x0.to(self.device)
            for j in range(cfg.val_timesteps):
                t = torch.full((1,), (j + 0.5) / cfg.val_timesteps, device=self.device)
                noise = torch.randn(x0.shape, generator=_generator(cfg.seed, i, j, 3)).to(self.device)
                x_t = add_noise(x0, t, noise)
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                    if cfg.stage == "lowres":
                        pred = net(x_t, t * TIME_SCALE, self.batches.texts.get(case)[None].to(self.device))
                    else:
                        pred = net(x_t, t * TIME_SCALE, sr_condition(x0, cfg.lowres_factor, 0.0, torch.zeros_like(x0)))
                total += float(x0_loss(pred, x0))
        net.train()
        return total / (len(self.val_cases) * cfg.val_timesteps)

    @torch.no_grad()
    def write_preview(self) -> Path:
        """Sample with the EMA weights and write ``previews/step_NNNNNN.png``: the sample (top) above the first
        training case (bottom), axial | coronal | sagittal, lung window, lobe / airway / vessel overlays.

        Low-res stage: conditioned on the first case's report (no guidance). SR stage: conditioned on the first
        case's low-res volume, on the central training crop. ``preview_steps`` DDIM steps from fixed noise (seed
        ``config.seed``), so previews of successive steps are comparable; the training RNG is not touched.
        """
        from ...diffusion.samplers import make_sampler
        from ...diffusion import GuidedDenoiser, SuperResDenoiser, draw_noise, sample
        from ...io.codecs import model_to_hu, model_to_lobes, model_to_mask
        from ...phantom.preview import montage, stack_rows, write_png

        cfg, case = self.config, self.batches.cases[0]
        reference = encode_volume(self.batches.volumes.get(case))[None]
        net = self.ema.net.eval()
        if cfg.stage == "lowres":
            denoise = GuidedDenoiser(net, self.batches.texts.get(case)[None].to(self.device), 1.0)
            spacing = Geometry.from_dict(cfg.grid).subsampled(cfg.lowres_factor).spacing
        else:
            if cfg.crop:
                start = [(s - c) // 2 // cfg.lowres_factor * cfg.lowres_factor
                         for s, c in zip(reference.shape[2:], cfg.crop)]
                reference = reference[(..., *(slice(a, a + c) for a, c in zip(start, cfg.crop)))]
            condition = sr_condition(reference, cfg.lowres_factor, 0.0, torch.zeros_like(reference))
            denoise = SuperResDenoiser(net, condition.to(self.device))
            spacing = Geometry.from_dict(cfg.grid).spacing
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            x = sample(denoise, make_sampler("ddim", cfg.preview_steps),
                       draw_noise(reference.shape, cfg.seed, device=self.device))
        rows = []
        for vol in (x[0].float().cpu(), reference[0]):
            masks = {"lobes": model_to_lobes(vol[1]), "airway": model_to_mask(vol[2]),
                     "vessels": model_to_mask(vol[3])}
            rows.append(montage(model_to_hu(vol[0]).numpy(), tuple(reversed(spacing)), masks, panel=192))
        path = self.out / "previews" / f"step_{self.step:06d}.png"
        write_png(stack_rows(rows), path)
        return path

    def export(self, folder: Path, provenance: dict | None = None) -> Path:
        """Write the EMA weights as a stage folder (this project's format)."""
        meta = {"trained_steps": self.step, "config": dataclasses.asdict(self.config), **(provenance or {})}
        return save_stage(self.ema.net.cpu(), folder, meta)


def _text_encoder_weights(folder: Path) -> Path:
    """The weights file of the text encoder in ``folder`` (``train-text``'s ``OUT/text_encoder``)."""
    for weights in (folder / "model.safetensors", folder / "pytorch_model.bin"):
        if weights.is_file():
            return weights
    raise MedSynError(f"text_encoder {folder} holds no text encoder (model.safetensors or pytorch_model.bin)",
                      "give the text_encoder folder that `medsyn train-text --out OUT` wrote: OUT/text_encoder")
