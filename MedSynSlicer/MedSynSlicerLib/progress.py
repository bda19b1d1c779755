"""The ``medsyn ... --progress json`` event lines, and the progress text and fraction the panel shows.

The command line prints one JSON object per line on stdout:
``{"event": "progress", "stage", "step", "total", "elapsed_s", "eta_s"}``, then ``{"event": "done", "out", "sidecar"}``
or ``{"event": "error", "message", "fix", "kind"}`` with a non-zero exit code; ``{"event": "warning", "message"}``
whenever the user should know something about the run; free text logs go to stderr.
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


EVENT_KINDS = ("progress", "warning", "done", "error", "cancelled")
"""The ``event`` values of the command line's JSON lines."""


@dataclasses.dataclass
class Event:
    """One thing that happened: ``kind`` is progress, warning, done, error, cancelled (JSON events), log (a line) or
    exit."""

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
        if isinstance(data, dict) and data.get("event") in EVENT_KINDS:
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


def remaining_s(data: dict, lowres_only: bool = False) -> float | None:
    """Seconds left of the whole run at a progress event: the current stage's ``eta_s`` plus the stages after it,
    estimated from the current stage's pace and the stages' typical shares (:data:`_STAGE_WEIGHTS`). None when
    the event says too little (no ETA, a stage not in :data:`STAGES`, its first or last step)."""
    stage, eta = data.get("stage", ""), data.get("eta_s")
    step, total = int(data.get("step") or 0), int(data.get("total") or 0)
    if eta is None or stage not in STAGES or step < 2:  # the command line measures its pace from the second step
        return None
    later = [s for s in STAGES[STAGES.index(stage) + 1:] if not (lowres_only and s == "superres")]
    if not later:
        return float(eta)
    if step >= total or not _STAGE_WEIGHTS[stage]:
        return None
    stage_s = float(eta) * total / (total - step)
    return float(eta) + stage_s * sum(_STAGE_WEIGHTS[s] for s in later) / _STAGE_WEIGHTS[stage]


def describe_progress(data: dict, lowres_only: bool | None = None) -> str:
    """Human text for a progress event: stage, what it counts (its ``unit``: a sampling stage counts network
    evaluations, steps + 1), and the time left (of the stage; of the whole run when ``lowres_only`` says which
    stages follow)."""
    stage = STAGE_TITLES.get(data.get("stage", ""), str(data.get("stage", "")))
    what = str(data.get("unit") or "steps").removesuffix("s")
    text = f"{stage}: {what} {data.get('step', 0)} of {data.get('total', 0)}"
    if lowres_only is not None:
        left = remaining_s(data, lowres_only)
        return text + (f" (about {format_duration(left)} left in all)" if left is not None else "")
    eta = data.get("eta_s")
    if eta is not None:
        text += f" (about {format_duration(float(eta))} left)"
    return text
