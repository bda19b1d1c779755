"""The anatomy segments MedSyn produces: names, label values, colours and standard terminology (SNOMED CT).

One table serves the `.seg.nrrd` writer, the NIfTI label maps and the Slicer scene logic. The codes are those of
the terminology context 3D Slicer loads by default that holds all of them, "Segmentation category and type - DICOM
master list" (the "General Anatomy" list has the lobes but neither the airway nor blood vessels).
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
CATEGORY_ANATOMY = ("SCT", "123037004", "Anatomical Structure")
LEFT = ("SCT", "7771000", "Left")
RIGHT = ("SCT", "24028007", "Right")


@dataclass(frozen=True)
class SegmentInfo:
    """One output segment: ``channel`` is the model channel it comes from and ``label`` its value there."""

    segment_id: str
    name: str
    channel: str  # "lobes", "airway" or "vessels"
    label: int  # lobe label 1..5, or 1 for the binary channels
    color: tuple[float, float, float]  # RGB in [0, 1]
    type_code: tuple[str, str, str]  # (scheme, value, meaning)
    modifier: tuple[str, str, str] | None = None


SEGMENTS: tuple[SegmentInfo, ...] = (
    SegmentInfo("left_upper_lobe", "left upper lobe", "lobes", 1, (0.80, 0.54, 0.26),
                ("SCT", "45653009", "Upper lobe of lung"), LEFT),
    SegmentInfo("left_lower_lobe", "left lower lobe", "lobes", 2, (0.36, 0.62, 0.75),
                ("SCT", "90572001", "Lower lobe of lung"), LEFT),
    SegmentInfo("right_upper_lobe", "right upper lobe", "lobes", 3, (0.90, 0.75, 0.36),
                ("SCT", "45653009", "Upper lobe of lung"), RIGHT),
    SegmentInfo("right_middle_lobe", "right middle lobe", "lobes", 4, (0.55, 0.78, 0.45),
                ("SCT", "72481006", "Middle lobe of right lung"), None),
    SegmentInfo("right_lower_lobe", "right lower lobe", "lobes", 5, (0.55, 0.45, 0.78),
                ("SCT", "90572001", "Lower lobe of lung"), RIGHT),
    SegmentInfo("airway", "airway", "airway", 1, (0.73, 0.93, 0.98),
                ("SCT", "89187006", "Airway structure"), None),
    SegmentInfo("pulmonary_vessels", "pulmonary vessels", "vessels", 1, (0.85, 0.20, 0.18),
                ("SCT", "59820001", "Blood Vessel"), None),
)


def _code(c: tuple[str, str, str] | None) -> str:
    return "^".join(c) if c else "^^"


def terminology_entry(info: SegmentInfo) -> str:
    """Slicer's serialised terminology entry for a segment (the ``TerminologyEntry`` segment tag)."""
    return "~".join([
        TERMINOLOGY_CONTEXT,
        _code(CATEGORY_ANATOMY),
        _code(info.type_code),
        _code(info.modifier),
        "Anatomic codes - DICOM master list",
        "^^",
        "^^",
    ])
