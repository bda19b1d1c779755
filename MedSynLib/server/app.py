"""The HTTP API of ``medsyn serve`` (FastAPI): every route but ``/v1/health`` needs the token.

``GET /v1/info``: version, models, workers, queue, limits. ``POST /v1/jobs`` (multipart: ``command``,
``options`` as a JSON list of command-line strings, one file per input option): a job, validated by the command
line's own parser. ``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/events?after=N&wait=S`` (long polling),
``POST /v1/jobs/{id}/cancel``, ``DELETE /v1/jobs/{id}``, ``GET /v1/jobs/{id}/result`` (the result folder as a zip).
Every refusal is ``{"error": {"message", "fix", "kind", "exit_code"}}`` with the command line's exit code; no
traceback ever reaches a client. Job ids are the server's own UUIDs; nothing a client sends becomes a path.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import math
import re
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL
from ..modelstore.registry import list_models
from ..pipelines import cli as pipeline_cli
from ..remote import API, COMMANDS, FILE_OPTIONS, JOB_ID, LOCAL_ONLY, UPLOAD_SUFFIXES
from .jobs import Job, JobQueue, Limits, QueueFull, Worker

log = logging.getLogger("medsyn.server")
MAX_OPTIONS = 100


class UsageError(Exception):
    pass


class _RefusingParser(argparse.ArgumentParser):
    """The command line's parser, raising its usage errors instead of printing them and exiting."""

    def error(self, message):
        raise UsageError(message)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """generate / segment / edit: the very parsers of ``medsyn``."""
    parser = _RefusingParser(prog="medsyn")
    sub = parser.add_subparsers(dest="command")
    pipeline_cli.add_parser(sub)
    return {name: sub.choices[name] for name in COMMANDS}


def refuse(status: int, message: str, fix: str = "", kind: str = "bad_input", code: int = EXIT_BAD_INPUT):
    return HTTPException(status, {"message": message, "fix": fix, "kind": kind, "exit_code": code})


def _error_response(status: int, detail) -> JSONResponse:
    if not isinstance(detail, dict):
        detail = {"message": str(detail), "fix": "", "kind": "bad_request", "exit_code": EXIT_BAD_INPUT}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware run before any route reads a byte of the body: the token, then the upload size."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] != API + "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(),
                                                                          self.token.encode()):
                what = "no token was sent" if not given else "the token is wrong"
                response = _error_response(401, {
                    "message": f"the MedSyn server refused the request: {what}", "kind": "token",
                    "exit_code": EXIT_BAD_INPUT,
                    "fix": "set MEDSYN_SERVER_TOKEN (or the token file ~/.medsyn/server-token) to the token the "
                           "server's operator gave you"})
                return await response(scope, receive, send)
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await _error_response(413, _too_large(self.max_body))(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, _too_large(self.max_body))
            return message

        return await self.app(scope, limited_receive, send)


def _too_large(max_body: int) -> dict:
    return {"message": f"the upload is over the server's limit of {max_body / 2**20:g} MB", "kind": "too_large",
            "exit_code": EXIT_BAD_INPUT,
            "fix": "crop or downsample the inputs, or ask the server's operator to raise --max-upload-mb"}


def create_app(root: Path, workers: list[Worker], limits: Limits, token: str | None, hostname: str) -> FastAPI:
    """The server's app: jobs in ``root`` (a folder the server owns), run by ``workers``."""
    queue = JobQueue(root, workers, limits)
    parsers = command_parsers()

    @asynccontextmanager
    async def lifespan(app):
        await queue.start()
        yield
        await queue.stop()

    app = FastAPI(title="MedSyn server", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(Guard, token=token, max_body=int(limits.max_upload_mb * 2**20))
    app.state.queue = queue

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if exc.status_code == 404 and not isinstance(exc.detail, dict):
            return _error_response(404, {"message": f"no such address on the MedSyn server: {request.url.path}",
                                         "fix": "check the server URL (and the client's version)",
                                         "kind": "not_found", "exit_code": EXIT_BAD_INPUT})
        return _error_response(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return _error_response(400, {"message": "malformed request", "fix": "use the medsyn client",
                                     "kind": "bad_request", "exit_code": EXIT_BAD_INPUT})

    @app.exception_handler(Exception)
    async def internal(request, exc):
        log.exception("request %s failed", request.url.path)
        return _error_response(500, {"message": "internal error in the MedSyn server", "kind": "internal",
                                     "fix": "see the server's log", "exit_code": EXIT_INTERNAL})

    def find(job_id: str) -> Job:
        job = queue.jobs.get(job_id) if re.fullmatch(JOB_ID, job_id) else None
        if job is None:
            raise refuse(404, f"no job {job_id[:40]!r} on this server", f"finished results are kept "
                         f"{limits.keep_hours:g} h, then removed; the id is the one the server gave", "not_found")
        return job

    @app.get(API + "/health")
    async def health():
        return {"ok": True}

    @app.get(API + "/info")
    async def info():
        models = [{k: m.get(k) for k in ("name", "title", "license", "available")} for m in list_models()]
        return {"medsyn": __version__, "server": hostname, "commands": list(COMMANDS), "models": models,
                "workers": [{"name": w.name, "device": w.label, "busy": w.job is not None} for w in workers],
                "queue": {"queued": queue.queued(), "running": sum(w.job is not None for w in workers)},
                "limits": {"max_upload_mb": limits.max_upload_mb, "max_queue": limits.max_queue,
                           "max_run_minutes": limits.max_run_minutes, "keep_hours": limits.keep_hours}}

    @app.post(API + "/jobs")
    async def submit(request: Request):
        try:
            queue.check_room()
        except QueueFull as exc:
            raise refuse(503, str(exc), "try again later", "queue_full") from None
        try:
            form = await request.form(max_files=len(FILE_OPTIONS), max_fields=2, max_part_size=1 << 20)
        except ClientDisconnect:  # the client went away mid-upload: nothing was made
            log.info("a client disconnected during its upload")
            raise refuse(400, "the upload did not finish", "send it again", "disconnected") from None
        try:
            command, options, uploads = _read_form(form)
            job_id, folder = queue.new_folder()
        except UsageError as exc:
            raise refuse(400, str(exc), "see `medsyn COMMAND --help` for the options", "usage") from None
        try:
            inputs = {}
            for name, upload in uploads.items():
                suffix = next(s for s in UPLOAD_SUFFIXES if upload.filename.lower().endswith(s))
                inputs[name] = str(folder / "inputs" / f"{name}{suffix}")
                await asyncio.to_thread(_save, upload, Path(inputs[name]))
            argv = _job_argv(parsers[command], command, options, inputs, folder / "result")
            return queue.submit(Job(job_id, command, argv, folder, inputs))
        except UsageError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise refuse(400, f"medsyn {command}: {exc}", "see `medsyn COMMAND --help` for the options",
                         "usage") from None
        except QueueFull as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise refuse(503, str(exc), "try again later", "queue_full") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            await form.close()

    @app.get(API + "/jobs/{job_id}")
    async def job_status(job_id: str):
        job = find(job_id)
        return job.summary(queue.position(job))

    @app.get(API + "/jobs/{job_id}/events")
    async def events(job_id: str, after: int = 0, wait: float = 0.0):
        job = find(job_id)
        after = max(0, after)
        new = await queue.events(job, after, min(max(wait, 0.0), 30.0) if math.isfinite(wait) else 0.0)
        return {"events": new, "next": after + len(new), "job": job.summary(queue.position(job))}

    @app.post(API + "/jobs/{job_id}/cancel")
    async def cancel(job_id: str):
        job = find(job_id)
        await queue.cancel(job)
        return job.summary()

    @app.delete(API + "/jobs/{job_id}")
    async def delete(job_id: str):
        await queue.delete(find(job_id))
        return {"deleted": job_id}

    @app.get(API + "/jobs/{job_id}/result")
    async def result(job_id: str):
        job = find(job_id)
        if job.state != "done":
            raise refuse(409, f"job {job_id} has no result (it is {job.state})", "wait until it is done",
                         "not_done")
        return FileResponse(job.folder / "result.zip", media_type="application/zip",
                            filename=f"medsyn-{job.command}-{job_id}.zip")

    return app


def _read_form(form) -> tuple[str, list[str], dict[str, UploadFile]]:
    command = form.get("command")
    if command not in COMMANDS:
        raise UsageError(f"command {str(command)[:40]!r} does not run on this server; it runs {', '.join(COMMANDS)}")
    try:
        options = json.loads(form.get("options") or "[]")
    except ValueError:
        options = None
    if not isinstance(options, list) or len(options) > MAX_OPTIONS or not all(isinstance(o, str) for o in options):
        raise UsageError("'options' must be a JSON list of command-line strings")
    uploads = {}
    for name, value in form.multi_items():
        if name in ("command", "options"):
            continue
        if name not in FILE_OPTIONS or not isinstance(value, UploadFile) or name in uploads:
            raise UsageError(f"unexpected upload field {name[:40]!r}; files go with {', '.join(FILE_OPTIONS)}")
        if not (value.filename or "").lower().endswith(UPLOAD_SUFFIXES):
            raise UsageError(f"--{name.replace('_', '-')}: the server takes {', '.join(UPLOAD_SUFFIXES)} files")
        uploads[name] = value
    return command, options, uploads


def _save(upload: UploadFile, path: Path) -> None:
    upload.file.seek(0)
    with open(path, "xb") as f:
        shutil.copyfileobj(upload.file, f, 1 << 20)


def _job_argv(parser: argparse.ArgumentParser, command: str, options: list[str], inputs: dict[str, str],
              out: Path) -> list[str]:
    """The command line of the job, checked by the command's own parser: the client's options, the server's
    copies of the uploads, the server's result folder. Refuses what only the server may choose (paths, device)."""
    argv = [*options]
    for name, path in inputs.items():
        argv += ["--" + name.replace("_", "-"), path]
    argv += ["--out", str(out)]
    args = parser.parse_args(argv)
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        value = getattr(args, action.dest, None)
        if action.type is Path and value is not None and action.dest != "out" and str(value) != inputs.get(
                action.dest):
            raise UsageError(f"{action.option_strings[-1]} names a file on the server; upload the file instead")
        if action.dest in LOCAL_ONLY - {"out"} and value != action.default:
            raise UsageError(f"{action.option_strings[-1]} is not an option of a server job (the client or the "
                             "server sets it)")
    if args.model not in (None, "default"):
        names = [m["name"] for m in list_models() if m["available"]]
        if args.model not in names:
            raise UsageError(f"--model {args.model[:100]!r} is not a model of this server; it has "
                             f"{', '.join(names) or 'none'}")
    return [command, *argv]
