"""Run the ``medsyn`` command line in a separate process and follow its JSON progress, without Qt.

``medsyn ... --progress json`` prints one JSON object per line on stdout:
``{"event": "progress", "stage", "step", "total", "elapsed_s", "eta_s"}``, then ``{"event": "done", "out", "sidecar"}``
or ``{"event": "error", "message", "fix"}`` with a non-zero exit code; free text logs go to stderr.

:class:`MedSynProcess` starts the process in its own process group / session, reads stdout and stderr on two
daemon threads into a queue, and :meth:`MedSynProcess.poll` drains that queue without blocking, so a GUI timer can
call it. :meth:`MedSynProcess.cancel` stops the whole process tree (psutil when available, else the process group
on POSIX or ``taskkill /T`` on Windows). :class:`MedSynJob` adds a private work folder (report text, condition
label maps, the command's output) that is removed on cancel or failure, and moves the results to their final
folder on success.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Callable

STAGES = ("text", "lowres", "superres", "write")
STAGE_TITLES = {"text": "Encoding report", "lowres": "Low-resolution sampling", "superres": "Super-resolution",
                "write": "Writing results", "segment": "Segmenting"}
_STAGE_WEIGHTS = {"text": 0.03, "lowres": 0.35, "superres": 0.57, "write": 0.05}


# --- events ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Event:
    """One thing that happened: ``kind`` is progress, done, error (JSON events), log (a line) or exit."""

    kind: str
    data: dict = dataclasses.field(default_factory=dict)
    text: str = ""


def parse_line(line: str) -> Event:
    """A stdout line -> an :class:`Event`; lines that are not contract JSON become ``log`` events."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("event") in ("progress", "done", "error"):
            return Event(kind=data["event"], data=data, text=stripped)
    return Event(kind="log", text=line.rstrip("\r\n"))


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:  # None, NaN or negative
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def overall_fraction(data: dict, lowres_only: bool = False) -> float:
    """Fraction 0..1 of the whole run reached at a progress event (stages weighted by typical duration)."""
    stage = data.get("stage", "")
    total = max(int(data.get("total") or 0), 1)
    step = min(max(int(data.get("step") or 0), 0), total)
    weights = dict(_STAGE_WEIGHTS)
    if lowres_only:
        weights["superres"] = 0.0
    if stage not in weights:
        return step / total
    norm = sum(weights.values())
    before = 0.0
    for s in STAGES:
        if s == stage:
            break
        before += weights[s]
    return min(1.0, (before + weights[stage] * step / total) / norm)


def describe_progress(data: dict) -> str:
    """Human text for a progress event: stage, step and ETA."""
    stage = STAGE_TITLES.get(data.get("stage", ""), str(data.get("stage", "")))
    text = f"{stage}: step {data.get('step', 0)} of {data.get('total', 0)}"
    eta = data.get("eta_s")
    if eta is not None:
        text += f" (about {format_duration(float(eta))} left)"
    return text


# --- command line ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Settings:
    """The run settings shared by ``generate`` and ``segment``."""

    model: str = "default"
    seed: int = 42
    steps_lowres: int = 50
    steps_sr: int = 20
    guidance: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    lowres_only: bool = False

    def arguments(self) -> list[str]:
        args = ["--seed", str(int(self.seed)), "--steps-lowres", str(int(self.steps_lowres)),
                "--steps-sr", str(int(self.steps_sr)), "--guidance", repr(float(self.guidance)),
                "--device", self.device, "--model", self.model]
        if self.lowres_only:
            args.append("--lowres-only")
        return args


def generate_arguments(report_file: str, out_dir: str, settings: Settings,
                       conditions: dict[str, str] | None = None) -> list[str]:
    args = ["generate", "--report-file", report_file]
    for channel in ("lobes", "airway", "vessels"):
        if conditions and conditions.get(channel):
            args += [f"--{channel}", conditions[channel]]
    return args + settings.arguments() + ["--progress", "json", "--out", out_dir]


def segment_arguments(ct_file: str, out_dir: str, settings: Settings) -> list[str]:
    return ["segment", "--ct", ct_file] + settings.arguments() + ["--progress", "json", "--out", out_dir]


def library_root() -> str:
    """The folder that contains the ``MedSynLib`` package (put on the child's PYTHONPATH)."""
    spec = importlib.util.find_spec("MedSynLib")
    if spec is None or not spec.origin:
        raise RuntimeError("MedSynLib is not importable: the extension is incomplete. Fix: reinstall MedSyn.")
    return os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))


def python_executable() -> str:
    """``PythonSlicer`` inside 3D Slicer (a Python with Slicer's environment), else this interpreter."""
    try:
        import slicer

        app = getattr(slicer, "app", None)
    except ImportError:
        app = None
    if app is not None:
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        for folder in (os.path.dirname(sys.executable), getattr(app, "slicerHome", "") and
                       os.path.join(app.slicerHome, "bin")):
            if folder and os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


def medsyn_command(arguments: list[str], python: str | None = None) -> list[str]:
    return [python or python_executable(), "-m", "MedSynLib", *arguments]


def child_environment(base: dict[str, str] | None = None, device: str = "auto") -> dict[str, str]:
    """Environment for the child: MedSynLib importable, unbuffered output, and no GPU when CPU is forced."""
    env = dict(os.environ if base is None else base)
    root = library_root()
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


# --- process -----------------------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    except ImportError:
        pass
    if os.name == "nt":
        out = subprocess.run(["tasklist", "/FI", f"PID eq {pid}"], capture_output=True, text=True).stdout
        return str(pid) in out
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0): look at its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (psutil, else /proc on Linux, else just ``pid``)."""
    try:
        import psutil

        try:
            parent = psutil.Process(pid)
            return [pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    except ImportError:
        pass
    children: dict[int, list[int]] = {}
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().split(")")[-1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        return [pid]
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


class MedSynProcess:
    """One ``medsyn`` (or stand-in) process whose output is read on background threads.

    ``poll()`` returns the events gathered since the last call and never blocks. The last event is always
    ``Event("exit", {"returncode": rc})``. ``on_event`` (optional) is called from the reader threads.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 log_lines: int = 200):
        self.command = list(command)
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.done: dict | None = None
        self.error: dict | None = None
        self.last_progress: dict | None = None
        self.log = deque(maxlen=log_lines)
        self._queue: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._exit_reported = False

    # life cycle
    def start(self) -> "MedSynProcess":
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: the whole tree can be signalled
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        out = threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True,
                               name="medsyn-stdout")
        err = threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True,
                               name="medsyn-stderr")
        waiter = threading.Thread(target=self._wait, daemon=True, name="medsyn-wait")
        self._threads = [out, err, waiter]
        for t in self._threads:
            t.start()
        return self

    def _read(self, stream, structured: bool) -> None:
        try:
            for line in iter(stream.readline, ""):
                event = parse_line(line) if structured else Event(kind="log", text=line.rstrip("\r\n"))
                if event.kind == "log":
                    self.log.append(event.text)
                elif event.kind == "progress":
                    self.last_progress = event.data
                elif event.kind == "done":
                    self.done = event.data
                elif event.kind == "error":
                    self.error = event.data
                self._queue.put(event)
        except (ValueError, OSError):  # stream closed while reading (cancel)
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def _wait(self) -> None:
        assert self.process is not None
        rc = self.process.wait()
        for t in self._threads[:2]:
            t.join(timeout=10)
        self.returncode = rc
        self._queue.put(Event(kind="exit", data={"returncode": rc, "cancelled": self.cancelled}))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.returncode is None

    def poll(self) -> list[Event]:
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the process and its readers are finished (for scripts and tests, not the GUI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.returncode

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the whole process tree: SIGTERM (the CLI cleans up), then SIGKILL after ``grace_s``."""
        if self.process is None or self.returncode is not None:
            return
        self.cancelled = True
        pid = self.process.pid
        tree = process_tree(pid)
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True)
        else:
            self._signal_tree(pid, tree, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None and not any(_pid_alive(p) for p in tree if p != pid):
                    break
                time.sleep(0.05)
            self._signal_tree(pid, tree + process_tree(pid), signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=10)

    @staticmethod
    def _signal_tree(pid: int, tree: list[int], sig) -> None:
        try:
            os.killpg(pid, sig)  # the group we created with start_new_session
        except (ProcessLookupError, PermissionError, OSError):
            pass
        for p in tree:  # descendants that left the group (setsid) still get the signal
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError, OSError):
                pass


# --- job: work folder + process + results folder ------------------------------------------------------------------

def default_output_root() -> str:
    """Where results folders go: ``$MEDSYN_OUTPUT_DIR`` or ``~/MedSyn/results``."""
    return os.environ.get("MEDSYN_OUTPUT_DIR") or os.path.join(os.path.expanduser("~"), "MedSyn", "results")


def unique_folder(root: str, name: str) -> str:
    path = os.path.join(root, name)
    i = 2
    while os.path.exists(path):
        path = os.path.join(root, f"{name}_{i}")
        i += 1
    return path


class MedSynJob:
    """A ``generate`` or ``segment`` run with its private work folder.

    The work folder (``<output_root>/.medsyn-work-*``) holds the report text, the condition label maps and the
    command's ``--out``; it is deleted on cancel or failure, and on success the results are moved to
    ``<output_root>/<result_name>`` (:attr:`result_folder`).
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

    def write_report(self, text: str) -> str:
        path = os.path.join(self.work_dir, "report.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def start(self, arguments: list[str], device: str = "auto") -> MedSynProcess:
        env = child_environment(self.env, device)
        self.process = MedSynProcess(self.command_factory(arguments), env=env, cwd=self.work_dir).start()
        return self.process

    def start_generate(self, report_text: str, settings: Settings,
                       conditions: dict[str, str] | None = None) -> MedSynProcess:
        self.lowres_only = settings.lowres_only
        report = self.write_report(report_text)
        return self.start(generate_arguments(report, self.out_dir, settings, conditions), settings.device)

    def start_segment(self, ct_file: str, settings: Settings) -> MedSynProcess:
        self.lowres_only = settings.lowres_only
        return self.start(segment_arguments(ct_file, self.out_dir, settings), settings.device)

    def finish(self) -> str:
        """After a successful exit: move the results out of the work folder; returns the results folder."""
        assert self.process is not None
        done = self.process.done or {}
        produced = done.get("out") or self.out_dir
        if self.process.returncode != 0 or not os.path.isdir(produced):
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

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the process tree (see :meth:`MedSynProcess.cancel`) and delete the work folder."""
        if self.process is not None:
            self.process.cancel(grace_s)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def run_blocking(command: list[str], env: dict[str, str] | None = None, timeout: float = 120.0) -> str:
    """Run a short ``medsyn`` query (e.g. ``models list --json``) and return its stdout; raises with stderr."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-5:] if result.stderr else []
        for line in result.stdout.splitlines():
            event = parse_line(line)
            if event.kind == "error":
                raise RuntimeError(event.data.get("message", "") + (
                    f"\nFix: {event.data['fix']}" if event.data.get("fix") else ""))
        raise RuntimeError(f"{' '.join(command[-3:])} failed (exit {result.returncode}): " + "\n".join(message))
    return result.stdout


def list_models(python: str | None = None, env: dict[str, str] | None = None) -> list[dict]:
    """``medsyn models list --json`` as a list of dicts."""
    out = run_blocking(medsyn_command(["models", "list", "--json"], python), child_environment(env))
    start = out.find("[")
    models = json.loads(out[start:] if start >= 0 else out)
    if not isinstance(models, list):
        raise ValueError("medsyn models list --json did not print a list")
    return models


def import_weights_arguments(model_folder: str, text_encoder: str, name: str, atlas: str | None = None) -> list[str]:
    """``medsyn models import``: the official ``model/`` folder (checkpoints + pretrained_lm), a local CXR-BERT
    folder, optionally the atlas lung mask; the user has accepted the licence in the dialog."""
    args = ["models", "import", model_folder, "--text-encoder", text_encoder, "--name", name, "--accept-license"]
    return args + (["--atlas", atlas] if atlas else [])


class BackgroundCall:
    """Run ``fn(*args)`` on a daemon thread; a GUI timer checks :attr:`finished` and reads :attr:`result`."""

    def __init__(self, fn: Callable, *args, **kwargs):
        self.result = None
        self.error: BaseException | None = None
        self.finished = False
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True,
                                        name="medsyn-background")
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        finally:
            self.finished = True

    def wait(self, timeout: float | None = None):
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result


_DEVICE_PROBE = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    if torch.cuda.is_available():\n"
    "        free, total = torch.cuda.mem_get_info(0)\n"
    "        info = {'cuda': True, 'name': torch.cuda.get_device_name(0), 'free_gb': free / 2**30,\n"
    "                'total_gb': total / 2**30, 'torch': torch.__version__}\n"
    "    else:\n"
    "        info = {'cuda': False, 'torch': torch.__version__}\n"
    "except ImportError:\n"
    "    info = {'cuda': False, 'torch': None}\n"
    "print(json.dumps(info))\n"
)


def probe_device(python: str | None = None, env: dict[str, str] | None = None, timeout: float = 120.0) -> dict:
    """GPU name and free memory as the child process sees them: ``{"cuda", "name", "free_gb", "total_gb", "torch"}``."""
    out = run_blocking([python or python_executable(), "-c", _DEVICE_PROBE], env=env, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def describe_device(info: dict) -> str:
    if not info.get("torch"):
        return "PyTorch is not installed yet"
    if info.get("cuda"):
        return f"{info.get('name', 'GPU')}, {info.get('free_gb', 0):.1f} of {info.get('total_gb', 0):.1f} GB free"
    return "No CUDA GPU found: CPU only (slow)"
