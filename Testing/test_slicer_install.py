"""The panel when the library is not installed yet (the published extension before its first run), the one
confirmed install of the ``medsyn`` wheel with the other packages, and removing the wheel again; on the harness.

pip itself is replaced by a recorder (no network in tests); what is asked, installed and shown is real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_slicer_panel import medsyn_home, mrml_scene, panel, slicer_harness  # noqa: F401  (fixtures)

MODULE_DIR = str(Path(__file__).resolve().parents[1] / "MedSynSlicer")
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)


def test_first_run_installs_the_library_with_one_confirmation_then_lists_its_models(panel, monkeypatch):
    import slicer
    from MedSynSlicerLib import dependencies, models

    real_list = models.list_models

    def not_installed():
        raise ModuleNotFoundError("No module named 'MedSynLib'", name="MedSynLib")

    monkeypatch.setattr(models, "list_models", not_installed)
    panel.ui.refreshModelsButton.click()
    assert panel.logic.models == []
    assert "not installed yet: the first run installs them" in panel.ui.modelInfoLabel.text

    installed, asked = [], []
    monkeypatch.delitem(sys.modules, "MedSynLib", raising=False)  # never imported: it was not installed
    monkeypatch.setattr(dependencies, "library_missing",
                        lambda: [] if installed else [dependencies.LIBRARY_REQUIREMENT])
    monkeypatch.setattr(dependencies, "satisfied", lambda requirement: True)  # torch, transformers, safetensors

    def pip_install(requirements):
        installed.extend(requirements)
        monkeypatch.setattr(models, "list_models", real_list)  # MedSynLib is importable now

    monkeypatch.setattr(dependencies, "pip_install", pip_install)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kwargs: asked.append(text) or True)
    assert panel.ensureDependencies()
    assert installed == [dependencies.LIBRARY_REQUIREMENT] and len(asked) == 1
    assert "MedSyn library with its demo model" in asked[0] and dependencies.LIBRARY_REQUIREMENT in asked[0]
    assert panel.logic.models, "the models were not listed after the install"
    assert panel.ensureDependencies() and len(asked) == 1, "asked again with everything installed"


@pytest.mark.parametrize("confirmed", [True, False])
def test_remove_library_uninstalls_the_wheel_when_confirmed(panel, monkeypatch, confirmed):
    import slicer
    from MedSynSlicerLib import dependencies

    removed = []
    monkeypatch.setattr(dependencies, "library_installed", lambda: dependencies.LIBRARY_VERSION)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kwargs: confirmed)
    monkeypatch.setattr(slicer.util, "pip_uninstall", removed.append, raising=False)
    assert panel.ui.removeLibraryButton.enabled
    panel.ui.removeLibraryButton.click()
    if confirmed:
        assert removed == [dependencies.LIBRARY_DISTRIBUTION]
        assert f"Removed the MedSyn library {dependencies.LIBRARY_VERSION}" in panel.ui.statusLabel.text
    else:
        assert removed == [] and "Removed" not in panel.ui.statusLabel.text


def test_remove_library_from_a_checkout_removes_nothing(panel, monkeypatch):
    import slicer
    from MedSynSlicerLib import dependencies

    shown, removed = [], []
    monkeypatch.setattr(dependencies, "library_installed", lambda: None)  # MedSynLib from the source checkout
    monkeypatch.setattr(slicer.util, "infoDisplay", lambda text, **kwargs: shown.append(text))
    monkeypatch.setattr(slicer.util, "pip_uninstall", removed.append, raising=False)
    panel.ui.removeLibraryButton.click()
    assert removed == [] and "nothing to remove" in shown[0]


def test_replacing_a_loaded_library_release_offers_a_restart(monkeypatch):
    """An older medsyn wheel whose MedSynLib this Slicer session already imported: after the upgrade the module says
    a restart is needed (the panel would otherwise keep the old code)."""
    import MedSynLib  # noqa: F401  (imported by this session, as the panel's model list does)
    from MedSynSlicerLib import dependencies

    installed = []
    monkeypatch.setattr(dependencies, "satisfied", lambda requirement: True)
    monkeypatch.setattr(dependencies, "library_missing",
                        lambda: [] if installed else [dependencies.LIBRARY_REQUIREMENT])
    monkeypatch.setattr(dependencies, "pip_install", installed.extend)
    assert dependencies.ensure(confirm=None) == "restart"
    assert installed == [dependencies.LIBRARY_REQUIREMENT]
