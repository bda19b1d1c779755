"""The value types of every command's options (argparse ``type=``) and of the settings built from them: each refuses
a non-finite or out-of-range value with a message naming the range, so a bad value ends at parse time (exit code 2,
usage line) and never reaches the work. Standard library only: the parsers import no torch.

``number(low, high)`` / ``count(low, high)`` make a type for a range; the named types below are the project's ranges.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

SEED_MAX = 2**62 - 1
"""The largest seed: torch seeds are 64-bit signed, and a batch adds 1000 x row + k to its base seed."""
STEPS_MAX = 1000
"""Sampler steps: at most one per step of the 1,000-step training schedule."""
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


def number(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """A type for a finite float in [low, high] (``low_open``: low itself excluded); ``None`` = unbounded."""
    bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
              f"<= {high:g}" if high is not None else ""]
    wanted = "a finite number" + "".join(f" {b}" for b in (" and ".join(b for b in bounds if b),) if b)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number (need {wanted})") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (need {wanted})")
        if low is not None and (value < low or (low_open and value == low)) or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range (need {wanted})")
        return value

    return parse


def count(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """A type for a whole number in [low, high] (``None`` = unbounded)."""
    wanted = f"from {low} to {high}" if high is not None else f">= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (need {wanted})") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range (need a whole number {wanted})")
        return value

    return parse


finite_float = number()
"""Any finite number (``nan`` and ``inf`` refused)."""
seed = count(0, SEED_MAX)
steps = count(1, STEPS_MAX)
guidance = number(0.0)
"""Classifier-free guidance: 1 = none, 0 = unconditional; results are checked (a degenerate CT is refused)."""
gigabytes = number(0.0, low_open=True)
millimetres = number(0.0, low_open=True)
blend_mm = number(0.0, 1000.0, low_open=True)
"""An edit's blend width inside the region's border, mm."""


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it is usable is checked when the model is loaded)."""
    if not DEVICE_PATTERN.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N (N = the GPU's "
                                         "number, from 0)")
    return text.strip()


def shard(text: str) -> str:
    """``I/N`` with 0 <= I < N (``--shard``); kept as text, parsed by the batch's ``Shard``."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard: use I/N with 0 <= I < N, counted from 0 "
                                         "(e.g. 0/8)")
    return text.strip()
