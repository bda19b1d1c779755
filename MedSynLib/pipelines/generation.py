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

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..diffusion import (GuidedDenoiser, HeldChannels, TiledSuperRes, draw_noise, hold_channels, make_sampler, sample,
                         upsample_lowres)
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
from ..io.images import Geometry, Provenance
from ..io.lobes import LOBE_ISLAND_ML, LOBE_VOTE_MM, decode_generated_lobes
from ..modelstore.bundle import LoadedModel
from ..run_settings import RunSettings
from ..runtime import autocast, resolve_precision
from .memory import gpu_budget_bytes, parameter_bytes, plan_sr_tiles
from .placement import Placement, UntrustedSegmentation, hold_masks, place_masks, segmentation_quality
from .scan_check import ScanCheck, require_scan, scan_warnings
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
    source: Provenance = field(default_factory=Provenance)
    """A segmentation: what the segmented CT's header says it is (its masks carry its SYNTHETIC / EDITED marks)."""


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
    """One sampling run: the model, its settings (the model's defaults filled in), device/precision, progress,
    timings and warnings; the steps generate, segment and edit share."""

    def __init__(self, model: LoadedModel, settings: RunSettings | None, progress: Progress | None):
        self.model = model
        self.settings = (settings or RunSettings()).resolved(model)
        self.device = next(model.lowres.parameters()).device
        self.dtype = resolve_precision(self.settings.precision, self.device)
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

    def placed(self, place, *args) -> Placement:
        """``place(*args)``, timed; its warnings join the run's."""
        t0 = time.perf_counter()
        placement = place(*args)
        self.timings["placement_s"] = time.perf_counter() - t0
        self.warnings += placement.warnings
        return placement

    def scanned(self, ct: sitk.Image, force: bool, what: str = "CT", scan: ScanCheck | None = None) -> ScanCheck:
        """The scan check of ``ct`` (``scan`` when the caller ran it; :class:`.scan_check.ScanRefused` unless
        ``force``), timed; its placement's and a forced check's warnings join the run's."""
        scan = require_scan(ct, self.model, force, what, check=scan)
        self.timings["scan_check_s"] = scan.seconds
        self.warnings += scan_warnings(scan, what) + scan.placement.warnings
        return scan

    def sr_tiles(self) -> int:
        """Tile count of the SR stage: ``sr_tiles`` if set, else the fewest that fit the memory budget (an
        explicit budget that cannot be met is an error; the automatic CUDA budget then gets the smallest chunks);
        1 for a low-res-only run."""
        model, settings = self.model, self.settings
        if settings.lowres_only:
            return 1
        if settings.sr_tiles is not None:
            return settings.sr_tiles
        budget = gpu_budget_bytes(self.device, settings.max_gpu_memory_gb)
        if budget is None or model.superres is None:
            return 1
        x, y, z = model.grid.size
        resident = parameter_bytes(model.lowres, model.superres, model.text_encoder)
        return plan_sr_tiles(model.superres.config, (z, y, x), self.dtype, budget, resident,
                             strict=settings.max_gpu_memory_gb is not None)

    def encode_report(self, report: str) -> torch.Tensor:
        """The report's text states (1, tokens, width); refuses a report without one word-piece (only control,
        zero-width or other characters the tokenizer drops); its warnings (too long, mostly unknown words) join the
        run's."""
        if not self.model.text_encoder.tokenizer.tokenize(report):
            raise MedSynError("the report has no word the text encoder can read (only control characters, "
                              "zero-width spaces or other characters it drops)",
                              "write the Findings / Impression as plain text")
        self.warnings += self.model.text_encoder.report_warnings(report)
        text = self.stage("text", lambda: self.model.text_encoder([report]))
        check_finite(text, "the text encoder", "its weights are damaged: restore or re-import the model")
        return text

    def noise(self, shape, seed: int) -> tuple[torch.Tensor, torch.Generator]:
        """The initial noise of a stage from ``seed``, and the generator (advanced past it) for resampling noise."""
        generator = torch.Generator().manual_seed(int(seed))
        return draw_noise(shape, generator=generator, device=self.device), generator

    def sample_both_stages(self, text: torch.Tensor, held: HeldChannels | None, tiles: int, resamples: int = 0):
        """Stage 1 (held voxels subsampled to its grid) and, unless ``lowres_only``, stage 2 with the full-res
        holding. Stage noise comes from ``seed`` (low-res) and ``seed + 1`` (SR); ``resamples`` as in
        :func:`sample`."""
        model, settings = self.model, self.settings
        factor = model.lowres_factor
        x, y, z = model.grid.size  # a placed grid has the model grid's size
        lowres_shape = (1, model.lowres.config.channels, z // factor, y // factor, x // factor)
        held_low = held.subsampled(factor) if held is not None else None
        low_sampler = make_sampler(settings.sampler, settings.steps_lowres)
        noise, generator = self.noise(lowres_shape, settings.seed)
        x64 = self.stage("lowres", lambda: sample(
            GuidedDenoiser(model.lowres, text, settings.guidance), low_sampler, noise, held_low,
            self.on_step("lowres"), resamples=resamples, generator=generator))
        check_finite(x64, "the low-res network", NETWORK_FIX)
        if settings.lowres_only:
            return x64.float(), None
        sr_sampler = make_sampler(settings.sampler, settings.steps_sr)
        noise, generator = self.noise((1, lowres_shape[1], z, y, x), settings.seed + 1)
        x256 = self.stage("superres", lambda: sample(
            TiledSuperRes(model.superres, upsample_lowres(x64.float(), factor), tiles), sr_sampler, noise, held,
            self.on_step("superres"), resamples=resamples, generator=generator))
        check_finite(x256, "the super-resolution network", NETWORK_FIX)
        return x64.float(), x256.float()

    def decode(self, x64, x256, grid: Geometry, report: str | None, held: list[int],
               with_ct: bool) -> GenerationResult:
        """The sampled volumes as a result on ``grid`` (the model grid as placed) or its low-res subsample."""
        model, settings = self.model, self.settings
        lowres_only = settings.lowres_only
        final = x64 if lowres_only else x256
        vol = final[0].cpu()
        if with_ct:
            check_generated_ct(vol[0].numpy(), NETWORK_FIX)
        lowres_grid = grid.subsampled(model.lowres_factor)
        geometry = lowres_grid if lowres_only else grid
        held_lobes = CONDITION_CHANNELS["lobes"] in held  # held lobes come back exactly as given
        lobes = (model_to_lobes(vol[1]) if held_lobes
                 else decode_generated_lobes(vol[1], tuple(reversed(geometry.spacing))))
        metadata = {"report": report, "seed": settings.seed, "settings": settings.as_dict(), "held_channels": held,
                    "lowres_only": lowres_only, "space": model.space, "device": str(self.device),
                    "precision": str(self.dtype).removeprefix("torch."),
                    "lobe_majority_vote_mm": None if held_lobes else LOBE_VOTE_MM,
                    "lobe_islands_below_ml": None if held_lobes else LOBE_ISLAND_ML,
                    "timings_s": dict(self.timings), "warnings": list(self.warnings)}
        return GenerationResult(
            ct_hu=model_to_hu_int16(vol[0]) if with_ct else None,
            lobes=lobes, airway=model_to_mask(vol[2]), vessels=model_to_mask(vol[3]),
            lowres=x64[0].cpu().numpy().astype(np.float32), geometry=geometry, lowres_geometry=lowres_grid,
            metadata=metadata)


NETWORK_FIX = "run with --precision fp32; if that does not help, the model's weights are damaged (re-import it)"


def check_finite(values: torch.Tensor, source: str, fix: str) -> None:
    """Refuse NaN / Inf in ``values`` (what ``source`` produced) before anything is decoded or written."""
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{source} produced NaN or infinite values, so there is no result to write. Fix: {fix}")


def generate(report: str, model: LoadedModel, conditions: dict[str, sitk.Image] | None = None,
             settings: RunSettings | None = None, *, reference_ct: sitk.Image | None = None,
             progress: Progress | None = None, force: bool = False, scan: ScanCheck | None = None) -> GenerationResult:
    """Report (+ optional lobe/airway/vessel label maps to hold fixed) -> synthetic CT and masks on the model grid
    (placed where the conditions lie: module docstring; ``metadata["placement"]`` says how, and for each mask what
    the box drops of it: over 1 % of the lobes is refused unless ``force``, any other loss is a warning).

    ``settings``: seed, steps, guidance, sampler, precision, memory (:class:`~MedSynLib.run_settings.RunSettings`;
    default: the model's sampler defaults, seed 0). With ``lowres_only`` the arrays are the stage-1 result on the
    low-res grid. ``reference_ct``: the patient CT the condition masks were drawn on (the model's box goes onto its
    lungs, or the atlas alignment is made from it); it passes the scan check first (:func:`.scan_check.require_scan`,
    or ``scan`` when the caller ran it). ``progress(stage, step, steps)`` is called after each step.
    """
    if not isinstance(report, str) or not report.strip():
        raise ValueError("the report is empty: give Findings/Impression text to condition on")
    run = _Run(model, settings, progress)
    conditions = {k: v for k, v in (conditions or {}).items() if v is not None}
    unknown = set(conditions) - set(CONDITION_CHANNELS)
    if unknown:
        raise ValueError(f"unknown condition {sorted(unknown)}; use lobes, airway, vessels")
    known, held = None, sorted(CONDITION_CHANNELS[k] for k in conditions)
    grid, metadata = model.grid, {}
    if conditions and reference_ct is not None:
        scan = run.scanned(reference_ct, force, "reference CT", scan)
        placement = scan.placement
        known_warnings = len(placement.warnings)
        hold_masks(placement, conditions, model, "draw the masks on a CT whose lungs the model's box holds, or "
                   "crop them to the lungs", force=force)
        run.warnings += placement.warnings[known_warnings:]
        metadata = {"scan_check": scan.to_dict()}
    elif conditions:
        placement = run.placed(place_masks, conditions, model)
    if conditions:
        grid, metadata = placement.grid, {**placement.metadata, **metadata}
        x, y, z = grid.size
        volume = np.zeros((1, 4, z, y, x), np.float32)
        for name, image in conditions.items():
            volume[0, CONDITION_CHANNELS[name]] = encode_condition(name, image, grid, placement.transform)
        known = torch.from_numpy(volume).to(run.device)
    tiles = run.sr_tiles()
    text = run.encode_report(report)
    x64, x256 = run.sample_both_stages(text, hold_channels(known, held), tiles)
    result = run.decode(x64, x256, grid, report, held, with_ct=True)
    result.metadata.update(metadata, sr_tiles=tiles)
    return result


def segment(ct: sitk.Image, model: LoadedModel, report: str | None = None, settings: RunSettings | None = None, *,
            progress: Progress | None = None, force: bool = False, scan: ScanCheck | None = None) -> GenerationResult:
    """Segment a real CT (HU) by holding the CT channel fixed; masks come back on the CT's own grid.

    ``settings`` as for :func:`generate`. The scan check runs first (:func:`.scan_check.require_scan`, or ``scan``
    when the caller ran it): a CT the model cannot take raises :class:`.scan_check.ScanRefused` before any sampling,
    unless ``force`` (its problems then become warnings). The CT goes into model space through
    :func:`.placement.place_ct`;
    ``metadata`` records how ("placement", and "alignment" for atlas models or "model_grid_used" for grid models)
    and the check of the result ("quality", :func:`.placement.segmentation_quality`). A result that fails the check
    raises :class:`.placement.UntrustedSegmentation` unless ``force``.
    """
    values = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(values).all():
        raise ValueError("the CT contains NaN or infinite values")
    run = _Run(model, settings, progress)
    scan = run.scanned(ct, force, "CT", scan)
    placement = scan.placement
    grid = placement.grid
    hu = placement.to_model(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkLinear, -1024.0)
    x, y, z = grid.size
    known = torch.zeros((1, 4, z, y, x))
    known[0, 0] = torch.from_numpy(hu_to_model(hu).astype(np.float32))
    known = known.to(run.device)
    if report:
        text = run.encode_report(report)
    else:
        text = model.lowres.null_text(1).detach()
    tiles = run.sr_tiles()
    x64, x256 = run.sample_both_stages(text, hold_channels(known, [0]), tiles)
    result = run.decode(x64, x256, grid, report, [0], with_ct=False)
    target = Geometry.of(ct)
    for name in ("lobes", "airway", "vessels"):
        setattr(result, name, placement.to_patient(getattr(result, name), target, result.geometry))
    result.geometry, result.source = target, Provenance.of(ct)
    quality = segmentation_quality(placement, result.lobes, result.airway, target)
    result.metadata.update(placement.metadata, quality=quality, sr_tiles=tiles, scan_check=scan.to_dict())
    if not quality["passed"]:
        message = "segmentation not trusted: " + "; ".join(quality["problems"])
        if not force:
            raise UntrustedSegmentation(message + ". Fix: check the CT (a chest CT in HU, lungs inside the field of "
                                        "view, orientation in the header); --force writes it anyway", quality)
        result.metadata["warnings"].append(message + " (written because of --force)")
    return result
