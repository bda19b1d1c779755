"""Sections of the MedSyn panel, mixed into ``MedSynSlicerWidget``: the anatomy choices of the Generate and Edit tabs
(segment selectors, the region, the Segment Editor) and the Settings section (model list, seed, device, weights
import). Like the Widget they only move the user's choices between the controls (``self.ui``), the parameter node
(``self._parameterNode``) and the Logic (``self.logic``); no ``qt`` import, so the package stays importable without
Qt.
"""

from __future__ import annotations

import random
from typing import Optional

import slicer

from . import dialogs, models, sceneutil
from .anatomy import LOBE_FIELDS
from .logic import OFFICIAL_MODEL_NAME

LOBE_SELECTORS = ("leftUpperLobeSelector", "leftLowerLobeSelector", "rightUpperLobeSelector",
                  "rightMiddleLobeSelector", "rightLowerLobeSelector")
"""Segment selectors of the lobes, in the order of LOBE_FIELDS."""


def reportTextConnector(widget):
    """The report box's binding: like Slicer's QTextEdit connector, but it rewrites the text only when it differs.

    Every parameter change rewrites every bound widget; ``setPlainText`` moves the cursor to the start, so typing
    while bound that way comes out reversed.
    """
    from slicer.parameterNodeWrapper.guiConnectors import QTextEditPlainTextToStrConnector

    class ReportTextConnector(QTextEditPlainTextToStrConnector):
        def write(self, value: str) -> None:
            if self.read() != value:
                super().write(value)

    return ReportTextConnector(widget)


class AnatomySection:
    """The Generate tab's kept anatomy and the Edit tab's region: selectors, status lines, the Segment Editor."""

    def onConditionSegmentSelected(self, segmentId) -> None:
        if self._updatingGui or self._parameterNode is None:
            return
        p = self._parameterNode
        with slicer.util.NodeModify(p.parameterNode):
            p.airwaySegmentId = self.ui.airwaySegmentSelector.currentSegmentID() or ""
            p.vesselsSegmentId = self.ui.vesselsSegmentSelector.currentSegmentID() or ""
            for selector, field in zip(LOBE_SELECTORS, LOBE_FIELDS):
                setattr(p, field, getattr(self.ui, selector).currentSegmentID() or "")

    def onRegionSegmentationSelected(self, node) -> None:
        if not self._updatingGui and self._parameterNode is not None:
            self.logic.useRegionSegmentation(self._parameterNode, node)

    def onRegionSegmentSelected(self, segmentId) -> None:
        if not self._updatingGui and self._parameterNode is not None:
            self._parameterNode.regionSegmentId = segmentId or ""

    def observeRegion(self, node) -> None:
        """Painting the region does not change the parameter node: follow its segments for the status and the
        run button (an empty region cannot be edited)."""
        if node is self._regionObserved:
            return
        events = (slicer.vtkSegmentation.SegmentModified, slicer.vtkSegmentation.SegmentRemoved)
        for event in events if self._regionObserved is not None else ():
            self.removeObserver(self._regionObserved, event, self.onRegionModified)
        self._regionObserved = node
        for event in events if node is not None else ():
            self.addObserver(node, event, self.onRegionModified)

    def onRegionModified(self, caller=None, event=None) -> None:
        self.updateConditionsStatus()
        self.updateButtons()

    def updateConditionsStatus(self) -> None:
        self.ui.conditionsStatusLabel.text = self.logic.describeConditions(self._parameterNode)
        self.ui.editStatusLabel.text = self.logic.describeEdit(self._parameterNode)

    def onEditCondition(self, channel: Optional[str]) -> None:
        """Hold ``channel`` (lobes / airway / vessels) and open the Segment Editor on it: edit, then Generate."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor.", waitCursor=True):
            segmentId = self.logic.holdForEditing(p, channel)
            sceneutil.open_segment_editor(p.conditionSegmentation, segmentId)

    def onEditRegion(self) -> None:
        """Draw the edit's region: the Segment Editor on the region segment (created on the CT when missing)."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor.", waitCursor=True):
            segmentation, segmentId = self.logic.regionForEditing(p)
            sceneutil.open_segment_editor(segmentation, segmentId, p.editVolume)


class SettingsSection:
    """The Settings section: the model list and its description, seed, device, importing weights, packages."""

    def onRandomSeed(self) -> None:
        self._parameterNode.seed = random.randint(0, 2**31 - 1)

    def refreshModels(self) -> None:
        """List the models again (the registry and imported models; read in this process, no torch needed)."""
        try:
            self.logic.listModels()
            error = ""
        except ModuleNotFoundError as e:
            self.logic.models = []
            error = (f"Could not list models: {e}." if e.name != "MedSynLib" else
                     "The MedSyn library and its demo model are not installed yet: the first run installs them.")
        except Exception as e:  # noqa: BLE001 - shown in the panel
            self.logic.models = []
            error = f"Could not list models: {e}"
        self._updatingGui = True
        try:
            combo = self.ui.modelComboBox
            combo.clear()
            for m in self.logic.models:
                combo.addItem(m.title + ("" if m.available else " (not installed)"), m.name)
        finally:
            self._updatingGui = False
        if self._parameterNode is not None:
            self.logic.applyModelDefaults(self._parameterNode)
            self.showModel(self._parameterNode.model)
        if error:
            self.ui.modelInfoLabel.text = error

    def showModel(self, name: str) -> None:
        """Select ``name`` in the model list (a model folder given by path gets its own entry) and describe it."""
        info = self.logic.modelInfo(name)
        combo = self.ui.modelComboBox
        wasUpdating, self._updatingGui = self._updatingGui, True
        try:
            key = info.name if info is not None else name
            index = combo.findData(key)
            if index < 0:
                combo.addItem(info.title if info is not None else f"{name} (not found)", key)
                index = combo.findData(key)
            combo.currentIndex = index
        finally:
            self._updatingGui = wasUpdating
        self.ui.modelInfoLabel.text = models.describe(info) if info is not None else \
            "Unknown model: choose one from the list, or import weights."

    def onModelSelected(self, index: int) -> None:
        if index < 0 or self._updatingGui or self._parameterNode is None:
            return
        self._parameterNode.model = self.ui.modelComboBox.itemData(index)  # its defaults follow (applyModelDefaults)

    def onSettingsToggled(self, collapsed: bool) -> None:
        if not collapsed and self.runs.startDeviceProbe():
            self.pollTimer.start()
        self.updateButtons()

    def onImportWeights(self) -> None:
        chosen = dialogs.ask_official_weights()
        if chosen is None:
            return
        official = models.ModelInfo(name=OFFICIAL_MODEL_NAME, title="MedSyn official weights",
                                    license="CC-BY-NC-4.0", requires_license_acceptance=True)
        if not dialogs.license_accepted(official) or not self.ensureDependencies():
            return
        path, text_encoder, atlas = chosen
        with slicer.util.tryWithErrorDisplay("Could not start the weights import.", waitCursor=True):
            self.runs.startImport(path, text_encoder, OFFICIAL_MODEL_NAME, atlas)
            self.pollTimer.start()
        self.updateButtons()

    def ensureDependencies(self) -> bool:
        ready, status = dialogs.dependencies_ready()
        if status:
            self.runs.importStatus = status
            self.updateButtons()
        if ready and not self.logic.models:
            self.refreshModels()  # the library and its demo model were just installed
        return ready

    def onRemoveLibrary(self) -> None:
        status = dialogs.remove_library()
        if status:
            self.runs.importStatus = status
            self.refreshModels()
            self.updateButtons()
