"""The scan check of a CT against a model, run before the model is loaded (segment, edit, generate --reference-ct,
the Slicer tabs).

:func:`check_scan` is :func:`MedSynLib.io.scan.check_chest_ct` (a chest CT in HU with whole lungs) plus what the
model's box holds (:func:`.placement.place_ct`: lung outside the box). :func:`require_scan` raises
:class:`ScanRefused` (exit code 4) for a scan that fails, unless ``force``; then the problems become warnings and
the result's ``forced`` flag is set. The placement computed here is reused by the run, so the CT is surveyed once.
"""

from __future__ import annotations

import time

import SimpleITK as sitk

from ..errors import Refusal
from ..io.scan import ScanCheck, check_chest_ct
from .placement import ModelSpaceLike, place_ct

MAX_BOX_OUTSIDE_FRACTION = 0.05
"""Lung outside the model's box above this share (the chest is larger than the model's field of view) fails the
check; smaller shares are a warning (:data:`.placement.WARN_OUTSIDE_FRACTION`)."""
FORCE_FIX = "--force runs it anyway (the result is then marked with the problems)"


class ScanRefused(Refusal):
    """A CT the model cannot take (exit code 4); ``check`` is the :class:`~MedSynLib.io.scan.ScanCheck`."""

    kind = "scan_refused"
    fix = FORCE_FIX

    def __init__(self, check: ScanCheck, what: str = "CT"):
        super().__init__(f"the {what} cannot be used: {check.reason}")
        self.check = check

    def details(self) -> dict:
        return {"scan_check": self.check.to_dict()}


def check_scan(ct: sitk.Image, model: ModelSpaceLike) -> ScanCheck:
    """The scan check of ``ct`` (HU) for ``model`` (a loaded model or a
    :class:`~MedSynLib.modelstore.bundle.ModelSpace`): never raises for what it finds. ``figures["box"]`` holds
    what the model's box holds (lung mL and share outside it); ``placement`` the box placed on the lungs."""
    t0 = time.perf_counter()
    check = check_chest_ct(ct)
    if check.chest is not None:
        placement = place_ct(ct, model, check.chest)
        check.placement = placement
        box = placement.metadata["placement"]
        check.figures["box"] = {k: box[k] for k in ("lung_outside_ml", "lung_outside_fraction")}
        check.figures["box"]["size_mm"] = [round(n * s, 1) for n, s in zip(model.grid.size, model.grid.spacing)]
        if box["lung_outside_fraction"] > MAX_BOX_OUTSIDE_FRACTION:
            check.problems.append(f"{box['lung_outside_ml']:.0f} mL ({100 * box['lung_outside_fraction']:.0f} %) of "
                                  f"the lungs lie outside the model's box: the chest is larger than the model's "
                                  "field of view")
            check.passed = False
    check.seconds = time.perf_counter() - t0
    return check


def require_scan(ct: sitk.Image, model: ModelSpaceLike, force: bool = False, what: str = "CT",
                 check: ScanCheck | None = None) -> ScanCheck:
    """:func:`check_scan` (or the given ``check``), raising :class:`ScanRefused` when it fails, unless ``force``
    (then ``forced`` is set). A CT without lungs has no placement and is refused even with ``force``."""
    check = check if check is not None else check_scan(ct, model)
    if not check.passed:
        if not force or check.placement is None:
            raise ScanRefused(check, what)
        check.forced = True
    return check


def scan_warnings(check: ScanCheck, what: str = "CT") -> list[str]:
    """The warnings a forced run carries into its sidecar."""
    return [f"the {what} failed the scan check and was used because of --force: {p}" for p in check.problems] \
        if check.forced else []
