"""``medsyn generate|segment|edit --server URL``: the command line's run on a server, shown and ended as a
local run is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import run_guarded
from ..progress import Reporter
from .client import MedSynServer
from .protocol import TOKEN_ENV, RemoteError, default_token_file, is_loopback, options_from_args


def run_command(args, parser) -> int:
    """``medsyn generate|segment|edit --server URL``: the parsed ``args`` of ``parser`` run on the server, the
    events shown as a local run shows them, the result written to ``--out``; returns the exit code."""
    reporter = Reporter(args.progress)
    server_name = args.server

    def on_event(event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            if args.progress == "json":
                reporter.emit(event)
            else:
                reporter(event["stage"], event["step"], event["total"])
        elif kind == "warning":
            reporter.warn(event.get("message", ""))
        elif kind in ("queued", "started"):
            reporter.emit(event)
            if args.progress == "text":
                where = (f"queued on {server_name} (position {event.get('position', '?')})" if kind == "queued"
                         else f"running on {server_name} ({event.get('worker', '?')})")
                print(f"medsyn: {where}", file=sys.stderr, flush=True)
        elif kind == "error":
            reporter.emit(event)
        elif kind not in ("done", "cancelled"):
            reporter.emit(event)

    def work() -> int:
        if args.device not in (None, "auto"):
            raise RemoteError("--device does not apply to a server run: the server gives each job a GPU of its own",
                              "leave out --device (`medsyn serve` lists its GPUs)")
        options, files = options_from_args(parser, args)
        server = MedSynServer(args.server)
        if not server.token:
            raise RemoteError("no token for the MedSyn server",
                              f"set {TOKEN_ENV}, or write the token to {default_token_file()} (chmod 600)",
                              kind="token")
        if server.url.startswith("http://") and not is_loopback(server.host):
            reporter.warn(f"{server.url} is plain http: the token and the images travel unencrypted. Use the "
                          "https address of the reverse proxy in front of the server")
        sidecar = server.run(args.command, args.out, options, files, overwrite=args.overwrite, on_event=on_event)
        _report_done(args, reporter, sidecar)
        return 0

    return run_guarded(work, reporter.emit, writes_result=True)


def _report_done(args, reporter: Reporter, sidecar: Path) -> None:
    """The ``done`` event and, in text mode, the last lines, as a local run ends."""
    written = json.loads(sidecar.read_text(encoding="utf-8"))
    model = written.get("model", {})
    statement = {"statement": model["statement"]} if model.get("statement") else {}
    reporter.emit({"event": "done", "out": str(args.out), "sidecar": str(sidecar), **statement})
    if args.progress == "text":  # the last lines of a local run
        marked = {"generate": " (SYNTHETIC)", "edit": " (EDITED: {:.1f} mL replaced)".format(
            written.get("region", {}).get("volume_ml", float("nan")))}.get(args.command, "")
        print(f"wrote {args.out}{marked}", file=sys.stderr)
        if statement:  # the model's statement, the last line as in a local run
            print(f"model {model['name']}: {statement['statement']}", file=sys.stderr)
