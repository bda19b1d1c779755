"""The scan check: is a CT one the model can take (a chest CT in HU, with whole lungs in its field of view)?

Run first by every command that takes a CT, before any model is loaded (:func:`check_chest_ct` here;
:func:`MedSynLib.pipelines.scan_check.check_scan` adds what the model's box holds). It works on the ~3 mm copy of
:func:`MedSynLib.io.lungs.survey_chest` and takes about a second for a clinical CT. Each problem is one sentence a
radiologist can act on ("the scan ends above the lung bases: ...", "no lungs in this scan: it looks like an
abdominal CT ..."); the figures say what was seen (mL, mm, cm², HU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .lungs import LEFT_LUNG, RIGHT_LUNG, ChestMasks, hu_on_coarse_grid, survey_chest

AIR_PERCENTILE, MAX_AIR_HU = 0.5, -700.0
"""A CT in HU has air (outside air, lung, bowel gas): the 0.5th percentile of its values lies below -700 HU."""
MIN_SCAN_LUNG_ML = 5.0
"""Less aerated lung than this is "no lungs in this scan"."""
WHOLE_LUNG_MM = 150.0
"""Lungs shorter than this head to foot (an adult's measure 200-300 mm) and cut by the scan are only a part."""


@dataclass
class ScanCheck:
    """The result of the scan check.

    ``passed``: the model can take the scan; ``problems``: why not (sentences, empty when passed); ``notes``:
    what was seen that does not refuse the scan (e.g. no trachea found); ``figures``: measurements (HU, mL, mm,
    cm²); ``forced``: the scan failed but the run went on because the user asked (``--force``); ``seconds``: the
    check's time. ``chest`` (the masks) and ``placement`` (the model's box, set by the pipeline's check) are for
    the pipeline and stay out of :meth:`to_dict`.
    """

    passed: bool
    problems: list[str]
    figures: dict
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    seconds: float = 0.0
    chest: ChestMasks | None = field(default=None, repr=False)
    placement: object | None = field(default=None, repr=False)

    @property
    def reason(self) -> str:
        """The problems as one sentence ("" when passed)."""
        return "; ".join(self.problems)

    def to_dict(self) -> dict:
        """What the sidecar, the JSON event and the Slicer panel show."""
        return {"passed": self.passed, "forced": self.forced, "reason": self.reason, "problems": list(self.problems),
                "notes": list(self.notes), "figures": self.figures, "seconds": round(self.seconds, 2)}

    def event(self) -> dict:
        """The ``--progress json`` event: ``{"event": "scan_check", ...}``."""
        return {"event": "scan_check", **self.to_dict()}


def _not_hu(values: np.ndarray) -> float | None:
    """The 0.5th percentile of ``values`` when it is above :data:`MAX_AIR_HU` (no air: not HU), else None."""
    low = float(np.percentile(values, AIR_PERCENTILE))
    return low if low > MAX_AIR_HU else None


def _lung_problems(chest: ChestMasks) -> list[str]:
    """Sentences for lungs that are missing or cut by the field of view."""
    if chest.lung_ml < MIN_SCAN_LUNG_ML:
        if chest.gas_ml > 0:
            return [f"no lungs in this scan: it looks like an abdominal CT (gas in the stomach or bowel, "
                    f"{chest.gas_ml:.0f} mL, and no aerated lung); give a chest CT that holds both lungs"]
        return ["no lungs in this scan (no aerated lung inside the body): give a chest CT that holds both lungs"]
    cut, extent = chest.cut_cm2, chest.lung_extent_mm()
    problems = []
    if "apex" in cut and "bases" in cut:
        problems.append(f"the scan holds only a slab of the lungs ({extent:.0f} mm head to foot): it begins below "
                        "the lung apices and ends above the lung bases; give a scan from above the apices to below "
                        "the costophrenic angles")
    elif "apex" in cut:
        if extent < WHOLE_LUNG_MM and chest.gas_ml > 0:
            problems.append(f"the scan holds only the lung bases ({chest.lung_ml:.0f} mL of lung over {extent:.0f} "
                            "mm head to foot): it looks like an abdominal CT; give a chest CT that begins above the "
                            "lung apices")
        else:
            problems.append(f"the scan begins below the lung apices ({cut['apex']:.0f} cm² of lung in its top "
                            "slice); give a scan that begins above the apices")
    elif "bases" in cut:
        problems.append(f"the scan ends above the lung bases ({cut['bases']:.0f} cm² of lung in its lowest slice); "
                        "give a scan that reaches below the costophrenic angles")
    if "sides" in cut:
        problems.append(f"the field of view is narrower than the chest: the lungs touch the image's edge "
                        f"({cut['sides']:.0f} cm² of lung on it); give a reconstruction with the whole chest in "
                        "the field of view")
    return problems


def chest_figures(chest: ChestMasks) -> dict:
    """What the finder saw, rounded for the sidecar."""
    ml = lambda mask: round(float(mask.sum()) * chest.voxel_ml, 1)  # noqa: E731
    return {"body_ml": round(chest.body_ml, 1), "lung_ml": round(chest.lung_ml, 1),
            "right_lung_ml": ml(chest.lungs == RIGHT_LUNG), "left_lung_ml": ml(chest.lungs == LEFT_LUNG),
            "trachea_ml": round(chest.trachea_ml, 1), "gas_ml": chest.gas_ml,
            "lung_extent_mm": round(chest.lung_extent_mm(), 1), "lungs_cut_by_scan": list(chest.lungs_cut),
            "lung_on_cut_faces_cm2": dict(chest.cut_cm2)}


def check_chest_ct(ct: sitk.Image) -> ScanCheck:
    """The CT-only part of the scan check (module docstring): HU, body, lungs whole in the field of view,
    trachea. Never raises for what it finds; the result says it."""
    t0 = time.perf_counter()
    if ct.GetNumberOfComponentsPerPixel() != 1:
        return ScanCheck(False, ["the image has several values per voxel (colour or vector): give the CT as a "
                                 "scalar volume in HU"], {}, seconds=time.perf_counter() - t0)
    coarse = hu_on_coarse_grid(ct)
    low = _not_hu(coarse[1])
    if low is not None:
        return ScanCheck(False, [f"the values are not Hounsfield units (the lowest are about {low:.0f}; air is near "
                                 "-1000 HU in a CT): it may be an MR, or a CT stored without its rescale slope and "
                                 "intercept; give the CT in HU"], {"low_value": round(low, 1)},
                         seconds=time.perf_counter() - t0)
    chest = survey_chest(ct, coarse=coarse)
    figures = chest_figures(chest)
    if not chest.body.any():
        problems = ["no patient in this scan (no soft tissue of at least 50 mL): give a chest CT in HU"]
    else:
        problems = _lung_problems(chest)
    notes = []
    if chest.lungs.any() and not chest.trachea.any():
        notes.append("no trachea found above the lungs (the airway check of the segmentation is skipped)")
    return ScanCheck(not problems, problems, figures, notes, seconds=time.perf_counter() - t0,
                     chest=chest if chest.lungs.any() else None)
