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

import os
import pathlib
import random
import sys
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

from MedSynSlicerLib import dialogs, models, panelstate  # noqa: E402
from MedSynSlicerLib.examples import DEFAULT_REPORT, EXAMPLE_REPORTS  # noqa: E402
from MedSynSlicerLib.job import default_output_root  # noqa: E402
from MedSynLib.run_settings import MODEL_DEFAULTS, RunSettings  # noqa: E402
from MedSynSlicerLib.logic import (LOBE_FIELDS, OFFICIAL_MODEL_NAME, Device, MedSynSlicerLogic,  # noqa: E402,F401
                                   unavailable_devices)
from MedSynSlicerLib.remote import RemoteServerSection  # noqa: E402
from MedSynSlicerLib.runs import PROGRESS_RANGE, PanelRuns, PanelView  # noqa: E402
from MedSynSlicerLib.sections import (LOBE_SELECTORS, AnatomySection, SettingsSection,  # noqa: E402
                                      reportTextConnector)
from MedSynSlicerLib.selftest import SelfTestCases  # noqa: E402

MODES = ("generate", "segment", "edit")
"""The tabs: mode ``m`` is the tab widget ``<m>Tab`` of the .ui and ``RUNS[m]`` of the logic."""


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
    conditionSegmentsOf: vtkMRMLSegmentationNode  # the segmentation the segment IDs below belong to
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
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = RunSettings.seed
    stepsLowres: Annotated[int, WithinRange(1, 1000)] = MODEL_DEFAULTS["steps_lowres"]
    stepsSuperres: Annotated[int, WithinRange(1, 1000)] = MODEL_DEFAULTS["steps_sr"]
    guidance: Annotated[float, WithinRange(0.0, 15.0)] = MODEL_DEFAULTS["guidance"]  # the slider's range
    device: Device = Device.AUTO
    lowresOnly: bool = False
    outputFolder: pathlib.Path = pathlib.Path(default_output_root())


#
# Widget
#

class MedSynSlicerWidget(AnatomySection, SettingsSection, RemoteServerSection, ScriptedLoadableModuleWidget,
                         VTKObservationMixin):
    """The panel. Thin: it binds the parameter node, forwards clicks to the logic, polls the running job with a
    QTimer and shows progress and results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[MedSynSlicerLogic] = None
        self._parameterNode: Optional[MedSynSlicerParameterNode] = None
        self._parameterNodeGuiTag = None
        self._inputVolumeShown = None
        self._keptSettings: Optional[dict] = None  # the Settings over a scene close
        self._regionObserved = None
        self._updatingGui = False
        self.runs: Optional[PanelRuns] = None
        self._devicesMissing: set = set()  # the Device choices shown as not available

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
        # a run that finishes while another module is shown still belongs to the module's parameter node
        self.runs = PanelRuns(self.logic, lambda: self._parameterNode or self.logic.getParameterNode(), MODES)
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
        self.ui.generateButton.clicked.connect(lambda: self.onGenerate())
        self.ui.useAnywayButton.clicked.connect(lambda: self.onGenerate(force=True))
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.settingsCollapsibleButton.contentsCollapsed.connect(self.onSettingsToggled)
        self.ui.progressBar.setRange(0, PROGRESS_RANGE)
        self.ui.progressBar.setFormat("%p%")
        self.ui.cancelButton.enabled = False
        self.runs.deviceText = self.ui.deviceInfoLabel.text
        self.setupRemoteServer()

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
        if self._parameterNode is not None:
            self._keptSettings = self.logic.keptSettings(self._parameterNode)
        self.runs.views = {mode: PanelView() for mode in MODES}  # they spoke of nodes that are gone
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        p = self.logic.getParameterNode()
        if self._keptSettings is not None:  # a new scene: the user's Settings stay
            self.logic.restoreSettings(p, self._keptSettings)
            self._keptSettings = None
        self.setParameterNode(p)

    def setParameterNode(self, inputParameterNode: Optional[MedSynSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode is None:
            self.observeRegion(None)
        if self._parameterNode:
            self._inputVolumeShown = self._parameterNode.inputVolume
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
        if p.conditionSegmentation is not p.conditionSegmentsOf:  # another segmentation: its own segments
            self.logic.useConditionSegmentation(p, p.conditionSegmentation)
        if p.inputVolume is not self._inputVolumeShown:  # another CT: its own output
            self._inputVolumeShown = p.inputVolume
            self.logic.useInputVolume(p, p.inputVolume)
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

    def updateButtons(self) -> None:
        """Enable, show and label the controls for what can change the next run (:mod:`panelstate`)."""
        p = self._parameterNode
        if p is None:
            return
        view = self.runs.views[p.mode]
        states = panelstate.control_states(p, self.runs.busy, self.runs.cancelling, self.logic.whyNotReady(p),
                                           view.refused, bool(view.messages))
        for name, properties in states.items():  # set only what changes: this runs at every poll
            widget = getattr(self.ui, name)
            for key, value in properties.items():
                if getattr(widget, key) != value:
                    setattr(widget, key, value)
        missing = {Device.label(d) for d in unavailable_devices(self.logic.deviceInfo)}
        if missing != self._devicesMissing:
            self._devicesMissing, combo = missing, self.ui.deviceComboBox
            for i in range(combo.count):
                combo.model().item(i).setEnabled(combo.itemText(i) not in missing)
        self.showRuns()

    def isBusy(self) -> bool:
        return self.runs.busy

    # --- run -----------------------------------------------------------------------------------------------------

    def onGenerate(self, force: bool = False) -> None:
        """Run the current tab (``force``: "Use anyway", with the override of the check that refused it)."""
        p = self._parameterNode
        if p is None or self.isBusy():
            return
        if p.device != Device.REMOTE and not self.ensureDependencies():  # a server run needs no torch here
            return
        if not dialogs.license_accepted(self.logic.modelInfo(p.model)):
            return
        try:
            with slicer.util.WaitCursor():
                self.runs.startJob(p, panelstate.RUN_BUTTON[p.mode][2], force)
        except Exception as e:  # noqa: BLE001 - the reason and the fix go to the message area
            self.runs.refuseToStart(p.mode, str(e))
        else:
            self.pollTimer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        self.runs.requestCancel()
        self.updateButtons()

    def onPoll(self) -> None:
        """QTimer slot: drain the events of the running job, import and device probe (never blocks)."""
        self.runs.poll()
        if not self.runs.polling:
            self.pollTimer.stop()
        self.updateButtons()

    def showRuns(self) -> None:
        """Show the current tab's last run (status, progress, messages), and the dialogs the runs queued."""
        view = self.runs.views[self._parameterNode.mode if self._parameterNode is not None else MODES[0]]
        shown = {"statusLabel": "\n".join(t for t in (view.status, self.runs.importStatus) if t),
                 "progressLabel": view.progress_text, "deviceInfoLabel": self.runs.deviceText}
        for name, text in shown.items():
            if getattr(self.ui, name).text != text:
                getattr(self.ui, name).text = text
        if self.ui.progressBar.value != view.progress:
            self.ui.progressBar.value = view.progress
        if self.ui.messagesTextEdit.toPlainText() != view.message_text():
            self.ui.messagesTextEdit.setPlainText(view.message_text())
        alerts, self.runs.alerts = self.runs.alerts, []
        for alert in alerts:
            details = {"detailedText": alert.details} if alert.details else {}
            slicer.util.errorDisplay(alert.message, windowTitle="MedSyn", **details)



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
