"""MedSynLib: text-guided, anatomy-aware synthesis of 3D chest CT (MedSyn, IEEE TMI 2024).

Rooms (arrows point one way): ``models`` <- ``diffusion`` <- ``pipelines`` <- ``cli``;
``io`` and ``modelstore`` serve the pipelines; ``phantom`` and ``data`` feed training and evaluation.
"""

from __future__ import annotations

__version__ = "0.1.0"

CHANNELS = ("ct", "lobes", "airway", "vessels")
"""The four jointly generated channels, in model order (official channel indices 0..3)."""


def load_model(name_or_folder: str | None = None, device: str = "cpu"):
    """A model ready to generate with: a registry or installed name (``medsyn models list``), a model folder, or
    None for the default model; every part on ``device`` ("cpu", "cuda", "cuda:N"), in eval mode.

    Returns a :class:`MedSynLib.modelstore.bundle.LoadedModel` for
    :func:`MedSynLib.pipelines.generation.generate` and :func:`MedSynLib.pipelines.generation.segment`.
    """
    from .modelstore.bundle import load_model as load_folder
    from .modelstore.registry import resolve_model

    return load_folder(resolve_model(name_or_folder), device)
