"""The model store's JSON files (``model.json``, a stage's ``config.json``), read without torch.

Listing models (the command line, the Slicer panel before torch is installed) reads only these.
"""

from __future__ import annotations

import json
from pathlib import Path


class CheckpointError(ValueError):
    """A weights file that does not fit the network it is meant for (names the keys or shapes at fault)."""


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; :class:`CheckpointError` naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}). Fix: restore the file or re-create the model "
                              "folder") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data
