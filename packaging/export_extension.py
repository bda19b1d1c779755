"""Write the 3D Slicer extension's publishable source tree: what the extension repository (SlicerMedSyn) holds.

    python packaging/export_extension.py OUT_FOLDER [--overwrite]

OUT_FOLDER gets the top-level CMakeLists.txt, LICENSE, a README, the extension icon and screenshot (at the paths
the CMake URLs name), the description file for the Extensions Index (MedSyn.json) and the module folder
MedSynSlicer/ (its CMakeLists.txt, Python files, .ui and icon). No library code and no weights: the module installs
the ``medsyn`` wheel (the library with its demo model) on first use. docs/install.md says how to publish it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedSynLib import __version__  # noqa: E402
from MedSynLib.io.files import OutputError, output_folder  # noqa: E402

EXTENSION_NAME = "MedSyn"
MODULE = "MedSynSlicer"
TOP_FILES = ("CMakeLists.txt", "LICENSE", f"{EXTENSION_NAME}.json")
MODULE_SUFFIXES = (".py", ".ui", ".png")
DOCS = "https://github.com/medsyn-slicer/MedSyn/blob/main/docs"
README = """# MedSyn for 3D Slicer (extension)

Text-guided, anatomy-aware synthesis of 3D chest CT with lung lobe, airway and vessel masks in 3D Slicer
([MedSyn, IEEE TMI 2024](https://github.com/batmanlab/MedSyn)), or segmentation of a real chest CT with the same
model. Every output is synthetic and marked so; nothing here is a clinical device.

This repository holds only the Slicer module, written by `packaging/export_extension.py` of
[medsyn-slicer/MedSyn](https://github.com/medsyn-slicer/MedSyn), where the library, the tests and the issues live.
On first use the module asks once, then installs the library with its demo model (the `medsyn` {version} wheel)
into Slicer's Python; PyTorch comes from the PyTorch extension.

Install: *View > Extensions Manager*, **MedSyn**. Guide: [docs/slicer.md]({docs}/slicer.md); what goes where and
how to remove it: [docs/install.md]({docs}/install.md). Licence: Apache-2.0 (LICENSE).
"""


def raw_url_paths(cmake_text: str) -> list[str]:
    """The repository paths that EXTENSION_ICONURL and EXTENSION_SCREENSHOTURLS point to (raw GitHub URLs)."""
    urls = []
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        match = re.search(rf'set\({key} "([^"]+)"\)', cmake_text)
        if not match:
            raise SystemExit(f"CMakeLists.txt sets no {key}")
        urls += match.group(1).split()
    paths = []
    for url in urls:
        match = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(.+)", url)
        if not match:
            raise SystemExit(f"{url} is not a raw GitHub URL of the extension repository")
        paths.append(match.group(1))
    return paths


def module_files() -> list[Path]:
    """The module folder's files that ship (its CMakeLists.txt, Python files, .ui and icons), caches left out."""
    folder = ROOT / MODULE
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
             and (p.suffix in MODULE_SUFFIXES or p.name == "CMakeLists.txt")]
    return [p.relative_to(ROOT) for p in files]


def check_versions() -> None:
    """The module installs ``medsyn==LIBRARY_VERSION``: refuse to export a module pinned to another release."""
    text = (ROOT / MODULE / "MedSynSlicerLib" / "dependencies.py").read_text(encoding="utf-8")
    pinned = re.search(r'^LIBRARY_VERSION = "([^"]+)"', text, re.M).group(1)
    if pinned != __version__:
        raise SystemExit(f"MedSynSlicerLib/dependencies.py installs medsyn {pinned} but this library is {__version__}. "
                         "Fix: set LIBRARY_VERSION to the release the module is published with")


def export(target: Path, overwrite: bool = False) -> list[str]:
    """Write the extension tree into ``target``; returns its files (relative paths)."""
    check_versions()
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    files = [Path(p) for p in TOP_FILES] + [Path(p) for p in raw_url_paths(cmake)] + module_files()
    with output_folder(target, f"{EXTENSION_NAME}.json", overwrite, inputs=[ROOT], what="extension export") as tmp:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, tmp / rel)
        (tmp / "README.md").write_text(README.format(version=__version__, docs=DOCS), encoding="utf-8")
    return sorted(str(p) for p in files) + ["README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder (or an earlier export, with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    args = parser.parse_args(argv)
    try:
        files = export(args.out, args.overwrite)
    except OutputError as exc:
        print(f"export_extension: error: {exc}", file=sys.stderr)
        return 2
    size = sum((args.out / f).stat().st_size for f in files)
    print(f"wrote {len(files)} files ({size / 2**20:.1f} MB) to {args.out}: the extension {EXTENSION_NAME}, "
          f"installing medsyn {__version__} on first use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
