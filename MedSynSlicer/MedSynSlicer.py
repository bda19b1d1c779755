"""MedSyn for 3D Slicer: text-guided, anatomy-aware synthesis of 3D chest CT, and segmentation of real CTs.

Module (metadata) -> parameter node (the user's choices, saved with the scene) -> Widget (GUI only, thin) -> Test
(in-Slicer self-test). All the work is done by ``MedSynSlicerLib.logic.MedSynSlicerLogic`` (Qt-free, tested with
slicer-core); inference always runs in a separate ``PythonSlicer -m MedSynLib`` process, never on Slicer's main
thread. Scripting::

    import MedSynSlicer
    logic = MedSynSlicer.MedSynSlicerLogic(MedSynSlicer.MedSynSlicerParameterNode)
    p = logic.getParameterNode()
    p.reportText = "FINDINGS: Large right pleural effusion."
    loaded = logic.run(p)  # blocking; loaded.ct_node, loaded.segmentation_node
"""

import logging
import os
import pathlib
import random
import sys
import time
from typing import Annotated, Optional

import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import parameterNodeWrapper, WithinRange
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if _MODULE_DIR not in sys.path:
    sys.path.insert(0, _MODULE_DIR)
# In a source checkout MedSynLib sits next to this folder; the extension installs it from the medsyn wheel on first
# use (MedSynSlicerLib/dependencies.py).
_SOURCE_ROOT = os.path.dirname(_MODULE_DIR)
if not os.path.isdir(os.path.join(_MODULE_DIR, "MedSynLib")) and \
        os.path.isdir(os.path.join(_SOURCE_ROOT, "MedSynLib")) and _SOURCE_ROOT not in sys.path:
    sys.path.append(_SOURCE_ROOT)

from MedSynSlicerLib import dialogs, models, sceneutil  # noqa: E402
from MedSynSlicerLib.examples import DEFAULT_REPORT, EXAMPLE_REPORTS  # noqa: E402
from MedSynSlicerLib.job import default_output_root  # noqa: E402
from MedSynSlicerLib.logic import LOBE_FIELDS, OFFICIAL_MODEL_NAME, Device, MedSynSlicerLogic  # noqa: E402,F401
from MedSynSlicerLib.runs import PROGRESS_RANGE, PanelRuns  # noqa: E402
from MedSynSlicerLib.selftest import SelfTestCases  # noqa: E402

LOBE_SELECTORS = ("leftUpperLobeSelector", "leftLowerLobeSelector", "rightUpperLobeSelector",
                  "rightMiddleLobeSelector", "rightLowerLobeSelector")
"""Segment selectors of the lobes, in the order of LOBE_FIELDS."""
MODES = ("generate", "segment", "edit")
"""The tabs: mode ``m`` is the tab widget ``<m>Tab`` of the .ui and ``RUNS[m]`` of the logic."""
RUN_BUTTON = {"generate": ("Generate", "Generate a synthetic CT from the report", "Generating"),
              "segment": ("Segment", "Segment the selected CT into lobes, airway and vessels", "Segmenting"),
              "edit": ("Generate", "Replace the region of the CT by what the model generates for the report (a new "
                       "volume marked EDITED; the CT is not changed)", "Editing")}
"""Text and tooltip of the run button, and the status while it runs, per mode."""


#
# Module
#

class MedSynSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSyn"
        self.parent.categories = ["Image Synthesis"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSyn for 3D Slicer contributors"]
        self.parent.helpText = (
            "Generate a <b>synthetic</b> 3D chest CT with its lung lobes, airway and vessels from a radiology report "
            "(MedSyn, IEEE TMI 2024), optionally keeping anatomy you provide as segments; segment a real CT with "
            "the same model, or replace a region of a CT by what the model generates for a report (marked EDITED). "
            "Every generated image is synthetic and must not be used for diagnosis. "
            "See the <a href=\"https://github.com/medsyn-slicer/MedSyn/blob/main/docs/slicer.md\">documentation</a>.")
        self.parent.acknowledgementText = (
            "MedSyn: Y. Xu et al., \"MedSyn: Text-guided Anatomy-aware Synthesis of High-Fidelity 3D CT Images\", "
            "IEEE Transactions on Medical Imaging, 2024. The official weights are licensed CC-BY-NC-4.0.")


#
# Parameter node
#

@parameterNodeWrapper
class MedSynSlicerParameterNode:
    """All user choices, saved with the scene."""

    mode: str = "generate"  # one of MODES (the tab)
    reportText: str = DEFAULT_REPORT
    conditionSegmentation: vtkMRMLSegmentationNode
    holdLobes: bool = False
    leftUpperLobeSegmentId: str = ""
    leftLowerLobeSegmentId: str = ""
    rightUpperLobeSegmentId: str = ""
    rightMiddleLobeSegmentId: str = ""
    rightLowerLobeSegmentId: str = ""
    airwaySegmentId: str = ""
    vesselsSegmentId: str = ""
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    editVolume: vtkMRMLScalarVolumeNode
    regionSegmentation: vtkMRMLSegmentationNode
    regionSegmentId: str = ""
    editReportText: str = ""
    editAnatomySegmentation: vtkMRMLSegmentationNode
    model: str = models.DEFAULT_MODEL
    modelDefaultsOf: str = ""  # the model whose model.json defaults fill the sampler fields below
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 42
    stepsLowres: Annotated[int, WithinRange(1, 1000)] = 50
    stepsSuperres: Annotated[int, WithinRange(1, 1000)] = 20
    guidanceScale: Annotated[float, WithinRange(0.0, 15.0)] = 1.0
    device: Device = Device.AUTO
    lowresOnly: bool = False
    outputFolder: pathlib.Path = pathlib.Path(default_output_root())


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


#
# Widget
#

class MedSynSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Thin: it binds the parameter node, forwards clicks to the logic, polls the running job with a
    QTimer and shows progress and results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[MedSynSlicerLogic] = None
        self._parameterNode: Optional[MedSynSlicerParameterNode] = None
        self._parameterNodeGuiTag = None
        self._conditionSegmentationShown = None
        self._regionObserved = None
        self._updatingGui = False
        self.runs: Optional[PanelRuns] = None

    @property
    def job(self):
        """The running job (None between runs)."""
        return self.runs.job if self.runs is not None else None

    # --- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSynSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSynSlicerLogic(MedSynSlicerParameterNode)
        self.runs = PanelRuns(self.logic, lambda: self._parameterNode)
        self.runs.modelsChanged = self.refreshModels
        self.runs.waitCursor = slicer.util.WaitCursor

        self.ui.exampleReportComboBox.addItem("Choose an example...")
        for title in EXAMPLE_REPORTS:
            self.ui.exampleReportComboBox.addItem(title)
        self.ui.exampleReportComboBox.currentIndexChanged.connect(self.onExampleReport)
        self.ui.modeTabWidget.currentChanged.connect(self.onModeChanged)
        for name in ("airwaySegmentSelector", "vesselsSegmentSelector") + LOBE_SELECTORS:
            getattr(self.ui, name).currentSegmentChanged.connect(self.onConditionSegmentSelected)
        self.ui.editLobesButton.clicked.connect(lambda: self.onEditCondition("lobes"))
        self.ui.editAirwayButton.clicked.connect(lambda: self.onEditCondition("airway"))
        self.ui.editVesselsButton.clicked.connect(lambda: self.onEditCondition("vessels"))
        self.ui.editConditionsButton.clicked.connect(lambda: self.onEditCondition(None))
        self.ui.regionSegmentSelector.currentNodeChanged.connect(self.onRegionSegmentationSelected)
        self.ui.regionSegmentSelector.currentSegmentChanged.connect(self.onRegionSegmentSelected)
        self.ui.editRegionButton.clicked.connect(self.onEditRegion)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelSelected)
        self.ui.refreshModelsButton.clicked.connect(self.refreshModels)
        self.ui.importWeightsButton.clicked.connect(self.onImportWeights)
        self.ui.removeLibraryButton.clicked.connect(self.onRemoveLibrary)
        self.ui.randomSeedButton.clicked.connect(self.onRandomSeed)
        self.ui.generateButton.clicked.connect(self.onGenerate)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.settingsCollapsibleButton.contentsCollapsed.connect(self.onSettingsToggled)
        self.ui.progressBar.setRange(0, PROGRESS_RANGE)
        self.ui.progressBar.setFormat("%p%")
        self.ui.cancelButton.enabled = False
        self.runs.view.device_text = self.ui.deviceInfoLabel.text

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.timeout.connect(self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.runs.stopAll()
        self.pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self.job is not None:
            self.job.request_cancel()  # the poll timer removes its work folder once it has stopped
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[MedSynSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode is None:
            self.observeRegion(None)
        if self._parameterNode:
            self._conditionSegmentationShown = self._parameterNode.conditionSegmentation
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(self.boundWidgets())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def boundWidgets(self) -> dict:
        """Parameter name -> widget (or connector) for every widget with a ``SlicerParameterName`` in the .ui
        (the widgets ``connectGui(self.ui)`` would bind), the report box with :func:`reportTextConnector`."""
        bound = {w.property("SlicerParameterName"): w for w in self.ui.__dict__.values()
                 if w.property("SlicerParameterName")}
        bound["reportText"] = reportTextConnector(self.ui.reportTextEdit)
        bound["editReportText"] = reportTextConnector(self.ui.editReportTextEdit)
        return bound

    # --- parameter node -> what follows from it, and the widgets not bound automatically ---------------------------

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Every change of the parameter node, from the GUI or a script: derived choices first (they change the
        node again, which comes back here), then the GUI."""
        p = self._parameterNode
        if p is None:
            return
        if p.conditionSegmentation is not self._conditionSegmentationShown:
            self._conditionSegmentationShown = p.conditionSegmentation
            self.logic.useConditionSegmentation(p, p.conditionSegmentation)
        self.logic.applyModelDefaults(p)
        self.updateGuiFromParameterNode()

    def updateGuiFromParameterNode(self) -> None:
        if self._parameterNode is None or self._updatingGui:
            return
        p = self._parameterNode
        self._updatingGui = True
        try:
            tab = getattr(self.ui, f"{p.mode}Tab", None)
            if tab is not None:
                self.ui.modeTabWidget.currentIndex = self.ui.modeTabWidget.indexOf(tab)
            segmentation = p.conditionSegmentation
            for name, value in [("airwaySegmentSelector", p.airwaySegmentId),
                                ("vesselsSegmentSelector", p.vesselsSegmentId)] + \
                    [(s, getattr(p, f)) for s, f in zip(LOBE_SELECTORS, LOBE_FIELDS)]:
                selector = getattr(self.ui, name)
                if selector.currentNode() is not segmentation:
                    selector.setCurrentNode(segmentation)
                if selector.currentSegmentID() != value:
                    selector.setCurrentSegmentID(value)
            region = self.ui.regionSegmentSelector
            if region.currentNode() is not p.regionSegmentation:
                region.setCurrentNode(p.regionSegmentation)
            if region.currentSegmentID() != p.regionSegmentId:
                region.setCurrentSegmentID(p.regionSegmentId)
            self.observeRegion(p.regionSegmentation)
            self.showModel(p.model)
        finally:
            self._updatingGui = False
        self.updateConditionsStatus()
        self.updateButtons()

    def onModeChanged(self, index: int) -> None:
        if self._parameterNode and not self._updatingGui:
            widget = self.ui.modeTabWidget.widget(index)
            self._parameterNode.mode = next(m for m in MODES if getattr(self.ui, f"{m}Tab") is widget)

    def onExampleReport(self, index: int) -> None:
        if index <= 0 or self._parameterNode is None:
            return
        self._parameterNode.reportText = list(EXAMPLE_REPORTS.values())[index - 1]
        self.ui.exampleReportComboBox.currentIndex = 0

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

    def updateButtons(self) -> None:
        p = self._parameterNode
        busy = self.isBusy()
        mode = p.mode if p is not None else MODES[0]
        text, tooltip, _ = RUN_BUTTON[mode]
        why = self.logic.whyNotReady(p) if p is not None else "No scene."
        self.ui.generateButton.text = text
        self.ui.generateButton.enabled = not why and not busy
        self.ui.generateButton.toolTip = why or tooltip
        self.ui.cancelButton.enabled = busy and not self.runs.cancelling
        self.ui.importWeightsButton.enabled = not busy
        self.ui.removeLibraryButton.enabled = not busy

    def isBusy(self) -> bool:
        return self.runs.busy

    def onRandomSeed(self) -> None:
        self._parameterNode.seed = random.randint(0, 2**31 - 1)

    # --- models and device ---------------------------------------------------------------------------------------

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
        self.showRuns()

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
        self.showRuns()
        self.updateButtons()

    # --- run -----------------------------------------------------------------------------------------------------

    def ensureDependencies(self) -> bool:
        ready, status = dialogs.dependencies_ready()
        if status:
            self.runs.view.status = status
            self.showRuns()
        if ready and not self.logic.models:
            self.refreshModels()  # the library and its demo model were just installed
        return ready

    def onRemoveLibrary(self) -> None:
        status = dialogs.remove_library()
        if status:
            self.runs.view.status = status
            self.showRuns()
            self.refreshModels()

    def onGenerate(self) -> None:
        p = self._parameterNode
        if p is None or self.isBusy():
            return
        if not self.ensureDependencies():
            return
        if not dialogs.license_accepted(self.logic.modelInfo(p.model)):
            return
        try:
            with slicer.util.WaitCursor():
                self.runs.startJob(p, RUN_BUTTON[p.mode][2])
        except Exception as e:  # noqa: BLE001 - reason and fix in one dialog
            slicer.util.errorDisplay(str(e), windowTitle="MedSyn")
            return
        self.pollTimer.start()
        self.showRuns()
        self.updateButtons()

    def onCancel(self) -> None:
        self.runs.requestCancel()
        self.showRuns()
        self.updateButtons()

    def onPoll(self) -> None:
        """QTimer slot: drain the events of the running job, import and device probe (never blocks)."""
        self.runs.poll()
        if not self.runs.polling:
            self.pollTimer.stop()
        self.showRuns()
        self.updateButtons()

    def showRuns(self) -> None:
        """Copy what the runs say into the panel, and show the dialogs they queued."""
        view = self.runs.view
        self.ui.statusLabel.text = view.status
        self.ui.progressBar.value = view.progress
        self.ui.progressLabel.text = view.progress_text
        self.ui.deviceInfoLabel.text = view.device_text
        alerts, self.runs.alerts = self.runs.alerts, []
        for alert in alerts:
            details = {"detailedText": alert.details} if alert.details else {}
            slicer.util.errorDisplay(alert.message, windowTitle="MedSyn", **details)

    # --- conditions in the Segment Editor ------------------------------------------------------------------------

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


#
# Test
#

class MedSynSlicerTest(SelfTestCases, ScriptedLoadableModuleTest):
    """In-Slicer self-test (the bodies are in ``MedSynSlicerLib.selftest``): generate -> load with the packaged
    default model, then Segment and Edit."""

    parameterNodeClass = MedSynSlicerParameterNode

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GenerateAndLoad()
        self.setUp()
        self.test_SegmentGeneratedCT()
        self.setUp()
        self.test_EditRegionOfGeneratedCT()
