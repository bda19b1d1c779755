"""Channel codecs, geometry-carrying images, and the Slicer segmentation file (read back by slicer-core)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSynLib.io.codecs import (
    hu_to_model,
    lobes_to_model,
    mask_to_model,
    model_to_hu,
    model_to_hu_int16,
    model_to_lobes,
    model_to_mask,
)
from MedSynLib.io.lobes import decode_generated_lobes, drop_lobe_islands, majority_lobes
from MedSynLib.io.images import Geometry, read_image, to_image, write_image, write_segmentation
from MedSynLib.io.segments import SEGMENTS, terminology_entry

ROTATED = Geometry((20, 16, 12), (1.5, 0.8, 2.5), (10.0, -5.0, 3.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))


def test_codecs_follow_the_official_encodings():
    assert hu_to_model(np.array([-2000.0, -1024.0, 600.0, 3000.0])).tolist() == [-1, -1, 1, 1]
    hu = np.array([-1000.0, -850.0, 0.0, 40.0, 700.0])
    assert np.allclose(model_to_hu(hu_to_model(hu)), np.clip(hu, -1024, 600))
    assert model_to_hu_int16(torch.tensor([-1.0, 1.0, 0.0])).tolist() == [-1024, 600, -212]
    labels = np.arange(6)
    assert np.allclose(lobes_to_model(labels), [-1, -0.6, -0.2, 0.2, 0.6, 1.0])
    assert model_to_lobes(lobes_to_model(labels) + 0.05).tolist() == labels.tolist()
    assert model_to_mask(mask_to_model(np.array([0, 1, 3]))).tolist() == [0, 1, 1]


def _two_lobe_lung():
    """An ellipsoid lung, 4 mm voxels: right upper lobe (3) above a fissure plane, right lower lobe (5) below."""
    z, y, x = np.mgrid[:32, :24, :24]
    lung = ((z - 15.5) / 14) ** 2 + ((y - 11.5) / 10) ** 2 + ((x - 11.5) / 10) ** 2 < 1
    return lung, np.where(lung, np.where(z >= 16, 3, 5), 0).astype(np.uint8)


def test_majority_lobes_removes_transition_rims_and_keeps_the_fissure():
    lung, clean = _two_lobe_lung()
    rimmed = clean.copy()
    inner = lung.copy()
    for axis in range(3):
        inner &= np.roll(lung, 1, axis) & np.roll(lung, -1, axis)
    rimmed[lung & ~inner & (clean == 5)] = 2  # 0 -> 5 passes through 1..4 at the lung border
    rimmed[16][lung[16]] = 4  # 3 -> 5 passes through 4 at the fissure
    assert (rimmed != clean).mean() > 0.05
    out = majority_lobes(rimmed, (4.0, 4.0, 4.0))
    assert np.array_equal(out, clean)  # both rims voted away; background, lung extent and fissure untouched
    assert np.array_equal(majority_lobes(clean, (4.0, 4.0, 4.0)), clean)  # a clean map keeps its boundary
    empty = np.zeros((4, 5, 6), np.uint8)
    assert np.array_equal(majority_lobes(empty, (1.0, 1.0, 1.0)), empty)


def test_drop_lobe_islands_removes_specks_and_keeps_lung_pieces():
    _, clean = _two_lobe_lung()
    labels = np.zeros((40, 24, 32), np.uint8)
    labels[:32, :, :24] = clean
    labels[34:39, 2:7, 26:31] = 1  # a separate piece of lung: 125 voxels of 4 mm = 8 mL, kept
    specks = labels.copy()
    specks[0, 0, 31] = specks[39, 23, 0] = 2  # single voxels at the volume's edges (0.064 mL)
    specks[36:38, 20:22, 28:30] = 4  # a small cluster, 8 voxels = 0.5 mL
    specks[34, 1, 25] = 3  # diagonal neighbour of the 8 mL piece: part of it (26-connected), kept
    expected = labels.copy()
    expected[34, 1, 25] = 3
    assert np.array_equal(drop_lobe_islands(specks, (4.0, 4.0, 4.0)), expected)
    decoded = decode_generated_lobes(lobes_to_model(specks), (4.0, 4.0, 4.0))  # round, drop, then vote
    assert np.array_equal(decoded, majority_lobes(expected, (4.0, 4.0, 4.0)))
    assert np.array_equal(drop_lobe_islands(labels, (4.0, 4.0, 4.0)), labels)  # nothing to drop
    assert not drop_lobe_islands(labels, (4.0, 4.0, 4.0), min_ml=1e6).any()  # a threshold above the lungs
    empty = np.zeros((4, 5, 6), np.uint8)
    assert np.array_equal(drop_lobe_islands(empty, (1.0, 1.0, 1.0)), empty)


def test_images_keep_geometry_and_say_synthetic(tmp_path):
    array = np.arange(12 * 16 * 20, dtype=np.int16).reshape(12, 16, 20)
    path = write_image(to_image(array, ROTATED), tmp_path / "ct.nii.gz")
    back = read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert np.allclose(back.GetSpacing(), ROTATED.spacing) and np.allclose(back.GetOrigin(), ROTATED.origin)
    assert np.allclose(back.GetDirection(), ROTATED.direction, atol=1e-6)
    assert "SYNTHETIC" in back.GetMetaData("descrip")
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]
    with pytest.raises(ValueError, match="does not fit geometry"):
        to_image(array[:5], ROTATED)


def test_read_image_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="lobes file not found"):
        read_image(tmp_path / "nope.nii.gz", "lobes")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read airway"):
        read_image(tmp_path / "junk.nii.gz", "airway")
    sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), str(tmp_path / "flat.nrrd"))
    with pytest.raises(ValueError, match="2-D; a 3D volume is needed"):
        read_image(tmp_path / "flat.nrrd")


def _label_maps():
    lobes = np.zeros((12, 16, 20), np.uint8)
    for label in range(1, 6):
        lobes[2:10, 2 + 2 * label: 4 + 2 * label, 3:17] = label
    airway = np.zeros_like(lobes)
    airway[1:11, 7:9, 9:11] = 1
    vessels = np.zeros_like(lobes)
    vessels[4:6, 4:12, 5:7] = 1  # overlaps lobes and airway: separate layers
    return lobes, airway, vessels


def test_segmentation_file_opens_in_slicer_with_names_colours_terminology(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    lobes, airway, vessels = _label_maps()
    path = write_segmentation(lobes, airway, vessels, ROTATED, tmp_path / "SYNTHETIC_anatomy.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    seg = node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == [s.name for s in SEGMENTS]
    vtk = pytest.importorskip("vtk")
    import slicer.util

    for info in SEGMENTS:
        segment = seg.GetSegment(info.segment_id)
        assert np.allclose(segment.GetColor(), info.color, atol=1e-3)
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        assert str(tag).startswith(terminology_entry(info).rsplit("~", 2)[0])
        voxels = slicer.util.arrayFromSegmentInternalBinaryLabelmap(node, info.segment_id)
        expected = {"lobes": lobes == info.label, "airway": airway > 0, "vessels": vessels > 0}[info.channel]
        assert int((voxels == info.label).sum()) == int(expected.sum())  # the shared layer of label values


def test_a_file_that_is_no_image_is_named_with_the_formats_that_work(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("FINDINGS: clear.", encoding="utf-8")
    with pytest.raises(ValueError) as failure:
        read_image(path, "CT")
    message = str(failure.value)
    assert message.startswith(f"cannot read CT {path}: not an image format this program reads. Fix:")
    assert ".nii.gz" in message and "DICOM" in message and ".cxx" not in message
