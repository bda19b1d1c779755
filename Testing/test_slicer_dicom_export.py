"""What Slicer's own DICOM export reads from a loaded MedSyn result (a real MRML scene, ``slicer-core``): each
node's series tags, and for a generated result a synthetic patient and study above them."""

from __future__ import annotations

import pytest

from test_slicer_scene import make_results_folder, scene  # noqa: F401 - the scene fixture

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from MedSynSlicerLib import dicomexport, results, sceneutil  # noqa: E402


def _tags(item) -> dict[str, str]:
    sh = sceneutil.subject_hierarchy()
    return {name[len("DICOM."):]: sh.GetItemAttribute(item, name) for name in sh.GetItemAttributeNames(item)
            if name.startswith("DICOM.")}


def test_generated_result_exports_as_a_synthetic_patient_and_series(scene, tmp_path):  # noqa: F811
    folder = str(tmp_path / "result")
    make_results_folder(folder)
    loaded = results.load_results(folder)
    sh = sceneutil.subject_hierarchy()
    ct_item, seg_item = (sh.GetItemByDataNode(n) for n in (loaded.ct_node, loaded.segmentation_node))
    assert _tags(ct_item) == {"SeriesDescription": "SYNTHETIC CT MedSyn seed 7", "Modality": "CT",
                              "Manufacturer": "MedSyn for 3D Slicer", "Model": "tiny-test"}
    assert _tags(seg_item)["SeriesDescription"] == "SYNTHETIC anatomy MedSyn seed 7"
    assert _tags(seg_item)["Modality"] == "SEG"

    study = dicomexport.prepare_export(loaded.ct_node, loaded.segmentation_node, loaded.sidecar)
    patient = sh.GetItemParent(study)
    assert sh.GetItemLevel(study) == "Study" and sh.GetItemLevel(patient) == "Patient"
    assert sh.GetItemParent(ct_item) == study and sh.GetItemParent(seg_item) == study  # what the export needs
    assert _tags(patient)["PatientName"] == "SYNTHETIC^NOT A PATIENT"
    assert _tags(patient)["PatientID"] == "SYNTHETIC-MEDSYN-SEED7"
    assert "SYNTHETIC" in _tags(study)["StudyDescription"]


def test_a_segmentation_is_not_given_a_synthetic_patient(scene, tmp_path):  # noqa: F811
    folder = str(tmp_path / "seg")
    make_results_folder(folder, mode="segment")
    loaded = results.load_results(folder)
    seg_item = sceneutil.subject_hierarchy().GetItemByDataNode(loaded.segmentation_node)
    assert _tags(seg_item)["SeriesDescription"] == "MedSyn segmentation seed 7"
    assert "SYNTHETIC" not in str(_tags(seg_item))
    with pytest.raises(ValueError, match="patient's own study"):
        dicomexport.prepare_export(None, loaded.segmentation_node, loaded.sidecar)
