"""The processes the panel starts (a run, a weights import, a GPU probe) and what it shows about them, per tab.

:class:`PanelRuns` is Qt-free: the Widget calls :meth:`PanelRuns.poll` from a QTimer and shows the current tab's
:class:`PanelView` (status, progress, the message area with warnings and refusals); dialogs the user has to answer
are queued in :attr:`PanelRuns.alerts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Callable, Optional

from . import device, messages, models, progress, results
from .job import MedSynJob
from .logic import OFFICIAL_MODEL_NAME
from .messages import Message
from .process import MedSynProcess

PROGRESS_RANGE = 1000
"""The progress bar's maximum (per mille of the run)."""


@dataclasses.dataclass
class PanelView:
    """What one tab shows about its last run: status line, progress, the message area, whether the last run was
    refused (then "Use anyway" reruns it with the override)."""

    status: str = ""
    progress: int = 0  # 0..PROGRESS_RANGE
    progress_text: str = ""
    messages: list[Message] = dataclasses.field(default_factory=list)
    refused: bool = False

    def message_text(self) -> str:
        return "\n".join(m.line() for m in self.messages)


@dataclasses.dataclass
class Alert:
    """A dialog for the user: the message and, optionally, the last lines of the process output."""

    message: str
    details: str = ""


def figures_of(error: dict) -> list[str]:
    """The figures a refusal's JSON event carries (a segmentation's ``quality``, a scan check's ``figures``)."""
    lines = []
    if isinstance(error.get("quality"), dict) and "lung_dice" in error["quality"]:
        lines.append(results.quality_line(error["quality"]))
    figures = error.get("figures") or (error.get("scan_check") or {}).get("figures")
    if isinstance(figures, dict):
        lines += [f"{name.replace('_', ' ')}: {_figure(value)}" for name, value in figures.items()]
    return lines


def _figure(value) -> str:
    """A figure as the message area shows it: lists and dicts as words, not Python's brackets."""
    if isinstance(value, dict):
        return ", ".join(f"{name.replace('_', ' ')} {_figure(v)}" for name, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return " x ".join(map(str, value)) if value and all(isinstance(v, (int, float)) for v in value) \
            else ", ".join(map(str, value)) or "none"
    return str(value)


class PanelRuns:
    """One run at a time (``job``, started from tab ``jobMode``), a weights import and a GPU probe.

    ``logic``: the module's ``MedSynSlicerLogic``; ``parameterNode``: a callable returning the parameter node the
    results belong to (the module's, also while the panel is not shown).
    """

    def __init__(self, logic, parameterNode: Callable[[], object], modes: tuple[str, ...]) -> None:
        self.logic = logic
        self.parameterNode = parameterNode
        self.views = {mode: PanelView() for mode in modes}
        self.deviceText = ""
        self.importStatus = ""
        self.alerts: list[Alert] = []
        self.job: Optional[MedSynJob] = None
        self.jobMode = modes[0]
        self.importProcess: Optional[MedSynProcess] = None
        self.deviceProbe: Optional[MedSynProcess] = None
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

    def startJob(self, p, busyText: str, force: bool = False) -> None:
        """Start the run of the current tab (raises with the reason and fix); ``busyText``: e.g. "Generating";
        ``force``: with the command line's override (after a refusal)."""
        view = self.views[p.mode] = PanelView()
        self.job = self.logic.start(p, force)
        self.jobMode, self.jobStarted = p.mode, time.monotonic()
        view.status = f"{busyText} (seed {p.seed})" + (", overriding the check" if force else "") + "..."
        view.progress_text = "Starting (loading the model)..."

    def refuseToStart(self, mode: str, error: str) -> None:
        """A run that could not start: the reason and the fix in the message area of its tab."""
        view = self.views[mode] = PanelView(status="Not started.")
        view.messages = messages.failure_messages(error, refused=False)

    def startImport(self, path: str, textEncoder: str, name: str, atlas: Optional[str]) -> None:
        self.importProcess = self.logic.startImportWeights(path, textEncoder, name, atlas)
        self.importStatus = f"Importing weights from {path}..."

    def startDeviceProbe(self) -> bool:
        """Ask which GPU the child would use, once (again after a failure); True when a probe started."""
        if self.deviceProbe is not None or self.logic.deviceInfo is not None:
            return False
        try:
            self.deviceProbe = self.logic.startDeviceProbe()
        except Exception as e:  # noqa: BLE001
            self.deviceText = f"GPU detection failed: {e}"
            return False
        self.deviceText = "detecting GPU..."
        return True

    def requestCancel(self) -> None:
        """Ask the running job (or import) to stop; the Cancel button stays disabled until it has stopped."""
        if self.importProcess is not None and self.importProcess.request_cancel():
            self.importStatus = "Cancelling the import..."
        if self.job is not None and self.job.request_cancel():
            self.views[self.jobMode].status = "Cancelling..."

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
                self.logic.deviceInfo = device.probe_result(probe)
                self.deviceText = device.describe_device(self.logic.deviceInfo)
            except Exception as e:  # noqa: BLE001 - shown; tried again when Settings is opened again
                self.deviceText = str(e)
        if self.importProcess is not None:
            for event in self.importProcess.poll():
                if event.kind == "progress":
                    self.importStatus = progress.describe_progress(event.data)
                elif event.kind == "exit":
                    self.importFinished(self.importProcess)
        if self.job is not None:
            view = self.views[self.jobMode]
            for event in self.job.process.poll():
                if event.kind == "progress" and not self.job.cancelling:
                    view.progress = int(PROGRESS_RANGE * progress.overall_fraction(event.data, self.job.lowres_only))
                    view.progress_text = progress.describe_progress(event.data, self.job.lowres_only)
                elif event.kind == "warning":
                    self.warn(view, str(event.data.get("message", "")))
                elif event.kind == "log":
                    logging.debug("medsyn: %s", event.text)
                elif event.kind == "exit":
                    self.jobFinished()
                    break

    @staticmethod
    def warn(view: PanelView, text: str) -> None:
        """Add a warning (and what to do about it) to the message area, once."""
        said = messages.failure_messages(text, refused=False)
        said[0].level = "warning"
        if text and said[0] not in view.messages:
            view.messages += said

    def importFinished(self, process: MedSynProcess) -> None:
        self.importProcess = None
        if process.returncode == 0:
            self.importStatus = "Weights imported."
            self.modelsChanged()
            p = self.parameterNode()
            if p is not None:
                p.model = OFFICIAL_MODEL_NAME
        elif not process.cancelled:
            message = (process.error or {}).get("message") or "\n".join(list(process.log)[-10:])
            fix = (process.error or {}).get("fix")
            self.alerts.append(Alert(f"Importing the weights failed.\n\n{message}"
                                     + (f"\n\nFix: {fix}" if fix else "")))
            self.importStatus = "Import failed."
        else:
            self.importStatus = "Import cancelled."

    def jobFinished(self) -> None:
        job, self.job = self.job, None
        view = self.views[self.jobMode]
        view.progress_text = ""
        if job.process.cancelled:
            job.cleanup()
            view.status, view.progress = "Cancelled: nothing was written.", 0
            return
        try:
            with self.waitCursor():
                loaded = self.logic.finishJob(job, self.parameterNode())
        except Exception as e:  # noqa: BLE001 - the reason and what to do go to the message area
            self.jobFailed(view, job, str(e))
            return
        seconds = time.monotonic() - self.jobStarted
        for warning in loaded.warnings:  # the sidecar's, in case an event was missed
            self.warn(view, warning)
        view.progress = PROGRESS_RANGE
        view.progress_text = f"Done in {progress.format_duration(seconds)}."
        view.status = "\n".join(results.summary(loaded))
        models.record_run_time(loaded.sidecar, seconds)
        self.modelsChanged()  # the model description shows the time just measured

    @staticmethod
    def jobFailed(view: PanelView, job: MedSynJob, text: str) -> None:
        """A failed or refused run: nothing was loaded; its reason, what to do and (for a refusal) the check's
        figures stay in the message area."""
        error = job.process.error or {}
        refused = messages.is_refusal(job.process.returncode, error)
        if error.get("message"):
            text = error["message"] + (f" Fix: {error['fix']}" if error.get("fix") else "")
        view.messages += messages.failure_messages(text, refused)
        view.messages += [Message("figures", line) for line in figures_of(error)]
        view.refused, view.progress = refused, 0
        view.status = "Refused: nothing was loaded." if refused else "Failed: nothing was loaded."
        logging.info("MedSyn run failed: %s\n%s", text, "\n".join(list(job.process.log)[-40:]))
