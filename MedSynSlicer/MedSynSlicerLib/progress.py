"""The ``medsyn ... --progress json`` event lines, and the progress text and fraction the panel shows.

The command line prints one JSON object per line on stdout:
``{"event": "progress", "stage", "step", "total", "elapsed_s", "eta_s"}``, then ``{"event": "done", "out", "sidecar"}``
or ``{"event": "error", "message", "fix"}`` with a non-zero exit code; free text logs go to stderr.
"""

from __future__ import annotations

import dataclasses
import json

STAGES = ("text", "lowres", "superres", "write")
"""Stages of a run, in order."""
STAGE_TITLES = {"text": "Encoding report", "lowres": "Low-resolution sampling", "superres": "Super-resolution",
                "write": "Writing results", "segment": "Segmenting"}
_STAGE_WEIGHTS = {"text": 0.03, "lowres": 0.35, "superres": 0.57, "write": 0.05}
"""Typical share of the run time of each stage (the progress bar is weighted by it)."""


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
    """``95`` -> ``"1 min 35 s"``; ``"?"`` for None, NaN or negative."""
    if seconds is None or seconds != seconds or seconds < 0:
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
    before = sum(weights[s] for s in STAGES[:STAGES.index(stage)])
    return min(1.0, (before + weights[stage] * step / total) / sum(weights.values()))


def describe_progress(data: dict) -> str:
    """Human text for a progress event: stage, what it counts (its ``unit``: a sampling stage counts network
    evaluations, steps + 1), and ETA."""
    stage = STAGE_TITLES.get(data.get("stage", ""), str(data.get("stage", "")))
    what = str(data.get("unit") or "steps").removesuffix("s")
    text = f"{stage}: {what} {data.get('step', 0)} of {data.get('total', 0)}"
    eta = data.get("eta_s")
    if eta is not None:
        text += f" (about {format_duration(float(eta))} left)"
    return text
