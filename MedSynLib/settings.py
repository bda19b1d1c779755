"""Settings dataclasses (network, training and text-training configs) read from JSON objects."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


def settings_from_dict(cls: type[T], values: dict, what: str) -> T:
    """``cls(**values)``; a key that ``cls`` does not have is a ValueError naming it and the known ones
    (``what`` names the settings in the message, e.g. "training options")."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(names)}")
    return cls(**values)
