"""The panel's Device "Remote server" on the Slicer harness, against a real ``medsyn serve`` on 127.0.0.1: the
connection test lists the server's models and workers, a Generate runs there and its result is loaded as a local
run's is."""

from __future__ import annotations

import json

from test_server import TOKEN, server  # noqa: F401  (fixture: a medsyn serve on loopback with the tiny model)
from test_slicer_panel import (  # noqa: F401  (fixtures)
    choose, medsyn_home, mrml_scene, panel, pump_until, slicer_harness, use_tiny_model)


def test_remote_server_generate_is_loaded_as_a_local_run(panel, slicer_harness, server, tmp_path):  # noqa: F811
    import qt
    import slicer

    from MedSynSlicerLib import remote

    ui = panel.ui
    use_tiny_model(panel, slicer_harness)
    assert not panel.remoteServerWidget.visible
    choose(slicer_harness, ui.deviceComboBox, "Remote server")
    assert panel.remoteServerWidget.visible
    assert panel.logic.whySettingsCannotRun(panel._parameterNode) == remote.NOT_SET  # no URL yet
    panel.remoteURLEdit.text = server["url"]
    panel.remoteTokenEdit.text = "wrong-token-0123456789"
    panel.remoteTestButton.click()
    assert "the token is wrong" in panel.remoteInfoLabel.text and "Fix:" in panel.remoteInfoLabel.text
    panel.remoteTokenEdit.text = TOKEN
    panel.remoteTestButton.click()
    info = panel.remoteInfoLabel.text
    assert info.startswith("Connected to") and "tiny-test" in info and "cpu" in info, info
    assert qt.QSettings().value(remote.URL_KEY) == server["url"] and qt.QSettings().value(remote.TOKEN_KEY) == TOKEN

    choose(slicer_harness, ui.exampleReportComboBox, "Large bilateral pleural effusions")
    ui.seedSpinBox.value = 7
    ui.generateButton.click()
    assert panel.job is not None and ui.cancelButton.enabled
    command = panel.job.process.command
    assert command[command.index("--server") + 1] == server["url"] and "--device" not in command
    assert TOKEN not in " ".join(command), "the token is never on a command line"
    pump_until(slicer_harness, lambda: panel.job is None, seconds=600, what="the remote run")
    ct = slicer.util.getNode("SYNTHETIC MedSyn CT (seed 7, *)")
    assert ui.statusLabel.text.startswith(f"Loaded '{ct.GetName()}'."), ui.statusLabel.text
    assert ct.GetAttribute("synthetic") == "true"
    results = [f for f in (tmp_path / "results").iterdir()]
    assert len(results) == 1 and not results[0].name.startswith(".medsyn-work")
    sidecar = json.loads((results[0] / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["ran_on"]["server"] == server["url"] and sidecar["seed"] == 7
