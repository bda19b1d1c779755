"""``generate(report, ...)`` and ``segment(ct, ...)``: the MedSyn two-stage flow with held channels.

Both return a :class:`GenerationResult` of numpy arrays (z, y, x) with their geometry. Conditions and CTs in any
geometry are resampled into the model's grid (nearest neighbour for labels, linear for CT); segmentation results
are mapped back to the input CT's grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..diffusion import GuidedDenoiser, SuperResDenoiser, draw_noise, hold_channels, make_sampler, sample, upsample_lowres
from ..io.codecs import hu_to_model, lobes_to_model, mask_to_model, model_to_hu_int16, model_to_lobes, model_to_mask
from ..io.images import Geometry
from ..models_hub.bundle import LoadedModel
from ..runtime import autocast, resolve_precision

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


def _resample(image: sitk.Image, grid: Geometry, interpolator, default: float) -> np.ndarray:
    out = sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, default, image.GetPixelID())
    return sitk.GetArrayFromImage(out)


def encode_condition(name: str, image: sitk.Image, grid: Geometry) -> np.ndarray:
    """A lobe / airway / vessel label map in any geometry -> model-space channel (z, y, x) on ``grid``.

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
    array = _resample(image, grid, sitk.sitkNearestNeighbor, 0)
    if not array.any():
        raise ValueError(f"{name} condition is empty inside the model's field of view ({grid.size} voxels at "
                         f"{grid.spacing} mm): check that it overlaps the model grid")
    return lobes_to_model(array) if name == "lobes" else mask_to_model(array)


def lung_centred_grid(ct: sitk.Image, grid: Geometry) -> Geometry:
    """The model grid (size, spacing, direction) re-centred on the lungs of ``ct`` (air-density voxels not
    connected to the image border)."""
    hu = sitk.Cast(ct, sitk.sitkFloat32)
    air = sitk.BinaryThreshold(hu, -2000.0, -400.0, 1, 0)
    components = sitk.ConnectedComponent(air)
    arr = sitk.GetArrayViewFromImage(components)
    border = np.unique(np.concatenate([arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel(),
                                       arr[:, :, 0].ravel(), arr[:, :, -1].ravel()]))
    lungs = np.isin(arr, border, invert=True) & (arr > 0)
    if lungs.sum() < 100:
        raise ValueError("no lungs found in the CT (no air-density region inside the body); is it a chest CT in HU?")
    idx = np.argwhere(lungs)
    centre_index = (idx.min(0) + idx.max(0)) / 2.0  # (z, y, x)
    centre = np.array(ct.TransformContinuousIndexToPhysicalPoint(centre_index[::-1].tolist()))
    direction = np.array(grid.direction).reshape(3, 3)
    half = (np.array(grid.size) - 1) / 2.0 * np.array(grid.spacing)
    origin = centre - direction @ half
    return Geometry(grid.size, grid.spacing, tuple(origin.tolist()), grid.direction)


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


def _sample_both_stages(model: LoadedModel, text: torch.Tensor, known: torch.Tensor | None, held: list[int],
                        seed: int, settings: dict, run: _Run, lowres_only: bool):
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
        SuperResDenoiser(model.superres, upsample_lowres(x64.float(), factor)), sr_sampler,
        draw_noise((1, lowres_shape[1], z, y, x), seed + 1, device=run.device), hold_channels(known, held),
        run.on_step("superres")))
    return x64.float(), x256.float()


def _settings(model: LoadedModel, **overrides) -> dict:
    return {k: (model.defaults[k] if v is None else v) for k, v in overrides.items()}


def generate(report: str, model: LoadedModel, conditions: dict[str, sitk.Image] | None = None, seed: int = 0,
             steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
             sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
             progress: Progress | None = None) -> GenerationResult:
    """Report (+ optional lobe/airway/vessel label maps to hold fixed) -> synthetic CT and masks on the model grid.

    With ``lowres_only`` the arrays are the stage-1 result on the low-res grid.
    """
    if not isinstance(report, str) or not report.strip():
        raise ValueError("the report is empty: give Findings/Impression text to condition on")
    device = next(model.lowres.parameters()).device
    run = _Run(model, device, precision, progress)
    settings = _settings(model, steps_lowres=steps_lowres, steps_sr=steps_sr, guidance=guidance, sampler=sampler)
    conditions = {k: v for k, v in (conditions or {}).items() if v is not None}
    unknown = set(conditions) - set(CONDITION_CHANNELS)
    if unknown:
        raise ValueError(f"unknown condition {sorted(unknown)}; use lobes, airway, vessels")
    known, held = None, sorted(CONDITION_CHANNELS[k] for k in conditions)
    if conditions:
        x, y, z = model.grid.size
        volume = np.zeros((1, 4, z, y, x), np.float32)
        for name, image in conditions.items():
            volume[0, CONDITION_CHANNELS[name]] = encode_condition(name, image, model.grid)
        known = torch.from_numpy(volume).to(device)
    text = run.stage("text", lambda: model.text_encoder([report]))
    x64, x256 = _sample_both_stages(model, text, known, held, seed, settings, run, lowres_only)
    return _decode(x64, x256, model, lowres_only, settings, run, seed, report, held, with_ct=True)


def segment(ct: sitk.Image, model: LoadedModel, report: str | None = None, seed: int = 0,
            steps_lowres: int | None = None, steps_sr: int | None = None, guidance: float | None = None,
            sampler: str | None = None, precision: str = "auto", lowres_only: bool = False,
            progress: Progress | None = None) -> GenerationResult:
    """Segment a real CT (HU) by holding the CT channel fixed; masks come back on the CT's own grid."""
    values = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(values).all():
        raise ValueError("the CT contains NaN or infinite values")
    device = next(model.lowres.parameters()).device
    run = _Run(model, device, precision, progress)
    settings = _settings(model, steps_lowres=steps_lowres, steps_sr=steps_sr, guidance=guidance, sampler=sampler)
    grid = lung_centred_grid(ct, model.grid)
    hu = _resample(sitk.Cast(ct, sitk.sitkFloat32), grid, sitk.sitkLinear, -1024.0)
    x, y, z = grid.size
    known = torch.zeros((1, 4, z, y, x))
    known[0, 0] = torch.from_numpy(hu_to_model(hu).astype(np.float32))
    known = known.to(device)
    if report:
        text = run.stage("text", lambda: model.text_encoder([report]))
    else:
        text = model.lowres.null_text(1).detach()
    x64, x256 = _sample_both_stages(model, text, known, [0], seed, settings, run, lowres_only)
    result = _decode(x64, x256, model, lowres_only, settings, run, seed, report, [0], with_ct=False)
    source = result.lowres_geometry if lowres_only else result.geometry
    shifted = Geometry(source.size, source.spacing, grid.origin, grid.direction)
    target = Geometry.of(ct)
    for name in ("lobes", "airway", "vessels"):
        image = shifted.apply(sitk.GetImageFromArray(getattr(result, name)))
        setattr(result, name, _resample(image, target, sitk.sitkNearestNeighbor, 0))
    result.geometry = target
    result.metadata["model_grid_used"] = grid.to_dict()
    return result


def _decode(x64, x256, model, lowres_only, settings, run, seed, report, held, with_ct) -> GenerationResult:
    final = x64 if lowres_only else x256
    vol = final[0].cpu()
    metadata = {"report": report, "seed": seed, "settings": settings, "held_channels": held,
                "lowres_only": lowres_only, "device": str(run.device),
                "precision": str(run.dtype).removeprefix("torch."), "timings_s": dict(run.timings)}
    return GenerationResult(
        ct_hu=model_to_hu_int16(vol[0]) if with_ct else None,
        lobes=model_to_lobes(vol[1]), airway=model_to_mask(vol[2]), vessels=model_to_mask(vol[3]),
        lowres=x64[0].cpu().numpy().astype(np.float32),
        geometry=model.lowres_grid if lowres_only else model.grid, lowres_geometry=model.lowres_grid,
        metadata=metadata)
