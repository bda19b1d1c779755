"""Golden checker: replays fixtures produced by the official MedSyn code through this implementation.

    python -m MedSynLib.official.check DIR

DIR holds case folders (``case.json``, ``io.pt``, optional ``weights.pt``; format in the fixtures' README).
Each case is dispatched on ``case.json["case"]``; one line is printed per compared tensor with its maximum
absolute error and tolerance. Exit status 1 if any comparison fails or any case cannot be run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion import (
    DDIMSampler,
    GuidedDenoiser,
    SuperResDenoiser,
    cosine_alpha_bar,
    hold_channels,
    official_time_grid,
    sample,
    upsample_lowres,
)
from ..diffusion.schedule import eps_from_x0, x0_from_eps
from ..io.codecs import lobes_to_model
from ..models import build_unet
from . import config_from_official_kwargs, official_written_arrays
from ..errors import run_guarded

DEFAULT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


@dataclass
class Comparison:
    case: str
    name: str
    max_abs_err: float
    atol: float
    rtol: float
    passed: bool

    def line(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return (f"{verdict} {self.case}/{self.name}: max abs err {self.max_abs_err:.3e} "
                f"(tolerance atol {self.atol:g}, rtol {self.rtol:g})")


class Case:
    """One fixture folder: its description, tensors, weights and tolerance table."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
        self.name = self.meta.get("case", folder.name)
        self.io = torch.load(folder / "io.pt", weights_only=True, map_location="cpu")
        weights = folder / "weights.pt"
        self.weights = torch.load(weights, weights_only=True, map_location="cpu") if weights.exists() else None
        self.tolerances = self.meta.get("recommended_tolerance_for_independent_float32_cpu_implementation", {})

    def tolerance(self, name: str) -> dict:
        for patterns, tol in self.tolerances.items():
            if patterns in ("default", "note") or not isinstance(tol, dict):
                continue
            if any(fnmatch.fnmatch(name, p.strip()) for p in patterns.split(" / ")):
                return tol
        return self.tolerances.get("default", DEFAULT_TOLERANCE)

    def network(self, up_order: str = "eval"):
        config = config_from_official_kwargs(self.meta["constructor_kwargs"], up_order=up_order)
        net = build_unet(config).eval()
        net.load_state_dict(self.weights, strict=True)
        return net

    def compare(self, name: str, computed: torch.Tensor, reference_name: str | None = None) -> Comparison:
        ref = self.io[reference_name or name]
        tol = self.tolerance(name)
        atol, rtol = float(tol.get("atol", 0)), float(tol.get("rtol", 0))
        computed = computed.detach().to(torch.float64).reshape(ref.shape)
        ref64 = ref.to(torch.float64)
        err = (computed - ref64).abs()
        passed = bool((err <= atol + rtol * ref64.abs()).all())
        return Comparison(self.name, name, float(err.max()) if err.numel() else 0.0, atol, rtol, passed)

    def exact(self, name: str, computed: torch.Tensor, expected: torch.Tensor) -> Comparison:
        """A comparison that must hold bit for bit."""
        err = float((computed.double() - expected.double()).abs().max())
        return Comparison(self.name, name, err, 0.0, 0.0, bool(torch.equal(computed, expected)))


def _check_lowres_forward(case: Case) -> Iterator[Comparison]:
    io = case.io
    with torch.no_grad():
        for order, suffix in (("eval", ""), ("train", "_train_order")):
            net = case.network(order)
            null = net.null_text(io["x"].shape[0])
            out_cond = net(io["x"], io["time"], io["cond"])
            out_null = net(io["x"], io["time"], null)
            yield case.compare(f"out_cond{suffix}", out_cond)
            yield case.compare(f"out_null{suffix}", out_null)
            if order == "eval":
                for s in (1, 2, 3):
                    if f"out_guided_scale{s}" in io:
                        guided = GuidedDenoiser(net, io["cond"], guidance=s)(io["x"], io["time"])
                        yield case.compare(f"out_guided_scale{s}", guided)
                yield case.compare("temb", net.time_mlp(io["time"]))
                yield case.compare("h_init", net.init_conv(io["x"]))


def _check_sr_forward(case: Case) -> Iterator[Comparison]:
    io = case.io
    lr_prepared = upsample_lowres(io["lr_raw"]) * 2 - 1
    yield case.compare("lr_prepared", lr_prepared)
    with torch.no_grad():
        for order, name in (("eval", "out"), ("train", "out_train_order")):
            net = case.network(order)
            yield case.compare(name, net(io["x_noisy"], io["time"], lr_prepared))
        yield case.compare("temb", net.time_mlp(io["time"]))


def _check_schedule(case: Case) -> Iterator[Comparison]:
    io = case.io
    yield case.compare("alpha_cum_t_norm", cosine_alpha_bar(io["t_norm"]))
    yield case.compare("alpha_cum_t_raw", cosine_alpha_bar(io["t_raw"]))
    for key in io:
        if key.startswith("time_grid_ddim"):
            yield case.compare(key, official_time_grid(int(key.removeprefix("time_grid_ddim"))))
    x0, xt = io["ddim_x0"], io["ddim_xt"]
    for key in io:
        if key.startswith("ddim_step_"):
            t, t_next = (float(v) for v in key.removeprefix("ddim_step_").split("_to_"))
            sampler = DDIMSampler(1)
            sampler.timesteps = torch.tensor([t, t_next, 0.0])
            yield case.compare(key, sampler.step(x0, xt.clone(), 0))  # step updates its state in place
        elif key.startswith("eps_from_x0_rawt"):
            a = cosine_alpha_bar(torch.tensor(float(key.removeprefix("eps_from_x0_rawt"))))
            eps = eps_from_x0(xt, x0, a)
            yield case.compare(key, eps)
            yield case.compare(key.replace("eps_from_x0", "x0_from_eps"), x0_from_eps(xt, eps, a))


def _replay(case: Case, prefix: str, denoise, steps: int, finals: dict | None = None) -> Iterator[Comparison]:
    """Run the sampler from the fixture's injected noise; compare every step and the finals (kept in ``finals``)."""
    io = case.io
    sampler = DDIMSampler(steps)
    yield case.compare(f"{prefix}step_time", sampler.timesteps[:, None].expand_as(io[f"{prefix}step_time"]))
    record: list = []
    with torch.no_grad():
        final = sample(denoise, sampler, io[f"{prefix}init_noise"], record=record)
    if f"{prefix}step_model_out" in io:
        yield case.compare(f"{prefix}step_model_out", torch.stack([r[1] for r in record]))
    yield case.compare(f"{prefix}step_x_out", torch.stack([r[2] for r in record]))
    yield case.compare(f"{prefix}final_before_unnormalize", final)
    yield case.compare(f"{prefix}final_unnormalized", (final + 1) / 2)
    if finals is not None:
        finals[prefix] = final


def _check_lowres_sampling(case: Case) -> Iterator[Comparison]:
    steps = int(case.meta["diffusion_kwargs"]["ddim_timesteps"])
    net = case.network("eval")
    for run in case.meta["runs"].values():
        denoise = GuidedDenoiser(net, case.io["cond"], guidance=run["cond_scale"])
        yield from _replay(case, run["io_prefix"], denoise, steps)


def _check_sr_sampling(case: Case) -> Iterator[Comparison]:
    io = case.io
    steps = int(case.meta["diffusion_kwargs"]["ddim_timesteps"])
    net = case.network("eval")
    lr_prepared = upsample_lowres(io["lr_raw"]) * 2 - 1
    yield case.compare("lr_prepared", lr_prepared)

    finals: dict = {}
    yield from _replay(case, "", SuperResDenoiser(net, lr_prepared), steps, finals)
    for name, array in official_written_arrays(finals[""]).items():
        if name in io:
            yield case.compare(name, array.float())


def _check_conditional_lowres(case: Case) -> Iterator[Comparison]:
    io = case.io
    steps = int(case.meta["diffusion_kwargs"]["ddim_timesteps"])
    known = io["known_image"]
    if "known_lobe_label" in io:
        yield case.exact("known_lobe_channel_encoding", lobes_to_model(io["known_lobe_label"][:, 0]), known[:, 1])
    nets = {"train": case.network("train"), "eval": case.network("eval")}
    for run in case.meta["runs"].values():
        prefix, channels = run["io_prefix"], run["modal"]
        held = hold_channels(known, channels)
        denoise = GuidedDenoiser(nets["train"], io["cond"], guidance=run["cond_scale"], space="eps-raw-time")
        record: list = []
        with torch.no_grad():
            final = sample(denoise, DDIMSampler(steps), io[f"{prefix}init_noise"], held=held, record=record)
        yield case.compare(f"{prefix}step_x_out", torch.stack([r[2] for r in record]))
        yield case.compare(f"{prefix}final_before_unnormalize", final)
        yield case.compare(f"{prefix}final_unnormalized", (final + 1) / 2)
        yield case.exact(f"{prefix}held_channels_equal_known", final[:, channels], known[:, channels])
        if f"{prefix}evalorder_final_unnormalized" in io:
            denoise = GuidedDenoiser(nets["eval"], io["cond"], guidance=run["cond_scale"], space="eps-raw-time")
            with torch.no_grad():
                final = sample(denoise, DDIMSampler(steps), io[f"{prefix}init_noise"], held=held)
            yield case.compare(f"{prefix}evalorder_final_unnormalized", (final + 1) / 2)


CHECKS = {
    "lowres_forward": _check_lowres_forward,
    "sr_forward": _check_sr_forward,
    "schedule": _check_schedule,
    "lowres_sampling": _check_lowres_sampling,
    "sr_sampling": _check_sr_sampling,
    "conditional_lowres": _check_conditional_lowres,
}


def run_checks(directory: Path, out=sys.stdout) -> bool:
    """Check every case folder under ``directory``; print one line per comparison; True if all pass."""
    directory = Path(directory)
    folders = sorted(p.parent for p in directory.glob("*/case.json"))
    if (directory / "case.json").exists():
        folders = [directory]
    if not folders:
        print(f"FAIL no case folders (with case.json) found in {directory}", file=out)
        return False
    all_ok = True
    for folder in folders:
        try:
            case = Case(folder)
            check = CHECKS.get(case.name)
            if check is None:
                raise ValueError(f"unknown case type {case.name!r}; known: {sorted(CHECKS)}")
            results = list(check(case))
        except Exception as exc:  # a case that cannot be run is a failure, reported with its reason
            print(f"FAIL {folder.name}: cannot run: {type(exc).__name__}: {exc}", file=out)
            all_ok = False
            continue
        for r in results:
            print(r.line(), file=out)
            all_ok &= r.passed
    print(("all golden cases pass" if all_ok else "golden check FAILED") + f" ({directory})", file=out)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedSynLib.official.check", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="folder of golden cases (case.json, io.pt, weights.pt)")
    args = parser.parse_args(argv)
    return 0 if run_checks(args.directory) else 1


if __name__ == "__main__":
    sys.exit(run_guarded(main))
