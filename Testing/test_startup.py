"""The command line starts without the heavy libraries: building every parser, every command's ``--help`` and
``medsyn models list`` import neither torch nor transformers (they load when a command needs them), and the
generation pipeline loads transformers only with a model's text encoder."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("torch", "transformers")

EVERY_HELP = """
import contextlib, io, sys
from MedSynLib.cli import build_parser
parser = build_parser()
commands = parser._subparsers._group_actions[0].choices
helps = [["--help"]]
for name, sub in commands.items():
    helps.append([name, "--help"])
    for action in sub._actions:
        if action.choices and action.dest.endswith("_command"):
            helps += [[name, a, "--help"] for a in action.choices]
for argv in helps:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
print("HELPS", len(helps))
"""

RUN_COMMAND = """
import runpy, sys
sys.argv = ["medsyn", *sys.argv[1:]]
try:
    runpy.run_module("MedSynLib", run_name="__main__")
except SystemExit:
    pass
"""

REPORT_HEAVY = "\nprint('HEAVY', sorted(m for m in {heavy} if m in sys.modules))\n"


def _heavy_modules(code: str, *args: str, tmp_path) -> tuple[list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDSYN_HOME": str(tmp_path), "PYTHONIOENCODING": "utf-8"}
    run = subprocess.run([sys.executable, "-c", code + REPORT_HEAVY.format(heavy=HEAVY), *args],
                         capture_output=True, encoding="utf-8", env=env, cwd=REPO, timeout=300)
    output = run.stdout[-3000:] + run.stderr[-3000:]
    return [line for line in run.stdout.splitlines() if line.startswith("HEAVY")], output


def test_every_parser_and_help_loads_neither_torch_nor_transformers(tmp_path):
    heavy, output = _heavy_modules(EVERY_HELP, tmp_path=tmp_path)
    assert heavy == ["HEAVY []"], output
    assert int(output.split("HELPS")[1].split()[0]) >= 12, output  # every command and every models action


@pytest.mark.parametrize("args", [["--help"], ["models", "list"]])
def test_command_line_starts_without_torch_or_transformers(args, tmp_path):
    heavy, output = _heavy_modules(RUN_COMMAND, *args, tmp_path=tmp_path)
    assert heavy == ["HEAVY []"], output
    if args == ["models", "list"]:
        assert "medsyn-demo" in output  # the command ran


def test_generation_pipeline_loads_transformers_only_with_the_text_encoder(tmp_path):
    heavy, output = _heavy_modules("import sys; import MedSynLib.pipelines.generation", tmp_path=tmp_path)
    assert heavy == ["HEAVY ['torch']"], output


def _lazy_packages():
    """(package name, its exported names) of every package that loads its names on first use."""
    import importlib
    import pkgutil

    import MedSynLib

    for info in pkgutil.walk_packages(MedSynLib.__path__, "MedSynLib."):
        if info.ispkg:
            package = importlib.import_module(info.name)
            if "_EXPORTS" in vars(package):
                yield info.name, package


def test_no_name_loaded_on_first_use_is_also_a_submodule():
    """Importing a submodule binds its name on the package, so an exported name spelt like a submodule would be the
    module or the function depending on what was imported first."""
    import pkgutil

    packages = dict(_lazy_packages())
    assert {"MedSynLib.models", "MedSynLib.pipelines", "MedSynLib.phantom"} <= set(packages)
    for name, package in packages.items():
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        assert not set(package._EXPORTS) & submodules, name


def test_exported_functions_stay_functions_after_their_modules_are_imported(tmp_path):
    code = ("import MedSynLib.pipelines.edit, MedSynLib.phantom.regions, inspect\n"
            "from MedSynLib.pipelines import generate, segment\n"
            "from MedSynLib.phantom import make_phantom\n"
            "print('FUNCTIONS', all(inspect.isfunction(f) for f in (generate, segment, make_phantom)))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDSYN_HOME": str(tmp_path), "PYTHONIOENCODING": "utf-8"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", env=env, cwd=REPO,
                         timeout=300)
    assert "FUNCTIONS True" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
