"""Static checks of the Slicer extension: packaging lists, .ui widget names, Python 3.12 syntax, metadata, icons.

Run ``python Testing/test_slicer_packaging.py --update`` to rewrite the explicit file list in
MedSynSlicer/CMakeLists.txt after adding or removing a Python file under MedSynSlicer/. The library and its demo model
are not part of the extension (the module installs the ``medsyn`` wheel: Testing/test_extension_export.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_DIR = os.path.join(ROOT, "MedSynSlicer")
MODULE_CMAKE = os.path.join(MODULE_DIR, "CMakeLists.txt")
UI_FILE = os.path.join(MODULE_DIR, "Resources", "UI", "MedSynSlicer.ui")
WIDGET_FILE = os.path.join(MODULE_DIR, "MedSynSlicer.py")
SKIP_DIRS = {"__pycache__", ".pytest_cache", "build"}


def python_files(folder: str, relative_to: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), relative_to).replace(os.sep, "/"))
    return sorted(found)


def expected_lists() -> dict[str, list[str]]:
    return {"MODULE_PYTHON_SCRIPTS": python_files(MODULE_DIR, MODULE_DIR)}


def listed(cmake_text: str, name: str) -> list[str]:
    match = re.search(rf"# BEGIN {name}\n(.*?)# END {name}", cmake_text, re.S)
    assert match, f"marker block {name} missing in MedSynSlicer/CMakeLists.txt"
    entries = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    return [e.replace("${MODULE_NAME}", "MedSynSlicer") for e in entries]


def update_cmake() -> None:
    with open(MODULE_CMAKE, encoding="utf-8") as f:
        text = f.read()
    for name, files in expected_lists().items():
        body = "".join(f"  {p}\n" for p in files)
        text = re.sub(rf"(# BEGIN {name}\n).*?(# END {name})", lambda m: m.group(1) + body + m.group(2), text,
                      flags=re.S)
    with open(MODULE_CMAKE, "w", encoding="utf-8") as f:
        f.write(text)


# --- packaging ---------------------------------------------------------------------------------------------------

def test_every_python_file_is_packaged():
    with open(MODULE_CMAKE, encoding="utf-8") as f:
        text = f.read()
    for name, files in expected_lists().items():
        missing = sorted(set(files) - set(listed(text, name)))
        extra = sorted(set(listed(text, name)) - set(files))
        assert not missing and not extra, (
            f"{name} in MedSynSlicer/CMakeLists.txt is out of date (missing {missing}, stale {extra}). "
            "Fix: python Testing/test_slicer_packaging.py --update")
    assert "WITH_GENERIC_TESTS" in text
    assert "Resources/UI/${MODULE_NAME}.ui" in text and "Resources/Icons/${MODULE_NAME}.png" in text


def test_self_test_is_registered_with_ctest():
    """The in-Slicer self-test runs on the extension factory: slicer_add_python_unittest on the module file, under
    BUILD_TESTING (as Slicer's scripted-module template does), and the file holds the test class it runs."""
    with open(MODULE_CMAKE, encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", text, re.S)
    assert block, "no if(BUILD_TESTING) block in MedSynSlicer/CMakeLists.txt"
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py\s*\)", block.group(1))
    with open(WIDGET_FILE, encoding="utf-8") as f:
        tree = ast.parse(f.read(), feature_version=(3, 12))
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedSynSlicerTest")
    assert any(getattr(b, "id", "") == "ScriptedLoadableModuleTest" for b in test.bases)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "runTest" for n in test.body)


def installed_tree(folder: str) -> str:
    """Lay out what MedSynSlicer/CMakeLists.txt installs into ``lib/Slicer-X.Y/qt-scripted-modules``: the module's
    SCRIPTS and RESOURCES at their relative paths, nothing else. Returns the folder."""
    with open(MODULE_CMAKE, encoding="utf-8") as f:
        text = f.read()
    assert "install(" not in text and "MedSynLib" not in text.replace("MedSynLib beside", ""), \
        "the extension installs only the module: the library and its weights come from the medsyn wheel"
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", text, re.S).group(1).split()
    copies = [(os.path.join(MODULE_DIR, p), p) for p in listed(text, "MODULE_PYTHON_SCRIPTS")]
    copies += [(os.path.join(MODULE_DIR, p.replace("${MODULE_NAME}", "MedSynSlicer")),
                p.replace("${MODULE_NAME}", "MedSynSlicer")) for p in resources]
    for src, rel in copies:
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        shutil.copy(src, os.path.join(folder, rel))
    return folder


def test_installed_tree_holds_every_file_the_module_opens(tmp_path):
    """From the installed layout alone: the .ui and icon the module loads, and no weights (small files only)."""
    tree = installed_tree(str(tmp_path / "qt-scripted-modules"))
    with open(WIDGET_FILE, encoding="utf-8") as f:
        for resource in re.findall(r"resourcePath\(\"([^\"]+)\"\)", f.read()):
            assert os.path.isfile(os.path.join(tree, "Resources", resource)), resource
    assert os.path.isfile(os.path.join(tree, "Resources", "Icons", "MedSynSlicer.png"))
    sizes = {os.path.relpath(os.path.join(d, n), tree): os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(tree) for n in names}
    assert max(sizes.values()) < 1_000_000 and not [p for p in sizes if p.endswith((".safetensors", ".bin"))], sizes


def test_extension_metadata():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        top = f.read()
    project = re.search(r"project\((\w+)\)", top).group(1)
    assert project == "MedSyn" and not project.lower().startswith("slicer")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key} \"[^\"]+\"\)", top), key
    assert 'set(EXTENSION_CATEGORY "Image Synthesis")' in top
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top
    for needed in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(MedSynSlicer)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in top, needed
    with open(os.path.join(ROOT, f"{project}.json"), encoding="utf-8") as f:
        entry = json.load(f)
    assert entry["$schema"].startswith("https://") and entry["category"] == "Image Synthesis"
    assert entry["scm_url"].startswith("https://") and entry["build_dependencies"] == ["PyTorch"]
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        assert "Apache License" in f.read(2000)


@pytest.mark.parametrize("path", ["MedSynSlicer/Resources/Icons/MedSynSlicer.png", "Resources/Icons/MedSyn.png"])
def test_icons_are_128_px_png(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (128, 128)


# --- Python sources ----------------------------------------------------------------------------------------------

MODULE_SOURCES = python_files(MODULE_DIR, ROOT) + ["Testing/render_panel.py"]


@pytest.mark.parametrize("path", MODULE_SOURCES)
def test_module_sources_compile_for_python_312_without_imp(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, filename=path, feature_version=(3, 12))
    compile(source, path, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] not in ("imp", "distutils") for a in node.names), path
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in ("imp", "distutils"), path


ASKS_THE_USER = {"dialogs.py", "remote.py"}
"""MedSynSlicerLib modules that show Qt dialogs or settings (the Remote server's): they import ``qt`` inside their
functions, never at the top."""


def test_scene_package_imports_no_qt():
    """MedSynSlicerLib must run with slicer-core alone: no qt, ctk, slicer.app or slicer.modules (the dialogs
    module imports qt only when a dialog is shown, so importing it needs no Qt)."""
    for path in python_files(os.path.join(MODULE_DIR, "MedSynSlicerLib"), ROOT):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            tree = ast.parse(f.read(), feature_version=(3, 12))
        nodes = tree.body if os.path.basename(path) in ASKS_THE_USER else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("qt", "ctk", "PythonQt", "PySide6", "PyQt5"), (path, name)
                assert not name.startswith(("slicer.modules", "slicer.app")), (path, name)


# --- .ui ---------------------------------------------------------------------------------------------------------

def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


PANEL_FILES = [WIDGET_FILE] + [os.path.join(MODULE_DIR, "MedSynSlicerLib", f) for f in ("sections.py", "panelstate.py")]
"""The Widget and the parts of the panel it is made of (they name the .ui's widgets)."""


def test_every_widget_used_by_the_module_exists_in_the_ui():
    source = ""
    for path in PANEL_FILES:
        with open(path, encoding="utf-8") as f:
            source += f.read() + "\n"
    used = {name for name in re.findall(r"self\.ui\.(\w+)", source) if not name.startswith("__")}
    # selectors reached through getattr(self.ui, name) with names from module constants
    tree = ast.parse(source, feature_version=(3, 12))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LOBE_SELECTORS" for t in node.targets):
            used |= set(ast.literal_eval(node.value))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MODES" for t in node.targets):
            used |= {f"{mode}Tab" for mode in ast.literal_eval(node.value)}  # one tab per mode
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("SETTINGS_CONTROLS", "TAB_PAGES",
                                                                         "GUIDANCE_ROW") for t in node.targets):
            used |= set(ast.literal_eval(node.value))  # panelstate's control names
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "states" and \
                isinstance(node.slice, ast.Constant):
            used.add(node.slice.value)  # panelstate's states["<widget>"]
    used |= {"airwaySegmentSelector", "vesselsSegmentSelector"}
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"widgets used by the panel but missing in the .ui: {missing}"
    assert {"generateButton", "cancelButton", "progressBar", "useAnywayButton", "messagesTextEdit",
            "settingsFormLayoutLabel5"} <= used


def test_parameter_names_in_ui_match_parameter_node():
    with open(WIDGET_FILE, encoding="utf-8") as f:
        tree = ast.parse(f.read(), feature_version=(3, 12))
    wrapper = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "MedSynSlicerParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= fields, sorted(set(bound.values()) - fields)
    assert {"reportText", "conditionSegmentation", "inputVolume", "outputSegmentation", "seed", "stepsLowres",
            "stepsSuperres", "guidance", "device", "lowresOnly", "holdLobes"} <= set(bound.values())
    assert len(bound.values()) == len(set(bound.values())), "a parameter is bound to two widgets"


def test_ui_scene_connections_cover_mrml_widgets():
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in ui_widgets().items()
            if w.get("class") in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget")}
    assert mrml and mrml <= receivers, sorted(mrml - receivers)


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        update_cmake()
        print(f"updated {MODULE_CMAKE}")
    else:
        sys.exit(pytest.main([__file__, "-q"]))
