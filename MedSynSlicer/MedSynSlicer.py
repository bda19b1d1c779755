"""MedSyn for 3D Slicer: text-guided, anatomy-aware synthesis of 3D chest CT, and segmentation of real CTs.

Module (metadata) -> Widget (GUI only, thin) -> Logic (all work, callable headless) -> Test (in-Slicer self-test).
Scene work (condition export, result import, terminology, display, provenance) and the ``medsyn`` process runner
live in ``MedSynSlicerLib`` so they run and are tested without Qt. Inference always runs in a separate
``PythonSlicer -m MedSynLib`` process, never on Slicer's main thread.
"""

import enum
import logging
import os
import pathlib
import random
import sys
import threading
import time
from typing import Annotated, Callable, Optional

import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
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

from MedSynSlicerLib import conditions, dependencies, results, runner  # noqa: E402
from MedSynSlicerLib.conditions import ConditionSelection  # noqa: E402
from MedSynSlicerLib.examples import DEFAULT_REPORT, EXAMPLE_REPORTS  # noqa: E402

LICENSE_SETTINGS_KEY = "MedSyn/AcceptedModelLicenses"
OFFICIAL_MODEL_NAME = "medsyn-official"
LOBE_FIELDS = ("leftUpperLobeSegmentId", "leftLowerLobeSegmentId", "rightUpperLobeSegmentId",
               "rightMiddleLobeSegmentId", "rightLowerLobeSegmentId")
"""Parameter names of the lobe segments, in label order 1..5 (see MedSynLib.io.segments)."""
LOBE_SELECTORS = ("leftUpperLobeSelector", "leftLowerLobeSelector", "rightUpperLobeSelector",
                  "rightMiddleLobeSelector", "rightLowerLobeSelector")


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
            "(MedSyn, IEEE TMI 2024), optionally keeping anatomy you provide as segments; or segment a real CT with "
            "the same model. Every generated image is synthetic and must not be used for diagnosis. "
            "See the <a href=\"https://github.com/medsyn-slicer/MedSyn#use-in-3d-slicer\">documentation</a>.")
        self.parent.acknowledgementText = (
            "MedSyn: Y. Xu et al., \"MedSyn: Text-guided Anatomy-aware Synthesis of High-Fidelity 3D CT Images\", "
            "IEEE Transactions on Medical Imaging, 2024. The official weights are licensed CC-BY-NC-4.0.")


#
# Parameter node
#

class Device(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    @staticmethod
    def label(value: "Device") -> str:
        return {"auto": "Automatic", "cuda": "GPU (CUDA)", "cpu": "CPU (slow)"}[value.value]


@parameterNodeWrapper
class MedSynSlicerParameterNode:
    """All user choices, saved with the scene."""

    mode: str = "generate"  # "generate" or "segment" (the tab)
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
    model: str = "default"
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 42
    stepsLowres: Annotated[int, WithinRange(1, 1000)] = 50
    stepsSuperres: Annotated[int, WithinRange(1, 1000)] = 20
    guidanceScale: Annotated[float, WithinRange(0.0, 15.0)] = 1.0
    device: Device = Device.AUTO
    lowresOnly: bool = False
    outputFolder: pathlib.Path = pathlib.Path(runner.default_output_root())


#
# Widget
#

class MedSynSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Thin: it binds the parameter node, polls the running job with a QTimer and shows results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional["MedSynSlicerLogic"] = None
        self._parameterNode: Optional["MedSynSlicerParameterNode"] = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self.job: Optional[runner.MedSynJob] = None
        self.importProcess: Optional[runner.MedSynProcess] = None
        self.jobStarted = 0.0
        self.models: list[dict] = []
        self.modelsCall: Optional[runner.BackgroundCall] = None
        self.deviceCall: Optional[runner.BackgroundCall] = None

    # --- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSynSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSynSlicerLogic()

        self.ui.exampleReportComboBox.addItem("Choose an example...")
        for title in EXAMPLE_REPORTS:
            self.ui.exampleReportComboBox.addItem(title)
        self.ui.exampleReportComboBox.currentIndexChanged.connect(self.onExampleReport)
        self.ui.modeTabWidget.currentChanged.connect(self.onModeChanged)
        self.ui.conditionSegmentationSelector.currentNodeChanged.connect(self.onConditionSegmentationChanged)
        for name in ("airwaySegmentSelector", "vesselsSegmentSelector") + LOBE_SELECTORS:
            getattr(self.ui, name).currentSegmentChanged.connect(self.onConditionSegmentSelected)
        self.ui.editLobesButton.clicked.connect(lambda: self.onEditCondition("lobes"))
        self.ui.editAirwayButton.clicked.connect(lambda: self.onEditCondition("airway"))
        self.ui.editVesselsButton.clicked.connect(lambda: self.onEditCondition("vessels"))
        self.ui.editConditionsButton.clicked.connect(lambda: self.onEditCondition(None))
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
        self.initializeParameterNode()
        self.setModelItems([])

    def cleanup(self) -> None:
        if self.job is not None and self.job.process is not None and self.job.process.running:
            self.job.cancel()
        self.pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self.job is not None and self.job.process is not None and self.job.process.running:
            self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[MedSynSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
            self.updateGuiFromParameterNode()

    # --- parameter node <-> the widgets that are not bound automatically ---------------------------------------

    def updateGuiFromParameterNode(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingGui:
            return
        p = self._parameterNode
        self._updatingGui = True
        try:
            self.ui.modeTabWidget.currentIndex = 1 if p.mode == "segment" else 0
            segmentation = p.conditionSegmentation
            for name, value in [("airwaySegmentSelector", p.airwaySegmentId),
                                ("vesselsSegmentSelector", p.vesselsSegmentId)] + \
                    [(s, getattr(p, f)) for s, f in zip(LOBE_SELECTORS, LOBE_FIELDS)]:
                selector = getattr(self.ui, name)
                if selector.currentNode() is not segmentation:
                    selector.setCurrentNode(segmentation)
                if selector.currentSegmentID() != value:
                    selector.setCurrentSegmentID(value)
            index = self.ui.modelComboBox.findData(p.model)
            if index >= 0:
                self.ui.modelComboBox.currentIndex = index
        finally:
            self._updatingGui = False
        self.updateConditionsStatus()
        self.updateButtons()

    def onModeChanged(self, index: int) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.mode = "segment" if index == 1 else "generate"

    def onExampleReport(self, index: int) -> None:
        if index <= 0 or self._parameterNode is None:
            return
        self._parameterNode.reportText = list(EXAMPLE_REPORTS.values())[index - 1]
        self.ui.exampleReportComboBox.currentIndex = 0

    def onConditionSegmentationChanged(self, node) -> None:
        if self._updatingGui or self._parameterNode is None or node is self._parameterNode.conditionSegmentation:
            return  # unchanged, or the GUI only reflects the parameter node (e.g. after loading a scene)
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self.clearHeldSegments()
            found = conditions.find_condition_segments(node)
            # lobe selectors are pre-filled (they are only used when "keep the lung lobes" is ticked)
            for label, field in enumerate(LOBE_FIELDS, start=1):
                setattr(self._parameterNode, field, found.lobes.get(label, ""))

    def clearHeldSegments(self) -> None:
        p = self._parameterNode
        p.holdLobes = False
        p.airwaySegmentId = ""
        p.vesselsSegmentId = ""
        for field in LOBE_FIELDS:
            setattr(p, field, "")

    def onConditionSegmentSelected(self, segmentId) -> None:
        if self._updatingGui or self._parameterNode is None:
            return
        p = self._parameterNode
        with slicer.util.NodeModify(p.parameterNode):
            p.airwaySegmentId = self.ui.airwaySegmentSelector.currentSegmentID() or ""
            p.vesselsSegmentId = self.ui.vesselsSegmentSelector.currentSegmentID() or ""
            for selector, field in zip(LOBE_SELECTORS, LOBE_FIELDS):
                setattr(p, field, getattr(self.ui, selector).currentSegmentID() or "")

    def updateConditionsStatus(self) -> None:
        p = self._parameterNode
        selection = self.logic.conditionSelection(p)
        held = []
        if selection.lobes:
            held.append("lobes" if len(selection.lobes) == 5 else f"{len(selection.lobes)} of 5 lobes")
        if selection.airway:
            held.append("airway")
        if selection.vessels:
            held.append("vessels")
        if not held:
            text = "No anatomy is held: the model generates all of it."
        else:
            text = "Keeping: " + ", ".join(held) + ". The model generates the rest around it."
            if p.holdLobes and len(selection.lobes) < 5:
                text += " Missing lobes are held as background."
        self.ui.conditionsStatusLabel.text = text

    def updateButtons(self) -> None:
        p = self._parameterNode
        running = self.isBusy()
        segment = p is not None and p.mode == "segment"
        self.ui.generateButton.text = "Segment" if segment else "Generate"
        if p is None:
            ready, why = False, ""
        elif segment:
            ready, why = p.inputVolume is not None, "Select the CT to segment."
        else:
            ready, why = bool(p.reportText.strip()), "Write or pick a report."
        self.ui.generateButton.enabled = ready and not running
        self.ui.generateButton.toolTip = ("Segment the selected CT into lobes, airway and vessels" if segment
                                          else "Generate a synthetic CT from the report") if ready else why
        self.ui.cancelButton.enabled = running
        self.ui.importWeightsButton.enabled = not running

    def isBusy(self) -> bool:
        return (self.job is not None and self.job.process is not None and self.job.process.running) or \
            (self.importProcess is not None and self.importProcess.running)

    def onRandomSeed(self) -> None:
        self._parameterNode.seed = random.randint(0, 2**31 - 1)

    # --- models and device ---------------------------------------------------------------------------------------

    def onSettingsToggled(self, collapsed: bool) -> None:
        if not collapsed:
            if not self.models and self.modelsCall is None:
                self.refreshModels()
            if self.deviceCall is None:
                self.deviceCall = runner.BackgroundCall(self.logic.deviceInfo)
                self.ui.deviceInfoLabel.text = "detecting GPU..."
                self.pollTimer.start()

    def refreshModels(self) -> None:
        self.modelsCall = runner.BackgroundCall(self.logic.listModels)
        self.ui.modelInfoLabel.text = "Listing models..."
        self.pollTimer.start()

    def setModelItems(self, models: list[dict]) -> None:
        self.models = models
        combo = self.ui.modelComboBox
        self._updatingGui = True
        try:
            combo.clear()
            if not models:
                combo.addItem("default (packaged demo model)", "default")
            for m in models:
                title = m.get("title") or m.get("name")
                if not m.get("available", True):
                    title += " (not installed)"
                combo.addItem(title, m.get("name"))
            saved = self._parameterNode.model if self._parameterNode else ""
            if saved and combo.findData(saved) < 0:
                combo.addItem(saved, saved)  # keep the choice saved in the scene even before models are listed
            index = combo.findData(saved) if saved else -1
            combo.currentIndex = max(index, 0)
        finally:
            self._updatingGui = False
        self.onModelSelected(combo.currentIndex)

    def modelInfo(self, name: str) -> dict:
        return next((m for m in self.models if m.get("name") == name), {})

    def onModelSelected(self, index: int) -> None:
        if index < 0 or self._updatingGui or self._parameterNode is None:
            return
        name = self.ui.modelComboBox.itemData(index) or "default"
        self._parameterNode.model = name
        info = self.modelInfo(name)
        parts = []
        if info.get("license"):
            parts.append(f"Licence: {info['license']}")
        if info and not info.get("available", True):
            parts.append("Not installed: use 'Import weights...'")
        for key, label in (("min_gpu_memory_gb", "needs ~{} GB GPU memory"),):
            if info.get(key):
                parts.append(label.format(info[key]))
        self.ui.modelInfoLabel.text = ". ".join(parts)

    def licenseAccepted(self, info: dict) -> bool:
        """Ask once per model whose licence needs acceptance (e.g. CC-BY-NC weights); remembered in settings."""
        import qt

        if not info.get("requires_license_acceptance"):
            return True
        settings = qt.QSettings()
        accepted = settings.value(LICENSE_SETTINGS_KEY) or []
        if isinstance(accepted, str):
            accepted = [accepted]
        name = info.get("name", "")
        if name in accepted:
            return True
        text = (f"The model '{info.get('title') or name}' is licensed {info.get('license', 'non-commercially')}.\n\n"
                "You may use it, and what it generates, for non-commercial research only. "
                "Generated images are synthetic and not for clinical use.\n\nDo you accept this licence?")
        if not slicer.util.confirmYesNoDisplay(text, windowTitle="MedSyn - model licence"):
            return False
        settings.setValue(LICENSE_SETTINGS_KEY, list(accepted) + [name])
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
        if not self.licenseAccepted({"name": OFFICIAL_MODEL_NAME, "title": "MedSyn official weights",
                                     "license": "CC-BY-NC-4.0", "requires_license_acceptance": True}):
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
        if not self.licenseAccepted(self.modelInfo(p.model)):
            return
        try:
            with slicer.util.WaitCursor():
                self.job = self.logic.startSegment(p) if p.mode == "segment" else self.logic.startGenerate(p)
        except Exception as e:  # noqa: BLE001 - reason and fix in one dialog
            slicer.util.errorDisplay(str(e), windowTitle="MedSyn")
            return
        self.jobStarted = time.monotonic()
        verb = "Segmenting" if p.mode == "segment" else f"Generating seed {p.seed}"
        self.ui.statusLabel.text = f"{verb}..."
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = "Starting (loading the model)..."
        self.pollTimer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        if self.importProcess is not None and self.importProcess.running:
            threading.Thread(target=self.importProcess.cancel, daemon=True).start()
        if self.job is not None and self.job.process is not None and self.job.process.running:
            self.ui.statusLabel.text = "Cancelling..."
            self.ui.cancelButton.enabled = False
            threading.Thread(target=self.job.cancel, daemon=True).start()  # never block the GUI

    def onPoll(self) -> None:
        """QTimer slot: drain events of the running job / import / background queries (never blocks)."""
        if self.modelsCall is not None and self.modelsCall.finished:
            call, self.modelsCall = self.modelsCall, None
            if call.error is not None:
                self.setModelItems([])
                self.ui.modelInfoLabel.text = f"Could not list models: {call.error}"
            else:
                self.setModelItems(call.result or [])
        if self.deviceCall is not None and self.deviceCall.finished:
            call = self.deviceCall
            self.ui.deviceInfoLabel.text = (runner.describe_device(call.result) if call.error is None
                                            else "GPU detection failed")
            if call.error is not None:
                self.deviceCall = None  # try again next time
        if self.importProcess is not None:
            for event in self.importProcess.poll():
                if event.kind == "progress":
                    self.ui.progressLabel.text = runner.describe_progress(event.data)
                elif event.kind == "exit":
                    self.onImportFinished(self.importProcess)
        if self.job is not None and self.job.process is not None:
            for event in self.job.process.poll():
                if event.kind == "progress":
                    self.ui.progressBar.value = int(1000 * runner.overall_fraction(event.data,
                                                                                   self.job.lowres_only))
                    self.ui.progressLabel.text = runner.describe_progress(event.data)
                elif event.kind == "log":
                    logging.debug("medsyn: %s", event.text)
                elif event.kind == "exit":
                    self.onJobFinished()
                    break
        busy = self.isBusy() or self.modelsCall is not None or \
            (self.deviceCall is not None and not self.deviceCall.finished)
        if not busy:
            self.pollTimer.stop()
        self.updateButtons()

    def onImportFinished(self, process: runner.MedSynProcess) -> None:
        self.importProcess = None
        if process.returncode == 0:
            self.ui.statusLabel.text = "Weights imported."
            self._parameterNode.model = OFFICIAL_MODEL_NAME
            self.refreshModels()
        elif not process.cancelled:
            message = (process.error or {}).get("message") or "\n".join(list(process.log)[-10:])
            fix = (process.error or {}).get("fix")
            slicer.util.errorDisplay(f"Importing the weights failed.\n\n{message}" + (f"\n\nFix: {fix}" if fix else ""),
                                     windowTitle="MedSyn")
            self.ui.statusLabel.text = "Import failed."

    def onJobFinished(self) -> None:
        job, self.job = self.job, None
        process = job.process
        elapsed = runner.format_duration(time.monotonic() - self.jobStarted)
        if process.cancelled:
            self.ui.statusLabel.text = "Cancelled: nothing was written."
            self.ui.progressLabel.text = ""
            self.ui.progressBar.value = 0
            return
        try:
            with slicer.util.WaitCursor():
                folder = job.finish()
                loaded = self.logic.loadResults(folder, self._parameterNode)
        except Exception as e:  # noqa: BLE001
            self.ui.statusLabel.text = "Failed."
            self.ui.progressLabel.text = ""
            slicer.util.errorDisplay(str(e), windowTitle="MedSyn",
                                     detailedText="\n".join(list(process.log)[-40:]))
            return
        self.ui.progressBar.value = 1000
        self.ui.progressLabel.text = f"Done in {elapsed}."
        what = loaded.ct_node.GetName() if loaded.ct_node is not None else loaded.segmentation_node.GetName()
        self.ui.statusLabel.text = f"Loaded '{what}'. Files: {folder}"

    # --- conditions in the Segment Editor ------------------------------------------------------------------------

    def onEditCondition(self, channel: Optional[str]) -> None:
        """Hold ``channel`` (lobes / airway / vessels) and open the Segment Editor on it: edit, then Generate."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not open the Segment Editor.", waitCursor=True):
            segmentId = self.logic.holdForEditing(p, channel)
            segmentation = p.conditionSegmentation
            slicer.util.selectModule("SegmentEditor")
            editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self()
            editor = editorWidget.editor
            editor.setSegmentationNode(segmentation)
            reference = segmentation.GetNodeReference(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
            if reference is not None:
                setSource = getattr(editor, "setSourceVolumeNode", None) or getattr(editor, "setMasterVolumeNode")
                setSource(reference)
            if segmentId:
                editor.setCurrentSegmentID(segmentId)


#
# Logic
#

class MedSynSlicerLogic(ScriptedLoadableModuleLogic):
    """All the work, Qt-free: conditions -> ``medsyn`` process -> results in the scene.

    ``startGenerate`` / ``startSegment`` return a running :class:`MedSynSlicerLib.runner.MedSynJob`; poll its
    process (``job.process.poll()``), then call ``job.finish()`` and :meth:`loadResults`. :meth:`run` does all of
    it blocking (scripts, self-test).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.python: Optional[str] = None  # None: PythonSlicer inside Slicer, sys.executable outside
        self.environment: Optional[dict] = None  # None: Slicer's startup environment when available
        self.commandFactory: Optional[Callable[[list], list]] = None  # tests: run a stand-in instead of medsyn

    def getParameterNode(self) -> MedSynSlicerParameterNode:
        return MedSynSlicerParameterNode(super().getParameterNode())

    # --- settings -------------------------------------------------------------------------------------------------

    @staticmethod
    def settings(p: MedSynSlicerParameterNode) -> runner.Settings:
        return runner.Settings(model=p.model or "default", seed=int(p.seed), steps_lowres=int(p.stepsLowres),
                               steps_sr=int(p.stepsSuperres), guidance=float(p.guidanceScale),
                               device=p.device.value, lowres_only=bool(p.lowresOnly))

    @staticmethod
    def conditionSelection(p: Optional[MedSynSlicerParameterNode]) -> ConditionSelection:
        if p is None or p.conditionSegmentation is None:
            return ConditionSelection()
        segmentation = p.conditionSegmentation.GetSegmentation()

        def valid(segmentId: str) -> str:
            return segmentId if segmentId and segmentation.GetSegment(segmentId) is not None else ""

        lobes = {}
        if p.holdLobes:
            for label, field in enumerate(LOBE_FIELDS, start=1):
                if valid(getattr(p, field)):
                    lobes[label] = getattr(p, field)
        return ConditionSelection(lobes=lobes, airway=valid(p.airwaySegmentId), vessels=valid(p.vesselsSegmentId))

    def childEnvironment(self) -> Optional[dict]:
        if self.environment is not None:
            return self.environment
        try:
            return slicer.util.startupEnvironment() if getattr(slicer, "app", None) is not None else None
        except Exception:  # noqa: BLE001
            return None

    def newJob(self, p: MedSynSlicerParameterNode, name: str) -> runner.MedSynJob:
        return runner.MedSynJob(output_root=str(p.outputFolder), result_name=name, python=self.python,
                                env=self.childEnvironment(), command_factory=self.commandFactory)

    # --- dependencies ---------------------------------------------------------------------------------------------

    def ensureDependencies(self, confirm: Optional[Callable[[str], bool]] = None) -> str:
        """Install what the command line needs: "ok", "declined" or "restart" (packages were already loaded).

        torch through the PyTorch extension's PyTorchUtils (matching the GPU driver) when present, else pip;
        other packages with ``pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install``; packages that Slicer
        ships (SimpleITK, numpy, vtk, requests) are never replaced. ``confirm(text)`` asks once for everything.
        """
        missing = dependencies.missing_requirements()
        if not missing["torch"] and not missing["pip"]:
            return "ok"
        if confirm is not None and not confirm(
                "MedSyn needs these Python packages (installed once into Slicer's Python):\n\n"
                + dependencies.describe_missing(missing) + "\n\nThis can take several minutes. Install now?"):
            return "declined"
        loaded_before = {r.split(">")[0].split("=")[0] for r in missing["pip"] + missing["torch"]} & set(sys.modules)
        if missing["torch"]:
            self._installTorch()
        if missing["pip"]:
            self._pipInstall(missing["pip"])
        still = dependencies.missing_requirements()
        if still["torch"] or still["pip"]:
            raise RuntimeError("Still missing after installation: " + dependencies.describe_missing(still)
                               + "\nFix: restart 3D Slicer and try again; check the Python console for pip errors.")
        return "restart" if loaded_before else "ok"

    @staticmethod
    def _installTorch() -> None:
        try:
            import PyTorchUtils
        except ImportError:
            logging.warning("MedSyn: the PyTorch extension is not installed; installing torch with pip")
            slicer.util.pip_install(dependencies.TORCH_REQUIREMENT)
            return
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=False,
                                            torchVersionRequirement=dependencies.TORCH_REQUIREMENT[len("torch"):])
            if torch is None:
                raise RuntimeError("PyTorch could not be installed. Fix: install it from the PyTorch module "
                                   "(Utilities > PyTorch Utils), then restart 3D Slicer.")

    @staticmethod
    def _pipInstall(requirements: list[str]) -> None:
        packaging_module = getattr(slicer, "packaging", None)
        pip_ensure = getattr(packaging_module, "pip_ensure", None) or getattr(slicer.util, "pip_ensure", None)
        if pip_ensure is not None:
            from packaging.requirements import Requirement

            reqs = [Requirement(r) for r in requirements]
            try:
                pip_ensure(reqs, skip_packages=list(dependencies.SHIPPED_WITH_SLICER), prompt_install=False,
                           requester="MedSyn")
                return
            except TypeError:  # an older signature
                pip_ensure(reqs, requester="MedSyn")
                return
        slicer.util.pip_install(requirements)

    # --- models ---------------------------------------------------------------------------------------------------

    def listModels(self) -> list[dict]:
        return runner.list_models(self.python, self.childEnvironment())

    def deviceInfo(self) -> dict:
        return runner.probe_device(self.python, runner.child_environment(self.childEnvironment()))

    def startImportWeights(self, path: str, text_encoder: str, name: str,
                           atlas: Optional[str] = None) -> runner.MedSynProcess:
        command = runner.medsyn_command(runner.import_weights_arguments(path, text_encoder, name, atlas), self.python)
        return runner.MedSynProcess(command, env=runner.child_environment(self.childEnvironment())).start()

    # --- run ------------------------------------------------------------------------------------------------------

    def startGenerate(self, p: MedSynSlicerParameterNode) -> runner.MedSynJob:
        report = (p.reportText or "").strip()
        if not report:
            raise ValueError("The report is empty. Fix: write the findings, or pick an example report.")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job = self.newJob(p, f"SYNTHETIC_MedSyn_seed{int(p.seed)}_{stamp}")
        try:
            files = conditions.export_conditions(p.conditionSegmentation, self.conditionSelection(p),
                                                 job.conditions_dir)
            job.start_generate(report, self.settings(p), files)
        except BaseException:
            job.cleanup()
            raise
        return job

    def startSegment(self, p: MedSynSlicerParameterNode) -> runner.MedSynJob:
        volume = p.inputVolume
        if volume is None:
            raise ValueError("No input CT. Fix: select the CT volume to segment.")
        job = self.newJob(p, f"MedSyn_segmentation_{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            ctFile = os.path.join(job.work_dir, "input_ct.nrrd")
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(ctFile)
            storage.SetUseCompression(False)
            if not storage.WriteData(volume):
                raise OSError(f"Could not write the input CT to {ctFile}")
            job.start_segment(ctFile, self.settings(p))
        except BaseException:
            job.cleanup()
            raise
        return job

    def loadResults(self, folder: str, p: Optional[MedSynSlicerParameterNode] = None,
                    show: bool = True) -> results.LoadedResults:
        """Load a results folder; after Generate the new segmentation becomes the condition segmentation."""
        segmentMode = results.read_sidecar(folder).get("mode") == "segment"
        loaded = results.load_results(
            folder,
            input_volume=p.inputVolume if (p is not None and segmentMode) else None,
            output_segmentation=p.outputSegmentation if (p is not None and segmentMode) else None,
            show=show)
        if p is not None:
            with slicer.util.NodeModify(p.parameterNode):
                if segmentMode:
                    p.outputSegmentation = loaded.segmentation_node
                else:
                    # "generate, edit the airway, generate again with it held": the result is ready as condition
                    p.conditionSegmentation = loaded.segmentation_node
                    found = conditions.find_condition_segments(loaded.segmentation_node)
                    p.holdLobes = False
                    p.airwaySegmentId = ""
                    p.vesselsSegmentId = ""
                    for label, field in enumerate(LOBE_FIELDS, start=1):
                        setattr(p, field, found.lobes.get(label, ""))
        return loaded

    def holdForEditing(self, p: MedSynSlicerParameterNode, channel: Optional[str]) -> str:
        """Mark ``channel`` as held (creating an empty segment if missing); returns the segment ID to edit."""
        segmentationNode = p.conditionSegmentation
        if segmentationNode is None:
            raise ValueError("No condition segmentation. Fix: generate once, or select a segmentation.")
        if channel is None:
            return ""
        found = conditions.find_condition_segments(segmentationNode)
        segmentation = segmentationNode.GetSegmentation()

        def ensure(info) -> str:
            segmentId = segmentation.GetSegmentIdBySegmentName(info.name)
            if not segmentId:
                segmentId = segmentation.AddEmptySegment(info.segment_id, info.name, list(info.color))
                results.style_segment(segmentation.GetSegment(segmentId), info)
            return segmentId

        with slicer.util.NodeModify(p.parameterNode):
            if channel == "lobes":
                p.holdLobes = True
                for info, field in zip(conditions.LOBE_SEGMENTS, LOBE_FIELDS):
                    if not getattr(p, field):
                        setattr(p, field, found.lobes.get(info.label) or ensure(info))
                return getattr(p, LOBE_FIELDS[0])
            if channel == "airway":
                p.airwaySegmentId = p.airwaySegmentId or found.airway or ensure(conditions.AIRWAY_SEGMENT)
                return p.airwaySegmentId
            if channel == "vessels":
                p.vesselsSegmentId = p.vesselsSegmentId or found.vessels or ensure(conditions.VESSELS_SEGMENT)
                return p.vesselsSegmentId
        raise ValueError(f"Unknown condition channel {channel!r}")

    def run(self, p: MedSynSlicerParameterNode, timeout_s: float = 3600.0,
            progress: Optional[Callable[[runner.Event], None]] = None, show: bool = True) -> results.LoadedResults:
        """Generate or segment (by ``p.mode``) and load the results, blocking; for scripts and the self-test."""
        job = self.startSegment(p) if p.mode == "segment" else self.startGenerate(p)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                events = job.process.poll()
                for event in events:
                    if progress is not None:
                        progress(event)
                if any(e.kind == "exit" for e in events):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"MedSyn did not finish within {timeout_s:.0f} s")
                if getattr(slicer, "app", None) is not None:
                    slicer.app.processEvents()
                time.sleep(0.1)
        except BaseException:
            job.cancel()
            raise
        folder = job.finish()
        return self.loadResults(folder, p, show=show)


#
# Test
#

class MedSynSlicerTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: the full generate -> load path with the packaged default model, then Segment.

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

    def _logic(self):
        import tempfile

        logic = MedSynSlicerLogic()
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
