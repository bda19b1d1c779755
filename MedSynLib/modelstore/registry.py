"""Model registry: the packaged models (``models.json`` with the models it names) and the user's imported ones.

The packaged ones are package data: ``MedSynLib/resources`` in an installed wheel (pyproject.toml maps the source
tree's ``Resources/`` there), ``Resources/`` beside the ``MedSynLib`` package in a source checkout (``pip install -e``
or ``PYTHONPATH``). Imported models live in ``$MEDSYN_HOME/models/<name>`` (default ``~/.medsyn/models``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..environment import medsyn_home
from .bundle import read_model_spec
from .verify import check_spec

PACKAGE_DIR = Path(__file__).resolve().parents[1]
RESOURCE_FOLDERS = (PACKAGE_DIR / "resources",) + (
    (PACKAGE_DIR.parent / "Resources",) if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else ())
"""Where ``models.json`` is looked for: the installed package's data, and a source checkout's ``Resources/`` (only
when ``MedSynLib`` sits in a checkout, beside ``pyproject.toml``: an installed package reads nothing beside it)."""
REGISTRY_FILE = next((folder / "models.json" for folder in RESOURCE_FOLDERS if (folder / "models.json").is_file()),
                     RESOURCE_FOLDERS[0] / "models.json")


GET_A_MODEL = ("the demo model ships inside the medsyn package: reinstall it (`pip install --force-reinstall --no-deps "
               "medsyn`, or `pip install .` in a checkout), import the official weights with `medsyn models import`, "
               "or pass --model FOLDER (a folder with model.json)")
"""How to get a usable model, for messages that find none."""


def user_models_dir() -> Path:
    return medsyn_home() / "models"


def user_model_folder(name: str) -> Path:
    """The store folder of the imported model ``name``, which must be a plain name (letters, digits, ``._-``)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or "") or ".." in name:
        raise ValueError(f"--name {name!r} is not a plain model name. Fix: use letters, digits, '.', '_' and '-' "
                         "only (no folders, no '..'); models are stored under " + str(user_models_dir()))
    return user_models_dir() / name


def registry() -> dict:
    return json.loads(REGISTRY_FILE.read_text(encoding="utf-8")) if REGISTRY_FILE.is_file() else {"models": []}


def list_models() -> list[dict]:
    """Registry entries plus imported models, each with ``path`` resolved and ``available`` set."""
    entries = []
    for entry in registry()["models"]:
        path = (REGISTRY_FILE.parent / entry["path"]) if entry.get("path") else user_models_dir() / entry["name"]
        entries.append({**entry, "path": str(path), "available": (path / "model.json").is_file()})
    known = {e["name"] for e in entries}
    if user_models_dir().is_dir():
        for folder in sorted(user_models_dir().iterdir()):
            if folder.name not in known and (folder / "model.json").is_file():
                entry = {"name": folder.name, "path": str(folder), "packaged": False,
                         "requires_license_acceptance": False}
                try:
                    spec = read_model_spec(folder)
                    check_spec(spec, folder)
                except (ValueError, OSError) as exc:  # one broken folder must not hide the others
                    entries.append({**entry, "title": f"BROKEN: {exc}", "license": "unknown", "available": False,
                                    "error": str(exc)})
                    continue
                entries.append({**entry, "title": spec.get("title", folder.name),
                                "license": spec.get("license", "unknown"), "available": True})
    return entries


def resolve_model(name_or_path: str | None) -> Path:
    """A model folder from a registry name or a path; clear error if it is not installed."""
    name = name_or_path or "default"
    if name == "default":
        name = registry().get("default", "medsyn-demo")
    path = Path(name).expanduser()
    if (path / "model.json").is_file():
        return path
    for entry in list_models():
        if entry["name"] == name:
            if entry["available"]:
                return Path(entry["path"])
            if entry.get("error"):  # installed, but its model.json is damaged
                raise ValueError(f"model {name!r} at {entry['path']} cannot be used: {entry['error']}")
            raise FileNotFoundError(
                f"model {name!r} is not installed (expected at {entry['path']}). "
                + ("Import the official checkpoints with `medsyn models import`." if not entry.get("packaged")
                   else f"Its files are missing from this installation. Fix: {GET_A_MODEL}."))
    known = [e["name"] for e in list_models()]
    if not known:
        raise FileNotFoundError(f"unknown model {name!r}: no model is installed (no {REGISTRY_FILE.name} in "
                                f"{' or '.join(str(f) for f in RESOURCE_FOLDERS)}, nothing in {user_models_dir()}). "
                                f"Fix: {GET_A_MODEL}.")
    raise FileNotFoundError(f"unknown model {name!r}: not a model folder (with model.json) and not in the registry "
                            f"({', '.join(known)}). See `medsyn models list`.")
