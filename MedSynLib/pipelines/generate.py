"""``generate(report, ...)`` and ``segment(ct, ...)``: the MedSyn two-stage flow with held channels.

Both return a :class:`GenerationResult` of numpy arrays (z, y, x) with their geometry. Conditions and CTs in any
geometry are resampled into the model's grid (nearest neighbour for labels, linear for CT); segmentation results
are mapped back to the input CT's grid.

Patient space -> model space depends on the model's ``space`` (see :mod:`MedSynLib.modelstore.bundle`):

- "grid" models: a CT is placed by re-centring the model grid on its lungs (no rotation, no scaling).
- "atlas" models (official MedSyn): a CT is affinely registered to the atlas lung mask (:mod:`.atlas`) and
  resampled through that transform; masks go back through its inverse. Condition masks for ``generate`` are
  taken as already in model space (drawn on a generated CT) unless a ``reference_ct`` they were drawn on is
  given; then they go through that CT's alignment. The generated CT itself is always in model space.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..diffusion import GuidedDenoiser, draw_noise, hold_channels, make_sampler, sample, upsample_lowres
from ..io.codecs import (
    LOBE_ISLAND_ML,
    LOBE_VOTE_MM,
    decode_generated_lobes,
    hu_to_model,
    lobes_to_model,
    mask_to_model,
    model_to_hu_int16,
    model_to_lobes,
    model_to_mask,
)
from ..io.alignment import lung_centred_grid, resample
from ..io.images import Geometry, read_image
from ..modelstore.bundle import LoadedModel
from ..runtime import autocast, resolve_precision
from .atlas import align_to_atlas
from .memory import TiledSuperRes, gpu_budget_bytes, parameter_bytes, plan_sr_tiles

CONDITION_CHANNELS = {"lobes": 1, "airway": 2, "vessels": 3}
Progress = Callable[[str, int, int], None]


@dataclass
class GenerationResult:
    """Arrays (z, y, x) on ``geometry``; ``ct_hu`` int16 HU (None when segmenting), masks uint8;
    ``lowres`` (4, z, y, x) float32 stage-1 result in model space on ``lowres_geometry``."""

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


def _patient_to_model(ct: sitk.Image, model: LoadedModel, run: _Run) -> tuple[Geometry, sitk.Transform, dict]:
    """Where a patient CT goes in model space: (model grid, transform model -> CT points, metadata)."""
    if model.space == "atlas":
        atlas = read_image(model.atlas_mask_file(), "atlas lung mask")
        t0 = time.perf_counter()
        alignment = align_to_atlas(ct, atlas)
        run.timings["alignment_s"] = time.perf_counter() - t0
        return model.grid, alignment.transform, {"alignment": alignment.to_dict()}
    grid = lung_centred_grid(ct, model.grid)
    return grid, sitk.Transform(), {"model_grid_used": grid.to_dict()}


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


def _sample_both_stages(model: LoadedModel, text: torch.Tensor, known: torch.Tensor | None, held: list[int],
                        seed: int, settings: dict, run: _Run, lowres_only: bool, sr_tiles: int = 1):
    factor = model.lowres_factor
    x, y, z = model.grid.size
    lowres_shape = (1, model.lowres.config.channels, z // factor, y // factor, x // factor)
    known_low = known[..., ::factor, ::factor, ::factor] if known is not None else None
    low_sampler = make_sampler(settings["sampler"], settings["steps_lowres"])
    x64 = run.stage("lowres", lambda: sample(
        GuidedDenoiser(model.lowres, text, settings["guidance"]), low_sampler,
        draw_noise(lowres_shape, seed, device=run.device), hold_channels(known_low, held), run.on_step("lowres")))
    if lowres_only:
        return x64.float(), None
    sr_sampler = make_sampler(settings["sampler"], settings["steps_sr"])
    x256 = run.stage("superres", lambda: sample(
        TiledSuperRes(model.superres, upsample_lowres(x64.float(), factor), sr_tiles), sr_sampler,
        draw_noise((1, lowres_shape[1], z, y, x), seed + 1, device=run.device), hold_channels(known, held),
        run.on_step("superres")))
    return x64.float(), x256.float()


def sampling_settings(model: LoadedModel, **overrides) -> dict:
    """The sampler settings a run uses: each ``None`` in ``overrides`` (steps_lowres, steps_sr, guidance, sampler)
    replaced by the model's default."""
    return {k: (model.defaults[k] if v is None else v) for k, v in overrides.items()}


def generate(report: str, model: LoadedModel, conditions: dict[str, sitk.Image] | None = None, seed: int = 0,
             steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
             sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
             progress: Progress | None = None, reference_ct: sitk.Image | None = None,
             max_gpu_memory_gb: float | None = None, sr_tiles: int | None = None) -> GenerationResult:
    """Report (+ optional lobe/airway/vessel label maps to hold fixed) -> synthetic CT and masks on the model grid.

    With ``lowres_only`` the arrays are the stage-1 result on the low-res grid. ``reference_ct``: the patient CT
    the condition masks were drawn on (atlas-space models only; they are aligned with it). ``sr_tiles`` forces the
    number of SR chunks along f; otherwise ``max_gpu_memory_gb`` (on CUDA default: the free memory) picks it.
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
    transform, extra = None, {}
    if reference_ct is not None:
        if model.space != "atlas":
            raise ValueError(f"a reference CT only applies to atlas-space models; {model.name!r} generates on a plain "
                             "grid, where condition masks are used where they lie. Fix: leave out --reference-ct")
        if conditions:
            _, transform, extra = _patient_to_model(reference_ct, model, run)
    if conditions:
        x, y, z = model.grid.size
        volume = np.zeros((1, 4, z, y, x), np.float32)
        for name, image in conditions.items():
            volume[0, CONDITION_CHANNELS[name]] = encode_condition(name, image, model.grid, transform)
        known = torch.from_numpy(volume).to(device)
    tiles = 1 if lowres_only else _sr_tiles(model, run, sr_tiles, max_gpu_memory_gb)
    text = run.stage("text", lambda: model.text_encoder([report]))
    x64, x256 = _sample_both_stages(model, text, known, held, seed, settings, run, lowres_only, tiles)
    result = _decode(x64, x256, model, lowres_only, settings, run, seed, report, held, with_ct=True)
    result.metadata.update(extra, sr_tiles=tiles)
    return result


def segment(ct: sitk.Image, model: LoadedModel, report: str | None = None, seed: int = 0,
            steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
            sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
            progress: Progress | None = None, max_gpu_memory_gb: float | None = None,
            sr_tiles: int | None = None) -> GenerationResult:
    """Segment a real CT (HU) by holding the CT channel fixed; masks come back on the CT's own grid.

    The CT goes into model space as the model's ``space`` says (module docstring); ``metadata`` records how
    ("alignment" for atlas models, "model_grid_used" for grid models).
    """
    values = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(values).all():
        raise ValueError("the CT contains NaN or infinite values")
    device = next(model.lowres.parameters()).device
    run = _Run(model, device, precision, progress)
    settings = sampling_settings(model, steps_lowres=steps_lowres, steps_sr=steps_sr, guidance=guidance,
                                 sampler=sampler)
    grid, transform, extra = _patient_to_model(ct, model, run)
    hu = resample(sitk.Cast(ct, sitk.sitkFloat32), grid, sitk.sitkLinear, -1024.0, transform)
    x, y, z = grid.size
    known = torch.zeros((1, 4, z, y, x))
    known[0, 0] = torch.from_numpy(hu_to_model(hu).astype(np.float32))
    known = known.to(device)
    if report:
        text = run.stage("text", lambda: model.text_encoder([report]))
    else:
        text = model.lowres.null_text(1).detach()
    tiles = 1 if lowres_only else _sr_tiles(model, run, sr_tiles, max_gpu_memory_gb)
    x64, x256 = _sample_both_stages(model, text, known, [0], seed, settings, run, lowres_only, tiles)
    result = _decode(x64, x256, model, lowres_only, settings, run, seed, report, [0], with_ct=False)
    source = grid.subsampled(model.lowres_factor) if lowres_only else grid
    target, inverse = Geometry.of(ct), transform.GetInverse()
    for name in ("lobes", "airway", "vessels"):
        image = source.apply(sitk.GetImageFromArray(getattr(result, name)))
        setattr(result, name, resample(image, target, sitk.sitkNearestNeighbor, 0, inverse))
    result.geometry = target
    result.metadata.update(extra, sr_tiles=tiles)
    return result


def _decode(x64, x256, model, lowres_only, settings, run, seed, report, held, with_ct) -> GenerationResult:
    final = x64 if lowres_only else x256
    vol = final[0].cpu()
    geometry = model.lowres_grid if lowres_only else model.grid
    held_lobes = CONDITION_CHANNELS["lobes"] in held  # held lobes come back exactly as given
    lobes = model_to_lobes(vol[1]) if held_lobes else decode_generated_lobes(vol[1], tuple(reversed(geometry.spacing)))
    metadata = {"report": report, "seed": seed, "settings": settings, "held_channels": held,
                "lowres_only": lowres_only, "space": model.space, "device": str(run.device),
                "precision": str(run.dtype).removeprefix("torch."),
                "lobe_majority_vote_mm": None if held_lobes else LOBE_VOTE_MM,
                "lobe_islands_below_ml": None if held_lobes else LOBE_ISLAND_ML,
                "timings_s": dict(run.timings)}
    return GenerationResult(
        ct_hu=model_to_hu_int16(vol[0]) if with_ct else None,
        lobes=lobes, airway=model_to_mask(vol[2]), vessels=model_to_mask(vol[3]),
        lowres=x64[0].cpu().numpy().astype(np.float32), geometry=geometry, lowres_geometry=model.lowres_grid,
        metadata=metadata)
