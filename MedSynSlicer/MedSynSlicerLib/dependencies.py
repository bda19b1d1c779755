"""Python packages the ``medsyn`` command line needs inside Slicer, and which of them are missing.

torch comes from the PyTorch extension (``PyTorchUtils``: a build matching the GPU driver); the others are
installed with pip: transformers and safetensors, and the library itself with its packaged demo model (the
``medsyn`` wheel) unless ``MedSynLib`` is importable already (a source checkout). Packages that Slicer ships
(SimpleITK, numpy, vtk, requests) are never installed or replaced. :func:`ensure` installs what is missing and
:func:`remove_library` removes the wheel again (inside Slicer; ``slicer`` is imported only there).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
from typing import Callable, Optional

TORCH_REQUIREMENT = "torch>=2.1"
PIP_REQUIREMENTS: tuple[str, ...] = ("transformers>=4.40", "safetensors>=0.4")
SHIPPED_WITH_SLICER: tuple[str, ...] = ("SimpleITK", "numpy", "vtk", "requests", "torch")
"""Never pip-installed by this module (torch: only through PyTorchUtils)."""
LIBRARY_DISTRIBUTION = "medsyn"
LIBRARY_VERSION = "0.1.0"
"""The library release this module works with (equal to ``MedSynLib.__version__``: Testing/test_extension_export.py
checks it); its wheel carries the demo model (about 31 MB)."""
LIBRARY_REQUIREMENT = f"{LIBRARY_DISTRIBUTION}=={LIBRARY_VERSION}"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip()


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in re.split(r"[.+-]", version):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def satisfied(requirement: str) -> bool:
    """Whether ``requirement`` (``name`` or ``name>=x.y``) is installed; uses ``packaging`` when available."""
    name = _name(requirement)
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement

        return Requirement(requirement).specifier.contains(installed, prereleases=True)
    except ImportError:
        match = re.search(r">=\s*([0-9.]+)", requirement)
        return not match or _version_tuple(installed) >= _version_tuple(match.group(1))


def library_installed() -> Optional[str]:
    """The installed ``medsyn`` wheel's version, or None (not installed, or ``MedSynLib`` from a source checkout)."""
    try:
        return importlib.metadata.version(LIBRARY_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_missing() -> list[str]:
    """``[LIBRARY_REQUIREMENT]`` when ``MedSynLib`` cannot be imported or its wheel is another release, else []."""
    if importlib.util.find_spec("MedSynLib") is None:
        return [LIBRARY_REQUIREMENT]
    version = library_installed()
    return [LIBRARY_REQUIREMENT] if version is not None and version != LIBRARY_VERSION else []


def missing_requirements() -> dict[str, list[str]]:
    """``{"torch": [...], "pip": [...]}``: what has to be installed before the command line can run
    (``pip``: the packages, then the library wheel)."""
    return {
        "torch": [] if satisfied(TORCH_REQUIREMENT) else [TORCH_REQUIREMENT],
        "pip": [r for r in PIP_REQUIREMENTS if not satisfied(r) and _name(r) not in SHIPPED_WITH_SLICER]
        + library_missing(),
    }


def describe_missing(missing: dict[str, list[str]]) -> str:
    lines = []
    if missing.get("torch"):
        lines.append(f"• PyTorch ({missing['torch'][0]}), through the PyTorch extension (matching your GPU driver)")
    for r in missing.get("pip", []):
        lines.append(f"• the MedSyn library with its demo model ({r}, about 31 MB) (pip)" if r == LIBRARY_REQUIREMENT
                     else f"• {r} (pip)")
    return "\n".join(lines)


def ensure(confirm: Optional[Callable[[str], bool]] = None) -> str:
    """Install what the command line needs: "ok", "declined" or "restart" (packages were already loaded).

    torch through the PyTorch extension's PyTorchUtils (matching the GPU driver) when present, else pip;
    other packages with ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install``;
    packages that Slicer ships (SimpleITK, numpy, vtk, requests) are never replaced. ``confirm(text)`` asks
    once for everything (None: install without asking, as the self-test does).
    """
    missing = missing_requirements()
    if not missing["torch"] and not missing["pip"]:
        return "ok"
    if confirm is not None and not confirm(
            "MedSyn needs these Python packages (installed once into Slicer's Python):\n\n"
            + describe_missing(missing) + "\n\nThis can take several minutes. Install now?"):
        return "declined"
    loaded_before = {"MedSynLib" if r == LIBRARY_REQUIREMENT else _name(r)  # an older wheel's MedSynLib too
                     for r in missing["pip"] + missing["torch"]} & set(sys.modules)
    if missing["torch"]:
        install_torch()
    if missing["pip"]:
        pip_install(missing["pip"])
        importlib.invalidate_caches()  # MedSynLib, new on sys.path, is importable in this session
    still = missing_requirements()
    if still["torch"] or still["pip"]:
        raise RuntimeError("Still missing after installation: " + describe_missing(still)
                           + "\nFix: restart 3D Slicer and try again; check the Python console for pip errors.")
    return "restart" if loaded_before else "ok"


def install_torch() -> None:
    """torch through the PyTorch extension (a build for the GPU driver), or pip when that extension is missing."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        logging.warning("MedSyn: the PyTorch extension is not installed; installing torch with pip")
        slicer.util.pip_install(TORCH_REQUIREMENT)
        return
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        torch = torch_logic.installTorch(askConfirmation=False,
                                         torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
        if torch is None:
            raise RuntimeError("PyTorch could not be installed. Fix: install it from the PyTorch module "
                               "(Utilities > PyTorch Utils), then restart 3D Slicer.")


def pip_install(requirements: list[str]) -> None:
    """``slicer.packaging.pip_ensure`` on Slicer >= 5.12 (``slicer/__init__`` does not import it: import it
    here), else ``slicer.util.pip_install``. The user confirmed already and a restart is offered by the
    caller, so neither is asked again; the self-test runs in testing mode and must install too."""
    import slicer

    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:  # Slicer < 5.12
        slicer.util.pip_install(requirements)
        return
    packaging.pip_ensure(requirements, skip_packages=list(SHIPPED_WITH_SLICER),
                         prompt_install=False, prompt_restart=False, skip_in_testing=False, requester="MedSyn")


def remove_library() -> str:
    """Uninstall the ``medsyn`` wheel (the library and its packaged demo model) from Slicer's Python; returns what
    was done. Imported models (``~/.medsyn/models``) and results are left alone; the other packages may be used by
    other extensions and stay. A source checkout on the module path is never touched."""
    import slicer

    version = library_installed()
    if version is None:
        return "The MedSyn library is not installed as a package here (nothing to remove)."
    slicer.util.pip_uninstall(LIBRARY_DISTRIBUTION)
    importlib.invalidate_caches()
    return (f"Removed the MedSyn library {version} and its demo model. Restart 3D Slicer; the next run offers to "
            "install them again.")
