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
from MedSynLib.run_settings import RunSettings

from . import conditions, device, models, remote, results
from .anatomy import LOBE_FIELDS, AnatomyChoices, modifying  # noqa: F401 (LOBE_FIELDS: for the module)
from .job import MedSynJob
from .process import MedSynProcess, child_environment, medsyn_command, python_executable
from .progress import Event

MODULE_NAME = "MedSynSlicer"
OFFICIAL_MODEL_NAME = "medsyn-official"
class Device(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"
    REMOTE = remote.DEVICE  # a MedSyn server (MedSynSlicerLib.remote)

    @staticmethod
    def label(value: "Device") -> str:
        return {"auto": "Automatic", "cuda": "GPU (CUDA)", "cpu": "CPU (slow)", remote.DEVICE: remote.LABEL}[value.value]


def unavailable_devices(device_info: Optional[dict]) -> set[Device]:
    """The devices of the Device choice that are not there (the GPU probe found torch but no CUDA GPU); empty
    before the probe has answered."""
    if device_info is not None and device_info.get("torch") and not device_info.get("cuda"):
        return {Device.GPU}
    return set()


class MedSynSlicerLogic(AnatomyChoices):
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
        self.remoteServer: tuple[str, str] = ("", "")  # Device "Remote server": (URL, token), from Slicer's settings
        self.models: list[models.ModelInfo] = []
        self.deviceInfo: Optional[dict] = None  # what the GPU probe found (None: not asked yet)
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
    def settings(p) -> RunSettings:
        """The run settings in the panel (the model's defaults unless the user changed them; a remote run's device
        is the server's choice)."""
        return RunSettings(seed=int(p.seed), steps_lowres=int(p.stepsLowres), steps_sr=int(p.stepsSuperres),
                           guidance=float(p.guidance), device="auto" if p.device == Device.REMOTE else p.device.value,
                           lowres_only=bool(p.lowresOnly))

    @staticmethod
    def keptSettings(p) -> dict:
        """The user's settings, kept when the scene is closed (:meth:`restoreSettings` puts them back)."""
        return {name: getattr(p, name) for name in KEPT_SETTINGS}

    @staticmethod
    def restoreSettings(p, kept: dict) -> None:
        with modifying(p):
            for name, value in kept.items():
                setattr(p, name, value)

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
        with modifying(p):
            if p.model in ("", models.DEFAULT_MODEL):
                p.model = info.name
            p.stepsLowres = int(info.steps_lowres)
            p.stepsSuperres = int(info.steps_sr)
            p.guidance = float(info.guidance)
            p.modelDefaultsOf = info.name
        return True

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

    def newJob(self, p, name: str, force: bool = False) -> MedSynJob:
        """A job writing into the output folder; ``force``: with the command line's override of its checks."""
        python = self.pythonExecutable()
        factory = self.commandFactory or (lambda arguments: medsyn_command(arguments, python))
        env = self.childEnvironment()
        if p.device == Device.REMOTE:  # the same medsyn command, run with --server URL and the token
            url, token = self.remoteServer
            env, local = remote.run_environment(env if env is not None else dict(os.environ), token), factory
            remote.run_arguments([], url)  # no URL: refused now, with the fix
            factory = lambda arguments: local(remote.run_arguments(arguments, url))  # noqa: E731
        try:
            return MedSynJob(output_root=str(p.outputFolder), result_name=name, python=python, env=env,
                             command_factory=(lambda arguments: factory(arguments + ["--force"])) if force else factory)
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

    def whyNotReady(self, p) -> str:
        """What the current tab still needs before it can run ("" when ready), said as the fix in the panel's
        words: its inputs, then the model and the device of Settings."""
        if p.mode == "segment":
            why = "" if p.inputVolume is not None else "Select the CT to segment."
        elif p.mode == "edit":
            why = self.whyEditNotReady(p)
        else:
            why = "" if (p.reportText or "").strip() else "Write or pick a report."
        return why or self.whySettingsCannotRun(p)

    def whySettingsCannotRun(self, p) -> str:
        """"" when the chosen model is installed and the chosen device is there, else what to change."""
        info = self.modelInfo(p.model)
        if info is None:
            return f"Unknown model '{p.model}': choose one under Settings > Model."
        if p.device == Device.REMOTE:  # the server's models and GPUs count, not this computer's
            return "" if all(self.remoteServer) else remote.NOT_SET
        if not info.available:
            return (f"The model '{info.title}' is not installed: choose another under Settings > Model, or add it "
                    "with Settings > Import weights...")
        if p.device in unavailable_devices(self.deviceInfo):
            return "No CUDA GPU was found on this computer: choose Automatic or CPU under Settings > Device."
        return ""

    def start(self, p, force: bool = False) -> MedSynJob:
        """Start the run of the current tab (``p.mode``); ``force``: override the command line's checks (after a
        refusal, "Use anyway")."""
        return getattr(self, RUNS[p.mode])(p, force)

    def startGenerate(self, p, force: bool = False) -> MedSynJob:
        report = (p.reportText or "").strip()
        if not report:
            raise ValueError("The report is empty. Fix: write the findings, or pick an example report.")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job = self.newJob(p, f"SYNTHETIC_MedSyn_seed{int(p.seed)}_{stamp}", force)
        try:
            files = conditions.export_conditions(p.conditionSegmentation, self.conditionSelection(p),
                                                 job.conditions_dir)
            job.held = self.heldChannels(p)
            job.start_generate(report, p.model or models.DEFAULT_MODEL, self.settings(p), files)
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
    def outputFor(p, volume):
        """The segmentation a Segment of ``volume`` writes into: the chosen output when it was made on ``volume``
        (an earlier result) or is a new empty one, else None (a new node: another CT's result is never
        overwritten)."""
        output = p.outputSegmentation
        if output is None:
            return None
        reference = results.reference_of(output)
        empty = reference is None and output.GetSegmentation().GetNumberOfSegments() == 0
        return output if (reference is volume or empty) else None

    def startSegment(self, p, force: bool = False) -> MedSynJob:
        volume = p.inputVolume
        if volume is None:
            raise ValueError("No input CT. Fix: select the CT volume to segment.")
        job = self.newJob(p, f"MedSyn_segmentation_{time.strftime('%Y%m%d-%H%M%S')}", force)
        job.source, job.target = volume, self.outputFor(p, volume)
        try:
            job.start_segment(self._writeInputCT(volume, job), p.model or models.DEFAULT_MODEL, self.settings(p))
        except BaseException:
            job.cleanup()
            raise
        return job

    def startEdit(self, p, force: bool = False) -> MedSynJob:
        """``medsyn edit`` of ``p.editVolume``: the region segment, the edit report and, when an anatomy
        segmentation is chosen, its lobe / airway / vessel segments to keep outside the region."""
        why = self.whyEditNotReady(p)
        if why:
            raise ValueError(why)
        report = (p.editReportText or "").strip()
        job = self.newJob(p, f"EDITED_MedSyn_seed{int(p.seed)}_{time.strftime('%Y%m%d-%H%M%S')}", force)
        try:
            region = conditions.export_segment(p.regionSegmentation, p.regionSegmentId,
                                               os.path.join(job.work_dir, "region.nii.gz"))
            keep = conditions.export_conditions(p.editAnatomySegmentation, self.editAnatomySelection(p),
                                                job.conditions_dir)
            job.start_edit(self._writeInputCT(p.editVolume, job), region, report, p.model or models.DEFAULT_MODEL,
                           self.settings(p), keep)
            job.source = p.editVolume
        except BaseException:
            job.cleanup()
            raise
        return job

    def finishJob(self, job: MedSynJob, p=None, show: bool = True) -> results.LoadedResults:
        """After the job's exit event: move its results into place and load them (raises after a failure or a
        cancel, leaving nothing behind). What the job read and writes into was fixed when it started."""
        return self.loadResults(job.finish(), p, show=show, source=job.source, target=job.target, held=job.held)

    def loadResults(self, folder: str, p=None, show: bool = True, source=None, target=None,
                    held: tuple[str, ...] = ()) -> results.LoadedResults:
        """Load a results folder. ``source``: the CT the run read (default: the tab's CT in ``p``); ``target``: the
        segmentation a Segment writes into (None: a new one). An edit comes back as a new volume beside its CT
        (left as it was), or at the scene's top level when that CT has left the scene. After Generate the new
        segmentation becomes the condition segmentation, the ``held`` channels held again on it."""
        mode = results.read_sidecar(folder).get("mode")
        if mode == "edit":
            source = source if source is not None else (p.editVolume if p is not None else None)
            inScene = source is not None and source.GetScene() is slicer.mrmlScene
            return results.load_edit_results(folder, source if inScene else None, show=show)
        if mode != "segment":
            loaded = results.load_results(folder, show=show)
            if p is not None:  # "generate, edit the airway, generate again with it held"
                self.useConditionSegmentation(p, loaded.segmentation_node, keep=held)
            return loaded
        source = source if source is not None else (p.inputVolume if p is not None else None)
        loaded = results.load_results(folder, input_volume=source, output_segmentation=target, show=show)
        if p is not None and p.inputVolume is source:
            p.outputSegmentation = loaded.segmentation_node
        return loaded

    def run(self, p, timeout_s: float = 3600.0, progress: Optional[Callable[[Event], None]] = None,
            show: bool = True, force: bool = False) -> results.LoadedResults:
        """Run the current tab's job and load the results, blocking; for scripts and the self-test."""
        job = self.start(p, force)
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


KEPT_SETTINGS = ("model", "modelDefaultsOf", "seed", "stepsLowres", "stepsSuperres", "guidance", "device",
                 "lowresOnly", "outputFolder")
"""Parameter names of the Settings section: the user's, kept over a scene close."""
RUNS = {"generate": "startGenerate", "segment": "startSegment", "edit": "startEdit"}
"""Mode (the panel's tab) -> the logic method that starts its run."""
