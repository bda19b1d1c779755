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
# In a source checkout MedSynLib sits next to this folder; in the packaged extension it is copied beside this file.
_SOURCE_ROOT = os.path.dirname(_MODULE_DIR)
if not os.path.isdir(os.path.join(_MODULE_DIR, "MedSynLib")) and \
        os.path.isdir(os.path.join(_SOURCE_ROOT, "MedSynLib")) and _SOURCE_ROOT not in sys.path:
    sys.path.append(_SOURCE_ROOT)

from MedSynSlicerLib import device, models, progress, results  # noqa: E402
from MedSynSlicerLib.examples import DEFAULT_REPORT, EXAMPLE_REPORTS  # noqa: E402
from MedSynSlicerLib.job import default_output_root  # noqa: E402
from MedSynSlicerLib.logic import LOBE_FIELDS, OFFICIAL_MODEL_NAME, Device, MedSynSlicerLogic  # noqa: E402,F401

LICENSE_SETTINGS_KEY = "MedSyn/AcceptedModelLicenses"
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
        self.job = None
        self.importProcess = None
        self.deviceProbe = None
        self.deviceText = ""
        self.jobStarted = 0.0

    # --- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSynSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSynSlicerLogic(MedSynSlicerParameterNode)

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
        self.ui.randomSeedButton.clicked.connect(self.onRandomSeed)
        self.ui.generateButton.clicked.connect(self.onGenerate)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.settingsCollapsibleButton.contentsCollapsed.connect(self.onSettingsToggled)
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.setFormat("%p%")
        self.ui.cancelButton.enabled = False

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.timeout.connect(self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
        if self.importProcess is not None and self.importProcess.running:
            self.importProcess.cancel()
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
        cancelling = (self.job is not None and self.job.cancelling) or \
            (self.importProcess is not None and self.importProcess.cancelling)
        self.ui.cancelButton.enabled = busy and not cancelling
        self.ui.importWeightsButton.enabled = not busy

    def isBusy(self) -> bool:
        return (self.job is not None and self.job.running) or \
            (self.importProcess is not None and self.importProcess.running)

    def onRandomSeed(self) -> None:
        self._parameterNode.seed = random.randint(0, 2**31 - 1)

    # --- models and device ---------------------------------------------------------------------------------------

    def refreshModels(self) -> None:
        """List the models again (the registry and imported models; read in this process, no torch needed)."""
        try:
            self.logic.listModels()
            error = ""
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
        if not collapsed and self.deviceProbe is None and not self.deviceText:
            try:
                self.deviceProbe = self.logic.startDeviceProbe()
            except Exception as e:  # noqa: BLE001
                self.ui.deviceInfoLabel.text = f"GPU detection failed: {e}"
                return
            self.ui.deviceInfoLabel.text = "detecting GPU..."
            self.pollTimer.start()

    def licenseAccepted(self, info) -> bool:
        """Ask once per model whose licence needs acceptance (e.g. CC-BY-NC weights); remembered in settings."""
        import qt

        if info is None or not info.requires_license_acceptance:
            return True
        settings = qt.QSettings()
        accepted = settings.value(LICENSE_SETTINGS_KEY) or []
        if isinstance(accepted, str):
            accepted = [accepted]
        if info.name in accepted:
            return True
        text = (f"The model '{info.title}' is licensed {info.license or 'non-commercially'}.\n\n"
                "You may use it, and what it generates, for non-commercial research only. "
                "Generated images are synthetic and not for clinical use.\n\nDo you accept this licence?")
        if not slicer.util.confirmYesNoDisplay(text, windowTitle="MedSyn - model licence"):
            return False
        settings.setValue(LICENSE_SETTINGS_KEY, list(accepted) + [info.name])
        return True

    def onImportWeights(self) -> None:
        import qt

        window = slicer.util.mainWindow()
        path = qt.QFileDialog.getExistingDirectory(
            window, "Official MedSyn model folder (results_* checkpoint folders and pretrained_lm)")
        if not path:
            return
        text_encoder = qt.QFileDialog.getExistingDirectory(
            window, "Local CXR-BERT folder (microsoft/BiomedVLP-CXR-BERT-specialized: config.json, vocab.txt, weights)")
        if not text_encoder:
            return
        atlas = qt.QFileDialog.getOpenFileName(
            window, "Optional: the official atlas lung mask (needed to segment real CTs)", "",
            "NIfTI (*.nii *.nii.gz);;All files (*)")
        official = models.ModelInfo(name=OFFICIAL_MODEL_NAME, title="MedSyn official weights",
                                    license="CC-BY-NC-4.0", requires_license_acceptance=True)
        if not self.licenseAccepted(official):
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Could not start the weights import.", waitCursor=True):
            self.importProcess = self.logic.startImportWeights(path, text_encoder, OFFICIAL_MODEL_NAME, atlas or None)
            self.ui.statusLabel.text = f"Importing weights from {path}..."
            self.pollTimer.start()
            self.updateButtons()

    # --- run -----------------------------------------------------------------------------------------------------

    def ensureDependencies(self) -> bool:
        def confirm(text: str) -> bool:
            return slicer.util.confirmOkCancelDisplay(text, windowTitle="MedSyn - install Python packages")

        try:
            status = self.logic.ensureDependencies(confirm)
        except Exception as e:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(f"Installing the Python packages MedSyn needs failed.\n\n{e}",
                                     windowTitle="MedSyn")
            return False
        if status == "declined":
            self.ui.statusLabel.text = "MedSyn needs these packages to run."
            return False
        if status == "restart":
            if slicer.util.confirmYesNoDisplay("Packages were updated that Slicer had already loaded. "
                                               "Restart 3D Slicer now?", windowTitle="MedSyn"):
                slicer.util.restart()
            return False
        return True

    def onGenerate(self) -> None:
        p = self._parameterNode
        if p is None or self.isBusy():
            return
        if not self.ensureDependencies():
            return
        if not self.licenseAccepted(self.logic.modelInfo(p.model)):
            return
        try:
            with slicer.util.WaitCursor():
                self.job = self.logic.start(p)
        except Exception as e:  # noqa: BLE001 - reason and fix in one dialog
            slicer.util.errorDisplay(str(e), windowTitle="MedSyn")
            return
        self.jobStarted = time.monotonic()
        self.ui.statusLabel.text = f"{RUN_BUTTON[p.mode][2]} (seed {p.seed})..."
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = "Starting (loading the model)..."
        self.pollTimer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        """Ask the running job (or import) to stop; the button stays disabled until it has stopped."""
        requested = False
        if self.importProcess is not None:
            requested |= self.importProcess.request_cancel()
        if self.job is not None:
            requested |= self.job.request_cancel()
        if requested:
            self.ui.statusLabel.text = "Cancelling..."
        self.updateButtons()

    def onPoll(self) -> None:
        """QTimer slot: drain events of the running job, import and device probe (never blocks)."""
        if self.deviceProbe is not None and any(e.kind == "exit" for e in self.deviceProbe.poll()):
            probe, self.deviceProbe = self.deviceProbe, None
            try:
                self.deviceText = device.describe_device(device.probe_result(probe))
            except Exception as e:  # noqa: BLE001 - shown; tried again when Settings is opened again
                self.deviceText = ""
                self.ui.deviceInfoLabel.text = str(e)
            else:
                self.ui.deviceInfoLabel.text = self.deviceText
        if self.importProcess is not None:
            for event in self.importProcess.poll():
                if event.kind == "progress":
                    self.ui.progressLabel.text = progress.describe_progress(event.data)
                elif event.kind == "exit":
                    self.onImportFinished(self.importProcess)
        if self.job is not None:
            for event in self.job.process.poll():
                if event.kind == "progress" and not self.job.cancelling:
                    self.ui.progressBar.value = int(1000 * progress.overall_fraction(event.data,
                                                                                     self.job.lowres_only))
                    self.ui.progressLabel.text = progress.describe_progress(event.data)
                elif event.kind == "log":
                    logging.debug("medsyn: %s", event.text)
                elif event.kind == "exit":
                    self.onJobFinished()
                    break
        if not self.isBusy() and self.deviceProbe is None:
            self.pollTimer.stop()
        self.updateButtons()

    def onImportFinished(self, process) -> None:
        self.importProcess = None
        if process.returncode == 0:
            self.ui.statusLabel.text = "Weights imported."
            self.refreshModels()
            if self._parameterNode is not None:
                self._parameterNode.model = OFFICIAL_MODEL_NAME
        elif not process.cancelled:
            message = (process.error or {}).get("message") or "\n".join(list(process.log)[-10:])
            fix = (process.error or {}).get("fix")
            slicer.util.errorDisplay(f"Importing the weights failed.\n\n{message}" + (f"\n\nFix: {fix}" if fix else ""),
                                     windowTitle="MedSyn")
            self.ui.statusLabel.text = "Import failed."
        else:
            self.ui.statusLabel.text = "Import cancelled."

    def onJobFinished(self) -> None:
        job, self.job = self.job, None
        elapsed = progress.format_duration(time.monotonic() - self.jobStarted)
        if job.process.cancelled:
            job.cleanup()
            self.ui.statusLabel.text = "Cancelled: nothing was written."
            self.ui.progressLabel.text = ""
            self.ui.progressBar.value = 0
            return
        try:
            with slicer.util.WaitCursor():
                loaded = self.logic.finishJob(job, self._parameterNode)
        except Exception as e:  # noqa: BLE001
            self.ui.statusLabel.text = "Failed."
            self.ui.progressLabel.text = ""
            slicer.util.errorDisplay(str(e), windowTitle="MedSyn",
                                     detailedText="\n".join(list(job.process.log)[-40:]))
            return
        self.ui.progressBar.value = 1000
        self.ui.progressLabel.text = f"Done in {elapsed}."
        self.ui.statusLabel.text = "\n".join(results.summary(loaded))
        models.record_run_time(loaded.sidecar)
        self.refreshModels()  # the model description shows the time just measured

    # --- conditions in the Segment Editor ------------------------------------------------------------------------

    def onEditCondition(self, channel: Optional[str]) -> None:
        """Hold ``channel`` (lobes / airway / vessels) and open the Segment Editor on it: edit, then Generate."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor.", waitCursor=True):
            segmentId = self.logic.holdForEditing(p, channel)
            self.openSegmentEditor(p.conditionSegmentation, segmentId)

    def onEditRegion(self) -> None:
        """Draw the edit's region: the Segment Editor on the region segment (created on the CT when missing)."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor.", waitCursor=True):
            segmentation, segmentId = self.logic.regionForEditing(p)
            self.openSegmentEditor(segmentation, segmentId, p.editVolume)

    @staticmethod
    def openSegmentEditor(segmentation, segmentId: str, source=None) -> None:
        """Switch to the Segment Editor on ``segmentation`` / ``segmentId``, drawing on ``source`` (default: the
        segmentation's reference volume)."""
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        source = source or segmentation.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        if source is not None:
            setSource = getattr(editor, "setSourceVolumeNode", None) or getattr(editor, "setMasterVolumeNode")
            setSource(source)
        if segmentId:
            editor.setCurrentSegmentID(segmentId)


#
# Test
#

class MedSynSlicerTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: the full generate -> load path with the packaged default model, then Segment and Edit.

    Needs the packaged demo model and the Python packages (installed on first use); the CPU is enough with the
    few steps used here.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GenerateAndLoad()
        self.setUp()
        self.test_SegmentGeneratedCT()
        self.setUp()
        self.test_EditRegionOfGeneratedCT()

    def _logic(self):
        import tempfile

        logic = MedSynSlicerLogic(MedSynSlicerParameterNode)
        status = logic.ensureDependencies(confirm=None)
        self.assertIn(status, ("ok", "restart"))
        p = logic.getParameterNode()
        p.model = "default"
        p.seed = 3
        p.stepsLowres = 4
        p.stepsSuperres = 2
        p.device = Device.AUTO
        p.lowresOnly = False
        p.outputFolder = pathlib.Path(tempfile.mkdtemp(prefix="MedSynSelfTest-", dir=slicer.app.temporaryPath))
        return logic, p

    def _generate(self, logic, p):
        stages = []

        def onEvent(event):
            if event.kind == "progress":
                stages.append(event.data["stage"])
                slicer.app.processEvents()

        loaded = logic.run(p, timeout_s=3600, progress=onEvent)
        self.assertIn("lowres", stages)
        return loaded

    def test_GenerateAndLoad(self):
        self.delayDisplay("MedSyn: generate from a report")
        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Large bilateral pleural effusions"]
        loaded = self._generate(logic, p)

        ct, seg = loaded.ct_node, loaded.segmentation_node
        self.assertEqual(ct.GetName(), "SYNTHETIC MedSyn CT 3")
        self.assertEqual(ct.GetAttribute("synthetic"), "true")
        self.assertEqual(ct.GetAttribute("MedSyn.seed"), "3")
        self.assertEqual(ct.GetAttribute("MedSyn.report"), p.reportText.strip())
        self.assertTrue(ct.GetAttribute("MedSyn.modelSha256"))
        self.assertEqual(ct.GetDisplayNode().GetWindow(), 1400)
        self.assertEqual(ct.GetDisplayNode().GetLevel(), -500)
        array = slicer.util.arrayFromVolume(ct)
        self.assertEqual(array.ndim, 3)
        self.assertGreaterEqual(int(array.min()), -1024)
        self.assertLessEqual(int(array.max()), 600)
        names = sorted(seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(i)).GetName()
                       for i in range(seg.GetSegmentation().GetNumberOfSegments()))
        from MedSynLib.io.segments import SEGMENTS
        self.assertEqual(names, sorted(s.name for s in SEGMENTS))
        self.assertIs(seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()), ct)
        self.assertIs(p.conditionSegmentation, seg)
        self.assertTrue(os.path.isfile(os.path.join(loaded.folder, "medsyn.json")))

        self.delayDisplay("MedSyn: generate again with the airway held")
        logic.holdForEditing(p, "airway")
        self.assertTrue(p.airwaySegmentId)
        p.seed = 4
        p.lowresOnly = True
        again = self._generate(logic, p)
        self.assertEqual(again.ct_node.GetName(), "SYNTHETIC MedSyn CT 4")
        self.delayDisplay("Generate test passed")

    def test_SegmentGeneratedCT(self):
        self.delayDisplay("MedSyn: segment a CT")
        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Normal chest CT"]
        p.lowresOnly = True
        ct = self._generate(logic, p).ct_node
        p.mode = "segment"
        p.inputVolume = ct
        p.outputSegmentation = None
        loaded = logic.run(p, timeout_s=3600)
        seg = loaded.segmentation_node
        self.assertIsNone(loaded.ct_node)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 7)
        self.assertIs(seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()), ct)
        self.assertIs(p.outputSegmentation, seg)
        self.delayDisplay("Segment test passed")

    def test_EditRegionOfGeneratedCT(self):
        self.delayDisplay("MedSyn: edit a region of a CT")
        import numpy as np

        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Normal chest CT"]
        p.lowresOnly = True
        ct = self._generate(logic, p).ct_node
        before = slicer.util.arrayFromVolume(ct).copy()
        p.mode = "edit"
        p.editVolume = ct
        self.assertEqual(logic.whyNotReady(p), "Select the region segment to replace, or press Edit to draw it.")
        segmentation, segmentId = logic.regionForEditing(p)
        region = np.zeros(before.shape, np.uint8)
        k, j, i = before.shape
        region[k // 2 - 4:k // 2 + 4, j // 2 - 4:j // 2 + 4, i // 4 - 4:i // 4 + 4] = 1  # a box in one lung
        slicer.util.updateSegmentBinaryLabelmapFromArray(region, segmentation, segmentId, ct)
        p.editReportText = EXAMPLE_REPORTS["Large bilateral pleural effusions"]
        self.assertEqual(logic.whyNotReady(p), "")
        loaded = logic.run(p, timeout_s=3600)
        edited = loaded.ct_node
        self.assertEqual(edited.GetName(), f"EDITED {ct.GetName()} (MedSyn seed 3)")
        self.assertEqual(edited.GetAttribute("MedSyn.edited"), "true")
        self.assertEqual(edited.GetAttribute("synthetic"), "true")  # the input was synthetic
        array = slicer.util.arrayFromVolume(edited)
        self.assertTrue((array[region == 0] == before[region == 0]).all())
        self.assertFalse((array[region > 0] == before[region > 0]).all())
        self.assertTrue((slicer.util.arrayFromVolume(ct) == before).all())
        self.delayDisplay("Edit test passed")
