"""DICOM out: a CT as a CT Image Storage series, the anatomy as one DICOM Segmentation, marked the way the
standard marks synthetic and derived data (the series a segmentation or an edit was made from is read by
:mod:`.dicom_series`).

Arrays are (z, y, x) on a :class:`~.images.Geometry` (LPS, as ITK); slice k of a written series is ``array[k]``,
at Image Position ``origin + k * spacing_z * direction[:, 2]`` with Image Orientation ``direction[:, 0]`` (along a
row) and ``direction[:, 1]`` (down a column). CT voxels are stored as int16 with Rescale Slope 1 and Intercept 0:
the stored value is the HU (rounded to the nearest integer).

Three kinds of object (:data:`KINDS`), each one marked from what it holds:

- ``synthetic`` (``medsyn generate``): a new patient (``SYNTHETIC^NOT A PATIENT``, ID ``SYNTHETIC-MEDSYN-...``), a
  new study and series, Synthetic Data (0008,001C) YES, descriptions saying SYNTHETIC.
- ``edited`` (``medsyn edit`` of a DICOM series): the patient's identifiers and study, a new derived series
  referencing the source slices, Synthetic Data YES (part of its content was made by the model), descriptions
  saying EDITED.
- ``patient`` (``medsyn segment`` of a DICOM series): only the Segmentation, in the patient's study, referencing the
  patient's own series; Synthetic Data copied from that series (NO for a scan).

pydicom and highdicom are the optional extra ``dicom`` (``pip install 'medsyn[dicom]'``).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .dicom_series import SourceSeries, require
from .images import Geometry
from .segments import CATEGORY_ANATOMY, SEGMENTS

KINDS = ("synthetic", "edited", "patient")
SYNTHETIC_PATIENT_NAME = "SYNTHETIC^NOT A PATIENT"
"""Patient's Name of every synthetic CT: no person is called this, and every list shows it first."""
MANUFACTURER = "MedSyn for 3D Slicer"
SYNTHESIZING_EQUIPMENT = ("109100", "DCM", "Synthesizing Equipment")
"""Purpose of Reference of the Contributing Equipment that made synthetic content (PS3.16 CID 7005)."""
CT_SERIES = "CT"
SEG_FILE = "SEG_anatomy.dcm"
LUNG_WINDOW = (-600, 1500)


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid(prefix=None)  # 2.25.<random UUID>: unique without a registered root


def _now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters; up to 1024 (LO, ST) without backslashes, which DICOM reads as a value
    separator in LO and highdicom refuses in ST (LT, 10240, keeps them)."""
    value = value.replace("\\", "/") if limit <= 1024 else value
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _hu_int16(ct_hu: np.ndarray) -> np.ndarray:
    values = np.rint(np.asarray(ct_hu, np.float64))
    if not np.isfinite(values).all():
        raise ValueError("the CT holds NaN or infinite values; it cannot be written as DICOM")
    if values.min() < -32768 or values.max() > 32767:
        raise ValueError(f"the CT's values ({values.min():.0f}..{values.max():.0f} HU) do not fit DICOM's 16-bit "
                         "CT pixels")
    return values.astype(np.int16)


def _equipment(model: dict, statement: str):
    """The Contributing Equipment item naming the model that made the content (Synthesizing Equipment)."""
    pydicom, hd = require()
    from pydicom.sr.coding import Code

    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=Code(*SYNTHESIZING_EQUIPMENT),
        manufacturer_model_name=_text(model.get("name", "MedSyn"), 64), software_versions=__version__,
        contribution_description=_text(statement, 1024))


@dataclass
class Marking:
    """What the written objects say about themselves: ``kind`` (:data:`KINDS`), descriptions, the report, the
    model statement and the model's identity (name, title, sha256 of each stage)."""

    kind: str
    series_description: str
    seg_description: str
    derivation: str
    report: str | None = None
    statement: str = ""
    model: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.kind in ("synthetic", "edited")


def marking(kind: str, model: dict, report: str | None = None, seed: int | None = None) -> Marking:
    """The standard marking of a result of ``kind`` made by ``model`` (the sidecar's model entry)."""
    if kind not in KINDS:
        raise ValueError(f"unknown DICOM result kind {kind!r}; one of {KINDS}")
    name = model.get("name", "MedSyn")
    statement = model.get("statement") or (f"{model.get('title', name)}: every output of this model is a SYNTHETIC "
                                            "image, not patient data; not for clinical use.")
    sha256 = model.get("sha256")
    weights = ", ".join(f"{k} sha256 {v}" for k, v in sorted(sha256.items())) if isinstance(sha256, dict) else ""
    tag = f" seed {seed}" if seed is not None else ""
    if kind == "synthetic":
        return Marking(kind, f"SYNTHETIC CT MedSyn{tag}", f"SYNTHETIC anatomy MedSyn{tag}",
                       f"SYNTHETIC: generated by MedSyn ({name}) from a radiology report; not a patient scan, not "
                       f"for clinical use. {weights}", report, statement, model)
    if kind == "edited":
        return Marking(kind, f"EDITED CT MedSyn{tag}", f"EDITED anatomy MedSyn{tag}",
                       f"EDITED: the source series with one region replaced by content MedSyn ({name}) generated "
                       f"for a report; not the original scan, not for clinical use. {weights}", report, statement,
                       model)
    return Marking(kind, "", f"MedSyn segmentation{tag}",
                   f"Segmentation by MedSyn ({name}) of the referenced series; model output, not for clinical "
                   f"use. {weights}", report, statement, model)


def _patient_and_study(ds, source, study_uid: str) -> None:
    """Patient and study of a new series: a synthetic patient and study, or the source's (an edit)."""
    if source is None:
        date, time = _now()
        ds.PatientName = SYNTHETIC_PATIENT_NAME
        ds.PatientID = "SYNTHETIC-MEDSYN-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12].upper()
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.StudyDate, ds.StudyTime = date, time
        ds.StudyID = "SYNTHETIC"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "SYNTHETIC MedSyn CT - not a patient"
        ds.PatientIdentityRemoved = "NO"  # nothing was removed: there never was a patient
        return
    first = source.first
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "PatientAge", "OtherPatientIDsSequence", "PatientIdentityRemoved", "DeidentificationMethod",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyDescription"):
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "ReferringPhysicianName"):  # type 2: present, maybe empty
        if keyword not in ds:
            setattr(ds, keyword, "")


def write_ct_series(ct_hu: np.ndarray, geometry: Geometry, folder: Path, mark: Marking,
                    source: SourceSeries | None = None) -> list:
    """Write ``ct_hu`` (z, y, x, HU) as a CT Image Storage series, one file per slice, into ``folder``; returns the
    datasets (with pixels) in slice order.

    ``source``: the series an edit was made from (same grid): its patient, study and Frame of Reference are kept,
    and each slice references the source slice it was derived from. Without it: a new synthetic patient and study.
    """
    pydicom, _ = require()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    if tuple(ct_hu.shape[::-1]) != tuple(geometry.size):
        raise ValueError(f"CT shape {ct_hu.shape} (z, y, x) does not fit geometry size {geometry.size}")
    if source is not None and len(source.files) != ct_hu.shape[0]:
        raise ValueError(f"the edited CT has {ct_hu.shape[0]} slices, its source series {len(source.files)}")
    pixels = _hu_int16(ct_hu)
    direction = np.array(geometry.direction, float).reshape(3, 3)
    spacing = np.array(geometry.spacing, float)
    origin = np.array(geometry.origin, float)
    study_uid = source.first.StudyInstanceUID if source is not None else _new_uid()
    series_uid = _new_uid()
    frame_uid = source.first.FrameOfReferenceUID if source is not None and "FrameOfReferenceUID" in source.first \
        else _new_uid()
    date, time = _now()
    equipment = _equipment(mark.model, mark.statement)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(pixels.shape[0]):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the report may hold any character
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _new_uid()
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.SyntheticData = "YES" if mark.synthetic else "NO"
        ds.ContributingEquipmentSequence = [equipment]
        _patient_and_study(ds, source, study_uid)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 901 if mark.kind == "edited" else 1
        ds.SeriesDescription = _text(mark.series_description, 64)
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.PatientPosition = source.first.get("PatientPosition", "HFS") if source is not None else "HFS"
        ds.BodyPartExamined = source.first.get("BodyPartExamined", "CHEST") if source is not None else "CHEST"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = _text(mark.model.get("name", "MedSyn"), 64)
        ds.SoftwareVersions = __version__
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = date, time
        ds.AcquisitionNumber = ""
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.DerivationDescription = _text(mark.derivation, 1024)
        if mark.report:
            ds.ImageComments = _text(f"{mark.kind.upper()}: made for the report: {mark.report}", 10240)
        if source is not None:
            reference = Dataset()
            reference.ReferencedSOPClassUID = source.datasets[k].SOPClassUID
            reference.ReferencedSOPInstanceUID = source.datasets[k].SOPInstanceUID
            ds.SourceImageSequence = [reference]
        position = origin + k * spacing[2] * direction[:, 2]
        ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]  # between rows (y), between columns (x)
        ds.SliceThickness = (source.datasets[k].get("SliceThickness", f"{spacing[2]:.6g}") if source is not None
                             else f"{spacing[2]:.6g}")
        ds.SliceLocation = f"{float(position @ np.cross(direction[:, 0], direction[:, 1])):.6g}"
        ds.KVP = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = str(LUNG_WINDOW[0]), str(LUNG_WINDOW[1])
        ds.WindowCenterWidthExplanation = "LUNG"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"CT{k + 1:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


def write_segmentation(lobes: np.ndarray, airway: np.ndarray, vessels: np.ndarray, source_images: list,
                       path: Path, mark: Marking):
    """Write the lobes (1..5), airway and vessels (z, y, x, on the grid of ``source_images``, one per slice, in
    slice order) as one binary DICOM Segmentation referencing ``source_images``, with the segments' SNOMED CT
    codes, names and colours of :data:`~.segments.SEGMENTS`; returns the dataset."""
    pydicom, hd = require()
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    arrays = {"lobes": lobes, "airway": airway, "vessels": vessels}
    for name, array in arrays.items():
        if array.shape != (len(source_images), source_images[0].Rows, source_images[0].Columns):
            raise ValueError(f"{name} shape {array.shape} does not fit the {len(source_images)} referenced slices")
    masks = np.stack([np.asarray(arrays[s.channel]) == s.label for s in SEGMENTS], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="MedSyn", family=codes.cid7162.ArtificialIntelligence,
        version=_text(f"{mark.model.get('name', 'MedSyn')} (medsyn {__version__})", 64))
    descriptions = []
    for number, segment in enumerate(SEGMENTS, start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment.name,
            segmented_property_category=CodedConcept(CATEGORY_ANATOMY[1], CATEGORY_ANATOMY[0], CATEGORY_ANATOMY[2]),
            segmented_property_type=CodedConcept(segment.type_code[1], segment.type_code[0], segment.type_code[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=_new_uid(), tracking_id=segment.segment_id,
            display_color=hd.color.CIELabColor.from_rgb(*(round(c * 255) for c in segment.color)))
        if segment.modifier is not None:
            modifier = segment.modifier
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                CodedConcept(modifier[1], modifier[0], modifier[2])]
        descriptions.append(description)
    synthetic = mark.synthetic or source_images[0].get("SyntheticData") == "YES"
    seg = hd.seg.Segmentation(
        source_images=source_images, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=_new_uid(), series_number=902,
        sop_instance_uid=_new_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=_text(mark.model.get("name", "MedSyn"), 64), software_versions=__version__,
        device_serial_number="none", content_description=_text(mark.seg_description, 64),
        content_label="MEDSYN", series_description=_text(mark.seg_description, 64),
        contributing_equipment=[_equipment(mark.model, mark.statement)] if mark.synthetic else None,
        omit_empty_frames=True)  # frames without any voxel of a segment are left out (a SEG a fraction the size)
    seg.SyntheticData = "YES" if synthetic else "NO"
    seg.save_as(path, enforce_file_format=True)
    return seg


def write_dicom_result(folder: Path, geometry: Geometry, masks: dict[str, np.ndarray], mark: Marking,
                       ct_hu: np.ndarray | None = None, source: SourceSeries | None = None) -> dict:
    """Write a result's DICOM objects into ``folder`` (created; the caller writes it atomically) and return what
    the sidecar records: the folder's files and the UIDs.

    synthetic: ``ct_hu`` as a new series in ``CT/`` and the SEG referencing it. edited: ``ct_hu`` (on the grid of
    ``source``) as a derived series of the source's study, and the SEG referencing it. patient: only the SEG,
    referencing ``source`` (``ct_hu`` None). ``masks``: lobes, airway, vessels (z, y, x) on ``geometry``.
    """
    if (mark.kind == "patient") != (ct_hu is None) or (mark.kind != "synthetic") != (source is not None):
        raise ValueError(f"a {mark.kind} DICOM result needs "
                         + {"synthetic": "a CT and no source series", "edited": "the CT and its source series",
                            "patient": "the source series and no CT"}[mark.kind])
    folder.mkdir(parents=True, exist_ok=True)
    if ct_hu is not None:
        images = write_ct_series(ct_hu, geometry, folder / CT_SERIES, mark, source)
    else:
        images = source.datasets
        _check_source_grid(source, geometry)
    seg = write_segmentation(masks["lobes"], masks["airway"], masks["vessels"], images, folder / SEG_FILE, mark)
    record = {"kind": mark.kind, "synthetic_data": seg.SyntheticData, "study_uid": str(seg.StudyInstanceUID),
              "segmentation": SEG_FILE, "segmentation_series_uid": str(seg.SeriesInstanceUID)}
    if ct_hu is not None:
        record.update(ct_series=CT_SERIES, ct_series_uid=str(images[0].SeriesInstanceUID), ct_files=len(images))
    if source is not None:
        record["source_series_uid"] = source.series_uid
    return record


def _check_source_grid(source: SourceSeries, geometry: Geometry) -> None:
    first = source.first
    if (len(source.datasets), int(first.Rows), int(first.Columns)) != tuple(geometry.size[::-1]):
        raise ValueError(f"the segmentation's grid {geometry.size} is not that of the series {source.series_uid} "
                         f"({first.Columns} x {first.Rows} x {len(source.datasets)})")
