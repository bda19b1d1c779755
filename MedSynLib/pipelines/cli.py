"""``medsyn generate`` and ``medsyn segment``: argument parsing, progress reporting and cancellation."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from ..io.images import read_image
from ..models_hub.bundle import load_model
from ..models_hub.registry import resolve_model
from ..runtime import PRECISIONS, resolve_device
from .generate import generate, segment
from .outputs import write_result


class Reporter:
    """Progress as a terminal line (``text``) or one JSON object per line on stdout (``json``)."""

    def __init__(self, mode: str):
        self.mode, self.start, self.stage_start = mode, time.perf_counter(), {}

    def emit(self, event: dict) -> None:
        if self.mode == "json":
            print(json.dumps(event), flush=True)

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.perf_counter()
        t0 = self.stage_start.setdefault(stage, now if step <= 1 else self.start)
        rate = (now - t0) / max(step, 1)
        eta = rate * (total - step)
        if self.mode == "json":
            self.emit({"event": "progress", "stage": stage, "step": step, "total": total,
                       "elapsed_s": round(now - self.start, 3), "eta_s": round(eta, 3)})
        else:
            bar = "#" * int(30 * step / total)
            print(f"\r{stage:9s} [{bar:30s}] {step}/{total} ETA {eta:5.0f} s", end="", file=sys.stderr, flush=True)
            if step == total:
                print(file=sys.stderr)


def _common(p) -> None:
    p.add_argument("--model", default=None, help="registry name or model folder (default: the packaged demo model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-lowres", type=int, default=None, help="low-res sampler steps (model default: 50)")
    p.add_argument("--steps-sr", type=int, default=None, help="super-resolution sampler steps (model default: 20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--sampler", default=None, help="ddim (official) or dpmpp2m")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--lowres-only", action="store_true", help="stop after the 64³ stage (fast preview)")
    p.add_argument("--progress", choices=("text", "json"), default="text")
    p.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="report (+ optional anatomy) -> SYNTHETIC CT with lobe/airway/vessel masks")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--report", help="report text (Findings / Impression)")
    src.add_argument("--report-file", type=Path, help="file holding the report text")
    for name in ("lobes", "airway", "vessels"):
        g.add_argument(f"--{name}", type=Path, help=f"{name} label map to hold fixed (NIfTI/NRRD, any geometry)")
    _common(g)
    g.set_defaults(func=_run, mode="generate")
    s = sub.add_parser("segment", help="segment a real CT by holding the CT channel fixed")
    s.add_argument("--ct", required=True, type=Path, help="CT in HU (NIfTI/NRRD)")
    s.add_argument("--report", default=None, help="optional report text to condition on")
    _common(s)
    s.set_defaults(func=_run, mode="segment")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(args) -> int:
    reporter = Reporter(args.progress)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        folder = resolve_model(args.model)
        device = resolve_device(args.device)
        settings = dict(seed=args.seed, steps_lowres=args.steps_lowres, steps_sr=args.steps_sr,
                        guidance=args.guidance, sampler=args.sampler, precision=args.precision,
                        lowres_only=args.lowres_only, progress=reporter)
        if args.mode == "generate":
            report = args.report if args.report is not None else _read_report(args.report_file)
            conditions = {n: read_image(getattr(args, n), n) for n in ("lobes", "airway", "vessels")
                          if getattr(args, n) is not None}
            model = load_model(folder, device, load_superres=not args.lowres_only)
            result = generate(report, model, conditions, **settings)
        else:
            ct = read_image(args.ct, "CT")
            model = load_model(folder, device, load_superres=not args.lowres_only)
            result = segment(ct, model, report=args.report, **settings)
        info = {"name": model.name, "path": str(folder), "sha256": model.sha256}
        sidecar = write_result(result, args.out, args.mode, info)
    except KeyboardInterrupt:
        reporter.emit({"event": "cancelled"})
        print("medsyn: cancelled; nothing was written", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fix = _fix_for(exc)
        reporter.emit({"event": "error", "message": str(exc), "fix": fix})
        print(f"medsyn: error: {exc}" + (f"\n  fix: {fix}" if fix else ""), file=sys.stderr)
        return 2
    reporter.emit({"event": "done", "out": str(args.out), "sidecar": str(sidecar)})
    if args.progress == "text":
        print(f"wrote {args.out} (SYNTHETIC)", file=sys.stderr)
    return 0


def _read_report(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"report file not found: {path}")
    return path.read_text(encoding="utf-8")


def _fix_for(exc: Exception) -> str:
    text = str(exc)
    if "out of memory" in text.lower():
        return "use --lowres-only, --precision bf16, or --device cpu"
    if "CUDA" in text:
        return "use --device cpu"
    return ""
