"""MedSynSlicerLogic: all the work of the module, Qt-free and callable headless (scripts, the self-test, pytest).

It reads the user's choices from the module's parameter node (``MedSynSlicerParameterNode`` in MedSynSlicer.py,
or any object with the same attributes) and does: model list and sampler defaults, condition export, starting the
``medsyn`` process (:class:`.job.MedSynJob`), loading its results into the scene, holding anatomy for editing.
Installing the Python packages the command line needs is :mod:`.dependencies`' job. One run per tab: :data:`RUNS`
maps a mode (the tab) to the method that starts it, so a new tab is one entry there and one start method here.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from typing import Callable, Optional

import slicer

from . import conditions, device, models, results
from .conditions import ConditionSelection
from .job import MedSynJob, Settings
from .process import MedSynProcess, child_environment, medsyn_command, python_executable
from .progress import Event

MODULE_NAME = "MedSynSlicer"
OFFICIAL_MODEL_NAME = "medsyn-official"
LOBE_FIELDS = ("leftUpperLobeSegmentId", "leftLowerLobeSegmentId", "rightUpperLobeSegmentId",
               "rightMiddleLobeSegmentId", "rightLowerLobeSegmentId")
"""Parameter names of the lobe segments, in label order 1..5 (see MedSynLib.io.segments)."""


class Device(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    @staticmethod
    def label(value: "Device") -> str:
        return {"auto": "Automatic", "cuda": "GPU (CUDA)", "cpu": "CPU (slow)"}[value.value]


def _modifying(p):
    """One Modified event for several parameter changes."""
    return slicer.util.NodeModify(p.parameterNode)


class MedSynSlicerLogic:
    """Conditions -> ``medsyn`` process -> results in the scene.

    ``start(p)`` returns a running :class:`.job.MedSynJob`; poll ``job.process.poll()`` until the ``exit`` event,
    then :meth:`finishJob`. :meth:`run` does all of it blocking (scripts, self-test).

    ``parameterNodeClass``: wraps the module's ``vtkMRMLScriptedModuleNode`` (``MedSynSlicerParameterNode``);
    None returns the plain node.
    """

    def __init__(self, parameterNodeClass: Optional[Callable] = None) -> None:
        self.parameterNodeClass = parameterNodeClass
        self.python: Optional[str] = None  # None: PythonSlicer inside Slicer, sys.executable outside
        self.environment: Optional[dict] = None  # None: Slicer's startup environment when available
        self.commandFactory: Optional[Callable[[list], list]] = None  # tests: run a stand-in instead of medsyn
        self.models: list[models.ModelInfo] = []
        self._folderModels: dict[str, models.ModelInfo] = {}

    # --- parameter node -------------------------------------------------------------------------------------------

    def getParameterNode(self):
        """The module's singleton parameter node in ``slicer.mrmlScene`` (created when missing)."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(scene.GenerateUniqueName(MODULE_NAME))
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = scene.AddNode(node)
        elif node.GetAttribute("ModuleName") != MODULE_NAME:  # removed by a scene close
            node.SetAttribute("ModuleName", MODULE_NAME)
        if self.parameterNodeClass is None:
            return node
        p = self.parameterNodeClass(node)
        self.applyModelDefaults(p)  # a new node: the default model's sampler settings
        return p

    @staticmethod
    def settings(p) -> Settings:
        return Settings(model=p.model or models.DEFAULT_MODEL, seed=int(p.seed), steps_lowres=int(p.stepsLowres),
                        steps_sr=int(p.stepsSuperres), guidance=float(p.guidanceScale),
                        device=p.device.value, lowres_only=bool(p.lowresOnly))

    # --- models and their defaults --------------------------------------------------------------------------------

    def listModels(self) -> list[models.ModelInfo]:
        """Read the model registry (in this process, no torch); kept in :attr:`models`."""
        self.models = models.list_models()
        return self.models

    def modelInfo(self, name: str) -> Optional[models.ModelInfo]:
        """The listed model ``name`` (or a model folder given by path), None if unknown."""
        info = models.find_model(self.models, name or models.DEFAULT_MODEL)
        if info is None and name and os.path.isfile(os.path.join(name, "model.json")):
            if name not in self._folderModels:
                self._folderModels[name] = models.model_from_folder(name)
            info = self._folderModels[name]
        return info

    def applyModelDefaults(self, p) -> bool:
        """Fill the sampler fields with the chosen model's ``model.json`` defaults, once per model choice.

        ``p.modelDefaultsOf`` remembers the model whose defaults are in the fields, so the user's (or a script's)
        changes stay until another model is chosen. The panel calls this whenever the parameter node changes;
        :meth:`getParameterNode` calls it too. Returns True when the fields were set.
        """
        if not self.models:
            try:
                self.listModels()
            except Exception as e:  # noqa: BLE001 - the panel says it; a run then uses the fields as they are
                logging.warning("MedSyn: could not list the models: %s", e)
        info = self.modelInfo(p.model)
        if info is None or info.steps_lowres is None or p.modelDefaultsOf == info.name:
            return False
        with _modifying(p):
            if p.model in ("", models.DEFAULT_MODEL):
                p.model = info.name
            p.stepsLowres = int(info.steps_lowres)
            p.stepsSuperres = int(info.steps_sr)
            p.guidanceScale = float(info.guidance)
            p.modelDefaultsOf = info.name
        return True

    # --- conditions -----------------------------------------------------------------------------------------------

    @staticmethod
    def conditionSelection(p) -> ConditionSelection:
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

    def describeConditions(self, p) -> str:
        """What will be kept, in a sentence for the panel."""
        selection = self.conditionSelection(p)
        held = []
        if selection.lobes:
            held.append("lobes" if len(selection.lobes) == 5 else f"{len(selection.lobes)} of 5 lobes")
        if selection.airway:
            held.append("airway")
        if selection.vessels:
            held.append("vessels")
        if not held:
            return "No anatomy is held: the model generates all of it."
        text = "Keeping: " + ", ".join(held) + ". The model generates the rest around it."
        if p.holdLobes and len(selection.lobes) < 5:
            text += " Missing lobes are held as background."
        return text

    @staticmethod
    def useConditionSegmentation(p, node) -> None:
        """Make ``node`` the condition segmentation: nothing is held (the old segment IDs belong to the old
        node); the lobe fields are pre-filled with its lobe segments, used once "keep the lung lobes" is ticked."""
        found = conditions.find_condition_segments(node) if node is not None else ConditionSelection()
        with _modifying(p):
            p.conditionSegmentation = node
            p.holdLobes = False
            p.airwaySegmentId = ""
            p.vesselsSegmentId = ""
            for label, field in enumerate(LOBE_FIELDS, start=1):
                setattr(p, field, found.lobes.get(label, ""))

    def holdForEditing(self, p, channel: Optional[str]) -> str:
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

        with _modifying(p):
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

    # --- the child process ----------------------------------------------------------------------------------------

    def childEnvironment(self) -> Optional[dict]:
        """Slicer's startup environment (main thread only: it calls into the application), else None."""
        if self.environment is not None:
            return self.environment
        if getattr(slicer, "app", None) is None:
            return None
        try:
            return slicer.util.startupEnvironment()
        except Exception:  # noqa: BLE001 - no launcher environment: use this process's
            return None

    def pythonExecutable(self) -> str:
        """PythonSlicer inside Slicer (main thread only), else this interpreter."""
        if self.python:
            return self.python
        app = getattr(slicer, "app", None)
        return python_executable(getattr(app, "slicerHome", None) if app is not None else None)

    def newJob(self, p, name: str) -> MedSynJob:
        try:
            return MedSynJob(output_root=str(p.outputFolder), result_name=name, python=self.pythonExecutable(),
                             env=self.childEnvironment(), command_factory=self.commandFactory)
        except OSError as e:
            raise OSError(f"Cannot write results to the output folder {p.outputFolder} ({e.strerror or e}). "
                          "Fix: choose a folder you can write to under Settings > Output folder.") from None

    def startDeviceProbe(self) -> MedSynProcess:
        """Which GPU the child would use: poll the returned process, then :func:`.device.probe_result`."""
        return device.start_probe(self.pythonExecutable(), child_environment(self.childEnvironment()))

    def startImportWeights(self, path: str, text_encoder: str, name: str,
                           atlas: Optional[str] = None) -> MedSynProcess:
        command = medsyn_command(models.import_weights_arguments(path, text_encoder, name, atlas),
                                 self.pythonExecutable())
        return MedSynProcess(command, env=child_environment(self.childEnvironment())).start()

    # --- runs -----------------------------------------------------------------------------------------------------

    @staticmethod
    def whyNotReady(p) -> str:
        """What the current tab still needs before it can run ("" when ready), said as the fix."""
        if p.mode == "segment":
            return "" if p.inputVolume is not None else "Select the CT to segment."
        if p.mode == "edit":
            return MedSynSlicerLogic.whyEditNotReady(p)
        return "" if (p.reportText or "").strip() else "Write or pick a report."

    def start(self, p) -> MedSynJob:
        """Start the run of the current tab (``p.mode``)."""
        return getattr(self, RUNS[p.mode])(p)

    def startGenerate(self, p) -> MedSynJob:
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

    @staticmethod
    def _writeInputCT(volume, job: MedSynJob) -> str:
        """The input CT as an uncompressed NRRD in the job's work folder (its own geometry and pixel type)."""
        ctFile = os.path.join(job.work_dir, "input_ct.nrrd")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(ctFile)
        storage.SetUseCompression(False)
        if not storage.WriteData(volume):
            raise OSError(f"Could not write the input CT to {ctFile}")
        return ctFile

    @staticmethod
    def whyEditNotReady(p) -> str:
        """What the edit tab still needs ("" when ready): the CT, a non-empty region segment and the report."""
        if p.editVolume is None:
            return "Select the CT to edit."
        segmentation, segmentId = p.regionSegmentation, p.regionSegmentId
        if segmentation is None or not segmentId or segmentation.GetSegmentation().GetSegment(segmentId) is None:
            return "Select the region segment to replace, or press Edit to draw it."
        if conditions.segment_is_empty(segmentation, segmentId):
            name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
            return f"The region segment '{name}' is empty: paint it in the Segment Editor (Edit)."
        return "" if (p.editReportText or "").strip() else "Write the report of the edited scan."

    def startSegment(self, p) -> MedSynJob:
        volume = p.inputVolume
        if volume is None:
            raise ValueError("No input CT. Fix: select the CT volume to segment.")
        job = self.newJob(p, f"MedSyn_segmentation_{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            job.start_segment(self._writeInputCT(volume, job), self.settings(p))
        except BaseException:
            job.cleanup()
            raise
        return job

    def startEdit(self, p) -> MedSynJob:
        """``medsyn edit`` of ``p.editVolume``: the region segment, the edit report and, when an anatomy
        segmentation is chosen, its lobe / airway / vessel segments to keep outside the region."""
        why = self.whyEditNotReady(p)
        if why:
            raise ValueError(why)
        report = (p.editReportText or "").strip()
        job = self.newJob(p, f"EDITED_MedSyn_seed{int(p.seed)}_{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            region = conditions.export_segment(p.regionSegmentation, p.regionSegmentId,
                                               os.path.join(job.work_dir, "region.nii.gz"))
            keep = conditions.export_conditions(p.editAnatomySegmentation, self.editAnatomySelection(p),
                                                job.conditions_dir)
            job.start_edit(self._writeInputCT(p.editVolume, job), region, report, self.settings(p), keep)
            job.source = p.editVolume
        except BaseException:
            job.cleanup()
            raise
        return job

    # --- the edit tab ---------------------------------------------------------------------------------------------

    @staticmethod
    def editAnatomySelection(p) -> ConditionSelection:
        """The lobe, airway and vessel segments of the anatomy segmentation (found by name or terminology) that
        are kept outside the region; empty ones are skipped."""
        node = p.editAnatomySegmentation
        if node is None:
            return ConditionSelection()
        found = conditions.find_condition_segments(node)
        filled = lambda segmentId: bool(segmentId) and not conditions.segment_is_empty(node, segmentId)  # noqa: E731
        return ConditionSelection(lobes={k: v for k, v in found.lobes.items() if filled(v)},
                                  airway=found.airway if filled(found.airway) else "",
                                  vessels=found.vessels if filled(found.vessels) else "")

    def describeEdit(self, p) -> str:
        """What an edit will replace and keep, in a sentence for the panel."""
        why = self.whyEditNotReady(p)
        if why:
            return why
        selection = conditions.find_condition_segments(p.editAnatomySegmentation)  # by name: cheap on every change
        kept = (["lobes" if len(selection.lobes) == 5 else f"{len(selection.lobes)} of 5 lobes"]
                if selection.lobes else []) + [n for n in ("airway", "vessels") if getattr(selection, n)]
        name = p.regionSegmentation.GetSegmentation().GetSegment(p.regionSegmentId).GetName()
        return (f"The model replaces '{name}' of '{p.editVolume.GetName()}' and keeps the CT"
                + (", " + ", ".join(kept) if kept else "") + " outside it. The result is a new volume marked "
                "EDITED; the original is not changed.")

    @staticmethod
    def useRegionSegmentation(p, node) -> None:
        """Make ``node`` the segmentation holding the region, with its segment "Edited region" (or its only
        segment) chosen; otherwise the user picks the segment."""
        segmentId = ""
        if node is not None:
            segmentation = node.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            segmentId = segmentation.GetSegmentIdBySegmentName(results.REGION_SEGMENT_NAME) or \
                (ids[0] if len(ids) == 1 else "")
        with _modifying(p):
            p.regionSegmentation = node
            p.regionSegmentId = segmentId

    def regionForEditing(self, p) -> tuple:
        """The region segment to draw on (a new segmentation on the CT and an empty segment 'Edited region' when
        none is chosen); returns (segmentation node, segment ID)."""
        volume = p.editVolume
        if volume is None:
            raise ValueError("No CT to edit. Fix: select the CT first, then draw the region on it.")
        segmentationNode = p.regionSegmentation
        with _modifying(p):
            if segmentationNode is None:
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                      f"{volume.GetName()} edit region")
                segmentationNode.CreateDefaultDisplayNodes()
                results.set_reference(segmentationNode, volume)
                p.regionSegmentation = segmentationNode
            segmentation = segmentationNode.GetSegmentation()
            if not p.regionSegmentId or segmentation.GetSegment(p.regionSegmentId) is None:
                p.regionSegmentId = segmentation.AddEmptySegment("", results.REGION_SEGMENT_NAME,
                                                                 list(results.REGION_COLOR))
        return segmentationNode, p.regionSegmentId

    def finishJob(self, job: MedSynJob, p=None, show: bool = True) -> results.LoadedResults:
        """After the job's exit event: move its results into place and load them (raises after a failure or a
        cancel, leaving nothing behind)."""
        return self.loadResults(job.finish(), p, show=show, source=job.source)

    def loadResults(self, folder: str, p=None, show: bool = True, source=None) -> results.LoadedResults:
        """Load a results folder; after Generate the new segmentation becomes the condition segmentation. An edit
        comes back as a new volume beside the CT it was made from (``source``, default ``p.editVolume``; left as
        it was), or at the scene's top level when that CT has left the scene."""
        mode = results.read_sidecar(folder).get("mode")
        if mode == "edit":
            source = source if source is not None else (p.editVolume if p is not None else None)
            inScene = source is not None and source.GetScene() is slicer.mrmlScene
            return results.load_edit_results(folder, source if inScene else None, show=show)
        segmentMode = mode == "segment"
        loaded = results.load_results(
            folder,
            input_volume=p.inputVolume if (p is not None and segmentMode) else None,
            output_segmentation=p.outputSegmentation if (p is not None and segmentMode) else None,
            show=show)
        if p is not None:
            if segmentMode:
                p.outputSegmentation = loaded.segmentation_node
            else:
                # "generate, edit the airway, generate again with it held": the result is ready as condition
                self.useConditionSegmentation(p, loaded.segmentation_node)
        return loaded

    def run(self, p, timeout_s: float = 3600.0, progress: Optional[Callable[[Event], None]] = None,
            show: bool = True) -> results.LoadedResults:
        """Run the current tab's job and load the results, blocking; for scripts and the self-test."""
        job = self.start(p)
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
        return self.finishJob(job, p, show=show)


RUNS = {"generate": "startGenerate", "segment": "startSegment", "edit": "startEdit"}
"""Mode (the panel's tab) -> the logic method that starts its run."""
