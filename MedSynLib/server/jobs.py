"""The job queue of ``medsyn serve``: one worker per GPU (one CPU worker, or ``--cpu-workers N``, when there is
none), each running its jobs one at a time as ``python -m MedSynLib COMMAND ... --progress json`` processes.

A job is the command line itself, run in a process group of its own with ``CUDA_VISIBLE_DEVICES`` set to the
worker's GPU: the results are those of a local run, bit for bit; a crash, an out-of-memory or a hang ends that
process, never the server. Its stdout (one JSON event per line) becomes the job's events; its stderr, the
message the client prints. Cancel and the run-time limit send SIGTERM to the process group (the command removes
what it half wrote), SIGKILL after :data:`CANCEL_GRACE_S`. Each job has a folder ``<work dir>/<job id>``:
``inputs/`` (removed as soon as the job ends), ``result/`` while it runs, then ``result.zip``, removed after
``keep_hours`` or when the client deletes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, Failure

log = logging.getLogger("medsyn.server")

CANCEL_GRACE_S = 10.0
STDERR_KEEP = 20_000
"""Characters of a job's stderr kept for its error message."""


@dataclass
class Limits:
    max_upload_mb: float = 512.0
    max_queue: int = 32
    max_run_minutes: float = 60.0
    keep_hours: float = 24.0


@dataclass
class Worker:
    """Runs jobs on one device: ``name`` (cuda:0, cpu), ``label`` (the GPU's name), the child's ``env``."""

    name: str
    label: str
    env: dict = field(default_factory=dict)  # CUDA_VISIBLE_DEVICES: its one GPU, or none (the command's "auto")
    job: Job | None = None


@dataclass
class Job:
    id: str
    command: str
    argv: list[str]  # the command line after ``python -m MedSynLib`` (without --progress)
    folder: Path
    inputs: dict[str, str]  # option name -> the server's copy of the upload
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued, running, done, failed, cancelled
    events: list[dict] = field(default_factory=list)
    exit_code: int | None = None
    error: dict | None = None
    stderr: str = ""
    worker: str | None = None
    worker_label: str | None = None
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    deleted: bool = False
    process: asyncio.subprocess.Process | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: dict) -> None:
        self.events.append(event)
        self.notify()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def summary(self, position: int | None = None) -> dict:
        """What a client sees of the job (no server paths but the inputs' names, which the client maps back)."""
        out = {"id": self.id, "command": self.command, "state": self.state, "exit_code": self.exit_code,
               "error": self.error, "stderr": self.stderr, "created": self.created, "started": self.started,
               "finished": self.finished, "inputs": self.inputs, "events": len(self.events)}
        if self.started is not None:
            out["queue_wait_s"] = round(self.started - self.created, 3)
            out["ran_on"] = {"worker": self.worker, "device": self.worker_label}
        if position is not None:
            out["position"] = position
        return out


class QueueFull(Exception):
    pass


class JobQueue:
    """Jobs by id, the queue, the workers and the removal of expired results."""

    def __init__(self, root: Path, workers: list[Worker], limits: Limits):
        self.root, self.workers, self.limits = root, workers, limits
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    # --- life ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(w)) for w in self.workers]
        self._tasks.append(asyncio.create_task(self._janitor()))

    async def stop(self) -> None:
        """Cancel what runs, remove every job folder of this server."""
        for task in self._tasks:
            task.cancel()
        for job in list(self.jobs.values()):
            if job.process is not None and job.process.returncode is None:
                await self._kill(job.process, grace=2.0)
            shutil.rmtree(job.folder, ignore_errors=True)
        self.jobs.clear()

    # --- requests -----------------------------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its folder (with ``inputs/``), private to the server's user."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        (folder / "inputs").mkdir(mode=0o700, parents=True)
        folder.chmod(0o700)
        return job_id, folder

    def queued(self) -> int:
        return sum(job.state == "queued" for job in self.jobs.values())

    def check_room(self) -> None:
        if self.queued() >= self.limits.max_queue:
            raise QueueFull(f"the server's queue is full ({self.limits.max_queue} jobs waiting)")

    def submit(self, job: Job) -> dict:
        self.check_room()
        self.jobs[job.id] = job
        position = self.position(job)
        job.add({"event": "queued", "position": position})
        self._queue.put_nowait(job)
        return job.summary(position)

    def position(self, job: Job) -> int | None:
        """1 for the next job to start, or None when it is not waiting."""
        if job.state != "queued":
            return None
        waiting = sorted((j for j in self.jobs.values() if j.state == "queued"), key=lambda j: j.created)
        return waiting.index(job) + 1

    async def events(self, job: Job, after: int, wait: float) -> list[dict]:
        """The events from number ``after`` on; waits up to ``wait`` s for one when there is none yet."""
        if after >= len(job.events) and job.state not in ("done", "failed", "cancelled") and wait > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job.changed.wait(), wait)
        return job.events[after:]

    async def cancel(self, job: Job) -> None:
        job.cancel_requested = True
        if job.state == "queued":
            self._end(job, "cancelled", EXIT_CANCELLED, None)
        elif job.process is not None and job.process.returncode is None:
            asyncio.create_task(self._kill(job.process))

    async def delete(self, job: Job) -> None:
        """Forget the job and remove its folder (after its process has ended, when it runs)."""
        job.deleted = True
        if job.state in ("queued", "running"):
            await self.cancel(job)
        if job.state != "running":
            self._remove(job)

    # --- workers ------------------------------------------------------------------------------------------------

    async def _work(self, worker: Worker) -> None:
        while True:
            job = await self._queue.get()
            if job.state != "queued":
                continue
            worker.job = job
            try:
                await self._run(worker, job)
            except Exception:  # a bug here must not stop the worker
                log.exception("job %s failed in the server", job.id)
                self._end(job, "failed", EXIT_INTERNAL, Failure(EXIT_INTERNAL, "internal error in the MedSyn server",
                                                                "see the server's log", "internal").fields())
            finally:
                worker.job = None
                if job.deleted:
                    self._remove(job)

    async def _run(self, worker: Worker, job: Job) -> None:
        job.state, job.worker, job.worker_label, job.started = "running", worker.name, worker.label, time.time()
        job.add({"event": "started", "worker": f"{worker.name} ({worker.label})",
                 "queue_wait_s": round(job.started - job.created, 3)})
        env = {**os.environ, **worker.env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        env.pop("MEDSYN_DEBUG", None)  # a client never gets a traceback
        argv = [sys.executable, "-m", "MedSynLib", *job.argv, "--progress", "json"]  # device "auto": the worker's
        job.process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=job.folder, env=env, start_new_session=True, limit=1 << 20)
        if job.cancel_requested:  # cancelled while the process started
            asyncio.create_task(self._kill(job.process))
        stderr: list[str] = []
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(self._read_events(job), self._read_stderr(job, stderr),
                                                  job.process.wait()), self.limits.max_run_minutes * 60)
        except asyncio.TimeoutError:
            timed_out = True
            await self._kill(job.process)
        code = job.process.returncode
        text = "".join(stderr)[-STDERR_KEEP:]
        errors = [e for e in job.events if e.get("event") == "error"]  # the command's own (MedSynLib.errors)
        failure = Failure(code, **{k: errors[-1].get(k, "") for k in ("message", "fix", "kind")}) if errors else None
        if timed_out:
            code = EXIT_BAD_INPUT
            failure = Failure(code, f"the job ran longer than the server's limit of {self.limits.max_run_minutes:g} "
                              "min and was stopped", "use --lowres-only or fewer steps, or ask the server's operator "
                              "to raise --max-run-minutes", "time_limit")
            text = ""
        elif job.cancel_requested and code != 0:
            code, failure, text = EXIT_CANCELLED, None, "medsyn: cancelled; nothing was written for the unfinished run"
        elif code is not None and code < 0:
            failure = Failure(EXIT_INTERNAL, f"the job's process was killed (signal {-code}) on the server",
                              "the server may be out of host memory: use --lowres-only or ask its operator", "killed")
            code = EXIT_INTERNAL
        if code != 0 and "Traceback (most recent call last)" in text:
            log.error("job %s: %s", job.id, text)
            text = ""
        if code != 0 and failure is None:
            failure = Failure(code, "the command failed on the server", "see the server's log", "internal")
        if code != 0 and not text.strip():
            text = failure.text()
        error = failure.fields() if failure is not None else None
        shutil.rmtree(job.folder / "inputs", ignore_errors=True)
        if code == 0:
            await asyncio.to_thread(_zip_folder, job.folder / "result", job.folder / "result.zip")
            shutil.rmtree(job.folder / "result", ignore_errors=True)
            self._end(job, "done", 0, None)
        else:
            job.stderr = "\n".join(line for line in text.splitlines() if not line.startswith("medsyn: warning:"))
            self._end(job, "cancelled" if code == EXIT_CANCELLED else "failed", code, error)

    def _end(self, job: Job, state: str, code: int, error: dict | None) -> None:
        job.state, job.exit_code, job.error, job.finished = state, code, error, time.time()
        if state == "cancelled":
            job.stderr = job.stderr or "medsyn: cancelled; nothing was written for the unfinished run"
        shutil.rmtree(job.folder / "inputs", ignore_errors=True)
        job.notify()

    async def _read_events(self, job: Job) -> None:
        assert job.process is not None and job.process.stdout is not None
        async for line in job.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a library's own print; not an event
            if isinstance(event, dict) and event.get("event") != "done":  # "done" names server paths
                job.add(event)

    @staticmethod
    async def _read_stderr(job: Job, into: list[str]) -> None:
        assert job.process is not None and job.process.stderr is not None
        async for line in job.process.stderr:
            into.append(line.decode("utf-8", "replace"))
            if len(into) > 2000:
                del into[:1000]

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process, grace: float = CANCEL_GRACE_S) -> None:
        """SIGTERM to the process group (the command cleans up), SIGKILL after ``grace`` s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(process.wait(), grace)
                return
            except asyncio.TimeoutError:
                continue

    # --- clean-up -----------------------------------------------------------------------------------------------

    def _remove(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)
        self.jobs.pop(job.id, None)

    async def _janitor(self) -> None:
        keep = self.limits.keep_hours * 3600
        while True:
            now = time.time()
            for job in list(self.jobs.values()):
                if job.finished is not None and now - job.finished > keep:
                    self._remove(job)
            await asyncio.sleep(min(60.0, max(keep / 4, 1.0)))


def _zip_folder(folder: Path, archive: Path) -> None:
    """The result folder as a zip (names relative to it; compressed files stored as they are)."""
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stored = path.name.endswith((".gz", ".png", ".zip"))
                z.write(path, path.relative_to(folder).as_posix(),
                        zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
