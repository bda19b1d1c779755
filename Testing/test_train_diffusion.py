"""Diffusion training: checkpoints, exact resume after a kill, DDP with 2 gloo processes, export, bad data."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from MedSynLib.io.images import Geometry
from MedSynLib.modelstore.store import CheckpointError, load_stage
from MedSynLib.train.diffusion import (
    DiffusionTrainer,
    TrainConfig,
    held_out,
    learning_rate,
    split_cases,
    sr_condition,
)

from tiny_model import build_tiny_model
from train_cases import first_step_gradients, write_cases

TESTING = Path(__file__).resolve().parent
GRID = Geometry((32, 32, 32), (4.0, 4.0, 4.0), (-62.0, -62.0, -62.0)).to_dict()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    manifest = write_cases(root / "cases", n=4)
    text_encoder = build_tiny_model(root / "model") / "text_encoder"
    return manifest, text_encoder, root / "cache"


def lowres_config(data, out, **changes):
    manifest, text_encoder, cache = data
    values = dict(stage="lowres", manifest=str(manifest), out=str(out), cache=str(cache),
                  text_encoder=str(text_encoder), grid=GRID,
                  unet={"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "text_dim": 16, "mid_depth": 1},
                  steps=6, batch_size=2, grad_accum=2, lr=1e-3, checkpoint_every=2, log_every=1)
    return TrainConfig(**{**values, **changes})


def weights(trainer):
    return {k: v.clone() for k, v in trainer.net.state_dict().items()}


def test_resume_in_process_is_bit_exact(data, tmp_path):
    schedule = dict(lr_schedule="cosine", warmup_steps=2)
    full = DiffusionTrainer(lowres_config(data, tmp_path / "full", **schedule))
    full.run()
    part = DiffusionTrainer(lowres_config(data, tmp_path / "part", **schedule))
    part.run(stop_after=3)
    resumed = DiffusionTrainer(lowres_config(data, tmp_path / "part", **schedule))
    metrics = resumed.run()
    assert metrics["resumed"] and resumed.step == 6
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(full.ema.net.parameters(), resumed.ema.net.parameters()))
    log = [json.loads(line) for line in (tmp_path / "part" / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4, 5, 6]


def test_learning_rate_warmup_and_cosine_decay():
    config = TrainConfig(lr=1e-3, steps=110, warmup_steps=10, lr_schedule="cosine", lr_min_ratio=0.1)
    rates = [learning_rate(config, s) for s in range(110)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)  # linear warm-up
    assert rates[10] == pytest.approx(1e-3) and rates[60] == pytest.approx(0.55e-3)  # half-way: mean of the ends
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] == pytest.approx(1e-4, rel=1e-2)
    constant = dataclasses.replace(config, lr_schedule="constant")
    assert learning_rate(constant, 5) == pytest.approx(6e-4) and learning_rate(constant, 100) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        dataclasses.replace(config, lr_schedule="step", stage="superres").validate()


def test_demo_phases_replay_the_extended_schedule():
    """The demo's low-res phases (a run to 10,000 steps, resumed with the 17,000-step budget) give, at every step,
    the learning rate of the one-run schedule that packaged the weights (its formula, from the removed
    ``lr_extended_from`` option: cosine to the first budget the step is below, else to ``steps``)."""
    from MedSynLib.train.demo import LOWRES_TRAIN, stage_phases

    steps = 17000
    config = TrainConfig(steps=steps, **{k: v for k, v in LOWRES_TRAIN.items() if k != "preview_every"})

    def packaged(step, extended_from=(10000,)):
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        end = min([e for e in extended_from if step < e], default=steps)
        progress = min(1.0, (step - config.warmup_steps) / max(1, end - config.warmup_steps))
        return config.lr * (config.lr_min_ratio + (1 - config.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    phases = stage_phases("lowres", steps)
    assert phases == [10000, 17000] and stage_phases("lowres", 8000) == [8000] and stage_phases("superres", 9) == [9]
    replayed = [learning_rate(dataclasses.replace(config, steps=next(b for b in phases if s < b)), s)
                for s in range(steps)]
    assert replayed == [packaged(s) for s in range(steps)]  # exactly equal floats, all 17,000 steps


def test_previews_are_written_and_leave_training_unchanged(data, tmp_path):
    plain = DiffusionTrainer(lowres_config(data, tmp_path / "plain", steps=4))
    plain.run()
    shown = DiffusionTrainer(lowres_config(data, tmp_path / "shown", steps=4, preview_every=2, preview_steps=2))
    shown.run()
    a, b = weights(plain), weights(shown)
    assert all(torch.equal(a[k], b[k]) for k in a)
    previews = sorted(p.name for p in (tmp_path / "shown" / "previews").iterdir())
    assert previews == ["step_000002.png", "step_000004.png"]
    png = sitk.ReadImage(str(tmp_path / "shown" / "previews" / "step_000004.png"))
    assert png.GetSize() == (3 * 192, 2 * 192) and png.GetNumberOfComponentsPerPixel() == 3
    rgb = sitk.GetArrayFromImage(png)
    assert rgb[192:].std() > 0 and rgb[:192].std() > 0  # the training case (bottom) and the sample (top)


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    config = lowres_config(data, tmp_path / "killed", steps=30, checkpoint_every=2)
    (tmp_path / "cfg.json").write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
    command = [sys.executable, "-m", "MedSynLib", "train-lowres", "--config"]
    proc = subprocess.Popen(command + [str(tmp_path / "cfg.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = torch.load(checkpoint, weights_only=True)["step"]
    assert interrupted_at < 30
    r = subprocess.run(command + [str(tmp_path / "cfg.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = torch.load(checkpoint, weights_only=True)
    # the uninterrupted run is a process started the same way: an explicit torch.set_num_threads (pytest's
    # conftest) can round differently from a process's default threads, even for the same count
    config = dataclasses.replace(config, out=str(tmp_path / "reference"), checkpoint_every=100)
    (tmp_path / "reference.json").write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
    r = subprocess.run(command + [str(tmp_path / "reference.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    reference = torch.load(tmp_path / "reference" / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] == reference["step"] == 30
    log = [json.loads(line)["step"] for line in (tmp_path / "killed" / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert log == list(range(1, 31))  # steps the killed run logged past its checkpoint are not logged twice
    for part in ("model", "ema"):
        assert all(torch.equal(resumed[part][k], v) for k, v in reference[part].items()), part


def test_two_process_ddp_matches_single_process(data, tmp_path):
    config = lowres_config(data, tmp_path / "ddp", steps=3, grad_accum=1)
    (tmp_path / "cfg.json").write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29517", str(TESTING / "ddp_train_worker.py"), str(tmp_path / "cfg.json"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert all(torch.equal(v, rank1["state"][k]) for k, v in rank0["state"].items())  # replicas identical
    single = DiffusionTrainer(lowres_config(data, tmp_path / "single", steps=3, grad_accum=1))
    grads = first_step_gradients(single)
    metrics = single.run()
    # the same global batch gives the same averaged gradient (Adam then amplifies rounding of near-zero
    # gradients, so later weights are compared through the losses)
    for name, g in grads.items():
        assert torch.allclose(g, rank0["grads"][name], atol=1e-6, rtol=1e-4), name
    first_loss = [json.loads((tmp_path / run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()[0])["loss"]
                  for run in ("single", "ddp")]
    assert abs(first_loss[0] - first_loss[1]) < 1e-6
    assert abs(metrics["last_loss"] - rank0["metrics"]["last_loss"]) < 1e-3


def test_superres_training_crops_and_export(data, tmp_path):
    manifest, _, cache = data
    config = TrainConfig(stage="superres", manifest=str(manifest), out=str(tmp_path / "sr"), cache=str(cache),
                         grid=GRID, crop=[16, 16, 16],
                         unet={"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "mid_depth": 1},
                         steps=2, batch_size=1, precision="bf16", preview_every=2, preview_steps=2)
    trainer = DiffusionTrainer(config)
    metrics = trainer.run()
    assert metrics["step"] == 2 and metrics["last_loss"] > 0
    assert (tmp_path / "sr" / "previews" / "step_000002.png").is_file()
    stage = trainer.export(tmp_path / "sr_stage")
    net = load_stage(stage)
    assert net.config.kind == "superres"
    assert json.loads((stage / "config.json").read_text(encoding="utf-8"))["provenance"]["trained_steps"] == 2


def test_sr_condition_is_the_official_degradation():
    x = torch.arange(2 * 8 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8, 8)
    up = sr_condition(x, 4, 0.0, torch.zeros_like(x))
    assert torch.equal(up[..., :4, :4, :4], x[..., :1, :1, :1].expand(1, 2, 4, 4, 4))
    assert torch.equal(up[..., 4, 5, 6], x[..., 4, 4, 4])
    assert torch.allclose(sr_condition(x, 4, 0.25, torch.ones_like(x)), 0.75 * up + 0.25)


def test_bad_cases_are_named_or_skipped(data, tmp_path):
    manifest, text_encoder, _ = data
    bad = tmp_path / "bad.csv"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines.append("broken,case000/missing.nii.gz,case000/lobes.nii.gz,case000/airway.nii.gz,"
                 "case000/vessels.nii.gz,case000/report.txt")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (manifest.parent / "bad.csv").write_text(bad.read_text(encoding="utf-8"))
    config = lowres_config(data, tmp_path / "bad", steps=1)
    config.manifest, config.cache = str(manifest.parent / "bad.csv"), str(tmp_path / "cache")
    with pytest.raises(ValueError, match="case broken: CT file not found"):
        DiffusionTrainer(config)
    config.skip_bad = True
    assert len(DiffusionTrainer(config).batches.cases) == 4
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"stepz": 3})


def test_cases_with_several_reports_train_on_each_of_them(data, tmp_path):
    """A manifest row may list paraphrases (';'): features are cached per report, each sample draws one."""
    from MedSynLib.data.manifest import read_manifest

    manifest, _, _ = data
    (manifest.parent / "case000" / "report_b.txt").write_text("# comment\nFINDINGS: Both pleural spaces hold "
                                                                "large effusions. IMPRESSION: Bilateral effusions.")
    rows = manifest.read_text(encoding="utf-8").splitlines()
    rows[1] = rows[1].replace("case000/report.txt", "case000/report.txt;case000/report_b.txt")
    several = manifest.parent / "several.csv"
    several.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cases = read_manifest(several)
    assert len(cases[0].reports) == 2 and cases[0].reports[1].startswith("FINDINGS: Both")
    assert cases[0].report == cases[0].reports[0] and len(cases[1].reports) == 1

    config = lowres_config(data, tmp_path / "run", steps=1)
    config.manifest, config.cache = str(several), str(tmp_path / "cache")
    batches = DiffusionTrainer(config).batches
    case = batches.cases[0]
    both = [batches.texts.get(case, k) for k in (0, 1)]
    assert not torch.equal(*both)
    drawn = {int(torch.argmin(torch.stack([(batches.sample(0, torch.Generator().manual_seed(s))[1] - f).abs().sum()
                                            for f in both]))) for s in range(12)}
    assert drawn == {0, 1}, "training must see every report of a case"

    (manifest.parent / "case000" / "empty.txt").write_text("# only a comment\n", encoding="utf-8")
    several.write_text("\n".join([rows[0], rows[1].replace("case000/report.txt;case000/report_b.txt",
                                                            "case000/empty.txt")]) + "\n")
    with pytest.raises(ValueError, match="case case000: empty report"):
        read_manifest(several)


def test_init_from_warm_starts_from_a_stage_folder(data, tmp_path):
    base = DiffusionTrainer(lowres_config(data, tmp_path / "base", steps=2))
    base.run()
    stage = base.export(tmp_path / "base_stage")
    warm = DiffusionTrainer(lowres_config(data, tmp_path / "warm", steps=1, init_from=str(stage)))
    warm.run(stop_after=0)
    for key, value in base.ema.net.state_dict().items():
        assert torch.equal(warm.net.state_dict()[key], value) and torch.equal(warm.ema.net.state_dict()[key], value)
    assert warm.run()["step"] == 1  # and trains on from there
    resumed = DiffusionTrainer(lowres_config(data, tmp_path / "warm", steps=2, init_from=str(stage)))
    resumed.rank = 1  # as the second process of a DDP run: a checkpoint wins over init_from on every rank
    resumed.run(stop_after=0)
    assert resumed.step == 1 and all(torch.equal(resumed.net.state_dict()[k], v)
                                     for k, v in warm.net.state_dict().items())
    other = lowres_config(data, tmp_path / "other", unet={"dim": 16, "dim_mults": [1, 2], "attn_heads": 1,
                                                          "text_dim": 16, "mid_depth": 1}, init_from=str(stage))
    with pytest.raises(CheckpointError, match="init_from .* does not fit"):
        DiffusionTrainer(other).run()


def with_split(manifest: Path, val: set[str]) -> Path:
    """A copy of ``manifest`` (same folder) whose ``split`` column marks the cases in ``val`` for validation."""
    lines = manifest.read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",split"] + [line + (",val" if line.split(",")[0] in val else ",train") for line in lines[1:]]
    path = manifest.with_name("split.csv")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_log_validation_and_tensorboard(data, tmp_path, monkeypatch, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest = with_split(data[0], {"case003"})
    watched = DiffusionTrainer(lowres_config(data, tmp_path / "watched", manifest=str(manifest), steps=3,
                                             val_every=2, val_timesteps=2))
    assert [c.case_id for c in watched.val_cases] == ["case003"] and len(watched.batches.cases) == 3
    watched.run()
    log = [json.loads(line) for line in (tmp_path / "watched" / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and [e["lr"] for e in log] == [1e-3] * 3
    assert all(math.isfinite(e[k]) and e[k] >= 0 for e in log for k in ("loss", "steps_per_s", "eta_s"))
    assert log[-1]["eta_s"] == 0 and [("val_loss" in e) for e in log] == [False, True, True]  # and the last step
    assert all(math.isfinite(e["val_loss"]) and e["val_loss"] > 0 for e in log[1:])

    events = EventAccumulator(str(tmp_path / "watched" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/steps_per_s", "val/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/loss")] == [2, 3]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx([log[1]["val_loss"], log[2]["val_loss"]])
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([e["loss"] for e in log])

    # validation leaves training unchanged; without tensorboard installed nothing is written and nothing fails
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    plain = DiffusionTrainer(lowres_config(data, tmp_path / "plain", manifest=str(manifest), steps=3))
    plain.run()
    a, b = weights(watched), weights(plain)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "plain" / "tensorboard").exists()
    assert "val_loss" not in (tmp_path / "plain" / "train_log.jsonl").read_text(encoding="utf-8")


def test_validation_cases_are_held_out_by_id():
    from MedSynLib.data.manifest import Case

    ids = [f"patient{i:04d}" for i in range(2000)]
    chosen = {i for i in ids if held_out(i, 0.1)}
    assert 150 < len(chosen) < 250 and chosen == {i for i in reversed(ids) if held_out(i, 0.1)}
    assert {i for i in ids if held_out(i, 0.2)} >= chosen  # a larger fraction keeps the earlier choice
    cases = [Case(i, *(Path("x"),) * 4, ("r",)) for i in ids[:50]]
    train, val = split_cases(cases, 0.1)
    assert {c.case_id for c in val} == chosen & set(ids[:50]) and len(train) + len(val) == 50
    assert split_cases(cases, 0.0) == (cases, [])
    with pytest.raises(ValueError, match="holds out none"):
        split_cases(cases[:1], 0.01)


def test_a_missing_text_encoder_is_named_before_the_data_is_prepared(data, tmp_path):
    from MedSynLib.errors import MedSynError

    config = lowres_config(data, tmp_path / "out", text_encoder=str(tmp_path / "text" / "text_encoder"),
                           cache=str(tmp_path / "cache"))
    with pytest.raises(MedSynError, match="holds no text encoder") as refused:
        DiffusionTrainer(config)  # was StopIteration, exit code 1 ("internal error"), after the volume cache
    assert "train-text" in refused.value.fix and not (tmp_path / "cache").exists()
