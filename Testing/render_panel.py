"""Render the MedSyn module panel from a real session to Resources/Screenshots/panel.png; draw the icons.

The screenshot is the real Widget (MedSynSlicer.py + its .ui) run by the Slicer harness (../shared/slicer-harness:
PySide6 offscreen, slicer-core MRML, Slicer 5.10's Python layer): the packaged demo model is chosen, a report
example picked, Generate clicked, and the panel is grabbed at a real progress event of the running ``medsyn``
process (super-resolution stage), then the run is cancelled (nothing is written). Settings shows what this
machine is (the GPU probe's answer).

    python Testing/render_panel.py [output.png]   # needs PySide6-Essentials, slicer-core and the project's deps
    python Testing/render_panel.py --messages   # warning.png and refused.png: the message area after real runs
    python Testing/render_panel.py --icons

``--icons`` draws the module and extension icons: a stylised axial chest CT slice with the lobes, airway and
vessels in the segment colours, drawn with numpy and written as PNG with SimpleITK.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Resources", "Screenshots", "panel.png")
HARNESS = os.path.join(os.path.dirname(ROOT), "shared", "slicer-harness")
sys.path.insert(0, ROOT)


def render(out_path: str = OUT, timeout_s: float = 600.0) -> str:
    """Run the panel, start a Generate with the demo model, grab it half-way through the low-res stage."""
    sys.path.insert(0, HARNESS)
    import slicer_harness as harness

    harness.boot()
    scene = harness.new_scene()
    module = harness.load_module(os.path.join(ROOT, "MedSynSlicer", "MedSynSlicer.py"))
    panel = harness.make_widget(module, scene=scene, show=True)
    panel.parent.resize(470, 1010)
    panel._parameterNode.outputFolder = pathlib.Path(tempfile.mkdtemp(prefix="medsyn-screenshot-"))
    ui = panel.ui
    ui.modelComboBox.setCurrentIndex(ui.modelComboBox.findData("medsyn-demo"))
    ui.exampleReportComboBox.setCurrentIndex(ui.exampleReportComboBox.findText("Large bilateral pleural effusions"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("CPU (slow)"))
    ui.settingsCollapsibleButton.collapsed = False
    harness.pump(120, until=lambda: "detecting" not in ui.deviceInfoLabel.text)
    ui.generateButton.click()
    def halfway() -> bool:
        event = panel.job.process.last_progress if panel.job is not None else None
        return event is not None and event["stage"] == "lowres" and 2 * event["step"] >= event["total"]

    if not harness.pump(timeout_s, until=halfway):
        raise TimeoutError(f"no low-res progress within {timeout_s} s")
    harness.pump(0.3)  # the poll timer shows the event
    image = panel.parent.grab()
    if panel.job is not None:
        panel.onCancel()
        harness.pump(60, until=lambda: panel.job is None)
    if not image.save(out_path):
        raise OSError(f"could not write {out_path}")
    harness.close_widget(panel)
    return out_path


LONG_REPORT_WORDS = 2000
"""The warning screenshot's report: an example report repeated to about this many words."""


def render_messages(out_dir: str = os.path.dirname(OUT), timeout_s: float = 900.0) -> list[str]:
    """Two screenshots of the message area, from real runs of the packaged demo model (64³ preview, CPU):
    ``warning.png``, a Generate whose report is far longer than the model reads (the command line's warning, in the
    panel); ``refused.png``, the Segment tab after the segmentation quality gate refused a chest CT whose lung bases
    are cut off by the field of view (the reason, what to do, the gate's figures and "Use anyway")."""
    sys.path.insert(0, HARNESS)
    import numpy as np
    import slicer_harness as harness

    harness.boot()
    scene = harness.new_scene()
    import slicer

    module = harness.load_module(os.path.join(ROOT, "MedSynSlicer", "MedSynSlicer.py"))
    panel = harness.make_widget(module, scene=scene, show=True)
    panel.parent.resize(470, 760)
    p, ui = panel._parameterNode, panel.ui
    p.outputFolder = pathlib.Path(tempfile.mkdtemp(prefix="medsyn-screenshot-"))
    ui.modelComboBox.setCurrentIndex(ui.modelComboBox.findData("medsyn-demo"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("CPU (slow)"))
    ui.lowresOnlyCheckBox.checked = True
    harness.pump()

    def run(button) -> None:
        button.click()
        if not harness.pump(timeout_s, until=lambda: panel.job is None):
            raise TimeoutError(f"the run did not finish within {timeout_s} s")
        harness.pump(0.3)

    def grab(name: str) -> str:
        path = os.path.join(out_dir, name)
        if not panel.parent.grab().save(path):
            raise OSError(f"could not write {path}")
        return path

    from MedSynSlicerLib.examples import EXAMPLE_REPORTS

    example = EXAMPLE_REPORTS["Large bilateral pleural effusions"]
    p.reportText = " ".join([example] * (LONG_REPORT_WORDS // len(example.split()) + 1))
    run(ui.generateButton)
    if "Warning:" not in ui.messagesTextEdit.toPlainText():
        raise RuntimeError("no warning shown: " + ui.statusLabel.text)
    paths = [grab("warning.png")]

    ct = p.conditionSegmentation.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    voxels = slicer.util.arrayFromVolume(ct)
    kept = voxels[voxels.shape[0] * 2 // 5:].copy()  # IJK k = 0 is the feet end: the lung bases are cut off
    from MedSynSlicerLib import sceneutil

    ijk_to_ras = sceneutil.ijk_to_ras(ct)
    ijk_to_ras[:3, 3] += ijk_to_ras[:3, 2] * (voxels.shape[0] * 2 // 5)
    slicer.util.addVolumeFromArray(kept, ijk_to_ras, "chest CT, lung bases cut off")
    ui.modeTabWidget.currentIndex = ui.modeTabWidget.indexOf(ui.segmentTab)
    harness.pump()
    selector = ui.inputVolumeSelector.comboBox()
    selector.setCurrentIndex(selector.findText("chest CT, lung bases cut off"))
    harness.pump()
    run(ui.generateButton)
    if not ui.useAnywayButton.visible:
        raise RuntimeError("the segmentation was not refused: " + ui.statusLabel.text)
    paths.append(grab("refused.png"))
    harness.close_widget(panel)
    return paths


def draw_icon(size: int = 128):
    """RGBA uint8 array: a rounded tile with an axial chest slice (body, two lungs in lobe colours, airway,
    vessels, spine)."""
    import numpy as np

    from MedSynLib.io.segments import SEGMENTS

    color = {s.segment_id: np.array(s.color) * 255 for s in SEGMENTS}
    n = size * 4  # draw at 4x and average down for smooth edges
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n * 2 - 1  # [-1, 1], y down
    rgba = np.zeros((n, n, 4), float)

    def put(mask, rgb, alpha=255):
        rgba[mask, :3] = rgb
        rgba[mask, 3] = alpha

    r = 0.22  # rounded square tile
    qx, qy = np.maximum(np.abs(x) - (1 - r), 0), np.maximum(np.abs(y) - (1 - r), 0)
    put(np.hypot(qx, qy) <= r, (24, 32, 48))
    body = (x / 0.86) ** 2 + ((y - 0.04) / 0.66) ** 2 <= 1
    put(body, (118, 118, 122))
    put((x / 0.80) ** 2 + ((y - 0.04) / 0.60) ** 2 <= 1, (92, 92, 98))
    for side, sx in (("left", 1), ("right", -1)):  # radiological convention: patient's right on image left
        lung = ((x - sx * 0.38) / 0.31) ** 2 + ((y + 0.02) / 0.46) ** 2 <= 1
        lung &= ~(((x - sx * 0.05) / 0.2) ** 2 + ((y - 0.12) / 0.26) ** 2 <= 1)  # heart notch
        fissure = y + sx * 0.35 * (x - sx * 0.38)
        if side == "left":
            put(lung & (fissure < -0.02), color["left_upper_lobe"])
            put(lung & (fissure >= -0.02), color["left_lower_lobe"])
        else:
            put(lung & (fissure < -0.12), color["right_upper_lobe"])
            put(lung & (fissure >= -0.12) & (fissure < 0.12), color["right_middle_lobe"])
            put(lung & (fissure >= 0.12), color["right_lower_lobe"])
    put(((x / 0.20) ** 2 + ((y - 0.14) / 0.24) ** 2 <= 1), (150, 60, 62))  # heart
    for vx, vy, vr in ((-0.36, -0.18, 0.045), (-0.28, 0.18, 0.04), (0.40, -0.12, 0.045), (0.30, 0.22, 0.04),
                       (0.46, 0.08, 0.03), (-0.48, 0.02, 0.03)):
        put(np.hypot(x - vx, y - vy) <= vr, color["pulmonary_vessels"])
    put(np.hypot(x, y + 0.28) <= 0.085, color["airway"])  # trachea
    put(np.hypot(x, y + 0.28) <= 0.05, (24, 32, 48))
    put(np.hypot(x, y - 0.55) <= 0.11, (235, 235, 230))  # vertebral body
    small = rgba.reshape(size, 4, size, 4, 4).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def write_icons() -> list[str]:
    import SimpleITK as sitk

    icon = sitk.GetImageFromArray(draw_icon(128), isVector=True)
    paths = [os.path.join(ROOT, "MedSynSlicer", "Resources", "Icons", "MedSynSlicer.png"),
             os.path.join(ROOT, "Resources", "Icons", "MedSyn.png")]
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sitk.WriteImage(icon, path)
    return paths


if __name__ == "__main__":
    if sys.argv[1:] == ["--icons"]:
        print("\n".join(write_icons()))
    elif sys.argv[1:] == ["--messages"]:
        print("\n".join(render_messages()), flush=True)
        os._exit(0)
    else:
        print(render(sys.argv[1] if len(sys.argv) > 1 else OUT), flush=True)
        os._exit(0)  # skip interpreter teardown: PySide6 and slicer-core widgets can abort while being collected
