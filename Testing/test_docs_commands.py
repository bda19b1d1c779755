"""Every `medsyn …` command shown in README.md and docs/*.md parses with the real parser; the cheap ones run.

Commands are taken from fenced code blocks (shell or unlabelled): lines starting with `medsyn`, also after `&&` or
`;`, and `python -m MedSynLib …`, `PythonSlicer -m MedSynLib …`, `torchrun … -m MedSynLib …`. Each one is parsed by
`MedSynLib.cli.build_parser()`, so a renamed or removed option fails here.

A command is also run, in a temporary folder (with `MEDSYN_HOME` there), when its sub-command is one this test can
run small (`RUNNABLE`: the tiny random model replaces `--model`, `SMALL` caps sizes, counts and sampler steps,
missing input files are made from a small phantom), the line before its block's fence is not
`<!-- docs-test: parse-only (why) -->`, and no earlier command had the same sub-command and set of options.
The marker is for what is too expensive or needs data the test does not have; see docs/development.md.
Every `python -m MedSynLib.<module>` the docs name (benchmarks, the demo recipe) must be a module that exists.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import SimpleITK as sitk

from MedSynLib.cli import build_parser, main
from MedSynLib.io.images import Geometry
from MedSynLib.modelstore.bundle import read_model_spec, write_model_spec

from tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
PARSE_ONLY = re.compile(r"<!--\s*docs-test:\s*parse-only\b")
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
COMMAND_LINE = re.compile(r"(^|[;&|]\s*)(\S*/)?medsyn\s|\s-m\s+MedSynLib(\s|$)")
"""A line that holds a medsyn command (not a file tree or prose that names one in backquotes)."""
PLACEHOLDER_VALUES = {"N": "1", "K": "1", "I": "0", "GB": "8", "S": "1.0", "SEED": "1", "STEPS": "2"}
"""Upper-case placeholders that stand for numbers; any other upper-case word (NAME, DIR, FILE) is kept as text."""

RUNNABLE = {("generate",), ("segment",), ("batch",), ("edit",), ("preview",), ("phantoms",), ("models", "list")}
"""Sub-commands this test can run small; every other command (training, import, packaging) is parse-only."""
SMALL = {"--n": 1, "--per-prompt": 1, "--workers": 1, "--size": 32, "--steps-lowres": 1, "--steps-sr": 1}
"""Options capped when a command is run (`--spacing` is scaled with `--size` so the field of view stays); the
sampler steps are also set to 1 where the command does not give them."""
INPUTS = {"--ct": "ct", "--reference-ct": "ct", "--lobes": "lobes", "--airway": "airway", "--vessels": "vessels",
          "--region": "region", "--report-file": "report", "--prompts": "prompts"}
"""Input options whose file is made from the small phantom when the documented path does not exist."""


@dataclass(frozen=True)
class DocCommand:
    source: str  # "docs/cli.md:27"
    argv: tuple[str, ...]
    parse_only: bool

    @property
    def key(self) -> tuple[str, ...]:
        words = []
        for token in self.argv:
            if token.startswith("-"):
                break
            words.append(token)
        return tuple(words[:2]) if words[:1] == ["models"] else tuple(words[:1])


def _medsyn_argv(tokens: list[str]) -> list[str] | None:
    """The medsyn arguments of one shell command (a list of words), or None when it is not a medsyn command."""
    if tokens and Path(tokens[0]).name == "medsyn":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "MedSynLib":
            return tokens[i + 2:]
    return None


def _substitute(token: str) -> str:
    token = re.sub(r"<([^<>]+)>", r"\1", token)  # <name> -> name
    if token in PLACEHOLDER_VALUES:
        return PLACEHOLDER_VALUES[token]
    if "|" in token and not token.startswith(("'", '"')):
        return token.split("|")[0]  # auto|cpu|cuda -> auto
    return token


def _commands_of_line(line: str) -> list[list[str]]:
    if not COMMAND_LINE.search(line):
        return []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words, commands = [], []
    for token in list(lexer) + [";"]:
        if token in (";", "&&", "||", "|", "&"):
            if (argv := _medsyn_argv(words)) is not None:
                commands.append(argv)
            words = []
        else:
            words.append(token)
    return commands


def _optional_brackets(argv: list[str]) -> list[str]:
    """`[--json]` -> `--json`: an optional part shown in brackets is included."""
    return [t[1:-1] if t.startswith("[") and t.endswith("]") else t for t in argv]


def doc_commands() -> list[DocCommand]:
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        block, parse_only, start, previous = None, False, 0, ""
        for number, line in enumerate(lines, 1):
            fence = FENCE.match(line)
            if block is None and fence:
                block, parse_only = fence.group(2).lower(), bool(PARSE_ONLY.search(previous))
                pending, start = "", number + 1
            elif block is not None and fence and not fence.group(2):
                block = None
            elif block is not None and block in SHELL_BLOCKS:
                pending += line.rstrip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                for argv in _commands_of_line(pending):
                    argv = [_substitute(t) for t in _optional_brackets(argv)]
                    found.append(DocCommand(f"{doc.relative_to(REPO)}:{start}", tuple(argv), parse_only))
                pending, start = "", number + 1
            if line.strip():
                previous = line
    return found


COMMANDS = doc_commands()


MODULE_RUN = re.compile(r"-m\s+(MedSynLib\.[\w.]*\w)")


def documented_modules() -> list[tuple[str, str]]:
    """(source, module) of every `python -m MedSynLib.something` in the docs, in code blocks or inline."""
    return [(f"{doc.relative_to(REPO)}:{number}", module) for doc in DOCS
            for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
            for module in MODULE_RUN.findall(line)]


@pytest.mark.parametrize("source, module", documented_modules())
def test_every_documented_module_exists(source, module):
    """`python -m MedSynLib.x` commands (benchmarks, the demo recipe, the checker) name a module that is there."""
    assert importlib.util.find_spec(module) is not None, f"{source}: no module {module}"


def test_the_docs_show_commands_and_the_readme_test_command_is_what_ci_runs():
    sources = {c.source.split(":")[0] for c in COMMANDS}
    assert "README.md" in sources and "docs/cli.md" in sources, sources
    assert any(c.key == ("generate",) and c.source.startswith("README.md") for c in COMMANDS)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == "python -m pytest -q Testing", ci
    assert 'pip install -e ".[test]" && python -m pytest -q Testing' in (REPO / "README.md").read_text(encoding="utf-8")


def _parse(argv):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"does not parse: medsyn {shlex.join(argv)}\n{stderr.getvalue()}")


@pytest.mark.parametrize("command", COMMANDS, ids=[c.source for c in COMMANDS])
def test_every_documented_command_parses(command):
    _parse(command.argv)


# ---------------------------------------------------------------- running the cheap ones

def _runs(commands: list[DocCommand]) -> list[DocCommand]:
    """The commands to run: runnable, not marked parse-only, and each (sub-command, set of options) only once."""
    seen, runs = set(), []
    for command in commands:
        signature = (command.key, frozenset(t for t in command.argv if t.startswith("--")))
        if not command.parse_only and command.key in RUNNABLE and signature not in seen:
            seen.add(signature)
            runs.append(command)
    return runs


RUN = _runs(COMMANDS)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The tiny random model on a chest-sized box (32³ voxels of 8 mm), so a phantom's lungs and masks fit in it."""
    folder = build_tiny_model(tmp_path_factory.mktemp("docs_model") / "tiny")
    spec = read_model_spec(folder)
    spec["grid"] = Geometry((32, 32, 32), (8.0, 8.0, 8.0), (-124.0, -124.0, -124.0))
    write_model_spec(folder, **spec)
    return folder


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """One small phantom case (64³ at 4 mm): the source of every input file a documented command names."""
    out = tmp_path_factory.mktemp("docs_phantom") / "data"
    assert main(["phantoms", "--n", "1", "--size", "64", "--spacing", "4", "--out", str(out), "--seed", "5",
                 "--no-measure"]) == 0
    return out / "case_000000"


def _make_input(kind: str, path: Path, phantom: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("ct", "lobes", "airway", "vessels", "region"):  # a region: the lobe map (labels 1..5)
        source = "lobes" if kind == "region" else kind
        sitk.WriteImage(sitk.ReadImage(str(phantom / f"{source}.nii.gz")), str(path))
    elif kind == "report":
        shutil.copy(phantom / "report.txt", path)
    elif kind == "prompts":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "report"])
            writer.writerow(["effusion", "FINDINGS: Large left pleural effusion. IMPRESSION: Left effusion."])


def _small(argv: list[str], args, model: Path) -> list[str]:
    """The command as run here: sizes and counts capped, the tiny model, the CPU; `--force` where the command has
    it (a segmentation's quality check refuses the tiny random model's output, rightly)."""
    argv, takes_model = list(argv), hasattr(args, "model")
    if hasattr(args, "force") and "--force" not in argv:
        argv.append("--force")
    options = {t: i for i, t in enumerate(argv) if t.startswith("--")}
    if "--size" in options and "--spacing" in options:
        size, spacing = int(argv[options["--size"] + 1]), float(argv[options["--spacing"] + 1])
        argv[options["--spacing"] + 1] = str(size * spacing / min(size, SMALL["--size"]))
    for option, cap in SMALL.items():
        if option in options:
            argv[options[option] + 1] = str(min(int(argv[options[option] + 1]), cap))
    for option in ("--steps-lowres", "--steps-sr"):
        if takes_model and option not in options:
            argv += [option, "1"]
    if "--device" in options:
        argv[options["--device"] + 1] = "cpu"
    if takes_model:
        if "--model" in options:
            argv[options["--model"] + 1] = str(model)
        else:
            argv += ["--model", str(model)]
    return argv


@pytest.mark.parametrize("command", RUN, ids=[c.source for c in RUN])
def test_cheap_documented_commands_run_with_a_tiny_model(command, tiny_model, phantom, one_thread, tmp_path,
                                                        monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "medsyn_home"))
    args = _parse(command.argv)
    argv = list(command.argv)
    for i, token in enumerate(argv[:-1]):
        if token in INPUTS and not (tmp_path / argv[i + 1]).exists():
            _make_input(INPUTS[token], tmp_path / argv[i + 1], phantom)
    argv = _small(argv, args, tiny_model)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, (f"{command.source}: `medsyn {shlex.join(argv)}` exited {code}\n{captured.err[-3000:]}\n"
                       "(an expensive command or one that needs real data: mark its block "
                       "<!-- docs-test: parse-only (why) -->)")
