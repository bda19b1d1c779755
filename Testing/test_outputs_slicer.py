"""The result folder of ``generate``: Slicer reads the CT and the ``.seg.nrrd`` with the right names and geometry
(slicer-core MRML storage nodes), the sidecar is complete and the preview is written.

The tiny atlas model is used: its grid has direction diag(1, -1, 1), like the official one.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.segments import SEGMENTS
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.pipelines import generate
from MedSynLib.pipelines.outputs import model_info, write_result
from MedSynLib.run_settings import RunSettings

from tiny_model import ATLAS_GRID, build_tiny_model

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

REPORT = "FINDINGS: Large bilateral pleural effusions. IMPRESSION: Bilateral effusions."
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    model = load_model(build_tiny_model(root / "tiny-atlas", atlas=True))
    result = generate(REPORT, model, settings=RunSettings(seed=4, steps_lowres=1, steps_sr=1))
    write_result(result, root / "result", model_info(model), preview=True)
    return root / "result", result


@pytest.fixture
def scene():
    mrml = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml
    yield mrml
    mrml.Clear(1)
    slicer.mrmlScene = None


def nifti_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """IJK-to-RAS of an ITK image (LPS geometry)."""
    m = np.eye(4)
    m[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ m


def matrix(vtk_matrix) -> np.ndarray:
    return slicer.util.arrayFromVTKMatrix(vtk_matrix)


def assert_same_voxels(array, ijk_to_ras, expected, expected_ijk_to_ras):
    """The two (k, j, i) arrays hold the same values at the same RAS points (the voxel grids may differ by axis
    flips: Slicer reads a left-handed NIfTI grid with its slice axis reversed)."""
    index_map = np.linalg.inv(expected_ijk_to_ras) @ ijk_to_ras
    assert np.allclose(index_map, np.round(index_map), atol=1e-4) and np.allclose(np.abs(index_map[:3, :3]).sum(0), 1)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in array.shape[::-1]], indexing="ij"), -1).reshape(-1, 3)
    mapped = np.round(ijk @ index_map[:3, :3].T + index_map[:3, 3]).astype(int)
    np.testing.assert_array_equal(array[ijk[:, 2], ijk[:, 1], ijk[:, 0]],
                                  expected[mapped[:, 2], mapped[:, 1], mapped[:, 0]])


def test_sidecar_is_complete(result_folder):
    folder, result = result_folder
    sidecar = json.loads((folder / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["synthetic"] is True and sidecar["mode"] == "generate"
    assert sidecar["report"] == REPORT and sidecar["seed"] == 4
    assert sidecar["settings"] == {"seed": 4, "steps_lowres": 1, "steps_sr": 1, "guidance": 1.0, "sampler": "ddim",
                                   "precision": "auto", "device": "auto", "lowres_only": False,
                                   "max_gpu_memory_gb": None, "sr_tiles": None}
    assert RunSettings.from_dict(sidecar["settings"]) == RunSettings(seed=4, steps_lowres=1, steps_sr=1, guidance=1.0,
                                                                     sampler="ddim")
    assert sidecar["device"] == "cpu" and sidecar["precision"] == "float32" and sidecar["sr_tiles"] == 1
    assert set(sidecar["timings_s"]) == {"text_s", "lowres_s", "superres_s"}
    model = sidecar["model"]
    assert model["name"] == "tiny-test" and model["title"] == "tiny random test model" and model["space"] == "atlas"
    assert set(model["sha256"]) == {"lowres", "superres", "text_encoder"} and all(len(h) == 64 for h in model["sha256"].values())
    assert {"medsyn", "torch", "transformers", "numpy", "SimpleITK", "python"} <= set(sidecar["versions"])
    assert sidecar["space"] == "atlas" and sidecar["geometry"] == ATLAS_GRID.to_dict()
    assert "SYNTHETIC" in sidecar["notice"]
    assert all((folder / name).is_file() for name in sidecar["files"].values())


def read_with_slicer(scene, path, node_class: str, storage):
    """Read ``path`` into a new ``node_class`` node through ``storage`` (a Slicer storage node), as Slicer does."""
    node = scene.AddNewNodeByClass(node_class)
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    return node


def test_preview_is_two_rows_of_three_planes(result_folder):
    folder, _ = result_folder
    png = sitk.ReadImage(str(folder / "preview.png"))
    width, height = png.GetSize()
    assert png.GetNumberOfComponentsPerPixel() == 3 and 2 * width == 3 * height  # CT planes, then with masks


def test_slicer_reads_the_ct_with_its_geometry(result_folder, scene):
    folder, result = result_folder
    files = json.loads((folder / "medsyn.json").read_text(encoding="utf-8"))["files"]
    node = read_with_slicer(scene, folder / files["ct"], "vtkMRMLScalarVolumeNode",
                            slicer.vtkMRMLVolumeArchetypeStorageNode())
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    expected = nifti_ijk_to_ras(sitk.ReadImage(str(folder / files["ct"])))
    np.testing.assert_allclose(expected[:3, :3], np.diag([-4.0, 4.0, 4.0]), atol=1e-6)  # LPS diag(1, -1, 1)
    assert_same_voxels(slicer.util.arrayFromVolume(node), matrix(m), result.ct_hu, expected)


def test_slicer_reads_the_segmentation_with_names_and_geometry(result_folder, scene):
    folder, result = result_folder
    files = json.loads((folder / "medsyn.json").read_text(encoding="utf-8"))["files"]
    node = read_with_slicer(scene, folder / files["segmentation"], "vtkMRMLSegmentationNode",
                            slicer.vtkMRMLSegmentationStorageNode())
    segmentation = node.GetSegmentation()
    names = [segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == [s.name for s in SEGMENTS]
    expected_matrix = nifti_ijk_to_ras(ATLAS_GRID.reference())
    for info in SEGMENTS:
        image = slicer.vtkOrientedImageData()
        node.GetBinaryLabelmapRepresentation(info.segment_id, image)
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        assert image.GetExtent() == (0, 31, 0, 31, 0, 31)
        voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
        source = getattr(result, info.channel)
        assert_same_voxels(voxels > 0, matrix(m), source == info.label, expected_matrix)
