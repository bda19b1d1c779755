"""The training loop of the report encoder, its held-out evaluation and the data order."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ...models.text_encoder import ReportEncoder
from ...runtime import resolve_device
from ..monitor import TrainingLog
from .checkpoint import CHECKPOINT_DIR, ENCODER_DIR, METRICS_FILE, checkpoint_dir, replace_dir, temp_dir, write_json
from .config import RESUMABLE_CHANGES, TextTrainConfig, draw_generator, draw_seed
from .corpus import corpus_digest, heldout_split, load_corpus
from .examples import Examples, step_batch
from .model import PretrainingModel, bert_config_from, build_model, losses, make_optimizer, make_schedule
from .vocab import load_tokenizer, train_wordpiece_vocab, write_vocab

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: PretrainingModel, examples: Examples, cfg: TextTrainConfig) -> dict:
    """Held-out MLM accuracy (over predicted tokens) and pairing accuracy, ``eval_repeats`` seeded passes."""
    was_training = model.training
    model.eval()
    sums = Counter()
    for repeat in range(cfg.eval_repeats):
        gen = draw_generator(cfg.seed, "eval", repeat)
        for start in range(0, len(examples), cfg.batch_size):
            rows = list(range(start, min(start + cfg.batch_size, len(examples))))
            out = losses(model, step_batch(examples, rows, gen, cfg))
            sums["mlm_loss"] += float(out["mlm_loss"]) * int(out["mlm_count"])
            sums["pairing_loss"] += float(out["pairing_loss"]) * int(out["pair_count"])
            for key in ("mlm_correct", "mlm_count", "pair_correct", "pair_count"):
                sums[key] += int(out[key])
    model.train(was_training)
    return {"mlm_accuracy": sums["mlm_correct"] / sums["mlm_count"],
            "pairing_accuracy": sums["pair_correct"] / sums["pair_count"],
            "mlm_loss": sums["mlm_loss"] / sums["mlm_count"], "pairing_loss": sums["pairing_loss"] / sums["pair_count"],
            "masked_tokens": sums["mlm_count"], "pairs": sums["pair_count"], "reports": len(examples)}


class _Order:
    """Row of sample ``p`` of the training stream: epoch ``p // n`` is a seeded permutation of the split."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.cache = n, seed, {}

    def rows(self, start: int, count: int) -> list[int]:
        out = []
        for p in range(start, start + count):
            epoch = p // self.n
            if epoch not in self.cache:
                order = torch.randperm(self.n, generator=draw_generator(self.seed, "epoch", epoch))
                self.cache = {epoch: order.tolist()}
            out.append(self.cache[epoch][p % self.n])
        return out


def train_text_encoder(reports: str | Path | Sequence[str], out_dir: str | Path,
                       config: TextTrainConfig | dict | None = None, *, resume: bool = False,
                       progress: Callable[[dict], None] | None = None,
                       stop: Callable[[], bool] | None = None) -> dict:
    """Train a report encoder (MLM + Findings/Impression pairing) and write ``out_dir/text_encoder`` and
    ``out_dir/training.json``. Returns the metrics written to training.json; if the run stops early (``stop_at``
    or ``stop()`` true after a step) a checkpoint is written and ``{"stopped": True, "step": ...}`` is returned.

    reports: list of report strings, a manifest CSV or a folder of ``*.txt``.
    resume: continue from ``out_dir/checkpoint`` (the config must match the checkpoint's, see RESUMABLE_CHANGES).
    """
    cfg = config if isinstance(config, TextTrainConfig) else TextTrainConfig.from_dict(dict(config or {}))
    cfg.validate()
    emit = progress or (lambda e: log.info("%s", e.get("message") or e))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus, skipped = load_corpus(reports, cfg.skip_bad)
    digest = corpus_digest(corpus)
    checkpoint = checkpoint_dir(out)
    if checkpoint and not resume:
        raise FileExistsError(f"{out} holds a training checkpoint. Fix: pass --resume (resume=True) to continue "
                              "it, or choose another output folder")
    state = None
    if resume and checkpoint:
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
        saved = state["config"]
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if changed:
            raise ValueError(f"cannot resume {checkpoint}: options differ from the checkpoint's: "
                             + ", ".join(f"{k} {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
                             + ". Fix: run it with the checkpoint's options, or choose another output folder")
        if state["corpus_sha256"] != digest:
            raise ValueError(f"cannot resume {checkpoint}: the report corpus differs from the one it was trained on")
    elif resume:
        emit({"event": "message", "message": f"no checkpoint in {out}: starting from step 0"})

    train_rows, held_rows = heldout_split(corpus, cfg)
    train_reports = [corpus[i] for i in train_rows]
    if state is not None:
        tokenizer = load_tokenizer(checkpoint, state["do_lower_case"])
        tokenizer_source = state["tokenizer_source"]
    elif cfg.init:
        init_fields = json.loads((Path(cfg.init) / "config.json").read_text(encoding="utf-8")) \
            if (Path(cfg.init) / "config.json").is_file() else {}
        tokenizer = load_tokenizer(Path(cfg.init), init_fields.get("do_lower_case", True))
        tokenizer_source = f"init: {cfg.init}"
    else:
        t0 = time.perf_counter()
        vocab = train_wordpiece_vocab([r.text for r in train_reports], cfg.vocab_size, cfg.min_frequency)
        tmp_vocab = temp_dir(out, "vocab")
        write_vocab(vocab, tmp_vocab / "vocab.txt")
        tokenizer = load_tokenizer(tmp_vocab)
        shutil.rmtree(tmp_vocab)
        tokenizer_source = "trained on the corpus"
        emit({"event": "message", "message": f"WordPiece vocabulary: {len(vocab)} tokens learnt from "
                                             f"{len(train_reports)} reports in {time.perf_counter() - t0:.1f} s"})
    do_lower_case = bool(getattr(tokenizer, "do_lower_case", True))
    train = Examples(train_reports, tokenizer, cfg.max_length)
    held = Examples([corpus[i] for i in held_rows], tokenizer, cfg.max_length) if held_rows else None
    total = cfg.total_steps(len(train))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.1 * total))

    device = resolve_device(cfg.device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(draw_seed(cfg.seed, "init"))
        if state is not None:
            bert_config = bert_config_from(state["bert_config"])
            model, _, notes = build_model(cfg, None, bert_config)
        else:
            model, bert_config, notes = build_model(cfg, len(tokenizer.get_vocab()))
        if bert_config.vocab_size < len(tokenizer.get_vocab()):
            raise ValueError(f"the vocabulary has {len(tokenizer.get_vocab())} tokens, the model only "
                             f"{bert_config.vocab_size} embeddings")
        model.to(device)
        optimizer = make_optimizer(model, cfg)
        scheduler = make_schedule(optimizer, warmup, total)
        step, wall, history = 0, 0.0, []
        torch.manual_seed(draw_seed(cfg.seed, "dropout"))
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if cuda and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], cuda[0])
            step, wall, history, notes = state["step"], state["wall_s"], state["history"], state["notes"]
            emit({"event": "message", "message": f"resumed {checkpoint} at step {step}/{total}"})
        parameters = sum(p.numel() for p in model.bert.parameters())
        emit({"event": "message", "message": f"text encoder: {bert_config.num_hidden_layers} layers, hidden "
              f"{bert_config.hidden_size}, {parameters / 1e6:.2f} M parameters; {len(train)} training / "
              f"{len(held) if held else 0} held-out reports; {total} steps of {cfg.batch_size} on {device}"})

        def save_checkpoint() -> None:
            tmp = temp_dir(out, CHECKPOINT_DIR)
            torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(cuda[0]) if cuda else None,
                        "config": cfg.to_dict(), "bert_config": bert_config.to_dict(), "corpus_sha256": digest,
                        "wall_s": wall, "history": history, "notes": notes, "do_lower_case": do_lower_case,
                        "tokenizer_source": tokenizer_source}, tmp / "state.pt")
            vocab_items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
            write_vocab([t for t, _ in vocab_items], tmp / "vocab.txt")
            (tmp / "bert_config.json").write_text(bert_config.to_json_string(), encoding="utf-8")
            replace_dir(tmp, out / CHECKPOINT_DIR)

        order = _Order(len(train), cfg.seed)
        model.train()
        window, t_window, t_run, first, wall_before = Counter(), time.perf_counter(), time.perf_counter(), step, wall
        training_log = TrainingLog(out, step)
        while step < total:
            rows = order.rows(step * cfg.batch_size, cfg.batch_size)
            batch = step_batch(train, rows, draw_generator(cfg.seed, "step", step), cfg)
            result = losses(model, batch)
            optimizer.zero_grad(set_to_none=True)
            result["loss"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            window["n"] += 1
            for key in ("loss", "mlm_loss", "pairing_loss"):
                window[key] += float(result[key].detach())
            for key in ("mlm_correct", "mlm_count", "pair_correct", "pair_count"):
                window[key] += int(result[key])
            stopping = (cfg.stop_at is not None and step >= cfg.stop_at) or bool(stop and stop())
            if step % cfg.log_every == 0 or step == total or stopping:
                now = time.perf_counter()
                rate = window["n"] / max(now - t_window, 1e-9)
                entry = {"step": step, "loss": window["loss"] / window["n"],
                         "mlm_loss": window["mlm_loss"] / window["n"],
                         "pairing_loss": window["pairing_loss"] / window["n"],
                         "mlm_accuracy": window["mlm_correct"] / max(1, window["mlm_count"]),
                         "pairing_accuracy": window["pair_correct"] / max(1, window["pair_count"])}
                history.append(entry)
                logged = {**entry, "lr": lr, "steps_per_s": rate, "eta_s": (total - step) / max(rate, 1e-9)}
                if held is not None and cfg.val_every and (step % cfg.val_every == 0 or step == total):
                    with torch.no_grad():
                        logged.update({f"val_{k}": v for k, v in evaluate(model, held, cfg).items()
                                       if k in ("mlm_loss", "pairing_loss", "mlm_accuracy", "pairing_accuracy")})
                    logged["val_loss"] = logged["val_mlm_loss"] + logged["val_pairing_loss"]
                training_log.write(logged)
                emit({"event": "progress", **logged, "total": total})
                window, t_window = Counter(), now
            if stopping or step % cfg.checkpoint_every == 0 or step == total:
                wall += time.perf_counter() - t_run
                t_run = time.perf_counter()
                save_checkpoint()
            if stopping and step < total:
                training_log.close()
                emit({"event": "message", "message": f"stopped at step {step}/{total}; checkpoint in "
                                                     f"{out / CHECKPOINT_DIR} (continue with --resume)"})
                return {"stopped": True, "step": step, "total_steps": total}
        training_log.close()
        wall += time.perf_counter() - t_run

        heldout = evaluate(model, held, cfg) if held is not None else None
        tmp = temp_dir(out, ENCODER_DIR)
        ReportEncoder(model.bert.cpu(), tokenizer).save_pretrained(tmp)
        replace_dir(tmp, out / ENCODER_DIR)
        model.train()

    metrics = {
        "text_encoder": str(out / ENCODER_DIR),
        "config": {**cfg.to_dict(), "lr": cfg.learning_rate(), "warmup_steps": warmup},
        "model": {"hidden": bert_config.hidden_size, "layers": bert_config.num_hidden_layers,
                  "heads": bert_config.num_attention_heads, "intermediate": bert_config.intermediate_size,
                  "vocab_size": bert_config.vocab_size, "max_positions": bert_config.max_position_embeddings,
                  "encoder_parameters": parameters, **notes},
        "tokenizer": {"source": tokenizer_source, "vocab_size": len(tokenizer.get_vocab()),
                      "do_lower_case": do_lower_case},
        "corpus": {"source": str(reports) if isinstance(reports, (str, Path)) else "list of strings",
                   "reports": len(corpus), "train": len(train), "heldout": len(held) if held else 0,
                   "skipped": skipped, "sha256": digest},
        "steps": step, "total_steps": total, "wall_time_s": round(wall, 3),
        "steps_per_s": round((step - first) / max(wall - wall_before, 1e-9), 3) if step > first else None,
        "heldout": heldout, "final_train": history[-1] if history else None, "history": history,
    }
    write_json(out / METRICS_FILE, metrics)
    if heldout:
        emit({"event": "message", "message": f"held-out ({heldout['reports']} reports): MLM accuracy "
              f"{heldout['mlm_accuracy']:.3f}, pairing accuracy {heldout['pairing_accuracy']:.3f}"})
    emit({"event": "message", "message": f"wrote {out / ENCODER_DIR} and {out / METRICS_FILE}"})
    return metrics
