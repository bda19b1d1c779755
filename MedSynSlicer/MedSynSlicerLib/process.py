"""One ``medsyn`` command-line process: start it, stream its output as events, stop its whole process tree.

:class:`MedSynProcess` starts the process in its own process group / session and reads stdout and stderr on two
daemon threads into a queue; :meth:`MedSynProcess.poll` drains that queue without blocking, so a GUI timer can
call it. The reader threads only parse text: they never touch the scene or Qt. Cancelling signals the whole tree
(psutil when available, else the process group on POSIX or ``taskkill /T`` on Windows): SIGTERM first (the
command line removes what it half wrote), SIGKILL after a grace period.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from .progress import Event, parse_line

CANCEL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when cancelling."""


# --- the command and its environment -----------------------------------------------------------------------------

def library_root() -> str:
    """The folder that contains the ``MedSynLib`` package (put on the child's PYTHONPATH)."""
    spec = importlib.util.find_spec("MedSynLib")
    if spec is None or not spec.origin:
        from .dependencies import LIBRARY_REQUIREMENT

        raise RuntimeError("The MedSyn library is not installed. Fix: click Generate and accept the install (or run "
                           f"slicer.util.pip_install('{LIBRARY_REQUIREMENT}') in Slicer's Python console).")
    return os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))


def python_executable(slicer_home: str | None = None) -> str:
    """``PythonSlicer`` inside 3D Slicer (a Python with Slicer's environment), else this interpreter.

    ``slicer_home``: ``slicer.app.slicerHome``, read by the caller on the main thread; None outside Slicer.
    """
    if slicer_home is None:
        return sys.executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    for folder in (os.path.dirname(sys.executable), os.path.join(slicer_home, "bin")):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return shutil.which(name) or sys.executable


def medsyn_command(arguments: list[str], python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "MedSynLib", *arguments]


def child_environment(base: dict[str, str] | None = None, device: str = "auto") -> dict[str, str]:
    """Environment for the child: MedSynLib importable, unbuffered output, and no GPU when CPU is forced.

    ``base``: Slicer's startup environment (read on the main thread), or None for this process's environment.
    """
    env = dict(os.environ if base is None else base)
    root = library_root()
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


# --- the process tree --------------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
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
            return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
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


def _signal_tree(pid: int, tree: list[int], sig) -> None:
    """``sig`` once to every process of the tree: the group created with start_new_session, then the
    descendants that left it (setsid)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    for p in tree:
        try:
            if os.getpgid(p) != pid:
                os.kill(p, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass


class MedSynProcess:
    """One ``medsyn`` (or stand-in) process whose output is read on background threads.

    ``poll()`` returns the events gathered since the last call and never blocks; the last event is always
    ``Event("exit", {"returncode", "cancelled"})``. Lines of stdout that are not events are kept in
    :attr:`stdout` (a query's answer); :attr:`log` keeps the last lines of both streams (error messages).
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
        self.log: deque[str] = deque(maxlen=log_lines)
        self.stdout: deque[str] = deque(maxlen=100_000)
        self._queue: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._tree: list[int] = []
        self._kill_at: float | None = None

    # --- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> "MedSynProcess":
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: the whole tree can be signalled
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True, name="medsyn-stdout"),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True, name="medsyn-stderr"),
            threading.Thread(target=self._wait, daemon=True, name="medsyn-wait")]
        for t in self._threads:
            t.start()
        return self

    def _read(self, stream, structured: bool) -> None:
        try:
            for line in iter(stream.readline, ""):
                event = parse_line(line) if structured else Event(kind="log", text=line.rstrip("\r\n"))
                if event.kind == "log":
                    self.log.append(event.text)
                    if structured:
                        self.stdout.append(event.text)
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
        """Started and not exited (also while cancelling)."""
        return self.process is not None and self.returncode is None

    @property
    def cancelling(self) -> bool:
        """Cancel was requested and the process has not exited yet."""
        return self.cancelled and self.running

    def poll(self) -> list[Event]:
        """The events since the last call; never blocks. Also escalates a pending cancel to SIGKILL when due."""
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if self._kill_at is not None and (time.monotonic() >= self._kill_at or
                                          any(e.kind == "exit" for e in events)):
            self._kill_remaining()
        return events

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the process and its readers are finished (for scripts and tests, not the GUI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.returncode

    # --- cancel --------------------------------------------------------------------------------------------------

    def request_cancel(self, grace_s: float = CANCEL_GRACE_S) -> bool:
        """Ask the whole process tree to stop, without blocking: SIGTERM now, SIGKILL from :meth:`poll` after
        ``grace_s`` (or as soon as the process itself exits). Returns False when there was nothing to cancel
        (not started, already exited, or already cancelling): a second request does nothing."""
        if self.process is None or self.returncode is not None or self.cancelled:
            return False
        self.cancelled = True
        pid = self.process.pid
        self._tree = process_tree(pid)
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True)
        else:
            _signal_tree(pid, self._tree, signal.SIGTERM)
            self._kill_at = time.monotonic() + grace_s
        return True

    def _kill_remaining(self) -> None:
        assert self.process is not None
        self._kill_at = None
        if os.name != "nt":
            pid = self.process.pid
            alive = [p for p in self._tree + process_tree(pid) if p == pid or pid_alive(p)]
            _signal_tree(pid, alive, signal.SIGKILL)

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the whole process tree and wait for it (scripts, clean-up; the GUI uses :meth:`request_cancel`)."""
        if not self.request_cancel(grace_s) and not self.cancelling:
            return
        assert self.process is not None
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not any(pid_alive(p) for p in self._tree if p != self.process.pid):
                break
            time.sleep(0.05)
        if self._kill_at is not None:
            self._kill_remaining()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=10)
