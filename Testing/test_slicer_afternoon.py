"""The MedSyn panel through a radiologist's afternoon (issue 31), on the Slicer harness like test_slicer_panel.py:
a second patient, a refusal and "Use anyway", a warning, a change of mind mid-run, the tabs' own status lines,
and the Settings over a scene close. Runs go through the real ``medsyn`` command line with the tiny random model
(low resolution, CPU); the run-time controls are watched on a stand-in process.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

from test_slicer_panel import (STAND_IN, TINY_NAME, choose, medsyn_home, mrml_scene, panel, patient_ct,  # noqa: F401
                               pump_until, slicer_harness, use_tiny_model)

RUN_LABEL = r"\(seed \d+, \d\d:\d\d\)"
"""How a result's name ends: its seed and the time it was loaded."""


def open_tab(panel, harness, mode):
    ui = panel.ui
    ui.modeTabWidget.currentIndex = ui.modeTabWidget.indexOf(getattr(ui, f"{mode}Tab"))
    harness.pump()
    assert panel._parameterNode.mode == mode


def segments(node):
    """Segment name -> its voxels (the segmentation's own labelmap), a copy."""
    import slicer

    segmentation = node.GetSegmentation()
    return {segmentation.GetNthSegment(i).GetName():
            slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetNthSegmentID(i)).copy()
            for i in range(segmentation.GetNumberOfSegments())}


def reference_of(node):
    import slicer

    return node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())


def start_stand_in(panel, harness, tmp_path, monkeypatch):
    """Generate with the slow stand-in process; returns once it reports progress."""
    script = tmp_path / "standin_medsyn.py"
    script.write_text(STAND_IN, encoding="utf-8")
    monkeypatch.setenv("STANDIN_TERMS", str(tmp_path / "terms.txt"))
    panel.logic.commandFactory = lambda arguments: [sys.executable, str(script), *arguments]
    panel.ui.generateButton.click()
    pump_until(harness, lambda: "step" in panel.ui.progressLabel.text, 30, "progress")


def test_segmenting_patient_b_leaves_patient_a_as_it_was(panel, slicer_harness, tmp_path):
    """Segment A, choose B, segment: A's CT and segmentation are unchanged voxel for voxel, and B's result is a
    new segmentation named after B, on B's grid. (Before: B's segments went into "patient A CT MedSyn
    segmentation".)"""
    from MedSynSlicerLib.process import medsyn_command

    patient_a = patient_ct("patient A CT")
    patient_b = patient_ct("patient B CT")
    import slicer

    b = slicer.util.arrayFromVolume(patient_b)
    b[:, :, :] = np.roll(b, 3, axis=0)  # another chest
    slicer.util.arrayFromVolumeModified(patient_b)
    p, ui = panel._parameterNode, panel.ui
    use_tiny_model(panel, slicer_harness)
    panel.logic.commandFactory = lambda arguments: medsyn_command(arguments + ["--force"])  # the tiny model fails
    open_tab(panel, slicer_harness, "segment")                                              # the quality check
    choose(slicer_harness, ui.inputVolumeSelector.comboBox(), "patient A CT")
    ui.generateButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, what="segmenting A")
    seg_a = p.outputSegmentation
    assert seg_a is not None and re.fullmatch(rf"patient A CT – MedSyn segmentation {RUN_LABEL}", seg_a.GetName())
    assert ui.outputSegmentationSelector.currentNode() is seg_a
    name_a, voxels_a, ct_a = seg_a.GetName(), segments(seg_a), slicer.util.arrayFromVolume(patient_a).copy()
    assert len(voxels_a) == 7 and any(v.any() for v in voxels_a.values())

    choose(slicer_harness, ui.inputVolumeSelector.comboBox(), "patient B CT")
    assert p.outputSegmentation is None, "another CT: the output follows it (a new segmentation)"
    ui.generateButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, what="segmenting B")
    seg_b = p.outputSegmentation
    assert seg_b is not None and seg_b is not seg_a
    assert re.fullmatch(rf"patient B CT – MedSyn segmentation {RUN_LABEL}", seg_b.GetName()), seg_b.GetName()
    assert reference_of(seg_b) is patient_b and reference_of(seg_a) is patient_a
    assert ui.statusLabel.text.startswith(f"Loaded '{seg_b.GetName()}'.")
    assert seg_a.GetName() == name_a
    after = segments(seg_a)
    assert after.keys() == voxels_a.keys()
    for name, voxels in voxels_a.items():
        np.testing.assert_array_equal(after[name], voxels, err_msg=f"A's segment {name} changed")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(patient_a), ct_a)


def test_a_refused_scan_says_why_in_the_panel_and_use_anyway_loads_it(panel, slicer_harness, tmp_path, caplog):
    """The tiny random model's segmentation fails the command line's quality check (exit 4, JSON event with the
    figures): the message area says why and what to do in the panel's words (no "--force"), the figures stay,
    the progress bar is back at 0, nothing is written and no dialog pops up; "Use anyway" runs again with the
    override and loads the result, which says it failed the check. (Before: a dialog ending "--force writes it
    anyway", "Failed." and the bar left where it stopped.)"""
    import logging

    caplog.set_level(logging.ERROR)
    patient = patient_ct()
    p, ui = panel._parameterNode, panel.ui
    use_tiny_model(panel, slicer_harness)
    open_tab(panel, slicer_harness, "segment")
    assert ui.generateButton.toolTip == "Select the CT to segment." and not ui.useAnywayButton.visible
    choose(slicer_harness, ui.inputVolumeSelector.comboBox(), "patient CT")
    ui.generateButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, what="the segmentation")

    shown = ui.messagesTextEdit.toPlainText()
    assert ui.statusLabel.text == "Refused: nothing was loaded." and p.outputSegmentation is None
    assert ui.messagesTextEdit.visible and shown.startswith("Refused: segmentation not trusted: "), shown
    assert '\nWhat to do: check the CT' in shown and 'press "Use anyway" to load it regardless' in shown
    assert re.search(r"\nQuality check: lobes .*\(needs [\d.]+ ?%?\).*: FAILED, do not trust", shown), shown
    assert "--" not in shown, "the panel's words, not the command line's options"
    assert ui.progressBar.value == 0 and ui.progressLabel.text == ""
    assert ui.useAnywayButton.visible and ui.useAnywayButton.enabled
    assert not [r for r in caplog.records if "not trusted" in r.getMessage()], "no dialog"
    assert list((tmp_path / "results").iterdir()) == [], "a refused segmentation leaves nothing behind"

    ui.useAnywayButton.click()
    assert panel.job is not None and "overriding the check" in ui.statusLabel.text
    assert not ui.useAnywayButton.enabled and ui.messagesTextEdit.toPlainText() == ""
    pump_until(slicer_harness, lambda: panel.job is None, what="the segmentation used anyway")
    seg = p.outputSegmentation
    assert seg is not None and re.fullmatch(rf"patient CT – MedSyn segmentation {RUN_LABEL}", seg.GetName())
    assert reference_of(seg) is patient and seg.GetSegmentation().GetNumberOfSegments() == 7
    assert "FAILED, do not trust this segmentation." in ui.statusLabel.text
    assert 'loaded because you pressed "Use anyway"' in ui.messagesTextEdit.toPlainText()
    assert not ui.useAnywayButton.visible and ui.progressBar.value == 1000
    assert patient.GetAttribute("synthetic") is None, "a patient's CT is never marked synthetic"


def real_ct(name):
    """A real partial scan of ``Testing/data/real/`` as a patient's volume (LPS file to RAS scene)."""
    import SimpleITK as sitk
    import slicer

    from conftest import DATA

    image = sitk.ReadImage(str(DATA / "real" / f"{name}_ct.nii.gz"))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = lps_to_ras @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    ijk_to_ras[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    return slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image), ijk_to_ras, name)


def test_a_scan_the_check_refuses_shows_the_reason_and_figures_and_use_anyway_runs_it(panel, slicer_harness,
                                                                                       tmp_path):
    """A real chest CT cropped to the heart (TotalSegmentator's test data): the scan check refuses it before the
    model runs; the message area gives its reason, what to do in the panel's words and the check's figures, and
    "Use anyway" runs it, the result carrying the check's problem as a warning. (Before: the fix read "--force
    runs it anyway", the figures were missing and the warning said "because of --force".)"""
    ct = real_ct("chest_crop_heart")
    p, ui = panel._parameterNode, panel.ui
    use_tiny_model(panel, slicer_harness)
    open_tab(panel, slicer_harness, "segment")
    choose(slicer_harness, ui.inputVolumeSelector.comboBox(), "chest_crop_heart")
    ui.generateButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, what="the scan check")

    shown = ui.messagesTextEdit.toPlainText()
    assert ui.statusLabel.text == "Refused: nothing was loaded." and p.outputSegmentation is None
    assert shown.startswith("Refused: the CT cannot be used: ") and "the field of view is narrower than the chest" \
        in shown.splitlines()[0], shown
    assert '\nWhat to do: press "Use anyway" to run it regardless' in shown, shown
    assert re.search(r"^lung ml: \d+", shown, re.M) and re.search(r"^lungs cut by scan: .*\bsides$", shown, re.M)
    assert re.search(r"^box: lung outside ml [\d.]+, lung outside fraction [\d.]+, size mm 128.0 x 128.0 x 128.0$",
                     shown, re.M), shown
    assert "--" not in shown, "the panel's words, not the command line's options"
    assert ui.useAnywayButton.visible and ui.useAnywayButton.enabled and ui.progressBar.value == 0
    assert list((tmp_path / "results").iterdir()) == []

    ui.useAnywayButton.click()
    assert panel.job is not None and "overriding the check" in ui.statusLabel.text
    pump_until(slicer_harness, lambda: panel.job is None, what="the segmentation used anyway")
    shown = ui.messagesTextEdit.toPlainText()
    assert p.outputSegmentation is not None and reference_of(p.outputSegmentation) is ct
    assert re.search(r'^Warning: the CT failed the scan check and was used because you pressed "Use anyway": '
                     r"the field of view is narrower than the chest", shown, re.M), shown
    assert "--" not in shown


def test_a_warning_reaches_the_panel_and_a_result_finished_elsewhere_is_kept(panel, slicer_harness):
    """A 2,000-word report: the command line's warning (only the first word-pieces are read) is in the message
    area with what to do, beside "Loaded". The user went to another module while it ran: the result still
    becomes the anatomy to keep. (Before: the warning was logged at debug level; the result was not kept.)"""
    p, ui = panel._parameterNode, panel.ui
    use_tiny_model(panel, slicer_harness)
    p.reportText = "FINDINGS: " + " ".join(["large bilateral pleural effusions ."] * 400)
    slicer_harness.pump()
    ui.generateButton.click()
    assert panel.job is not None
    panel.exit()  # off to another module
    pump_until(slicer_harness, lambda: panel.job is None, what="the run")
    panel.enter()
    slicer_harness.pump()
    shown = ui.messagesTextEdit.toPlainText()
    assert ui.statusLabel.text.startswith(f"Loaded 'SYNTHETIC MedSyn CT (seed {p.seed}, ")
    assert ui.messagesTextEdit.visible and re.search(r"^Warning: the report is 2,\d{3} word-pieces long", shown,
                                                     re.M), shown
    assert "\nWhat to do: keep to the Findings and Impression" in shown
    assert shown.count("Warning: the report is") == 1, "said once (the event and the sidecar are the same)"
    assert p.conditionSegmentation is not None and \
        p.conditionSegmentation.GetName().startswith(f"SYNTHETIC MedSyn segmentation (seed {p.seed}, ")


@pytest.mark.skipif(os.name == "nt", reason="the stand-in stops on SIGTERM")
def test_controls_that_cannot_change_the_run_are_disabled_or_hidden(panel, slicer_harness, tmp_path, monkeypatch):
    """Settings are fixed while a run goes (the finished run shows what it used); super-resolution steps with a
    low-resolution preview, guidance for a segmentation, a model that is not installed, a GPU that is not there.
    (Before: all of them stayed enabled.)"""
    from MedSynSlicerLib.logic import Device

    p, ui = panel._parameterNode, panel.ui
    ui.settingsCollapsibleButton.collapsed = False
    ui.lowresOnlyCheckBox.checked = True
    slicer_harness.pump()
    assert not ui.superresStepsSpinBox.enabled
    ui.lowresOnlyCheckBox.checked = False
    slicer_harness.pump()
    assert ui.superresStepsSpinBox.enabled

    open_tab(panel, slicer_harness, "segment")
    assert ui.guidanceSliderWidget.isHidden() and ui.settingsFormLayoutLabel5.isHidden()
    assert not ui.seedSpinBox.isHidden(), "the seed changes a segmentation's sampled masks"
    open_tab(panel, slicer_harness, "edit")
    assert not ui.guidanceSliderWidget.isHidden() and ui.generateButton.text == "Replace region"
    open_tab(panel, slicer_harness, "generate")

    official = next(i for i in range(ui.modelComboBox.count) if "(not installed)" in ui.modelComboBox.itemText(i))
    ui.modelComboBox.setCurrentIndex(official)
    slicer_harness.pump()
    assert not ui.generateButton.enabled
    assert "is not installed" in ui.generateButton.toolTip and "Settings > Import weights" in ui.generateButton.toolTip
    use_tiny_model(panel, slicer_harness)
    assert ui.generateButton.enabled

    panel.logic.deviceInfo = {"cuda": False, "torch": "2.13.0"}  # what the GPU probe says on this machine
    p.device = Device.GPU
    slicer_harness.pump()
    gpu = ui.deviceComboBox.findText(Device.label(Device.GPU))
    assert not ui.deviceComboBox.model().item(gpu).isEnabled()
    assert not ui.generateButton.enabled and "No CUDA GPU" in ui.generateButton.toolTip
    p.device = Device.CPU
    slicer_harness.pump()

    start_stand_in(panel, slicer_harness, tmp_path, monkeypatch)
    fixed = ("modelComboBox", "seedSpinBox", "randomSeedButton", "lowresStepsSpinBox", "superresStepsSpinBox",
             "guidanceSliderWidget", "deviceComboBox", "lowresOnlyCheckBox", "outputFolderPathLineEdit",
             "importWeightsButton", "generateTab", "segmentTab", "editTab")
    assert not any(getattr(ui, name).enabled for name in fixed), [n for n in fixed if getattr(ui, n).enabled]
    ui.cancelButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, 30, "the cancel")
    assert [name for name in fixed if not getattr(ui, name).enabled] == ["superresStepsSpinBox"], \
        "after the run all come back, but the super-resolution steps of a low-resolution preview"


@pytest.mark.skipif(os.name == "nt", reason="the stand-in stops on SIGTERM")
def test_each_tab_has_its_own_status_and_settings_survive_a_scene_close(panel, slicer_harness, tmp_path, monkeypatch,
                                                                         mrml_scene):
    """A tab's status, progress and messages are its own (before: the Edit tab showed the Segment tab's
    "Loaded..."); closing the scene keeps the user's Settings (before: back to the defaults)."""
    from MedSynSlicerLib.logic import Device

    p, ui = panel._parameterNode, panel.ui
    use_tiny_model(panel, slicer_harness)
    ui.seedSpinBox.value = 1234
    ui.lowresStepsSpinBox.value = 3
    start_stand_in(panel, slicer_harness, tmp_path, monkeypatch)
    ui.cancelButton.click()
    pump_until(slicer_harness, lambda: panel.job is None, 30, "the cancel")
    assert ui.statusLabel.text == "Cancelled: nothing was written."
    open_tab(panel, slicer_harness, "segment")
    assert ui.statusLabel.text == "" and ui.progressLabel.text == "" and ui.progressBar.value == 0
    open_tab(panel, slicer_harness, "generate")
    assert ui.statusLabel.text == "Cancelled: nothing was written."

    mrml_scene.Clear(0)  # File > Close scene
    slicer_harness.pump()
    p = panel._parameterNode
    assert p is not None and p.parameterNode.GetScene() is mrml_scene
    assert (p.model, p.seed, p.stepsLowres, p.lowresOnly, p.device) == (TINY_NAME, 1234, 3, True, Device.CPU)
    assert p.outputFolder == tmp_path / "results"
    assert ui.seedSpinBox.value == 1234 and ui.statusLabel.text == ""


def test_the_panel_fits_a_narrow_module_panel(panel, slicer_harness):
    """Settings open with the longest model title listed: the panel needs no more than a usual module panel's
    width (before: 955 px because of one model title; 551 px now)."""
    panel.ui.settingsCollapsibleButton.collapsed = False
    slicer_harness.pump()
    titles = [panel.ui.modelComboBox.itemText(i) for i in range(panel.ui.modelComboBox.count)]
    assert max(len(t) for t in titles) > 60
    hint = panel.parent.minimumSizeHint
    width = (hint() if callable(hint) else hint).width()
    assert width <= 600, width
