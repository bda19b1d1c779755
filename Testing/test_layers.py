"""Imports run one way: each part of MedSynLib imports only the parts below it (read from the source with ``ast``,
function-level imports included), and the Slicer module reaches MedSynLib only through its light public parts and
the ``medsyn`` command line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "MedSynLib"

BASE = {"__init__", "runtime", "run_settings", "seeding", "progress", "errors", "lazy", "settings", "arguments",
        "environment"}
"""Modules every part may use: the package's constants, device/precision, the settings of a run, seeds, progress
events, error kinds and exit codes, names exported on first use, settings read from JSON, option value types, the
environment reader."""
ALLOWED = {
    "__init__": {"modelstore"},  # MedSynLib.load_model, the public entry point (imported inside the function)
    "runtime": {"environment", "arguments"}, "run_settings": {"arguments", "environment"}, "seeding": set(),
    "progress": set(), "errors": set(), "lazy": set(), "settings": set(),
    "arguments": set(), "environment": {"errors"},
    "io": BASE,
    "models": BASE,
    "diffusion": BASE | {"models"},
    "modelstore": BASE | {"io", "models"},
    "data": BASE | {"io"},
    "phantom": BASE | {"io", "data"},
    "official": BASE | {"io", "models", "diffusion", "modelstore"},
    "pipelines": BASE | {"io", "models", "diffusion", "modelstore", "phantom", "remote"},
    "remote": BASE | {"io"},  # the server's client (standard library only): --server runs, the Python API
    "server": BASE | {"modelstore", "pipelines", "remote"},  # medsyn serve: the command line's parser and jobs
    "recipes": set(),  # shipped training configs (data only)
    "train": BASE | {"io", "models", "diffusion", "modelstore", "data", "phantom", "recipes"},
    "eval": BASE | {"io", "models", "diffusion", "modelstore", "data", "phantom", "pipelines"},
    "bench": BASE | {"io", "models", "diffusion"},
    "cli": BASE,  # loads the command modules by name (COMMAND_MODULES, COMMAND_GROUPS)
    "__main__": {"cli"},
}
"""Part -> the parts it may import. A part is a sub-package (``modelstore``) or a top-level module (``cli``)."""
SLICER_ALLOWED = {"MedSynLib", "MedSynLib.run_settings", "MedSynLib.io.segments", "MedSynLib.io.files",
                  "MedSynLib.modelstore.registry", "MedSynLib.modelstore.bundle", "MedSynLib.modelstore.jsonfiles",
                  "MedSynLib.io.dicom", "MedSynLib.remote"}
"""What the Slicer module may import from MedSynLib: the parts that import no torch (the settings of a run, segment
definitions, safe file writing, the model list and model.json, the DICOM marking, the server's client); generation
and everything heavy run through ``medsyn``."""


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module or module.name) of every import in the file ``path`` of the package ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _part(module: str) -> str:
    """The part of ``MedSynLib.x.y``: ``x`` when it is a sub-package or module, else ``__init__``."""
    parts = module.split(".")
    if len(parts) < 2:
        return "__init__"
    name = parts[1]
    return name if (LIBRARY / name).is_dir() or (LIBRARY / f"{name}.py").is_file() else "__init__"


def test_every_part_has_a_rule():
    parts = {p.name for p in LIBRARY.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    parts |= {p.stem for p in LIBRARY.glob("*.py")}
    assert parts == set(ALLOWED), f"give {sorted(parts ^ set(ALLOWED))} a place in ALLOWED (and in the layer notes)"


def test_library_imports_run_down_the_layers():
    wrong = []
    for path in sorted(LIBRARY.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module if path.name == "__init__.py" else ".".join(rel[:-1])
        source = _part(module) if path.name != "__init__.py" or len(rel) > 2 else "__init__"
        for line, target in _imports(path, package):
            if target.startswith("MedSynLib.") or target == "MedSynLib":
                part = _part(target)
                if part != source and part not in ALLOWED[source]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({part})")
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def test_slicer_module_uses_only_the_public_library():
    wrong = []
    for path in sorted((ROOT / "MedSynSlicer").rglob("*.py")):
        for line, target in _imports(path, "MedSynSlicer"):
            module = target if _is_module(target) else target.rsplit(".", 1)[0]
            if module.split(".")[0] == "MedSynLib" and module not in SLICER_ALLOWED:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "the Slicer module reaches into MedSynLib (run `medsyn` instead):\n" + "\n".join(wrong)


def test_what_the_slicer_module_imports_loads_no_torch():
    code = ("import sys; " + "; ".join(f"import {m}" for m in sorted(SLICER_ALLOWED))
            + "; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


def test_the_development_page_states_these_rules():
    """docs/development.md's table and its list of base modules say what ALLOWED and BASE enforce."""
    import re

    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    rules = text.split("## Layering rules", 1)[1].split("\n\n| part |", 1)
    stated_base = set(re.findall(r"`(\w+)`", rules[0].split('"base" =', 1)[1])) | {"__init__"}
    assert stated_base == BASE, f"the page's base modules {sorted(stated_base)} differ from BASE {sorted(BASE)}"
    table = {}
    for row in rules[1].split("\n\n", 1)[0].splitlines()[2:]:
        parts, allowed = row.strip("|").split("|")
        for part in re.findall(r"`(\w+)`", parts):
            table[part] = set(re.findall(r"`(\w+)`", allowed))
    layered = {part: allowed - BASE for part, allowed in ALLOWED.items() if part not in BASE | {"cli", "__main__"}}
    assert {part: table.get(part) for part in layered} == layered
