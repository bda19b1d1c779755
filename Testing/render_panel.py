"""Render the MedSyn module panel (MedSynSlicer/Resources/UI/MedSynSlicer.ui) to Resources/Screenshots/panel.png.

Not a test: a helper to refresh the screenshot used by the Extensions Index (SCREENSHOTURLS) and the README.
Runs without 3D Slicer, with PySide6 offscreen; CTK / MRML widgets are replaced by plain Qt stand-ins that look
close enough (a group box for ctkCollapsibleButton, combo boxes for node and segment selectors, ...).

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen python Testing/render_panel.py [output.png]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QFile, QSize  # noqa: E402
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
    f = QFile(UI)
    f.open(QFile.ReadOnly)
    panel = loader.load(f)
    f.close()
    if panel is None:
        raise RuntimeError(loader.errorString())

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
    child(QLabel_ := QWidget, "conditionsStatusLabel").setText(
        "Keeping: airway (edited). The model generates lobes and vessels around it.")
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


if __name__ == "__main__":
    print(render(sys.argv[1] if len(sys.argv) > 1 else OUT))
