"""``medsyn serve``: the GPU server (FastAPI on uvicorn; ``pip install "medsyn[server]"``).

Binds 127.0.0.1 unless told otherwise; a token is required (``--token-file``, or ``$MEDSYN_SERVER_TOKEN``) unless
``--no-token`` on a loopback address. See docs/server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

from .. import arguments
from ..errors import MedSynError

MARKER = ".medsyn-server"
MIN_TOKEN = 16
GPU_PROBE = ("import json, torch\n"
             "print(json.dumps([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]"
             " if torch.cuda.is_available() else []))")


def gpu_list(text: str) -> str:
    """``auto``, ``none`` or GPU indices ``0,1`` (whether they exist is checked when the server starts)."""
    text = text.strip()
    if text not in ("auto", "none") and not re.fullmatch(r"\d{1,3}(,\d{1,3})*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, none or GPU indices such as 0,1")
    return text


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run generate/segment/edit for other machines (a GPU server; docs/server.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=arguments.count(1, 65535), default=8765)
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the token clients must send (readable by you only); default: "
                        "$MEDSYN_SERVER_TOKEN")
    p.add_argument("--no-token", action="store_true", help="accept requests without a token (loopback --host only)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where jobs' inputs and results are kept (default: $MEDSYN_HOME/server, i.e. "
                        "~/.medsyn/server); a folder the server creates or made before")
    p.add_argument("--gpus", type=gpu_list, default="auto", help="auto (every CUDA GPU), none (CPU only), or indices: 0,1")
    p.add_argument("--cpu-workers", type=arguments.count(1, 256), default=1, help="jobs run at once when there is no GPU")
    p.add_argument("--max-upload-mb", type=arguments.number(0.0, 1e7, low_open=True), default=512.0, help="largest upload (all files of a job)")
    p.add_argument("--max-queue", type=arguments.count(1, 100_000), default=32, help="jobs waiting at most; more are refused (503)")
    p.add_argument("--max-run-minutes", type=arguments.number(0.0, 1e6, low_open=True), default=60.0, help="a job running longer is stopped")
    p.add_argument("--keep-hours", type=arguments.number(0.0, 1e6, low_open=True), default=24.0,
                   help="a finished job's result is removed this long after it ends (or when its client has "
                        "downloaded it)")
    p.set_defaults(func=_serve)


def _token(args) -> str | None:
    from ..remote import TOKEN_ENV, is_loopback

    if args.no_token:
        if not is_loopback(args.host):
            raise ValueError(f"--no-token is allowed on a loopback address only, not on {args.host}. Fix: give a "
                             "--token-file (e.g. `umask 077; python -c 'import secrets; print(secrets.token_urlsafe"
                             "(32))' > token`)")
        return None
    if args.token_file is not None:
        if args.token_file.exists() and not args.token_file.is_file():
            raise MedSynError(f"--token-file {args.token_file} is not a file", "give the file that holds the token "
                              "(e.g. `umask 077; python -c 'import secrets; print(secrets.token_urlsafe(32))' > "
                              "token`)")
        mode = args.token_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"the token file {args.token_file} is readable by others. Fix: chmod 600 "
                             f"{args.token_file}")
        token = args.token_file.read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError("medsyn serve needs a token. Fix: --token-file FILE (e.g. `umask 077; python -c 'import "
                         f"secrets; print(secrets.token_urlsafe(32))' > FILE`), or set {TOKEN_ENV}")
    if len(token) < MIN_TOKEN:
        raise ValueError(f"the token is shorter than {MIN_TOKEN} characters. Fix: use a random one, e.g. "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token


def _work_dir(path: Path | None) -> Path:
    """The server's folder: created with its marker, or one that has the marker; job folders an earlier run left
    are removed (the jobs were forgotten when it stopped)."""
    from ..remote import JOB_ID

    root = (path or Path(os.environ.get("MEDSYN_HOME", Path.home() / ".medsyn")) / "server").expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise MedSynError(f"--work-dir {root} is a file, not a folder", "give a new --work-dir")
    if root.exists() and not (root / MARKER).is_file():
        if any(root.iterdir()):
            raise ValueError(f"{root} is not a MedSyn server folder (no {MARKER}) and not empty; the server never "
                             "writes into a folder it did not make. Fix: give a new --work-dir")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / MARKER).write_text("MedSyn server work folder: job inputs and results, removed by the server\n",
                               encoding="utf-8")
    import shutil

    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink() and re.fullmatch(JOB_ID, entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    return root


def _workers(gpus: str, cpu_workers: int):
    from .jobs import Worker

    if gpus == "none":
        names = []
    else:
        probe = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, timeout=300)
        names = json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 and probe.stdout else []
        if gpus != "auto":
            try:
                chosen = [int(i) for i in gpus.split(",")]
            except ValueError:
                raise ValueError(f"--gpus {gpus!r}: use auto, none or indices such as 0,1") from None
            missing = [i for i in chosen if not 0 <= i < len(names)]
            if missing:
                raise ValueError(f"--gpus: no GPU {missing} here (this machine has {len(names)})")
            names = {i: names[i] for i in chosen}
    if isinstance(names, list):
        names = dict(enumerate(names))
    if names:
        return [Worker(f"cuda:{i}", name, {"CUDA_VISIBLE_DEVICES": str(i)}) for i, name in names.items()]
    if cpu_workers < 1:
        raise ValueError("--cpu-workers must be at least 1")
    label = "CPU" if cpu_workers == 1 else f"CPU, {cpu_workers} jobs at once"
    return [Worker("cpu" if cpu_workers == 1 else f"cpu:{i}", label, {"CUDA_VISIBLE_DEVICES": ""})
            for i in range(cpu_workers)]


def _check_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on (an unknown host name, a port in use or reserved) now,
    with a message, instead of the web server's exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MedSynError(f"--host {host!r} is not an address of this machine ({exc})",
                          "give an address or name of this machine, e.g. 127.0.0.1 or 0.0.0.0 (every interface)")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise MedSynError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                              "give another --port (or stop the program that uses it), or an address of this "
                              "machine as --host") from None


def _serve(args) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise MedSynError(f"medsyn serve needs the server extra ({exc.name} is missing)",
                          'pip install "medsyn[server]"') from None
    from .jobs import Limits

    token = _token(args)  # the numbers' ranges are checked by their parser types
    _check_address(args.host, args.port)
    root = _work_dir(args.work_dir)
    workers = _workers(args.gpus, args.cpu_workers)
    limits = Limits(args.max_upload_mb, args.max_queue, args.max_run_minutes, args.keep_hours)
    app = create_app(root, workers, limits, token, socket.gethostname())
    print(f"medsyn serve: http://{args.host}:{args.port} ({', '.join(f'{w.name} {w.label}' for w in workers)}; "
          f"{'NO TOKEN' if token is None else 'token required'}; jobs in {root})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_keep_alive=30,
                limit_concurrency=256, server_header=False)
    return 0
