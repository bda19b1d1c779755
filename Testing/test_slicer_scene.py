"""Scene logic of the Slicer module (MedSynSlicer/MedSynSlicerLib) on a real MRML scene built with slicer-core.

Conditions: segments drawn in a rotated, anisotropic reference geometry are exported to label maps; the files are
checked with SimpleITK (geometry and values). Results: a folder that follows the ``medsyn`` contract (sidecar,
CT NIfTI, label maps, ``.seg.nrrd`` written here with slicer-core storage nodes) is loaded and the nodes checked.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "MedSynSlicer")):
    if path not in sys.path:
        sys.path.insert(0, path)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
sitk = pytest.importorskip("SimpleITK")
import vtk  # noqa: E402

from MedSynLib.io.segments import SEGMENTS, terminology_entry  # noqa: E402
from MedSynSlicerLib import conditions, results, sceneutil  # noqa: E402
from MedSynSlicerLib.conditions import ConditionSelection, get_terminology_tag  # noqa: E402

SHAPE = (12, 14, 16)  # k, j, i


def rotated_ijk_to_ras(spacing=(0.7, 1.3, 2.5), origin=(-30.0, 12.5, 40.0), angle_deg=30.0) -> np.ndarray:
    a = np.radians(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    tilt = np.radians(10.0)
    rotation = rotation @ np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    m = np.eye(4)
    m[:3, :3] = rotation @ np.diag(spacing)
    m[:3, 3] = origin
    return m


@pytest.fixture
def scene():
    """A fresh MRML scene with the module logics registered the way trame-slicer does it."""
    mrml = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(mrml)
    logics = []
    # Colors and Terminologies are left out: the wheel ships neither colour files nor terminology files, and
    # segment terminology is written as tags, so they would only log errors.
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(mrml)
        app.SetModuleLogic(name, logic)
        logics.append(logic)
    sceneutil.register_application_logic(app)
    yield mrml
    sceneutil.register_application_logic(None)
    mrml.Clear(1)
    slicer.mrmlScene = None


def box(lo, hi) -> np.ndarray:
    a = np.zeros(SHAPE, np.uint8)
    a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return a


def add_segment(segmentation_node, segment_id, name, array, reference_volume):
    segmentation_node.GetSegmentation().AddEmptySegment(segment_id, name, [0.5, 0.5, 0.5])
    labelmap = slicer.util.addVolumeFromArray(array, sceneutil.ijk_to_ras(reference_volume), "tmp",
                                              "vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert sceneutil.segmentations_logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids)
    slicer.mrmlScene.RemoveNode(labelmap)


def sitk_ijk_to_ras(path):
    return results.ijk_to_ras_from_sitk(sitk.ReadImage(path))


# --- conditions --------------------------------------------------------------------------------------------------

def make_condition_segmentation():
    ijk_to_ras = rotated_ijk_to_ras()
    reference = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.int16), ijk_to_ras, "reference CT")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "conditions")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    lobes = {
        1: box((1, 1, 1), (5, 6, 7)), 2: box((6, 1, 1), (11, 6, 7)), 3: box((1, 7, 1), (4, 13, 7)),
        4: box((4, 7, 1), (7, 13, 7)), 5: box((7, 7, 1), (11, 13, 7)),
    }
    for label, array in lobes.items():
        info = next(s for s in SEGMENTS if s.channel == "lobes" and s.label == label)
        # names as a user might type them; matching ignores case and punctuation
        add_segment(seg, f"Segment_{label}", info.name.title().replace(" ", "_"), array, reference)
    airway = box((0, 5, 8), (12, 9, 10))
    vessels = box((2, 2, 11), (10, 12, 14))
    add_segment(seg, "Segment_airway", "Airway", airway, reference)
    add_segment(seg, "Segment_vessels", "Pulmonary vessels", vessels, reference)
    return seg, reference, lobes, airway, vessels


def test_find_condition_segments_by_name(scene):
    seg, _, _, _, _ = make_condition_segmentation()
    found = conditions.find_condition_segments(seg)
    assert found.lobes == {label: f"Segment_{label}" for label in range(1, 6)}
    assert found.airway == "Segment_airway"
    assert found.vessels == "Segment_vessels"


def test_find_condition_segments_by_terminology(scene):
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tagged")
    info = next(s for s in SEGMENTS if s.segment_id == "right_middle_lobe")
    seg.GetSegmentation().AddEmptySegment("x", "something else", [1, 0, 0])
    seg.GetSegmentation().GetSegment("x").SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(),
                                                 terminology_entry(info))
    assert conditions.find_condition_segments(seg).lobes == {4: "x"}


def test_export_conditions_geometry_and_values(scene, tmp_path):
    seg, reference, lobes, airway, vessels = make_condition_segmentation()
    selection = conditions.find_condition_segments(seg)
    nodes_before = scene.GetNumberOfNodes()
    files = conditions.export_conditions(seg, selection, str(tmp_path / "cond"))
    assert set(files) == {"lobes", "airway", "vessels"}
    assert scene.GetNumberOfNodes() == nodes_before, "temporary nodes must be removed"
    expected_matrix = sceneutil.ijk_to_ras(reference)
    expected_lobes = np.zeros(SHAPE, np.uint8)
    for label, array in lobes.items():
        expected_lobes[array > 0] = label
    for channel, expected in (("lobes", expected_lobes), ("airway", airway), ("vessels", vessels)):
        image = sitk.ReadImage(files[channel])
        assert files[channel].endswith(".nii.gz")
        assert image.GetPixelID() == sitk.sitkUInt8, channel
        assert image.GetSize() == SHAPE[::-1]
        np.testing.assert_allclose(results.ijk_to_ras_from_sitk(image), expected_matrix, atol=1e-4)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected, err_msg=channel)


def test_export_only_selected_and_empty_segment_fails(scene, tmp_path):
    seg, reference, _, airway, _ = make_condition_segmentation()
    files = conditions.export_conditions(seg, ConditionSelection(airway="Segment_airway"), str(tmp_path / "a"))
    assert list(files) == ["airway"]
    assert conditions.export_conditions(seg, ConditionSelection(), str(tmp_path / "b")) == {}
    seg.GetSegmentation().AddEmptySegment("empty", "empty", [0, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        conditions.export_conditions(seg, ConditionSelection(vessels="empty"), str(tmp_path / "c"))


def test_export_without_reference_geometry_explains_fix(scene, tmp_path):
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no geometry")
    with pytest.raises(ValueError, match="Fix"):
        conditions.export_conditions(seg, ConditionSelection(airway="x"), str(tmp_path))


# --- results -----------------------------------------------------------------------------------------------------

def write_sitk(array, ijk_to_ras, path):
    image = sitk.GetImageFromArray(array)
    lps = np.diag([-1.0, -1.0, 1.0])
    linear = lps @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((linear / spacing).flatten().tolist())
    image.SetOrigin((lps @ ijk_to_ras[:3, 3]).tolist())
    sitk.WriteImage(image, path, True)


def make_results_folder(folder, mode="generate", ijk_to_ras=None, with_seg_nrrd=True, seed=7):
    """A results folder as ``medsyn generate|segment`` writes it (fixture made here, not by the real CLI)."""
    os.makedirs(folder, exist_ok=True)
    ijk_to_ras = rotated_ijk_to_ras(spacing=(1.2, 0.9, 1.6), origin=(5.0, -8.0, 3.0), angle_deg=-20.0) \
        if ijk_to_ras is None else ijk_to_ras
    rng = np.random.default_rng(0)
    ct = rng.integers(-1024, 600, SHAPE).astype(np.int16)
    lobes = np.zeros(SHAPE, np.uint8)
    lobes[1:5, 1:6, 1:7], lobes[6:11, 1:6, 1:7], lobes[1:4, 7:13, 1:7] = 1, 2, 3
    lobes[4:7, 7:13, 1:7], lobes[7:11, 7:13, 1:7] = 4, 5
    airway, vessels = box((0, 5, 8), (12, 9, 10)), box((2, 2, 11), (10, 12, 14))
    files = {"lobes": "lobes.nii.gz", "airway": "airway.nii.gz", "vessels": "vessels.nii.gz"}
    if mode == "generate":
        files["ct"] = f"SYNTHETIC_MedSyn_CT_seed{seed}.nii.gz"
        write_sitk(ct, ijk_to_ras, os.path.join(folder, files["ct"]))
    for key, array in (("lobes", lobes), ("airway", airway), ("vessels", vessels)):
        write_sitk(array, ijk_to_ras, os.path.join(folder, files[key]))
    if with_seg_nrrd == "MedSynLib":  # the library's own writer, as the real CLI uses it
        images = pytest.importorskip("MedSynLib.io.images")
        files["segmentation"] = f"SYNTHETIC_MedSyn_seg_seed{seed}.seg.nrrd"
        geometry = images.Geometry.of(sitk.ReadImage(os.path.join(folder, files["lobes"])))
        images.write_segmentation(lobes, airway, vessels, geometry, os.path.join(folder, files["segmentation"]))
    elif with_seg_nrrd:
        files["segmentation"] = f"SYNTHETIC_MedSyn_seg_seed{seed}.seg.nrrd"
        writer_scene = slicer.vtkMRMLScene()
        saved, slicer.mrmlScene = slicer.mrmlScene, writer_scene
        try:
            reference = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.uint8), ijk_to_ras, "ref")
            seg = writer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
            seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            logic = slicer.vtkSlicerSegmentationsModuleLogic()
            logic.SetMRMLScene(writer_scene)
            for info in SEGMENTS:
                source = {"lobes": lobes, "airway": airway, "vessels": vessels}[info.channel]
                seg.GetSegmentation().AddEmptySegment(info.segment_id, info.name, [0.3, 0.3, 0.3])
                lm = slicer.util.addVolumeFromArray((source == info.label).astype(np.uint8), ijk_to_ras, "lm",
                                                    "vtkMRMLLabelMapVolumeNode")
                ids = vtk.vtkStringArray()
                ids.InsertNextValue(info.segment_id)
                assert logic.ImportLabelmapToSegmentationNode(lm, seg, ids)
            storage = seg.CreateDefaultStorageNode()
            storage.SetFileName(os.path.join(folder, files["segmentation"]))
            assert storage.WriteData(seg)
        finally:
            slicer.mrmlScene = saved
    sidecar = {
        "synthetic": True, "mode": mode, "report": "FINDINGS: Clear lungs." if mode == "generate" else None,
        "seed": seed, "model": {"name": "tiny-test", "sha256": {"lowres": "ab" * 32, "sr": "cd" * 32},
                                "statement": "A test model's statement."},
        "settings": {"steps_lowres": 5, "steps_sr": 3, "guidance": 1.0}, "timings_s": {"total": 1.5},
        "files": files,
    }
    with open(os.path.join(folder, "medsyn.json"), "w") as f:
        json.dump(sidecar, f)
    return {"ijk_to_ras": ijk_to_ras, "ct": ct, "lobes": lobes, "airway": airway, "vessels": vessels,
            "sidecar": sidecar}


def check_segments(seg_node, expected, reference_matrix):
    segmentation = seg_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert sorted(segmentation.GetSegment(i).GetName() for i in ids) == sorted(s.name for s in SEGMENTS)
    for info in SEGMENTS:
        segment_id = segmentation.GetSegmentIdBySegmentName(info.name)
        segment = segmentation.GetSegment(segment_id)
        assert get_terminology_tag(segment) == terminology_entry(info)
        np.testing.assert_allclose(segment.GetColor(), info.color, atol=1e-6)
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()
        source = expected[info.channel]
        voxels = conditions.segment_array(seg_node, segment_id)
        np.testing.assert_array_equal(voxels, (source == info.label).astype(np.uint8), err_msg=info.name)
    m, shape = conditions.reference_geometry_matrix_and_shape(seg_node)
    assert shape == SHAPE
    np.testing.assert_allclose(m, reference_matrix, atol=1e-4)


@pytest.mark.parametrize("with_seg_nrrd", [True, "MedSynLib", False],
                         ids=["seg.nrrd by slicer-core", "seg.nrrd by MedSynLib.io.images", "label maps only"])
def test_load_generate_results(scene, tmp_path, with_seg_nrrd):
    folder = str(tmp_path / "result")
    expected = make_results_folder(folder, with_seg_nrrd=with_seg_nrrd)
    loaded = results.load_results(folder)

    ct = loaded.ct_node
    assert ct.IsA("vtkMRMLScalarVolumeNode") and not ct.IsA("vtkMRMLLabelMapVolumeNode")
    assert re.fullmatch(r"SYNTHETIC MedSyn CT \(seed 7, \d\d:\d\d\)", ct.GetName()), ct.GetName()
    ct_file = os.path.join(folder, expected["sidecar"]["files"]["ct"])
    np.testing.assert_allclose(sceneutil.ijk_to_ras(ct), sitk_ijk_to_ras(ct_file), atol=1e-5)
    np.testing.assert_allclose(sceneutil.ijk_to_ras(ct), expected["ijk_to_ras"], atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct), expected["ct"])
    display = ct.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1400.0, -500.0)

    seg = loaded.segmentation_node
    assert seg.IsA("vtkMRMLSegmentationNode")
    assert seg.GetName() == ct.GetName().replace(" CT ", " segmentation ")
    check_segments(seg, expected, expected["ijk_to_ras"])
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is ct

    for node in (ct, seg):
        assert node.GetAttribute("synthetic") == "true"
        assert node.GetAttribute("MedSyn.seed") == "7"
        assert node.GetAttribute("MedSyn.report") == "FINDINGS: Clear lungs."
        assert node.GetAttribute("MedSyn.model") == "tiny-test"
        assert json.loads(node.GetAttribute("MedSyn.modelSha256")) == {"lowres": "ab" * 32, "sr": "cd" * 32}
        assert json.loads(node.GetAttribute("MedSyn.settings"))["steps_lowres"] == 5
        assert node.GetAttribute("MedSyn.outputFolder") == os.path.abspath(folder)

    sh = sceneutil.subject_hierarchy()
    assert loaded.folder_item
    assert sh.GetItemName(loaded.folder_item) == ct.GetName().replace(" CT ", " ")
    for node in (ct, seg):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == loaded.folder_item


def test_result_segmentation_is_condition_for_next_run(scene, tmp_path):
    """Generate -> the result is a ready condition segmentation: all seven segments are found and exportable."""
    expected = make_results_folder(str(tmp_path / "result"))
    loaded = results.load_results(str(tmp_path / "result"))
    selection = conditions.find_condition_segments(loaded.segmentation_node)
    assert sorted(selection.lobes) == [1, 2, 3, 4, 5] and selection.airway and selection.vessels
    files = conditions.export_conditions(loaded.segmentation_node, ConditionSelection(airway=selection.airway),
                                         str(tmp_path / "cond"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(files["airway"])), expected["airway"])
    np.testing.assert_allclose(sitk_ijk_to_ras(files["airway"]), expected["ijk_to_ras"], atol=1e-4)


def test_load_segment_results_aligned_with_input_ct(scene, tmp_path):
    ijk_to_ras = rotated_ijk_to_ras(spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0), angle_deg=45.0)
    input_ct = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.int16), ijk_to_ras, "patient CT")
    sh = sceneutil.subject_hierarchy()
    patient_folder = sh.CreateFolderItem(sh.GetSceneItemID(), "patient")
    sceneutil.put_in_folder(input_ct, patient_folder)
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my output")
    folder = str(tmp_path / "seg")
    expected = make_results_folder(folder, mode="segment", ijk_to_ras=ijk_to_ras)
    loaded = results.load_results(folder, input_volume=input_ct, output_segmentation=output)
    assert loaded.ct_node is None
    assert loaded.segmentation_node is output
    assert re.fullmatch(r"patient CT – MedSyn segmentation \(seed \d+, \d\d:\d\d\)", output.GetName()), \
        "the output is named after the CT and the run it now holds"
    assert output.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is input_ct
    check_segments(output, expected, ijk_to_ras)
    assert output.GetAttribute("MedSyn.mode") == "segment"
    assert sh.GetItemParent(sh.GetItemByDataNode(output)) == patient_folder
    assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == 1


@pytest.mark.parametrize("passed", [True, False], ids=["passed", "failed (written with --force)"])
def test_segment_results_show_the_quality_check(scene, tmp_path, passed):
    folder = str(tmp_path / "seg")
    make_results_folder(folder, mode="segment")
    quality = {"lung_dice": 0.93 if passed else 0.41, "trachea_covered": 0.88, "lung_dice_min": 0.85,
               "trachea_covered_min": 0.5, "passed": passed, "problems": []}
    path = os.path.join(folder, "medsyn.json")
    with open(path) as f:
        sidecar = json.load(f)
    with open(path, "w") as f:
        json.dump({**sidecar, "quality": quality}, f)
    loaded = results.load_results(folder)
    assert results.summary(loaded)[-2] == "Model: A test model's statement."  # shown with every result
    line = results.summary(loaded)[1]
    assert f"Dice {quality['lung_dice']:.2f} (needs 0.85)" in line and "88 % of the trachea" in line
    assert line.endswith("passed.") if passed else "FAILED" in line
    assert json.loads(loaded.segmentation_node.GetAttribute("MedSyn.quality")) == quality


def test_read_sidecar_rejects_other_json(tmp_path):
    (tmp_path / "medsyn.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError):
        results.read_sidecar(str(tmp_path))


def test_every_segment_tag_resolves_in_slicers_dicom_master_list():
    """Each segment's terminology tag names a context Slicer loads by default and a category, type and modifier
    that exist in it (Slicer's own terminology logic over an excerpt of that context, Testing/data/terminology)."""
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    context = logic.LoadTerminologyFromFile(os.path.join(
        ROOT, "Testing", "data", "terminology", "SegmentationCategoryTypeModifier-DICOM-Master-excerpt.term.json"))
    assert context == "Segmentation category and type - DICOM master list"
    known = {}
    category = slicer.vtkSlicerTerminologyCategory()
    for c in range(logic.GetNumberOfCategoriesInTerminology(context)):
        logic.GetNthCategoryInTerminology(context, c, category)
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
            type_ = slicer.vtkSlicerTerminologyType()
            logic.GetNthTypeInTerminologyCategory(context, category, t, type_)
            modifiers = set()
            for m in range(logic.GetNumberOfTypeModifiersInTerminologyType(context, category, type_)):
                modifier = slicer.vtkSlicerTerminologyType()
                logic.GetNthTypeModifierInTerminologyType(context, category, type_, m, modifier)
                modifiers.add(f"{modifier.GetCodingSchemeDesignator()}^{modifier.GetCodeValue()}")
            key = (f"{category.GetCodingSchemeDesignator()}^{category.GetCodeValue()}",
                   f"{type_.GetCodingSchemeDesignator()}^{type_.GetCodeValue()}")
            known[key] = (type_.GetCodeMeaning(), modifiers)
    for info in SEGMENTS:
        tag_context, category_code, type_code, modifier_code, *_ = terminology_entry(info).split("~")
        assert tag_context == context, info.name
        key = tuple("^".join(code.split("^")[:2]) for code in (category_code, type_code))
        assert key in known, f"{info.name}: {type_code} is not a type of {category_code} in {context}"
        meaning, modifiers = known[key]
        assert type_code.split("^")[2] == meaning, info.name
        if info.modifier is not None:
            assert "^".join(modifier_code.split("^")[:2]) in modifiers, info.name
    airway = next(s for s in SEGMENTS if s.channel == "airway")
    assert airway.type_code[1] == "89187006", "airway structure (110726009 is 'Trachea and bronchus')"


# --- edit --------------------------------------------------------------------------------------------------------

def test_region_segment_emptiness_and_export(scene, tmp_path):
    """The edit tab's region: emptiness read in place (the run button), and the export ``medsyn edit --region``
    reads, in the segmentation's rotated reference geometry; an empty region is refused with the fix."""
    seg, reference, _, airway, _ = make_condition_segmentation()
    assert not conditions.segment_is_empty(seg, "Segment_airway")
    seg.GetSegmentation().AddEmptySegment("region", "Edited region", [1, 1, 0])
    assert conditions.segment_is_empty(seg, "region")
    with pytest.raises(ValueError, match="empty. Fix: paint"):
        conditions.export_segment(seg, "region", str(tmp_path / "empty.nii.gz"))
    assert not (tmp_path / "empty.nii.gz").exists()
    path = conditions.export_segment(seg, "Segment_airway", str(tmp_path / "region.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)), airway)
    np.testing.assert_allclose(sitk_ijk_to_ras(path), sceneutil.ijk_to_ras(reference), atol=1e-4)


@pytest.mark.parametrize("input_synthetic", [False, True], ids=["patient", "synthetic"])
def test_load_edit_results_beside_the_untouched_input(scene, tmp_path, input_synthetic):
    """A folder written by the library's own ``write_edit_result`` (float32 CT on a rotated, anisotropic grid)
    loads as a new volume "EDITED <input> (MedSyn seed N)" in the file's pixel type and geometry, beside the input
    in the subject hierarchy, with the region as a segment and the provenance; ``synthetic`` follows the input."""
    from MedSynLib.io.images import Geometry, to_image
    from MedSynLib.pipelines.edit import EditResult
    from MedSynLib.pipelines.outputs import write_edit_result

    ijk_to_ras = rotated_ijk_to_ras()
    values = np.random.default_rng(0).normal(-500, 300, SHAPE).astype(np.float32)
    input_volume = slicer.util.addVolumeFromArray(values, ijk_to_ras, "patient CT")
    if input_synthetic:
        input_volume.SetAttribute("synthetic", "true")
    sh = sceneutil.subject_hierarchy()
    study = sh.CreateFolderItem(sh.GetSceneItemID(), "Patient 1")
    sh.CreateItem(study, input_volume)
    path = tmp_path / "input.nrrd"
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(input_volume)
    geometry = Geometry.of(sitk.ReadImage(str(path)))
    region = box((3, 4, 5), (8, 10, 12))
    edited = np.where(region > 0, np.float32(20.0), values)
    lobes = (region * 5).astype(np.uint8)
    result = EditResult(edited, region, lobes, region.copy(), np.zeros_like(region), edited - values, geometry,
                        {"seed": 9, "mode": "edit", "edited": True, "report": "FINDINGS: effusion.",
                         "region": {"volume_ml": 1.5, "voxels": int(region.sum())}})
    write_edit_result(result, tmp_path / "out", {"name": "tiny", "sha256": "abc"})

    loaded = results.load_edit_results(str(tmp_path / "out"), input_volume, show=False)
    ct, seg = loaded.ct_node, loaded.segmentation_node
    assert ct is not input_volume and re.fullmatch(r"EDITED patient CT \(MedSyn seed 9, \d\d:\d\d\)", ct.GetName())
    array = slicer.util.arrayFromVolume(ct)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, edited)
    np.testing.assert_allclose(sceneutil.ijk_to_ras(ct), ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(input_volume), values)
    assert input_volume.GetAttribute("MedSyn.edited") is None and input_volume.GetName() == "patient CT"
    for node in (ct, seg):
        assert node.GetAttribute("MedSyn.edited") == "true" and node.GetAttribute("MedSyn.mode") == "edit"
        assert node.GetAttribute("synthetic") == ("true" if input_synthetic else "false")
        assert node.GetAttribute("MedSyn.seed") == "9" and node.GetAttribute("MedSyn.model") == "tiny"
        assert json.loads(node.GetAttribute("MedSyn.region"))["voxels"] == int(region.sum())
        assert node.GetAttribute("MedSyn.editedFrom") == "patient CT"
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    assert seg.GetName() == ct.GetName().replace("patient CT", "patient CT region anatomy")
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is ct
    region_id = seg.GetSegmentation().GetSegmentIdBySegmentName(results.REGION_SEGMENT_NAME)
    np.testing.assert_array_equal(conditions.segment_array(seg, region_id), region)
    rll = next(s for s in SEGMENTS if s.channel == "lobes" and s.label == 5)
    np.testing.assert_array_equal(conditions.segment_array(seg, rll.segment_id), region)
    assert results.summary(loaded)[1] == "Replaced 1.5 mL; every voxel outside the region is the input's."

    from MedSynSlicerLib.logic import MedSynSlicerLogic

    slicer.mrmlScene.RemoveNode(input_volume)  # the CT left the scene while the edit ran
    again = MedSynSlicerLogic().loadResults(str(tmp_path / "out"), None, show=False, source=input_volume)
    assert again.ct_node.GetName().startswith("EDITED CT (MedSyn seed 9, ")
    assert again.ct_node.GetAttribute("synthetic") == "false" and again.ct_node.GetAttribute("MedSyn.editedFrom") is None
