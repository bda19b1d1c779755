"""Training recipes that ship with MedSynLib: JSON configs for ``medsyn train-text``, ``train-lowres`` and
``train-sr``, loaded with ``--config recipe:NAME`` (a file path loads your own config of the same form).

A recipe holds the network sizes and training settings, not your data: give ``manifest``, ``out`` and the low-res
stage's ``text_encoder`` with ``--set key=value`` (``--reports`` / ``--out`` for the text encoder). Its
``description`` is documentation only.

- ``demo-text``, ``demo-lowres``, ``demo-sr``: the CPU-sized networks and budgets of the packaged demo model
  (``python -m MedSynLib.train.demo``).
- ``official-text``, ``official-lowres``, ``official-sr``: the networks and training settings of the official
  MedSyn code (BERT-base text encoder; 64³ UNet of width 160, 256³ UNet of width 56; AdamW 1e-4, fp16, global
  batch 2 with 4 accumulation steps, EMA from step 10,000). They need GPUs (the SR stage about 21 GiB at
  inference alone) and set no step budget: the official code states none.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

PREFIX = "recipe:"


def recipe_names() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.name.removesuffix(".json") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".json"))


def read_config(source: str | Path) -> dict:
    """The options of ``recipe:NAME`` or of a JSON file, without its ``description``; clear errors otherwise."""
    text = str(source)
    if text.startswith(PREFIX):
        name = text.removeprefix(PREFIX)
        resource = resources.files(__package__) / f"{name}.json"
        if not resource.is_file():
            raise ValueError(f"unknown recipe {name!r}; shipped recipes: {', '.join(recipe_names())}")
        raw, where = resource.read_text(encoding="utf-8"), f"recipe {name}"
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path} (or use recipe:NAME, one of "
                                    f"{', '.join(recipe_names())})")
        raw, where = path.read_text(encoding="utf-8"), str(path)
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{where} must hold a JSON object of options")
    values.pop("description", None)
    return values
