"""What the ``medsyn`` client and server agree on: the API path, the commands and file options a job takes,
job ids, the token's place, the error a refused request or a failed job raises, and options as command-line
arguments. Standard library only."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, DescribedError, Failure

API = "/v1"
TOKEN_ENV = "MEDSYN_SERVER_TOKEN"
SIDECAR = "medsyn.json"  # the result folder's marker, as MedSynLib.pipelines.outputs writes it
COMMANDS = ("generate", "segment", "edit")
FILE_OPTIONS = ("report_file", "ct", "region", "lobes", "airway", "vessels", "reference_ct")
"""The options that name input files: their files are uploaded, never their paths."""
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".txt")
"""File kinds a server accepts (one file each; a DICOM series folder is converted first)."""
LOCAL_ONLY = {"out", "overwrite", "server", "progress", "device"}
"""Options the client keeps: where the result goes locally, how progress is shown; the server picks the device."""
FINISHED = ("done", "failed", "cancelled")
JOB_ID = r"[0-9a-f]{32}"



def default_token_file() -> Path:
    return Path(os.environ.get("MEDSYN_HOME", Path.home() / ".medsyn")) / "server-token"


def read_token(path: str | Path | None = None) -> str | None:
    """The token: ``$MEDSYN_SERVER_TOKEN``, else the file ``path`` (default :func:`default_token_file`), else None."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return _checked_token(os.environ[TOKEN_ENV].strip(), TOKEN_ENV)
    path = Path(path) if path is not None else default_token_file()
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        return _checked_token(token, str(path)) if token else None
    return None


def _checked_token(token: str, where: str) -> str:
    if not all("!" <= c <= "~" for c in token):  # it travels in an HTTP header
        raise RemoteError(f"the token in {where} holds spaces, control or non-ASCII characters",
                          "use the token the server's operator gave you (printable ASCII, e.g. from "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)", kind="token")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only: ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RemoteError(DescribedError):
    """A refused request or a failed job: the command's ``message``, ``fix`` and exit ``code``, and the ``text``
    it printed on stderr when it ran."""

    def __init__(self, message: str, fix: str = "", code: int = EXIT_BAD_INPUT, kind: str = "bad_input",
                 text: str = ""):
        super().__init__(Failure(code, message, fix, kind), text)


def options_from_keywords(options: dict) -> tuple[list[str], dict[str, Path]]:
    """Python keywords -> (command-line options, files to upload): ``steps_lowres=4`` -> ``--steps-lowres=4``,
    ``lowres_only=True`` -> ``--lowres-only``, ``ct="scan.nii.gz"`` -> an upload; None and False are left out."""
    argv, files = [], {}
    for name, value in options.items():
        if value is None or value is False:
            continue
        if name in FILE_OPTIONS:
            files[name] = Path(value)
        elif value is True:
            argv.append("--" + name.replace("_", "-"))
        else:
            argv.append(f"--{name.replace('_', '-')}={value}")
    return argv, files


def options_from_args(parser, args) -> tuple[list[str], dict[str, Path]]:
    """The options of a parsed command (``parser``: its argparse sub-parser) that differ from the defaults, as
    (command-line options, files to upload); the local-only options (:data:`LOCAL_ONLY`) are left out."""
    argv, files = [], {}
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if not action.option_strings or action.dest in LOCAL_ONLY or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        if action.dest in FILE_OPTIONS:
            files[action.dest] = Path(value)
        elif action.nargs == 0:
            argv.append(action.option_strings[-1])
        else:
            argv.append(f"{action.option_strings[-1]}={value}")
    return argv, files
