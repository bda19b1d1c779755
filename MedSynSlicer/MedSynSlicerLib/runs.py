"""The processes the panel starts (a run, a weights import, a GPU probe) and the text it shows about them.

:class:`PanelRuns` is Qt-free: the Widget calls :meth:`PanelRuns.poll` from a QTimer and copies :attr:`PanelRuns.view`
into its labels; dialogs the user has to see are queued in :attr:`PanelRuns.alerts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Callable, Optional

from . import device, models, progress, results
from .job import MedSynJob
from .logic import OFFICIAL_MODEL_NAME
from .process import MedSynProcess

PROGRESS_RANGE = 1000
"""The progress bar's maximum (per mille of the run)."""


@dataclasses.dataclass
class PanelView:
    """What the panel shows about its processes."""

    status: str = ""
    progress: int = 0  # 0..PROGRESS_RANGE
    progress_text: str = ""
    device_text: str = ""


@dataclasses.dataclass
class Alert:
    """A dialog for the user: the message and, optionally, the last lines of the process output."""

    message: str
    details: str = ""


class PanelRuns:
    """One run at a time (``job``), a weights import and a GPU probe; :meth:`poll` drains their events.

    ``logic``: the module's ``MedSynSlicerLogic``; ``parameterNode``: a callable returning the parameter node the
    results belong to (None when there is none).
    """

    def __init__(self, logic, parameterNode: Callable[[], object]) -> None:
        self.logic = logic
        self.parameterNode = parameterNode
        self.view = PanelView()
        self.alerts: list[Alert] = []
        self.job: Optional[MedSynJob] = None
        self.importProcess: Optional[MedSynProcess] = None
        self.deviceProbe: Optional[MedSynProcess] = None
        self.deviceKnown = False
        self.jobStarted = 0.0
        self.modelsChanged: Callable[[], None] = lambda: None  # called after an import or a run (times measured)
        self.waitCursor: Callable = contextlib.nullcontext  # the Widget's slicer.util.WaitCursor while loading

    @property
    def busy(self) -> bool:
        return (self.job is not None and self.job.running) or \
            (self.importProcess is not None and self.importProcess.running)

    @property
    def cancelling(self) -> bool:
        return (self.job is not None and self.job.cancelling) or \
            (self.importProcess is not None and self.importProcess.cancelling)

    @property
    def polling(self) -> bool:
        """Whether anything is left to poll."""
        return self.busy or self.deviceProbe is not None

    # --- starting ------------------------------------------------------------------------------------------------

    def startJob(self, p, busyText: str) -> None:
        """Start the run of the current tab (raises with the reason and fix); ``busyText``: e.g. "Generating"."""
        self.job = self.logic.start(p)
        self.jobStarted = time.monotonic()
        self.view.status = f"{busyText} (seed {p.seed})..."
        self.view.progress = 0
        self.view.progress_text = "Starting (loading the model)..."

    def startImport(self, path: str, textEncoder: str, name: str, atlas: Optional[str]) -> None:
        self.importProcess = self.logic.startImportWeights(path, textEncoder, name, atlas)
        self.view.status = f"Importing weights from {path}..."

    def startDeviceProbe(self) -> bool:
        """Ask which GPU the child would use, once (again after a failure); True when a probe started."""
        if self.deviceProbe is not None or self.deviceKnown:
            return False
        try:
            self.deviceProbe = self.logic.startDeviceProbe()
        except Exception as e:  # noqa: BLE001
            self.view.device_text = f"GPU detection failed: {e}"
            return False
        self.view.device_text = "detecting GPU..."
        return True

    def requestCancel(self) -> None:
        """Ask the running job (or import) to stop; the Cancel button stays disabled until it has stopped."""
        requested = False
        if self.importProcess is not None:
            requested |= self.importProcess.request_cancel()
        if self.job is not None:
            requested |= self.job.request_cancel()
        if requested:
            self.view.status = "Cancelling..."

    def stopAll(self) -> None:
        """Module clean-up: stop what runs, waiting for it."""
        if self.job is not None and self.job.running:
            self.job.cancel()
        if self.importProcess is not None and self.importProcess.running:
            self.importProcess.cancel()

    # --- events --------------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Drain the events of the job, the import and the device probe (never blocks)."""
        if self.deviceProbe is not None and any(e.kind == "exit" for e in self.deviceProbe.poll()):
            probe, self.deviceProbe = self.deviceProbe, None
            try:
                self.view.device_text = device.describe_device(device.probe_result(probe))
                self.deviceKnown = True
            except Exception as e:  # noqa: BLE001 - shown; tried again when Settings is opened again
                self.view.device_text = str(e)
        if self.importProcess is not None:
            for event in self.importProcess.poll():
                if event.kind == "progress":
                    self.view.progress_text = progress.describe_progress(event.data)
                elif event.kind == "exit":
                    self.importFinished(self.importProcess)
        if self.job is not None:
            for event in self.job.process.poll():
                if event.kind == "progress" and not self.job.cancelling:
                    self.view.progress = int(PROGRESS_RANGE * progress.overall_fraction(event.data,
                                                                                        self.job.lowres_only))
                    self.view.progress_text = progress.describe_progress(event.data)
                elif event.kind == "log":
                    logging.debug("medsyn: %s", event.text)
                elif event.kind == "exit":
                    self.jobFinished()
                    break

    def importFinished(self, process: MedSynProcess) -> None:
        self.importProcess = None
        if process.returncode == 0:
            self.view.status = "Weights imported."
            self.modelsChanged()
            p = self.parameterNode()
            if p is not None:
                p.model = OFFICIAL_MODEL_NAME
        elif not process.cancelled:
            message = (process.error or {}).get("message") or "\n".join(list(process.log)[-10:])
            fix = (process.error or {}).get("fix")
            self.alerts.append(Alert(f"Importing the weights failed.\n\n{message}" + (f"\n\nFix: {fix}" if fix else "")))
            self.view.status = "Import failed."
        else:
            self.view.status = "Import cancelled."

    def jobFinished(self) -> None:
        job, self.job = self.job, None
        elapsed = progress.format_duration(time.monotonic() - self.jobStarted)
        if job.process.cancelled:
            job.cleanup()
            self.view.status = "Cancelled: nothing was written."
            self.view.progress_text = ""
            self.view.progress = 0
            return
        try:
            with self.waitCursor():
                loaded = self.logic.finishJob(job, self.parameterNode())
        except Exception as e:  # noqa: BLE001
            self.view.status = "Failed."
            self.view.progress_text = ""
            self.alerts.append(Alert(str(e), "\n".join(list(job.process.log)[-40:])))
            return
        self.view.progress = PROGRESS_RANGE
        self.view.progress_text = f"Done in {elapsed}."
        self.view.status = "\n".join(results.summary(loaded))
        models.record_run_time(loaded.sidecar)
        self.modelsChanged()  # the model description shows the time just measured
