"""The extension's publishable tree (`python packaging/export_extension.py OUT`) as the Slicer Extensions Index
checks it: a git repository from the export, its size with history, names, category, CMake project name, LICENSE,
the icon and screenshot the URLs name, no library code and no weights; the module pins the library release.

With ``MEDSYN_EXTENSIONS_INDEX`` set to a checkout of github.com/Slicer/ExtensionsIndex, the Index's own
``scripts/check_description_files.py`` runs against the export too (its clone of ``scm_url`` is redirected to the
local repository), with ``MEDSYN_EXTENSIONS_INDEX_PYTHON`` (the script needs Python >= 3.12; requests and
jsonschema are optional) or this interpreter. Offline, the checks that fetch from a public host (the JSON schema, the repository topics on
api.github.com, the icon and screenshot downloads) cannot pass; every other check must.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "packaging", ROOT / "MedSynSlicer"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import export_extension  # noqa: E402

NEEDS_PUBLIC_HOST = ("Check JSON schema", "Check git repository topics", "Check CMakeLists.txt content")
"""The Index checks that download something (the schema, GitHub topics, the icon and screenshot URLs)."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The export, committed as the first commit of a new git repository (as the extension repository gets it)."""
    out = tmp_path_factory.mktemp("export") / "SlicerMedSyn"
    assert export_extension.main([str(out)]) == 0
    git = ["git", "-c", "user.name=MedSyn", "-c", "user.email=medsyn@example.org", "-C", str(out)]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "MedSyn extension"]):
        subprocess.run(git + command, check=True, capture_output=True)
    return out


def cmake_value(text: str, key: str) -> str:
    return re.search(rf'set\({key} "([^"]+)"\)', text).group(1)


def test_export_is_a_small_module_only_tree_the_index_accepts(exported):
    files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()
                   and ".git" not in p.relative_to(exported).parts)
    size_mb = sum(p.stat().st_size for p in exported.rglob("*") if p.is_file()) / 2**20  # .git included
    assert size_mb < 5, f"{size_mb:.1f} MB with history (the Index allows 100 MB)"
    assert not [f for f in files if f.endswith((".safetensors", ".bin", ".pt")) or f.startswith("MedSynLib")], files
    assert {"CMakeLists.txt", "LICENSE", "README.md", "MedSyn.json", "MedSynSlicer/CMakeLists.txt",
            "MedSynSlicer/MedSynSlicer.py", "MedSynSlicer/MedSynSlicerLib/dependencies.py",
            "MedSynSlicer/Resources/UI/MedSynSlicer.ui"} <= set(files)
    top = (exported / "CMakeLists.txt").read_text(encoding="utf-8")
    entry = json.loads((exported / "MedSyn.json").read_text(encoding="utf-8"))
    project = re.search(r"project\s*\(\s*([^\s\)]+)", top).group(1)
    assert project == "MedSyn" and not project.lower().startswith("slicer")
    repository = entry["scm_url"].rstrip("/").rsplit("/", 1)[1]
    assert repository.startswith("Slicer"), repository
    assert entry["category"] == cmake_value(top, "EXTENSION_CATEGORY") == "Image Synthesis"
    assert entry["build_dependencies"] == cmake_value(top, "EXTENSION_DEPENDS").split()
    assert "Apache License" in (exported / "LICENSE").read_text(encoding="utf-8")[:2000]
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_value(top, key).split():
            owner_repo_branch = f"https://raw.githubusercontent.com/medsyn-slicer/{repository}/{entry['scm_revision']}/"
            assert url.startswith(owner_repo_branch), url
            image = exported / url[len(owner_repo_branch):]
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url
    assert b"\r" not in (exported / "MedSyn.json").read_bytes()


def test_module_installs_this_library_release():
    """The module pins this release and installs every dependency of the wheel itself, or Slicer ships it."""
    import MedSynLib
    from MedSynSlicerLib import dependencies

    assert dependencies.LIBRARY_REQUIREMENT == f"medsyn=={MedSynLib.__version__}"
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    covered = {name.match(r).group(0).lower() for r in (dependencies.TORCH_REQUIREMENT, *dependencies.PIP_REQUIREMENTS,
                                                        *dependencies.SHIPPED_WITH_SLICER)}
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    needs = {name.match(r).group(0).lower() for r in re.findall(r'"([^"]+)"', listed)}
    assert needs and needs <= covered, f"the wheel needs {sorted(needs - covered)}, which the module never installs"


def test_export_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert export_extension.main([str(tmp_path / "mine")]) == 2
    assert "never replaced" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


RUNNER = textwrap.dedent('''
    """Run the Index's check script offline: a download that fails becomes a failed check, not a crash."""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("check", sys.argv[1])
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)

    def offline(function):
        def wrapped(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except check.ExtensionCheckError:
                raise
            except Exception as exc:  # no network here: requests missing or no route to the host
                raise check.ExtensionCheckError(args[0] if args else "", function.__name__,
                                                f"needs a public host (offline: {type(exc).__name__})")
        return wrapped

    check.check_git_repository_topics = offline(check.check_git_repository_topics)
    check.validate_image_url = offline(check.validate_image_url)
    sys.argv = [sys.argv[1]] + sys.argv[2:]
    sys.exit(check.main())
''')


def run_index_check(index: Path, exported: Path, work: Path) -> str:
    """The Index script's report on MedSyn.json, from a clone of the Index with the export's MedSyn.json added."""
    clone = work / "ExtensionsIndex"
    subprocess.run(["git", "clone", "-q", "--shared", str(index), str(clone)], check=True, capture_output=True)
    (clone / "MedSyn.json").write_bytes((exported / "MedSyn.json").read_bytes())
    (work / "run_check.py").write_text(RUNNER, encoding="utf-8")
    scm_url = json.loads((exported / "MedSyn.json").read_text())["scm_url"]
    env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{exported}.insteadOf",
           "GIT_CONFIG_VALUE_0": scm_url, "GIT_TERMINAL_PROMPT": "0"}
    python = os.environ.get("MEDSYN_EXTENSIONS_INDEX_PYTHON", sys.executable)
    done = subprocess.run([python, str(work / "run_check.py"),
                           str(clone / "scripts" / "check_description_files.py"), "MedSyn.json"],
                          cwd=str(clone), env=env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.mark.skipif(not os.environ.get("MEDSYN_EXTENSIONS_INDEX"),
                    reason="set MEDSYN_EXTENSIONS_INDEX to a checkout of github.com/Slicer/ExtensionsIndex")
def test_extensions_index_check_script_passes_offline(exported, tmp_path):
    report = run_index_check(Path(os.environ["MEDSYN_EXTENSIONS_INDEX"]), exported, tmp_path)
    results = {check: mark for mark, check in re.findall(
        r"^- :(white_check_mark|x): (.+?) (?:completed successfully|failed)", report, re.M)}
    must_pass = ("Clone repository", "Check repository size", "Check JSON file format", "Check extension name",
                 "Check category", "Check git repository name", "Check SCM URL syntax", "Check license file")
    assert {c: results.get(c) for c in must_pass} == {c: "white_check_mark" for c in must_pass}, report
    assert ":white_check_mark: Dependency check completed successfully" in report, report
    for check in NEEDS_PUBLIC_HOST:  # offline these fail on downloads only, never on a name or a missing key
        line = next(line for line in report.splitlines() if check in line)
        for wrong in ("does not match", "No project()", "No EXTENSION_", "not found in repository", "key is missing"):
            assert wrong not in line, line


SLICER_CONFIG = """# Stands in for a Slicer build tree's SlicerConfig.cmake: the variables a scripted module needs, then Slicer's and
# CTK's own macro files (unchanged, from their checkouts). The extension's config and package need a Slicer build.
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(CTK_CMAKE_DIR "{ctk}")
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/NoSlicerBuild.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/NoSlicerBuild.cmake")
"""
USE_SLICER = """include({ctk}/ctkMacroCompilePythonScript.cmake)
include({ctk}/ctkFunctionExtractOptimizedLibrary.cmake)
include({slicer}/SlicerMacroPythonTesting.cmake)
include({slicer}/SlicerMacroBuildScriptedModule.cmake)
"""


@pytest.mark.skipif(not (os.environ.get("MEDSYN_SLICER_CMAKE") and os.environ.get("MEDSYN_CTK_CMAKE")),
                    reason="set MEDSYN_SLICER_CMAKE and MEDSYN_CTK_CMAKE to the CMake folders of Slicer and CTK")
def test_export_configures_builds_and_installs_with_slicers_cmake_macros(exported, tmp_path):
    """The export's CMake files with Slicer's slicerMacroBuildScriptedModule and CTK's ctkMacroCompilePythonScript:
    configure, build (copy and byte-compile) and install give the module's files and nothing else."""
    slicer_dir = tmp_path / "slicer"
    slicer_dir.mkdir()
    dirs = {"ctk": os.environ["MEDSYN_CTK_CMAKE"], "slicer": os.environ["MEDSYN_SLICER_CMAKE"]}
    (slicer_dir / "SlicerConfig.cmake").write_text(SLICER_CONFIG.replace("{ctk}", dirs["ctk"]))
    (slicer_dir / "UseSlicer.cmake").write_text(USE_SLICER.format(**dirs))
    (slicer_dir / "NoSlicerBuild.cmake").write_text("")
    build, prefix = tmp_path / "build", tmp_path / "install"
    for command in (["cmake", "-S", str(exported), "-B", str(build), f"-DSlicer_DIR={slicer_dir}",
                     "-DBUILD_TESTING=OFF", f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                    ["cmake", "--build", str(build)], ["cmake", "--install", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    installed_root = prefix / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    installed = {p.relative_to(installed_root).as_posix() for p in installed_root.rglob("*") if p.is_file()}
    module = exported / "MedSynSlicer"
    shipped = {p.relative_to(module).as_posix() for p in module.rglob("*") if p.is_file()} - {"CMakeLists.txt"}
    compiled = {p[:-3] + ".pyc" for p in shipped if p.endswith(".py")}
    assert installed == shipped | compiled, (sorted(shipped | compiled - installed), sorted(installed - shipped))
