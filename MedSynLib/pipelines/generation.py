"""``generate(report, ...)`` and ``segment(ct, ...)``: the MedSyn two-stage flow with held channels.

Both return a :class:`GenerationResult` of numpy arrays (z, y, x) with their geometry. Conditions and CTs in any
geometry are resampled into the model's grid (nearest neighbour for labels, linear for CT); segmentation results
are mapped back to the input CT's grid.

Patient space -> model space goes through :mod:`.placement` and depends on the model's ``space`` (see
:mod:`MedSynLib.modelstore.bundle`):

- "grid" models: a CT is placed by moving the model's box onto its lungs (no rotation, no scaling); condition
  masks keep the model's box where they fit in it, else the box moves onto the lungs they outline (or onto the
  lungs of the ``reference_ct`` they were drawn on); the generated CT lies on that box.
- "atlas" models (official MedSyn): a CT is affinely registered to the atlas lung mask (:mod:`.atlas`) and
  resampled through that transform; masks go back through its inverse. Condition masks for ``generate`` are
  taken as already in model space (drawn on a generated CT) unless a ``reference_ct`` they were drawn on is
  given; then they go through that CT's alignment. The generated CT itself is always in model space.

A segmentation is checked against the CT's own lungs and trachea (:func:`.placement.segmentation_quality`) and
refused (:class:`.placement.UntrustedSegmentation`) when it does not fit, unless ``force``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..diffusion import GuidedDenoiser, HeldChannels, draw_noise, hold_channels, make_sampler, sample, upsample_lowres
from ..io.codecs import (
    hu_to_model,
    lobes_to_model,
    mask_to_model,
    model_to_hu_int16,
    model_to_lobes,
    model_to_mask,
)
from ..errors import MedSynError
from ..io.alignment import resample
from ..io.images import Geometry
from ..io.lobes import LOBE_ISLAND_ML, LOBE_VOTE_MM, decode_generated_lobes
from ..modelstore.bundle import LoadedModel
from ..runtime import autocast, resolve_precision
from .memory import TiledSuperRes, gpu_budget_bytes, parameter_bytes, plan_sr_tiles
from .placement import Placement, UntrustedSegmentation, place_ct, place_masks, segmentation_quality
from .result_check import check_generated_ct

CONDITION_CHANNELS = {"lobes": 1, "airway": 2, "vessels": 3}
Progress = Callable[[str, int, int], None]


@dataclass
class GenerationResult:
    """Arrays (z, y, x) on ``geometry``; ``ct_hu`` int16 HU (None when segmenting), masks uint8;
    ``lowres`` (4, z, y, x) float32 stage-1 result in model space on ``lowres_geometry`` (the model grid the run
    used: for a segmentation, the one placed on the patient's CT)."""

    ct_hu: np.ndarray | None
    lobes: np.ndarray
    airway: np.ndarray
    vessels: np.ndarray
    lowres: np.ndarray
    geometry: Geometry
    lowres_geometry: Geometry
    metadata: dict = field(default_factory=dict)


def encode_condition(name: str, image: sitk.Image, grid: Geometry,
                     transform: sitk.Transform | None = None) -> np.ndarray:
    """A lobe / airway / vessel label map in any geometry -> model-space channel (z, y, x) on ``grid``.

    ``transform`` maps model points to the mask's points (an atlas alignment); identity if None.

    Refuses NaNs, empty masks, non-binary airway/vessel masks and lobe labels outside 0..5.
    """
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} condition contains NaN or infinite values")
    labels = np.unique(values)
    if name == "lobes":
        if not np.isin(labels, np.arange(6)).all():
            raise ValueError(f"lobes condition must hold integer labels 0..5 (1 left upper, 2 left lower, 3 right "
                             f"upper, 4 right middle, 5 right lower); found {labels[:10].tolist()}")
    elif not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{name} condition must be a binary mask (0/1); found values {labels[:10].tolist()}. "
                         "Threshold it or export a single segment")
    image = sitk.Cast(image, sitk.sitkUInt8)
    array = resample(image, grid, sitk.sitkNearestNeighbor, 0, transform)
    if not array.any():
        raise ValueError(f"{name} condition is empty inside the model's field of view ({grid.size} voxels at "
                         f"{grid.spacing} mm): check that it overlaps the model grid")
    return lobes_to_model(array) if name == "lobes" else mask_to_model(array)


class _Run:
    """One sampling run: device/precision, seeds, progress and timings."""

    def __init__(self, model: LoadedModel, device: torch.device, precision: str, progress: Progress | None):
        self.model, self.device = model, device
        self.dtype = resolve_precision(precision, device)
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []

    def stage(self, name: str, fn):
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(self.device, self.dtype):
            out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[f"{name}_s"] = time.perf_counter() - t0
        return out

    def on_step(self, stage: str):
        return None if self.progress is None else (lambda i, n: self.progress(stage, i + 1, n))


def _placed(run: _Run, place, *args) -> Placement:
    t0 = time.perf_counter()
    placement = place(*args)
    run.timings["placement_s"] = time.perf_counter() - t0
    return placement


def _sr_tiles(model: LoadedModel, run: _Run, sr_tiles: int | None, max_gpu_memory_gb: float | None) -> int:
    """Tile count of the SR stage: ``sr_tiles`` if given, else the fewest that fit the memory budget (an explicit
    budget that cannot be met is an error; the automatic CUDA budget then gets the smallest chunks)."""
    if sr_tiles is not None:
        if sr_tiles < 1:
            raise ValueError(f"--sr-tiles must be at least 1, got {sr_tiles}")
        return sr_tiles
    budget = gpu_budget_bytes(run.device, max_gpu_memory_gb)
    if budget is None or model.superres is None:
        return 1
    x, y, z = model.grid.size
    resident = parameter_bytes(model.lowres, model.superres, model.text_encoder)
    return plan_sr_tiles(model.superres.config, (z, y, x), run.dtype, budget, resident,
                         strict=max_gpu_memory_gb is not None)


def _seeded_noise(shape, seed: int, run: _Run) -> tuple[torch.Tensor, torch.Generator]:
    """The initial noise of a stage from ``seed``, and the generator (advanced past it) for resampling noise."""
    generator = torch.Generator().manual_seed(int(seed))
    return draw_noise(shape, generator=generator, device=run.device), generator


def _sample_both_stages(model: LoadedModel, text: torch.Tensor, held: HeldChannels | None, seed: int,
                        settings: dict, run: _Run, lowres_only: bool, sr_tiles: int = 1, resamples: int = 0):
    """Stage 1 (held voxels subsampled to its grid) and, unless ``lowres_only``, stage 2 with the full-res holding.

    Stage noise comes from ``seed`` (low-res) and ``seed + 1`` (SR); ``resamples`` as in :func:`sample`."""
    factor = model.lowres_factor
    x, y, z = model.grid.size  # a placed grid has the model grid's size
    lowres_shape = (1, model.lowres.config.channels, z // factor, y // factor, x // factor)
    held_low = held.subsampled(factor) if held is not None else None
    low_sampler = make_sampler(settings["sampler"], settings["steps_lowres"])
    noise, generator = _seeded_noise(lowres_shape, seed, run)
    x64 = run.stage("lowres", lambda: sample(
        GuidedDenoiser(model.lowres, text, settings["guidance"]), low_sampler, noise, held_low,
        run.on_step("lowres"), resamples=resamples, generator=generator))
    check_finite(x64, "the low-res network", NETWORK_FIX)
    if lowres_only:
        return x64.float(), None
    sr_sampler = make_sampler(settings["sampler"], settings["steps_sr"])
    noise, generator = _seeded_noise((1, lowres_shape[1], z, y, x), seed + 1, run)
    x256 = run.stage("superres", lambda: sample(
        TiledSuperRes(model.superres, upsample_lowres(x64.float(), factor), sr_tiles), sr_sampler, noise, held,
        run.on_step("superres"), resamples=resamples, generator=generator))
    check_finite(x256, "the super-resolution network", NETWORK_FIX)
    return x64.float(), x256.float()


NETWORK_FIX = "run with --precision fp32; if that does not help, the model's weights are damaged (re-import it)"


def check_finite(values: torch.Tensor, source: str, fix: str) -> None:
    """Refuse NaN / Inf in ``values`` (what ``source`` produced) before anything is decoded or written."""
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{source} produced NaN or infinite values, so there is no result to write. Fix: {fix}")


def _encode_report(model: LoadedModel, run: "_Run", report: str) -> torch.Tensor:
    """The text states of ``report``; refuses a report without one word-piece (only control, zero-width or other
    characters the tokenizer drops) and adds the report's warnings (too long, mostly unknown words) to ``run``."""
    if not model.text_encoder.tokenizer.tokenize(report):
        raise MedSynError("the report has no word the text encoder can read (only control characters, zero-width "
                          "spaces or other characters it drops)", "write the Findings / Impression as plain text")
    run.warnings += model.text_encoder.report_warnings(report)
    text = run.stage("text", lambda: model.text_encoder([report]))
    check_finite(text, "the text encoder", "its weights are damaged: restore or re-import the model")
    return text


def sampling_settings(model: LoadedModel, **overrides) -> dict:
    """The sampler settings a run uses: each ``None`` in ``overrides`` (steps_lowres, steps_sr, guidance, sampler)
    replaced by the model's default. A guidance that is not a finite number >= 0 is refused."""
    settings = {k: (model.defaults[k] if v is None else v) for k, v in overrides.items()}
    guidance = settings.get("guidance")
    if guidance is not None and not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"guidance must be a finite number >= 0 (1 = no guidance), got {guidance!r}")
    return settings


def generate(report: str, model: LoadedModel, conditions: dict[str, sitk.Image] | None = None, seed: int = 0,
             steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
             sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
             progress: Progress | None = None, reference_ct: sitk.Image | None = None,
             max_gpu_memory_gb: float | None = None, sr_tiles: int | None = None) -> GenerationResult:
    """Report (+ optional lobe/airway/vessel label maps to hold fixed) -> synthetic CT and masks on the model grid
    (placed where the conditions lie: module docstring; ``metadata["placement"]`` says how).

    With ``lowres_only`` the arrays are the stage-1 result on the low-res grid. ``reference_ct``: the patient CT
    the condition masks were drawn on (the model's box goes onto its lungs, or the atlas alignment is made from
    it). ``sr_tiles`` forces the number of SR chunks along f; otherwise ``max_gpu_memory_gb`` (on CUDA default: the
    free memory) picks it.
    """
    if not isinstance(report, str) or not report.strip():
        raise ValueError("the report is empty: give Findings/Impression text to condition on")
    device = next(model.lowres.parameters()).device
    run = _Run(model, device, precision, progress)
    settings = sampling_settings(model, steps_lowres=steps_lowres, steps_sr=steps_sr, guidance=guidance,
                                 sampler=sampler)
    conditions = {k: v for k, v in (conditions or {}).items() if v is not None}
    unknown = set(conditions) - set(CONDITION_CHANNELS)
    if unknown:
        raise ValueError(f"unknown condition {sorted(unknown)}; use lobes, airway, vessels")
    known, held = None, sorted(CONDITION_CHANNELS[k] for k in conditions)
    grid, metadata = model.grid, {}
    if conditions:
        placement = (_placed(run, place_ct, reference_ct, model) if reference_ct is not None
                     else _placed(run, place_masks, conditions, model))
        grid, metadata = placement.grid, dict(placement.metadata)
        run.warnings += placement.warnings
        x, y, z = grid.size
        volume = np.zeros((1, 4, z, y, x), np.float32)
        for name, image in conditions.items():
            volume[0, CONDITION_CHANNELS[name]] = encode_condition(name, image, grid, placement.transform)
        known = torch.from_numpy(volume).to(device)
    tiles = 1 if lowres_only else _sr_tiles(model, run, sr_tiles, max_gpu_memory_gb)
    text = _encode_report(model, run, report)
    x64, x256 = _sample_both_stages(model, text, hold_channels(known, held), seed, settings, run, lowres_only,
                                    tiles)
    result = _decode(x64, x256, model, grid, lowres_only, settings, run, seed, report, held, with_ct=True)
    result.metadata.update(metadata, sr_tiles=tiles)
    return result


def segment(ct: sitk.Image, model: LoadedModel, report: str | None = None, seed: int = 0,
            steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
            sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
            progress: Progress | None = None, max_gpu_memory_gb: float | None = None,
            sr_tiles: int | None = None, force: bool = False) -> GenerationResult:
    """Segment a real CT (HU) by holding the CT channel fixed; masks come back on the CT's own grid.

    The CT goes into model space through :func:`.placement.place_ct`; ``metadata`` records how ("placement", and
    "alignment" for atlas models or "model_grid_used" for grid models) and the check of the result
    ("quality", :func:`.placement.segmentation_quality`). A result that fails the check raises
    :class:`.placement.UntrustedSegmentation` unless ``force``.
    """
    values = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(values).all():
        raise ValueError("the CT contains NaN or infinite values")
    device = next(model.lowres.parameters()).device
    run = _Run(model, device, precision, progress)
    settings = sampling_settings(model, steps_lowres=steps_lowres, steps_sr=steps_sr, guidance=guidance,
                                 sampler=sampler)
    placement = _placed(run, place_ct, ct, model)
    grid = placement.grid
    run.warnings += placement.warnings
    hu = placement.to_model(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkLinear, -1024.0)
    x, y, z = grid.size
    known = torch.zeros((1, 4, z, y, x))
    known[0, 0] = torch.from_numpy(hu_to_model(hu).astype(np.float32))
    known = known.to(device)
    if report:
        text = _encode_report(model, run, report)
    else:
        text = model.lowres.null_text(1).detach()
    tiles = 1 if lowres_only else _sr_tiles(model, run, sr_tiles, max_gpu_memory_gb)
    x64, x256 = _sample_both_stages(model, text, hold_channels(known, [0]), seed, settings, run, lowres_only,
                                    tiles)
    result = _decode(x64, x256, model, grid, lowres_only, settings, run, seed, report, [0], with_ct=False)
    target = Geometry.of(ct)
    for name in ("lobes", "airway", "vessels"):
        setattr(result, name, placement.to_patient(getattr(result, name), target, result.geometry))
    result.geometry = target
    quality = segmentation_quality(placement, result.lobes, result.airway, target)
    result.metadata.update(placement.metadata, quality=quality, sr_tiles=tiles)
    if not quality["passed"]:
        message = "segmentation not trusted: " + "; ".join(quality["problems"])
        if not force:
            raise UntrustedSegmentation(message + ". Fix: check the CT (a chest CT in HU, lungs inside the field of "
                                        "view, orientation in the header); --force writes it anyway", quality)
        result.metadata["warnings"].append(message + " (written because of --force)")
    return result


def _decode(x64, x256, model, grid, lowres_only, settings, run, seed, report, held, with_ct) -> GenerationResult:
    """The sampled volumes as a result on ``grid`` (the model grid as placed) or its low-res subsample."""
    final = x64 if lowres_only else x256
    vol = final[0].cpu()
    if with_ct:
        check_generated_ct(vol[0].numpy(), NETWORK_FIX)
    lowres_grid = grid.subsampled(model.lowres_factor)
    geometry = lowres_grid if lowres_only else grid
    held_lobes = CONDITION_CHANNELS["lobes"] in held  # held lobes come back exactly as given
    lobes = model_to_lobes(vol[1]) if held_lobes else decode_generated_lobes(vol[1], tuple(reversed(geometry.spacing)))
    metadata = {"report": report, "seed": seed, "settings": settings, "held_channels": held,
                "lowres_only": lowres_only, "space": model.space, "device": str(run.device),
                "precision": str(run.dtype).removeprefix("torch."),
                "lobe_majority_vote_mm": None if held_lobes else LOBE_VOTE_MM,
                "lobe_islands_below_ml": None if held_lobes else LOBE_ISLAND_ML,
                "timings_s": dict(run.timings), "warnings": list(run.warnings)}
    return GenerationResult(
        ct_hu=model_to_hu_int16(vol[0]) if with_ct else None,
        lobes=lobes, airway=model_to_mask(vol[2]), vessels=model_to_mask(vol[3]),
        lowres=x64[0].cpu().numpy().astype(np.float32), geometry=geometry, lowres_geometry=lowres_grid,
        metadata=metadata)
