"""The client of a MedSyn server (``medsyn serve``): submit a job with its files, follow its events, write its
result folder exactly as a local run writes it. Standard library only (``urllib``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import EXIT_BAD_INPUT
from ..io.files import OutputFolder
from .protocol import (API, COMMANDS, FINISHED, SIDECAR, UPLOAD_SUFFIXES, RemoteError, is_loopback, options_from_keywords,
                       read_token)


class MedSynServer:
    """A MedSyn server at ``url`` (``http[s]://host:port[/prefix]``); ``token``: None reads :func:`read_token`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        try:
            parsed = urllib.parse.urlsplit(url.strip())
            usable = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
        except ValueError:  # a port out of range or not a number, an unclosed [IPv6 address
            usable = False
        if not usable or not all("!" <= c <= "~" for c in url.strip()):  # no spaces, controls, non-ASCII
            raise RemoteError(f"server URL {url!r} is not an http(s) address",
                              "give it as http://HOST:PORT (e.g. http://127.0.0.1:8765) or https://HOST/PATH, in "
                              "ASCII (a name with other letters in its punycode form, xn--...)")
        self.url = url.strip().rstrip("/")
        self.host = parsed.hostname
        self.token = token if token is not None else read_token()
        self.timeout = timeout
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float | None = None):
        request = urllib.request.Request(self.url + API + path, data=body, method=method, headers=headers or {})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach the MedSyn server at {self.url}: {reason}",
                              "check the URL and that `medsyn serve` runs there (and the network between)",
                              kind="unreachable") from None

    def _refusal(self, exc: urllib.error.HTTPError) -> RemoteError:
        try:
            error = json.loads(exc.read().decode("utf-8"))["error"]
            return RemoteError(error["message"], error.get("fix", ""), int(error.get("exit_code", EXIT_BAD_INPUT)),
                               error.get("kind", "bad_input"))
        except (ValueError, KeyError, TypeError, OSError):
            return RemoteError(f"the server at {self.url} answered HTTP {exc.code} ({exc.reason})",
                               "check the URL: it must point at `medsyn serve` (or the proxy in front of it)",
                               kind="server")

    def _json(self, method: str, path: str, **kwargs) -> dict:
        with self._request(method, path, **kwargs) as response:
            return json.loads(response.read().decode("utf-8"))

    # --- the API ------------------------------------------------------------------------------------------------

    def info(self) -> dict:
        """The server's version, models, workers (GPUs), queue and limits; checks the token."""
        return self._json("GET", "/info", timeout=min(self.timeout, 10.0))

    def submit(self, command: str, options: Iterable[str] = (), files: dict[str, Path] | None = None,
               limit_mb: float | None = None) -> dict:
        """Queue ``command`` with its ``options`` (command-line strings) and ``files`` (option name -> local file);
        returns the job (``id``, ``state``, ``position``). ``limit_mb``: the server's upload limit, checked here
        first so that an oversized upload is refused before it is sent."""
        if command not in COMMANDS:
            raise RemoteError(f"{command!r} does not run on a server", f"use one of {', '.join(COMMANDS)}")
        parts = [("command", None, command.encode()), ("options", None, json.dumps(list(options)).encode())]
        for name, path in (files or {}).items():
            parts.append((name, path.name, _upload_bytes(name, path)))
        size = sum(len(content) for _, _, content in parts)
        if limit_mb is not None and size > limit_mb * 2**20:
            raise RemoteError(f"the upload ({size / 2**20:.1f} MB) is over the server's limit of {limit_mb:g} MB",
                              "crop or downsample the inputs, or ask the server's operator to raise "
                              "--max-upload-mb")
        boundary = uuid.uuid4().hex
        body = b"".join(_form_part(boundary, *part) for part in parts) + f"--{boundary}--\r\n".encode()
        return self._json("POST", "/jobs", body=body,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{job_id}")

    def events(self, job_id: str, after: int = 0, wait: float = 10.0) -> dict:
        """The job's events from number ``after`` on, waiting up to ``wait`` s for a new one (long polling):
        ``{"events", "next", "job"}``."""
        return self._json("GET", f"/jobs/{job_id}/events?after={int(after)}&wait={wait:g}",
                          timeout=self.timeout + wait)

    def follow(self, job_id: str, on_event: Callable[[dict], None] | None = None) -> dict:
        """Wait for the job to finish, passing each event to ``on_event``; returns the finished job."""
        after = 0
        while True:
            answer = self.events(job_id, after)
            for event in answer["events"]:
                if on_event is not None:
                    on_event(event)
            after = answer["next"]
            if answer["job"]["state"] in FINISHED:
                return answer["job"]

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{job_id}/cancel", timeout=10.0)

    def delete(self, job_id: str) -> None:
        """Remove the job and its result from the server (cancels it if it still runs)."""
        self._json("DELETE", f"/jobs/{job_id}", timeout=10.0)

    def download(self, job_id: str, out: str | Path, overwrite: bool = False,
                 local_inputs: dict[str, Path] | None = None) -> Path:
        """Write the finished job's result folder to ``out`` (the rules of a local run's ``--out``)."""
        with OutputFolder(out, SIDECAR, overwrite, (local_inputs or {}).values()) as output:
            return self._download_into(job_id, output, local_inputs or {})

    def _download_into(self, job_id: str, output: OutputFolder, local_inputs: dict[str, Path]) -> Path:
        job = self.job(job_id)
        with output.writing() as tmp:
            archive = tmp / ".medsyn-download.zip"
            with self._request("GET", f"/jobs/{job_id}/result", timeout=self.timeout) as response, \
                    open(archive, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            _extract(archive, tmp)
            archive.unlink()
            sidecar = tmp / SIDECAR
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            server_inputs = {job["inputs"][name]: str(path)
                             for name, path in local_inputs.items() if name in job.get("inputs", {})}
            record = _replace_strings(record, server_inputs)
            record["ran_on"] = {"server": self.url, **job.get("ran_on", {}), "job": job_id}
            sidecar.write_text(json.dumps(record, indent=2), encoding="utf-8")
        return output.path / SIDECAR

    def run(self, command: str, out: str | Path, options: Iterable[str] = (), files: dict[str, Path] | None = None,
            overwrite: bool = False, on_event: Callable[[dict], None] | None = None) -> Path:
        """Run ``command`` on the server and write its result folder to ``out``; returns the sidecar path.

        The job is removed from the server once its result is written here. Raises :class:`RemoteError` with the
        command's message and exit code when it fails; Ctrl-C (KeyboardInterrupt) cancels the job.
        """
        files = {name: Path(path) for name, path in (files or {}).items()}
        with OutputFolder(out, SIDECAR, overwrite, files.values()) as output:
            limit = self.info()["limits"]["max_upload_mb"]
            job = self.submit(command, options, files, limit_mb=limit)
            try:
                job = self.follow(job["id"], on_event)
            except BaseException:  # Ctrl-C, SIGTERM, a lost connection: the job stops and its files go
                _quietly(self.delete, job["id"])
                raise
            if job["state"] != "done":
                _quietly(self.delete, job["id"])
                error = job.get("error") or {}
                local = _local_names(job, files)
                raise RemoteError(local(error.get("message", f"the job {job['state']}")), local(error.get("fix", "")),
                                  int(job.get("exit_code") or EXIT_BAD_INPUT), error.get("kind", "bad_input"),
                                  text=local(job.get("stderr", "")))
            sidecar = self._download_into(job["id"], output, files)
        _quietly(self.delete, job["id"])
        return sidecar

    def generate(self, out: str | Path, overwrite: bool = False, on_event=None, **options) -> Path:
        """``medsyn generate`` on the server; ``options`` as keywords (``report=``, ``seed=``, ``lobes=PATH``...)."""
        return self.run("generate", out, *options_from_keywords(options), overwrite=overwrite, on_event=on_event)

    def segment(self, out: str | Path, overwrite: bool = False, on_event=None, **options) -> Path:
        """``medsyn segment`` on the server (``ct=PATH`` ...)."""
        return self.run("segment", out, *options_from_keywords(options), overwrite=overwrite, on_event=on_event)

    def edit(self, out: str | Path, overwrite: bool = False, on_event=None, **options) -> Path:
        """``medsyn edit`` on the server (``ct=PATH``, ``region=PATH``, ``report=`` ...)."""
        return self.run("edit", out, *options_from_keywords(options), overwrite=overwrite, on_event=on_event)


def _quietly(call, *args) -> None:
    try:
        call(*args)
    except RemoteError:
        pass


def _upload_bytes(name: str, path: Path) -> bytes:
    option = "--" + name.replace("_", "-")
    if path.is_dir():
        raise RemoteError(f"{option} {path} is a folder; a server run takes one file",
                          "convert a DICOM series to one NIfTI file first (e.g. in Slicer: Save as .nii.gz)")
    if not path.is_file():
        raise RemoteError(f"{option}: file not found: {path}", "check the path")
    if not path.name.lower().endswith(UPLOAD_SUFFIXES):
        raise RemoteError(f"{option} {path}: a server takes {', '.join(UPLOAD_SUFFIXES)} files",
                          "save the image as NIfTI (.nii.gz) or NRRD")
    return path.read_bytes()


def _form_part(boundary: str, name: str, filename: str | None, content: bytes) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{_quote(filename)}"' if filename else "")
    kind = "application/octet-stream" if filename else "text/plain; charset=utf-8"
    return (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {kind}\r\n\r\n".encode()
            + content + b"\r\n")


def _quote(filename: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:200]


def _extract(archive: Path, folder: Path) -> None:
    """Unpack the result archive into ``folder``: plain relative names only (no '..', no absolute paths)."""
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            parts = Path(member.filename).parts
            if not parts or member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
                raise RemoteError(f"the server's result holds an unsafe file name {member.filename!r}",
                                  "check the server: this client writes nothing outside the result folder")
        z.extractall(folder)


def _local_names(job: dict, files: dict[str, Path]) -> Callable[[str], str]:
    """Text with the server's copies of the inputs named by their local paths (as the local command names them)."""
    pairs = [(job["inputs"][name], str(path)) for name, path in files.items() if name in job.get("inputs", {})]

    def local(text: str) -> str:
        for server_path, path in pairs:
            text = text.replace(server_path, path)
        return text

    return local


def _replace_strings(value, mapping: dict[str, str]):
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, mapping) for v in value]
    return value
