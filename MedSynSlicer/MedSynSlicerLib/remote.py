"""The panel's Device "Remote server": the server's address and token (kept in Slicer's settings), the
connection test, and what a run on the server adds to the ``medsyn`` command (``--server URL`` and the token in
the child's environment, never on its command line).

A remote run is the same ``medsyn generate|segment|edit`` process as a local one, run with ``--server``: it
uploads the inputs, relays the server's progress as the same JSON events, cancels the server's job on SIGTERM and
writes the same result folder, which the panel loads as it loads a local result. Qt-free; the client is
:mod:`MedSynLib.remote` (standard library only), imported when used: the module loads before the library is
installed.
"""

from __future__ import annotations

URL_KEY = "MedSyn/RemoteServerURL"
TOKEN_KEY = "MedSyn/RemoteServerToken"
DEVICE, LABEL = "remote", "Remote server"
"""The Device choice's value (beside auto, cuda and cpu) and its text in the panel."""
NOT_SET = "Enter the remote server's URL and token under Settings > Device (your IT department gives them)."


def run_arguments(arguments: list[str], url: str) -> list[str]:
    """The command's ``arguments`` run on the server at ``url``: ``--server URL``; the device is the server's."""
    if not url.strip():
        raise ValueError("Remote server: no server address. Fix: enter the URL your IT department gave you "
                         "(e.g. https://medsyn.hospital.example) under Device")
    out = list(arguments)
    if "--device" in out:
        i = out.index("--device")
        del out[i:i + 2]
    return out + ["--server", url.strip()]


def run_environment(env: dict[str, str], token: str) -> dict[str, str]:
    """The child's environment with the server's token."""
    from MedSynLib.remote import TOKEN_ENV

    if not token.strip():
        raise ValueError("Remote server: no token. Fix: enter the token your IT department gave you under Device")
    return {**env, TOKEN_ENV: token.strip()}


def server_info(url: str, token: str, timeout: float = 10.0) -> dict:
    """The server's ``info`` (version, models, workers, limits); raises ValueError with the reason and fix."""
    from MedSynLib.remote import MedSynServer, RemoteError

    try:
        return MedSynServer(url, token.strip() or None, timeout=timeout).info()
    except RemoteError as exc:
        fix = exc.failure.fix
        raise ValueError(str(exc) + (f"\nFix: {fix}" if fix else "")) from None


def describe_server(info: dict) -> str:
    """One paragraph for the panel: the server, its GPUs (or CPU) and busy state, its models, its queue."""
    workers = ", ".join(f"{w['name']} {w['device']}" + (" (busy)" if w.get("busy") else "") for w in info["workers"])
    models = ", ".join(m["name"] for m in info["models"] if m.get("available")) or "none"
    queue = info.get("queue", {})
    return (f"Connected to {info.get('server', '?')} (MedSyn {info.get('medsyn', '?')}). Workers: {workers}. "
            f"Models: {models}. Queue: {queue.get('queued', 0)} waiting, {queue.get('running', 0)} running.")


class RemoteServerSection:
    """The panel's Device "Remote server" controls, mixed into ``MedSynSlicerWidget``: URL and token (kept in
    Slicer's settings), "Test connection" with the server's models and workers. Builds its controls under the
    Device row; ``qt`` is imported when the panel is set up, so this module stays importable without Qt."""

    def setupRemoteServer(self) -> None:
        """Build the controls (hidden unless Device is "Remote server") and fill them from Slicer's settings."""
        import qt

        settings = qt.QSettings()
        self.remoteServerWidget = qt.QWidget()
        form = qt.QFormLayout(self.remoteServerWidget)
        self.remoteURLEdit = qt.QLineEdit(str(settings.value(URL_KEY, "") or ""))
        self.remoteURLEdit.placeholderText = "https://medsyn.hospital.example"
        self.remoteTokenEdit = qt.QLineEdit(str(settings.value(TOKEN_KEY, "") or ""))
        self.remoteTokenEdit.echoMode = qt.QLineEdit.Password
        self.remoteTestButton = qt.QPushButton("Test connection")
        self.remoteInfoLabel = qt.QLabel("")
        self.remoteInfoLabel.wordWrap = True
        form.addRow("Server URL:", self.remoteURLEdit)
        form.addRow("Token:", self.remoteTokenEdit)
        form.addRow(self.remoteTestButton, self.remoteInfoLabel)
        self.ui.deviceComboBox.parentWidget().layout().addRow(self.remoteServerWidget)
        for edit in (self.remoteURLEdit, self.remoteTokenEdit):
            edit.editingFinished.connect(self.onRemoteServerChanged)
        self.remoteTestButton.clicked.connect(self.onTestRemoteServer)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onRemoteServerChanged)
        self.onRemoteServerChanged()

    def onRemoteServerChanged(self, *_) -> None:
        import qt

        url, token = self.remoteURLEdit.text.strip(), self.remoteTokenEdit.text.strip()
        settings = qt.QSettings()
        settings.setValue(URL_KEY, url)
        settings.setValue(TOKEN_KEY, token)
        self.logic.remoteServer = (url, token)
        self.remoteServerWidget.visible = self.ui.deviceComboBox.currentText == LABEL
        self.updateButtons()  # a missing URL or token is what the run button says

    def onTestRemoteServer(self) -> None:
        import slicer

        self.onRemoteServerChanged()
        with slicer.util.WaitCursor():
            try:
                self.remoteInfoLabel.text = describe_server(server_info(*self.logic.remoteServer))
            except ValueError as e:
                self.remoteInfoLabel.text = str(e)
