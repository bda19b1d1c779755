"""Render the MedSyn module panel (MedSynSlicer/Resources/UI/MedSynSlicer.ui) to Resources/Screenshots/panel.png.

Also draws the module and extension icons (``--icons``): a stylised axial chest CT slice with the lobes, airway
and vessels in the segment colours, drawn with numpy and written as PNG with SimpleITK.

Not a test: a helper to refresh the screenshot used by the Extensions Index (SCREENSHOTURLS) and the README.
Runs without 3D Slicer, with PySide6 offscreen; CTK / MRML widgets are replaced by plain Qt stand-ins that look
close enough (a group box for ctkCollapsibleButton, combo boxes for node and segment selectors, ...).

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen python Testing/render_panel.py [output.png]
    python Testing/render_panel.py --icons
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSize  # noqa: E402
from PySide6.QtGui import QFont  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (QApplication, QComboBox, QDoubleSpinBox, QGroupBox, QLineEdit,  # noqa: E402
                               QWidget)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI = os.path.join(ROOT, "MedSynSlicer", "Resources", "UI", "MedSynSlicer.ui")
OUT = os.path.join(ROOT, "Resources", "Screenshots", "panel.png")
sys.path[:0] = [ROOT, os.path.join(ROOT, "MedSynSlicer")]


class CollapsibleButton(QGroupBox):
    """Stand-in for ctkCollapsibleButton (title from the ``text`` property)."""

    def setText(self, text):  # noqa: N802 - Qt naming
        self.setTitle(text)

    def setCollapsed(self, collapsed):  # noqa: N802
        pass  # shown expanded in the screenshot


class CollapsibleGroupBox(QGroupBox):
    def setCollapsed(self, collapsed):  # noqa: N802
        pass


class NodeComboBox(QComboBox):
    """Stand-in for qMRMLNodeComboBox / qMRMLSegmentSelectorWidget."""


class SegmentSelector(QComboBox):
    pass


class SliderWidget(QDoubleSpinBox):
    """Stand-in for ctkSliderWidget."""


class PathLineEdit(QLineEdit):
    """Stand-in for ctkPathLineEdit."""


class MRMLWidget(QWidget):
    pass


def render(out_path: str = OUT) -> str:
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    app.setFont(QFont("DejaVu Sans", 9))
    loader = QUiLoader()
    for cls, name in ((CollapsibleButton, "ctkCollapsibleButton"), (CollapsibleGroupBox, "ctkCollapsibleGroupBox"),
                      (NodeComboBox, "qMRMLNodeComboBox"), (SegmentSelector, "qMRMLSegmentSelectorWidget"),
                      (SliderWidget, "ctkSliderWidget"), (PathLineEdit, "ctkPathLineEdit"),
                      (MRMLWidget, "qMRMLWidget")):
        cls.__name__ = name
        loader.registerCustomWidget(cls)
    import re

    from PySide6.QtCore import QBuffer, QByteArray

    with open(UI, encoding="utf-8") as f:  # the MRML scene connections need Slicer: drop them
        xml = re.sub(r"<connections>.*</connections>", "<connections/>", f.read(), flags=re.S)
    buffer = QBuffer()
    buffer.setData(QByteArray(xml.encode("utf-8")))
    buffer.open(QBuffer.ReadOnly)
    panel = loader.load(buffer)
    if panel is None:
        raise RuntimeError(loader.errorString())
    for box in panel.findChildren(QGroupBox):
        if box.property("text"):
            box.setTitle(box.property("text"))
        if isinstance(box, CollapsibleGroupBox) and box.property("collapsed"):
            for w in box.findChildren(QWidget):
                w.hide()
            box.setMaximumHeight(22)

    from MedSynSlicerLib.examples import EXAMPLE_REPORTS

    def child(cls, name):
        w = panel.findChild(cls, name)
        if w is None:
            raise KeyError(name)
        return w

    # what a user sees after a first generation: example report, the result as condition segmentation
    examples = child(QComboBox, "exampleReportComboBox")
    examples.addItems(["Choose an example..."] + list(EXAMPLE_REPORTS))
    examples.setCurrentIndex(5)
    panel.findChild(QWidget, "reportTextEdit").setPlainText(EXAMPLE_REPORTS["Right lower lobe consolidation"])
    child(QComboBox, "conditionSegmentationSelector").addItem("SYNTHETIC MedSyn segmentation 42")
    child(QComboBox, "airwaySegmentSelector").addItem("airway")
    child(QComboBox, "vesselsSegmentSelector").addItem("None")
    panel.findChild(QWidget, "holdLobesCheckBox").setChecked(False)
    child(QWidget, "conditionsStatusLabel").setText(
        "Keeping: airway. The model generates the rest around it.")
    child(QComboBox, "modelComboBox").addItem("MedSyn official (CC-BY-NC, imported)")
    child(QWidget, "modelInfoLabel").setText("Requires ~24 GB GPU memory for 256³; weights sha256 3f2a…")
    panel.findChild(QWidget, "seedSpinBox").setMaximum(2**31 - 1)
    panel.findChild(QWidget, "seedSpinBox").setValue(42)
    for name, value in (("lowresStepsSpinBox", 50), ("superresStepsSpinBox", 20)):
        panel.findChild(QWidget, name).setMaximum(1000)
        panel.findChild(QWidget, name).setValue(value)
    child(QWidget, "guidanceSliderWidget").setValue(1.0)
    child(QComboBox, "deviceComboBox").addItems(["GPU (CUDA)", "Automatic", "CPU"])
    child(QWidget, "deviceInfoLabel").setText("NVIDIA H100, 76.3 GB free")
    child(QWidget, "outputFolderPathLineEdit").setText("~/MedSyn/results")
    bar = panel.findChild(QWidget, "progressBar")
    bar.setValue(57)
    child(QWidget, "progressLabel").setText("Super-resolution: step 4 of 20 (about 38 s left)")
    child(QWidget, "statusLabel").setText("Generating seed 42 on NVIDIA H100...")
    panel.findChild(QWidget, "generateButton").setEnabled(False)
    panel.resize(QSize(440, 10))
    panel.adjustSize()
    panel.resize(QSize(440, panel.sizeHint().height()))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    if not panel.grab().save(out_path):
        raise OSError(f"could not write {out_path}")
    return out_path


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
    else:
        print(render(sys.argv[1] if len(sys.argv) > 1 else OUT))
