"""A Generate, Segment or Edit run: its ``medsyn`` arguments (the model and a
:class:`~MedSynLib.run_settings.RunSettings`), its private work folder and its result
folder.

The work folder (``<output_root>/.medsyn-work-*``) holds the report text, the condition label maps, the input CT,
an edit's region and the command's ``--out``; it is deleted on cancel or failure. On success the results move to
``<output_root>/<result_name>`` (a new folder: an existing one is never written into).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from typing import Callable

from MedSynLib.run_settings import RunSettings

from .process import CANCEL_GRACE_S, MedSynProcess, child_environment, medsyn_command


def run_arguments(model: str, settings: RunSettings, out_dir: str) -> list[str]:
    """The options every run ends with: the model, the settings (:meth:`RunSettings.to_argv`), JSON progress and
    the result folder."""
    return ["--model", model, *settings.to_argv(), "--progress", "json", "--out", out_dir]


def _anatomy(masks: dict[str, str] | None) -> list[str]:
    return [arg for channel in ("lobes", "airway", "vessels") if masks and masks.get(channel)
            for arg in (f"--{channel}", masks[channel])]


def generate_arguments(report_file: str, out_dir: str, model: str, settings: RunSettings,
                       conditions: dict[str, str] | None = None) -> list[str]:
    return ["generate", "--report-file", report_file, *_anatomy(conditions), *run_arguments(model, settings, out_dir)]


def segment_arguments(ct_file: str, out_dir: str, model: str, settings: RunSettings) -> list[str]:
    return ["segment", "--ct", ct_file, *run_arguments(model, settings, out_dir)]


def edit_arguments(ct_file: str, region_file: str, report_file: str, out_dir: str, model: str,
                   settings: RunSettings, keep: dict[str, str] | None = None) -> list[str]:
    return ["edit", "--ct", ct_file, "--region", region_file, "--report-file", report_file, *_anatomy(keep),
            *run_arguments(model, settings, out_dir)]


def default_output_root() -> str:
    """Where results folders go: ``$MEDSYN_OUTPUT_DIR`` or ``~/MedSyn/results``."""
    return os.environ.get("MEDSYN_OUTPUT_DIR") or os.path.join(os.path.expanduser("~"), "MedSyn", "results")


def unique_folder(root: str, name: str) -> str:
    """``root/name``, or ``root/name_2``, ``_3``... when it exists."""
    path = os.path.join(root, name)
    i = 2
    while os.path.exists(path):
        path = os.path.join(root, f"{name}_{i}")
        i += 1
    return path


class MedSynJob:
    """A ``generate``, ``segment`` or ``edit`` run with its private work folder.

    ``env``: the base environment of the child (Slicer's startup environment, read on the main thread);
    ``command_factory``: arguments -> command (tests run a stand-in instead of ``medsyn``).
    """

    def __init__(self, output_root: str | None = None, result_name: str = "", python: str | None = None,
                 env: dict[str, str] | None = None, command_factory: Callable[[list[str]], list[str]] | None = None):
        self.output_root = os.path.abspath(output_root or default_output_root())
        os.makedirs(self.output_root, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.result_name = result_name or f"medsyn-{stamp}"
        self.work_dir = tempfile.mkdtemp(prefix=".medsyn-work-", dir=self.output_root)
        self.conditions_dir = os.path.join(self.work_dir, "conditions")
        self.out_dir = os.path.join(self.work_dir, "result")
        self.python = python
        self.env = env
        self.command_factory = command_factory or (lambda args: medsyn_command(args, self.python))
        self.process: MedSynProcess | None = None
        self.result_folder: str | None = None
        self.lowres_only = False
        self.source = None  # the CT a segment or an edit reads (the result is loaded beside it, named after it)
        self.target = None  # the segmentation a segment writes into (None: a new one)
        self.held: tuple[str, ...] = ()  # the channels a generate holds (held again on its result)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def cancelling(self) -> bool:
        return self.process is not None and self.process.cancelling

    def write_report(self, text: str) -> str:
        path = os.path.join(self.work_dir, "report.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def start(self, arguments: list[str], device: str = "auto") -> MedSynProcess:
        env = child_environment(self.env, device)
        self.process = MedSynProcess(self.command_factory(arguments), env=env, cwd=self.work_dir).start()
        return self.process

    def start_generate(self, report_text: str, model: str, settings: RunSettings,
                       conditions: dict[str, str] | None = None) -> MedSynProcess:
        self.lowres_only = settings.lowres_only
        report = self.write_report(report_text)
        return self.start(generate_arguments(report, self.out_dir, model, settings, conditions), settings.device)

    def start_segment(self, ct_file: str, model: str, settings: RunSettings) -> MedSynProcess:
        self.lowres_only = settings.lowres_only
        return self.start(segment_arguments(ct_file, self.out_dir, model, settings), settings.device)

    def start_edit(self, ct_file: str, region_file: str, report_text: str, model: str, settings: RunSettings,
                   keep: dict[str, str] | None = None) -> MedSynProcess:
        self.lowres_only = settings.lowres_only
        report = self.write_report(report_text)
        return self.start(edit_arguments(ct_file, region_file, report, self.out_dir, model, settings, keep),
                          settings.device)

    def finish(self) -> str:
        """After the exit event: move the results out of the work folder and return the results folder; raises
        (with the reason and fix) after a failure or a cancel, leaving nothing behind."""
        assert self.process is not None
        done = self.process.done or {}
        produced = done.get("out") or self.out_dir
        if self.process.returncode != 0 or self.process.cancelled or not os.path.isdir(produced):
            self.cleanup()
            raise RuntimeError(self.failure_message())
        target = unique_folder(self.output_root, self.result_name)
        shutil.move(produced, target)
        self.cleanup()
        self.result_folder = target
        return target

    def failure_message(self) -> str:
        p = self.process
        if p is None:
            return "MedSyn did not start."
        if p.cancelled:
            return "Cancelled."
        if p.error:
            message = p.error.get("message", "MedSyn failed.")
            fix = p.error.get("fix")
            return f"{message}\nFix: {fix}" if fix else message
        tail = "\n".join(list(p.log)[-15:])
        return f"MedSyn stopped with exit code {p.returncode}.\n{tail}".strip()

    def request_cancel(self) -> bool:
        """Ask the process tree to stop without blocking (see :meth:`MedSynProcess.request_cancel`); the work
        folder is removed by :meth:`finish` after the exit event. False when already cancelling or finished."""
        return self.process is not None and self.process.request_cancel()

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the process tree, wait for it, and delete the work folder (scripts, module clean-up)."""
        if self.process is not None:
            self.process.cancel(grace_s)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
