"""Benchmark of one full generation (text encoding, low-res sampling, super-resolution sampling), the SR
network's peak memory per depth, and the command line's start-up time, in one JSON.

    python -m MedSynLib.bench --config tiny --device cpu --json bench.json
    python -m MedSynLib.bench --config official --device cuda --precision bf16 --sr-depths 16,32,64

Networks and the text encoder get random weights of the chosen size (timing does not depend on the values).
``--sr-depths``: one official-size SR forward (no_grad, 256² slices) per depth, each in a fresh process, its
peak memory (process max RSS on the CPU, max allocated on CUDA) and the straight line through them
extrapolated to 256 slices (``--sr-memory-only``: only that). Start-up: medians of whole-process wall times of
``python -c "import torch"``, ``python -m MedSynLib --help`` and importing the generation pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from . import __version__
from .diffusion import GuidedDenoiser, SuperResDenoiser, draw_noise, make_sampler, sample, upsample_lowres
from .models import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, LowResUNet, SuperResUNet, UNetConfig
from .io.files import atomic_write
from . import arguments
from .run_settings import MODEL_DEFAULTS, PRECISIONS, SAMPLER_NAMES, RunSettings
from .runtime import autocast, resolve_device, resolve_precision, reuse_freed_memory
from .errors import run_guarded

PRESETS = {
    # name: (lowres config, superres config, lowres size, sr factor, BERT (layers, hidden, heads));
    # the BERT hidden size is the low-res network's text_dim
    "official": (OFFICIAL_LOWRES, OFFICIAL_SUPERRES, 64, 4, (12, 768, 12)),
    "tiny": (UNetConfig(kind="lowres", dim=16, dim_mults=(1, 2, 4), attn_heads=2, text_dim=64, mid_depth=1),
             UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=1, mid_depth=1), 32, 2, (2, 64, 2)),
}
REPORT = ("FINDINGS: Large bilateral pleural effusions with adjacent compressive atelectasis. The heart is enlarged. "
          "IMPRESSION: Large bilateral pleural effusions. Cardiomegaly.")


def _random_text_encoder(layers: int, hidden: int, heads: int, tmp_vocab: str):
    """A ReportEncoder of this size with random weights (transformers is imported here: the memory benchmark's
    processes do not load it)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from .models.text_encoder import ReportEncoder

    words = sorted(set(REPORT.lower().replace(".", " .").replace(":", " :").split()))
    with open(tmp_vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=hidden * 4, max_position_embeddings=2048)
    return ReportEncoder(BertModel(config, add_pooling_layer=False), BertTokenizer(tmp_vocab))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kib / 2**20


def run(config: str, settings: RunSettings, channels_last: bool = False) -> dict:
    """Generate once with the random-weight networks of the preset ``config``: timings, network evaluations and peak
    memory. ``settings``: device, precision, seed, sampler and steps (unset: :data:`MODEL_DEFAULTS`, the official
    DDIM 50 / 20 without guidance), ``lowres_only`` skips the SR stage."""
    settings = settings.resolved(MODEL_DEFAULTS)
    seed, sampler, guidance = settings.seed, settings.sampler, settings.guidance
    device = resolve_device(settings.device)
    dtype = resolve_precision(settings.precision, device)
    reuse_freed_memory()  # as the command line's sampling commands do
    low_cfg, sr_cfg, size, factor, bert = PRESETS[config]
    torch.manual_seed(seed)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    low = LowResUNet(low_cfg).to(device).eval().to(memory_format=memory_format)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = _random_text_encoder(layers=bert[0], hidden=low_cfg.text_dim, heads=bert[2],
                                       tmp_vocab=f"{tmp}/vocab.txt").to(device)
    timings, evals = {}, {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device, dtype):
        text = encoder([REPORT])
    _sync(device)
    timings["text_s"] = time.perf_counter() - t0

    shape = (1, low_cfg.channels, size, size, size)
    low_sampler = make_sampler(sampler, settings.steps_lowres)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device, dtype):
        x64 = sample(GuidedDenoiser(low, text, guidance), low_sampler, draw_noise(shape, seed, device=device))
    _sync(device)
    timings["lowres_s"] = time.perf_counter() - t0
    evals["lowres"] = len(low_sampler.timesteps) * (1 if guidance == 1.0 else 2)
    peak_low = _peak_memory_gib(device)
    del low

    if not settings.lowres_only:
        sr = SuperResUNet(sr_cfg).to(device).eval().to(memory_format=memory_format)
        sr_sampler = make_sampler(sampler, settings.steps_sr)
        big = (1, sr_cfg.channels, size * factor, size * factor, size * factor)
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(device, dtype):
            lowres_up = upsample_lowres(x64.float(), factor)
            sample(SuperResDenoiser(sr, lowres_up), sr_sampler, draw_noise(big, seed + 1, device=device))
        _sync(device)
        timings["superres_s"] = time.perf_counter() - t0
        evals["superres"] = len(sr_sampler.timesteps)

    return {
        "config": config, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "fast_paths": {"precision": str(dtype).removeprefix("torch."), "attention": "scaled_dot_product_attention",
                       "channels_last_3d": channels_last},
        "sampler": sampler, "guidance": guidance, "network_evaluations": evals,
        "lowres_size": size, "superres_size": None if settings.lowres_only else size * factor,
        "timings_s": {**timings, "total_s": sum(timings.values())},
        "peak_memory_gib": {"after_lowres": peak_low, "overall": _peak_memory_gib(device),
                            "kind": "CUDA max allocated" if device.type == "cuda" else "process max RSS"},
        "versions": {"medsyn": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def sr_forward_peak_gib(depth: int, device_name: str, precision: str, size: int = 256) -> float:
    """Peak memory of one official-size SR forward on (1, 4, depth, size, size), no_grad, random weights, in this
    process (call it in a fresh one): process max RSS (CPU, weights included) or CUDA max allocated, GiB."""
    device = resolve_device(device_name)
    dtype = resolve_precision(precision, device)
    torch.manual_seed(0)
    net = SuperResUNet(OFFICIAL_SUPERRES).to(device).eval()
    x = torch.randn(1, OFFICIAL_SUPERRES.channels, depth, size, size, device=device)
    with torch.no_grad(), autocast(device, dtype):
        net(x, torch.full((1,), 500.0, device=device), x.clamp(-1, 1))
    _sync(device)
    return _peak_memory_gib(device)


def sr_memory(depths: list[int], device_name: str, precision: str) -> dict:
    """:func:`sr_forward_peak_gib` per depth, each in a fresh process, and the line through them at 256 slices."""
    peaks = {}
    for depth in depths:
        code = (f"from MedSynLib.bench import sr_forward_peak_gib; "
                f"print(sr_forward_peak_gib({depth}, {device_name!r}, {precision!r}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        peaks[depth] = float(out.stdout.split()[-1])
    device = resolve_device(device_name)
    result = {"peak_gib_by_depth": peaks, "slices": "256x256", "network": "official SR, random weights",
              "device": str(device), "precision": str(resolve_precision(precision, device)).removeprefix("torch."),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
              "torch": torch.__version__}
    if len(peaks) >= 2:
        xs, ys = list(peaks), list(peaks.values())
        slope, intercept = statistics.linear_regression(xs, ys)
        result.update(gib_per_slice=slope, extrapolated_256_slices_gib=intercept + 256 * slope)
    return result


def startup(repeats: int = 7) -> dict:
    """Median whole-process wall seconds of importing torch, ``medsyn --help`` and importing the pipeline."""
    commands = {"import_torch_s": ["-c", "import torch"], "medsyn_help_s": ["-m", "MedSynLib", "--help"],
                "import_pipeline_s": ["-c", "import MedSynLib.pipelines.generation"]}
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(repeats):  # interleaved, so that a busy moment hits every command alike
        for key, args in commands.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=True)
            times[key].append(time.perf_counter() - t0)
    result = {k: statistics.median(v) for k, v in times.items()}
    result["help_over_import_torch"] = result["medsyn_help_s"] / result["import_torch_s"]
    return result


EVALUATIONS = """
import resource, sys, torch
from MedSynLib.runtime import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
faults = []
for _ in range(7):  # network evaluations: a chain of 64 MiB activations, each freed once the next is made
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    for _ in range(4):
        x = x * 2
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def page_faults() -> dict:
    """Minor page faults per evaluation of a chain of 64 MiB activations (16,384 pages each), with and without
    :func:`~MedSynLib.runtime.reuse_freed_memory`: the median of the last 3 of 7 evaluations (with reuse the heap
    grows over the first one to three, then takes no new faults; without it glibc maps each block afresh)."""
    result = {"pages_per_activation": 64 * 2**20 // 4096}
    for mode in ("reuse", "default"):
        run = subprocess.run([sys.executable, "-c", EVALUATIONS, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        applied, *faults = run.stdout.split()
        result[mode] = {"applied": applied == "True", "faults": [int(f) for f in faults],
                        "median_last_3": statistics.median(int(f) for f in faults[-3:])}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedSynLib.bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", type=arguments.device, default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default=None, choices=PRECISIONS)
    p.add_argument("--steps-lowres", type=arguments.steps, default=None, help=f"default {MODEL_DEFAULTS['steps_lowres']}")
    p.add_argument("--steps-sr", type=arguments.steps, default=None, help=f"default {MODEL_DEFAULTS['steps_sr']}")
    p.add_argument("--guidance", type=arguments.guidance, default=None, help=f"default {MODEL_DEFAULTS['guidance']}")
    p.add_argument("--sampler", default=None, choices=SAMPLER_NAMES, help=f"default {MODEL_DEFAULTS['sampler']}")
    p.add_argument("--channels-last", action="store_true", help="use channels_last_3d memory format")
    p.add_argument("--lowres-only", action="store_true", default=None)
    p.add_argument("--seed", type=arguments.seed, default=None)
    p.add_argument("--sr-depths", default="", metavar="F,F,...",
                   help="also measure the official SR network's peak memory at these depths (e.g. 16,32,64)")
    p.add_argument("--sr-memory-only", action="store_true",
                   help="measure only the SR peak memory of --sr-depths (no generation, no start-up times)")
    p.add_argument("--page-faults", action="store_true",
                   help="also measure page faults per network evaluation with and without the reuse of freed memory "
                        "(Linux)")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    settings = RunSettings.from_args(args).resolved(MODEL_DEFAULTS)
    if args.sr_memory_only and not args.sr_depths:
        p.error("--sr-memory-only measures the depths of --sr-depths; give them, e.g. --sr-depths 16,32,64")
    result = {}
    if not args.sr_memory_only:
        result = run(args.config, settings, args.channels_last)
        result["startup"] = startup()
        _print_generation(result, args.config, settings)
    if args.sr_depths:
        result["sr_memory"] = m = sr_memory([int(d) for d in args.sr_depths.split(",")], settings.device,
                                            settings.precision)
        print("SR forward peak: " + ", ".join(f"{d} slices {g:.2f} GiB" for d, g in m["peak_gib_by_depth"].items())
              + (f"; {m['extrapolated_256_slices_gib']:.1f} GiB at 256 slices" if "gib_per_slice" in m else ""))
    if args.page_faults:
        result["page_faults"] = f = page_faults()
        print(f"page faults per evaluation (64 MiB activations, {f['pages_per_activation']} pages): "
              f"{f['reuse']['median_last_3']:.0f} with reuse of freed memory, {f['default']['median_last_3']:.0f} "
              f"without")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def _print_generation(result: dict, config: str, settings: RunSettings) -> None:
    t = result["timings_s"]
    print(f"MedSyn benchmark, config {config} on {result['device']} ({result['device_name']}), "
          f"{result['fast_paths']['precision']}, sampler {settings.sampler}, guidance {settings.guidance}")
    for stage in ("text_s", "lowres_s", "superres_s"):
        if stage in t:
            print(f"  {stage[:-2]:9s} {t[stage]:8.2f} s")
    print(f"  total     {t['total_s']:8.2f} s; network evaluations {result['network_evaluations']}")
    print(f"  peak memory {result['peak_memory_gib']['overall']:.2f} GiB ({result['peak_memory_gib']['kind']})")
    s = result["startup"]
    print(f"  start-up: import torch {s['import_torch_s']:.2f} s, medsyn --help {s['medsyn_help_s']:.2f} s "
          f"({s['help_over_import_torch']:.2f}x), import pipeline {s['import_pipeline_s']:.2f} s")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
