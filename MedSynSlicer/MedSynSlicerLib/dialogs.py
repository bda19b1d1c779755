"""The panel's questions to the user: model licence, installing the Python packages, the official weights' folders.

Each function shows Slicer's dialogs (``qt`` and ``slicer.util`` are imported when called, so the package stays
importable without Qt) and returns what the user chose; the Widget calls them and keeps none of their text.
"""

from __future__ import annotations

from typing import Optional

import slicer

from . import dependencies, models

LICENSE_SETTINGS_KEY = "MedSyn/AcceptedModelLicenses"
"""QSettings key: the names of the models whose licence the user accepted."""


def license_accepted(info: Optional[models.ModelInfo]) -> bool:
    """Ask once per model whose licence needs acceptance (e.g. CC-BY-NC weights); remembered in the settings."""
    import qt

    if info is None or not info.requires_license_acceptance:
        return True
    settings = qt.QSettings()
    accepted = settings.value(LICENSE_SETTINGS_KEY) or []
    if isinstance(accepted, str):
        accepted = [accepted]
    if info.name in accepted:
        return True
    text = (f"The model '{info.title}' is licensed {info.license or 'non-commercially'}.\n\n"
            "You may use it, and what it generates, for non-commercial research only. "
            "Generated images are synthetic and not for clinical use.\n\nDo you accept this licence?")
    if not slicer.util.confirmYesNoDisplay(text, windowTitle="MedSyn - model licence"):
        return False
    settings.setValue(LICENSE_SETTINGS_KEY, list(accepted) + [info.name])
    return True


def dependencies_ready() -> tuple[bool, str]:
    """Ask, then install the Python packages the command line needs: (ready, a status line for the panel or "").

    Offers a restart when packages that Slicer had already loaded were updated.
    """
    def confirm(text: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(text, windowTitle="MedSyn - install Python packages")

    try:
        status = dependencies.ensure(confirm)
    except Exception as e:  # noqa: BLE001 - shown to the user
        slicer.util.errorDisplay(f"Installing the Python packages MedSyn needs failed.\n\n{e}", windowTitle="MedSyn")
        return False, ""
    if status == "declined":
        return False, "MedSyn needs these packages to run."
    if status == "restart":
        if slicer.util.confirmYesNoDisplay("Packages were updated that Slicer had already loaded. "
                                           "Restart 3D Slicer now?", windowTitle="MedSyn"):
            slicer.util.restart()
        return False, ""
    return True, ""


def remove_library() -> str:
    """Ask, then uninstall the ``medsyn`` wheel (library and demo model): a status line for the panel, or ""."""
    version = dependencies.library_installed()
    if version is None:
        slicer.util.infoDisplay("The MedSyn library is not installed as a package in Slicer's Python (it comes from a "
                                "source checkout, or was never installed): nothing to remove.", windowTitle="MedSyn")
        return ""
    if not slicer.util.confirmOkCancelDisplay(
            f"Remove the MedSyn library {version} and its demo model (about 31 MB) from Slicer's Python?\n\n"
            "Imported models and your results stay. The next run offers to install them again.",
            windowTitle="MedSyn - remove library"):
        return ""
    try:
        return dependencies.remove_library()
    except Exception as e:  # noqa: BLE001 - shown to the user
        slicer.util.errorDisplay(f"Removing the MedSyn library failed.\n\n{e}", windowTitle="MedSyn")
        return ""


def ask_official_weights() -> Optional[tuple[str, str, Optional[str]]]:
    """The folders of the official MedSyn checkpoints and of CXR-BERT, and the optional atlas lung mask:
    (model folder, text encoder folder, atlas file or None); None when the user cancels."""
    import qt

    window = slicer.util.mainWindow()
    path = qt.QFileDialog.getExistingDirectory(
        window, "Official MedSyn model folder (results_* checkpoint folders and pretrained_lm)")
    if not path:
        return None
    text_encoder = qt.QFileDialog.getExistingDirectory(
        window, "Local CXR-BERT folder (microsoft/BiomedVLP-CXR-BERT-specialized: config.json, vocab.txt, weights)")
    if not text_encoder:
        return None
    atlas = qt.QFileDialog.getOpenFileName(
        window, "Optional: the official atlas lung mask (needed to segment real CTs)", "",
        "NIfTI (*.nii *.nii.gz);;All files (*)")
    return path, text_encoder, atlas or None
