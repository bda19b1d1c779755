"""DICOM in: a folder's series (listed, one read as an image after checking that its slices make one regular
grid), the series a segmentation or an edit was made from (its headers), and the check that the optional DICOM
packages are there.

pydicom and highdicom are the optional extra ``dicom`` (``pip install 'medsyn[dicom]'``); listing needs only
SimpleITK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import MedSynError

DICOM_DESCRIPTION_KEYS = ("0008|103e", "0008|1030")
"""Series and Study Description: the headers that mark a series SYNTHETIC or EDITED (:class:`~.images.Provenance`)."""
INSTALL_FIX = "install the DICOM extra: pip install 'medsyn[dicom]' (pydicom, highdicom, pynetdicom)"


def require():
    """pydicom and highdicom, or a clear error naming the fix."""
    try:
        import highdicom
        import pydicom
    except ImportError as exc:
        raise ValueError(f"DICOM needs pydicom and highdicom ({exc.name} is not installed). Fix: {INSTALL_FIX}") \
            from None
    return pydicom, highdicom


@dataclass
class SourceSeries:
    """The DICOM series a result was made from: its folder, Series Instance UID, files in slice order (the order
    :func:`~.images.read_image` read them in) and their headers (no pixel data)."""

    folder: Path
    series_uid: str
    files: list[Path]
    datasets: list = field(repr=False)

    @property
    def first(self):
        return self.datasets[0]


def list_series(folder: Path) -> list[dict]:
    """The DICOM series in ``folder``: uid, modality, description and number of files (ITK's series grouping)."""
    folder = Path(folder)
    found = []
    for uid in dicom_series_ids(folder):
        files = dicom_series_files(folder, uid)
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.LoadPrivateTagsOff()
        tags = {"modality": "0008|0060", "description": "0008|103e"}
        try:
            reader.ReadImageInformation()
            info = {k: reader.GetMetaData(t).strip() if reader.HasMetaDataKey(t) else "" for k, t in tags.items()}
        except RuntimeError:
            info = {k: "" for k in tags}
        found.append({"uid": uid, **info, "files": len(files)})
    return found


def series_listing(series: list[dict]) -> str:
    """One line per series, for a message: ``UID  MODALITY  N files  description``."""
    return "\n".join(f"  {s['uid']}  {s['modality'] or '?'}  {s['files']} files  {s['description']}"
                     for s in series)


def source_series(folder: Path, series_uid: str | None = None) -> SourceSeries:
    """The series ``series_uid`` (or the only one) of the DICOM folder ``folder``, with its headers.

    Refused with the fix (ValueError): no series, several without a choice (they are listed), an unknown UID,
    files pydicom cannot read.
    """
    pydicom, _ = require()
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"DICOM output of a segmentation or an edit references the CT's own DICOM series, but "
                         f"{folder} is not a DICOM folder. Fix: give the folder of the CT's DICOM series as --ct, or "
                         "leave out --format dicom")
    series = list_series(folder)
    if not series:
        raise ValueError(f"{folder} holds no DICOM series. Fix: give the folder that holds the CT's DICOM files")
    uids = [s["uid"] for s in series]
    if series_uid is None:
        if len(series) > 1:
            raise ValueError(f"{folder} holds {len(series)} DICOM series:\n{series_listing(series)}\n"
                             "Fix: choose one with --series UID")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise ValueError(f"{folder} holds no DICOM series {series_uid}; it holds:\n{series_listing(series)}\n"
                         "Fix: give one of these UIDs with --series")
    files = [Path(f) for f in dicom_series_files(folder, series_uid)]
    try:
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except Exception as exc:  # pydicom raises several kinds for a damaged file
        raise ValueError(f"cannot read the DICOM headers in {folder} ({exc}). Fix: copy or export the series "
                         "again") from None
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise ValueError(f"the series {series_uid} in {folder} is multi-frame (e.g. Enhanced CT); DICOM results "
                         "reference single-frame CT series only. Fix: leave out --format dicom, or convert the "
                         "series to single-frame images first (e.g. dcm2niix, then --ct the NIfTI file)")
    return SourceSeries(folder, series_uid, files, datasets)


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """ITK's own warnings off (e.g. "No Series were found" for a folder without DICOM files): the caller's message
    says what is wrong, in this program's words."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_series_ids(folder: Path) -> tuple[str, ...]:
    """The Series Instance UIDs of the DICOM files in ``folder`` (ITK's grouping); () for a folder without any."""
    try:
        with _itk_warnings_off():
            return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return ()


def dicom_series_files(folder: Path, series_uid: str) -> list[str]:
    """The files of the series ``series_uid`` in ``folder``, sorted by slice position (ITK's order)."""
    with _itk_warnings_off():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def read_dicom_series(folder: Path, what: str, series_uid: str | None = None) -> sitk.Image:
    """The one DICOM series in ``folder``, or the series ``series_uid`` of several (read with ITK's series reader,
    slices sorted by position), with the descriptions that mark it (:data:`DICOM_DESCRIPTION_KEYS`)."""
    fix = (f"Fix: convert it to one file first, e.g. `python -c \"import SimpleITK as s; r = s.ImageSeriesReader(); "
           f"r.SetFileNames(s.ImageSeriesReader.GetGDCMSeriesFileNames('{folder}', SERIES)); "
           f"s.WriteImage(r.Execute(), 'ct.nii.gz')\"` or with dcm2niix / 3D Slicer's DICOM module")
    series = dicom_series_ids(folder)
    if not series:
        raise ValueError(f"{what} {folder} is a folder without a DICOM series. Fix: give a NIfTI, NRRD or MetaImage "
                         "file, or the folder that holds the DICOM files of one series")
    if series_uid is not None and series_uid not in series:
        raise ValueError(f"{what} folder {folder} holds no DICOM series {series_uid}; it holds:\n"
                         f"{series_listing(list_series(folder))}\nFix: give one of these UIDs with --series")
    if series_uid is None and len(series) > 1:
        raise ValueError(f"{what} folder {folder} holds {len(series)} DICOM series:\n"
                         f"{series_listing(list_series(folder))}\nFix: choose one with --series UID")
    series = [series_uid] if series_uid is not None else series
    files = dicom_series_files(folder, series[0])
    check_series_geometry(files, f"{what} DICOM series in {folder}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ValueError(f"cannot read the DICOM series in {folder} ({str(exc).strip()[:200]}). "
                         + fix.replace("SERIES", repr(series[0]))) from exc
    first = sitk.ImageFileReader()  # the descriptions that mark a series SYNTHETIC or EDITED (Provenance)
    first.SetFileName(files[0])
    first.ReadImageInformation()
    for key in DICOM_DESCRIPTION_KEYS:
        if first.HasMetaDataKey(key):
            image.SetMetaData(key, first.GetMetaData(key))
    return image


SLICE_TOLERANCE = 0.01
"""Slice distances of one series may differ by this share of their median (rounding in the headers)."""


def check_series_geometry(files, what: str) -> None:
    """Refuse a DICOM series (``files``, one slice each) whose slices do not make one regular grid: orientations
    that differ, two slices at the same position, or spacing that is not uniform (a missing slice: ITK would
    stretch the whole volume over the gap). The message names the positions (mm along the slice normal)."""
    fix = ("export the complete series again (every slice, once), or convert it with dcm2niix / 3D Slicer's DICOM "
           "module, which resample or split irregular series, and give the result as a NIfTI file")
    if len(files) < 2:
        return
    positions, orientation = [], None
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        reader.ReadImageInformation()
        keys = set(reader.GetMetaDataKeys())
        if not {"0020|0032", "0020|0037"} <= keys:
            return  # no patient geometry in the headers (secondary capture): ITK's own reading applies
        try:
            here = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
            positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        except ValueError:
            raise MedSynError(f"{what}: {name} has an unreadable slice position or orientation", fix) from None
        if orientation is None:
            orientation = here
        elif here.shape != orientation.shape or not np.allclose(here, orientation, atol=1e-3):
            raise MedSynError(f"{what}: the slices are not all oriented alike ({Path(name).name} differs)", fix)
    normal = np.cross(orientation[:3], orientation[3:6])
    along = np.sort(np.asarray(positions) @ normal)
    steps = np.diff(along)
    duplicates = np.flatnonzero(steps < 1e-3)
    if duplicates.size:
        raise MedSynError(f"{what}: {duplicates.size} slice position{'s are' if duplicates.size > 1 else ' is'} "
                          f"given twice (first at {along[duplicates[0]]:.2f} mm): the folder holds duplicate slices "
                          "or two acquisitions in one series", fix)
    typical = float(np.median(steps))
    irregular = np.flatnonzero(np.abs(steps - typical) > SLICE_TOLERANCE * typical)
    if irregular.size:
        k = irregular[0]
        missing = round(steps[k] / typical) - 1
        reason = (f"about {missing} slice{'s are' if missing > 1 else ' is'} missing between {along[k]:.2f} and "
                  f"{along[k + 1]:.2f} mm" if missing >= 1 else
                  f"the slice distance changes from {typical:.3g} mm to {steps[k]:.3g} mm at {along[k]:.2f} mm")
        raise MedSynError(f"{what}: its slices are not evenly spaced ({reason}; {irregular.size} irregular "
                          f"distance{'s' if irregular.size > 1 else ''} of {steps.size}); read as one volume every "
                          "slice after it would be misplaced", fix)
