"""Progress of a command: a terminal bar on stderr, or one JSON event per line on stdout (``--progress json``).

The JSON events are what the Slicer module reads: ``{"event": "progress", "stage", "step", "total", "unit",
"elapsed_s", "eta_s"}`` (``eta_s`` null at a stage's first step, before its pace is known), and the commands' own
``error`` / ``warning`` / ``done`` events. A sampling stage counts what runs, its network evaluations (``unit``):
``steps + 1`` of them (the official grid evaluates its end point too).
"""

from __future__ import annotations

import json
import sys
import time


UNITS = {"lowres": "network evaluations", "superres": "network evaluations", "send": "files"}
"""What a stage's ``step`` counts (others: "steps")."""


class Reporter:
    """Progress as a terminal line (``text``) or one JSON object per line on stdout (``json``).

    ``context`` (e.g. the batch case) is added to every progress event.
    """

    def __init__(self, mode: str):
        self.mode, self.start, self.stage_start, self.context = mode, time.perf_counter(), {}, {}

    def emit(self, event: dict) -> None:
        if self.mode == "json":
            print(json.dumps(event), flush=True)

    def warn(self, message: str) -> None:
        """A warning: on stderr, and as a ``warning`` event."""
        self.emit({"event": "warning", "message": message, **self.context})
        print(f"medsyn: warning: {message}", file=sys.stderr, flush=True)

    def __call__(self, stage: str, step: int, total: int) -> None:
        unit = UNITS.get(stage, "steps")
        now = time.perf_counter()
        if step <= 1:
            self.stage_start[stage] = now
        # the pace is measured from the first call on: no time left is known before the second one
        eta = (now - self.stage_start.get(stage, self.start)) / (step - 1) * (total - step) if step > 1 else None
        if self.mode == "json":
            self.emit({"event": "progress", "stage": stage, "step": step, "total": total, "unit": unit,
                       "elapsed_s": round(now - self.start, 3), "eta_s": None if eta is None else round(eta, 3),
                       **self.context})
        else:
            bar = "#" * int(30 * step / total)
            left = "    ? s" if eta is None else f"{eta:5.0f} s"
            print(f"\r{stage:9s} [{bar:30s}] {step}/{total} {unit} ETA {left}", end="", file=sys.stderr,
                  flush=True)
            if step == total:
                print(file=sys.stderr)
