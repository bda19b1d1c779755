"""The shape of the code: no function takes more than 8 parameters (a run's settings travel as one RunSettings), and
no file of the library or the Slicer module is over 400 lines (one job per file)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMETERS = 8
MAX_LINES = 400


def _functions(root: Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def _parameters(node) -> list[str]:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_no_function_takes_more_than_eight_parameters():
    wide = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(_parameters(node))})"
            for root in (ROOT / "MedSynLib", ROOT / "MedSynSlicer") for path, node in _functions(root)
            if len(_parameters(node)) > MAX_PARAMETERS]
    assert not wide, "group the settings of these functions (e.g. a dataclass): " + ", ".join(wide)


def test_no_file_is_over_400_lines():
    lines = {path: len(path.read_text(encoding="utf-8").splitlines())
             for root in (ROOT / "MedSynLib", ROOT / "MedSynSlicer") for path in sorted(root.rglob("*.py"))}
    long = [f"{path.relative_to(ROOT)} ({n})" for path, n in lines.items() if n > MAX_LINES]
    assert not long, "split these files along a seam, one job each: " + ", ".join(long)


def test_lazy_exports_are_visible_to_type_checkers():
    """Each package that exports names on first use imports the same names under TYPE_CHECKING."""
    checked = 0
    for path in sorted((ROOT / "MedSynLib").rglob("__init__.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exports = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                        and getattr(node.targets[0], "id", None) == "_EXPORTS"), None)
        if exports is None:
            continue
        branch = next(node for node in tree.body if isinstance(node, ast.If)
                      and getattr(node.test, "id", None) == "TYPE_CHECKING")
        typed = {(node.module, alias.name) for node in branch.body for alias in node.names}
        assert typed == {(module, name) for name, module in exports.items()}, path
        checked += 1
    assert checked >= 4
