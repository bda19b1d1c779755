"""Runs on a MedSyn server (``medsyn serve``): the client of the command line, the Python API and the Slicer panel.

Standard library only (``urllib``): a laptop without torch, or Slicer's Python, can use a GPU server. A run
uploads the files its options name, follows the job's events (the command line's own JSON progress events, plus
``queued`` and ``started``), and writes the result folder exactly as a local run writes it (same files, same
sidecar, claimed and written atomically by :class:`~MedSynLib.io.files.OutputFolder`); the sidecar gains
``ran_on`` (server, worker, job) and names the local input files, not the server's copies. Errors arrive as the
command's own message, fix and exit code (:class:`RemoteError`).

The token comes from ``$MEDSYN_SERVER_TOKEN`` or the file ``$MEDSYN_HOME/server-token`` (default
``~/.medsyn/server-token``), never from the command line (it would show in ``ps`` and shell histories).

Modules: ``protocol`` (what client and server agree on: API, job options, the token, :class:`RemoteError`),
``client`` (:class:`MedSynServer`), ``command`` (the command line's ``--server`` run).

Python API::

    from MedSynLib.remote import MedSynServer
    server = MedSynServer("https://gpu1.example.org/medsyn")      # token from the environment or the file
    server.generate("out/case1", report="No pleural effusion.", seed=3, lowres_only=True, lobes="lobes.nii.gz")
"""

from .client import MedSynServer
from .command import run_command
from .protocol import (API, COMMANDS, FILE_OPTIONS, FINISHED, JOB_ID, LOCAL_ONLY, SIDECAR, TOKEN_ENV, UPLOAD_SUFFIXES,
                       RemoteError, default_token_file, is_loopback, options_from_args, options_from_keywords,
                       read_token)

__all__ = ["MedSynServer", "RemoteError", "run_command", "read_token", "default_token_file", "is_loopback",
           "options_from_args", "options_from_keywords", "API", "COMMANDS", "FILE_OPTIONS", "FINISHED", "JOB_ID",
           "LOCAL_ONLY", "SIDECAR", "TOKEN_ENV", "UPLOAD_SUFFIXES"]
