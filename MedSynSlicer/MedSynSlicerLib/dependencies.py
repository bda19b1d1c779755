"""Python packages the ``medsyn`` command line needs inside Slicer, and which of them are missing.

torch comes from the PyTorch extension (``PyTorchUtils``: a build matching the GPU driver); the others are
installed with pip. Packages that Slicer ships (SimpleITK, numpy, vtk, requests) are never installed or replaced.
"""

from __future__ import annotations

import importlib.metadata
import re

TORCH_REQUIREMENT = "torch>=2.1"
PIP_REQUIREMENTS: tuple[str, ...] = ("transformers>=4.40", "safetensors>=0.4")
SHIPPED_WITH_SLICER: tuple[str, ...] = ("SimpleITK", "numpy", "vtk", "requests", "torch")
"""Never pip-installed by this module (torch: only through PyTorchUtils)."""


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


def missing_requirements() -> dict[str, list[str]]:
    """``{"torch": [...], "pip": [...]}``: what has to be installed before the command line can run."""
    return {
        "torch": [] if satisfied(TORCH_REQUIREMENT) else [TORCH_REQUIREMENT],
        "pip": [r for r in PIP_REQUIREMENTS if not satisfied(r) and _name(r) not in SHIPPED_WITH_SLICER],
    }


def describe_missing(missing: dict[str, list[str]]) -> str:
    lines = []
    if missing.get("torch"):
        lines.append(f"• PyTorch ({missing['torch'][0]}), through the PyTorch extension (matching your GPU driver)")
    for r in missing.get("pip", []):
        lines.append(f"• {r} (pip)")
    return "\n".join(lines)
