"""The ``medsyn`` command line: argument parsing only; each sub-command lives beside the code it drives.

A sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func(args) -> int`` as the parser default. A command with actions from several layers (``medsyn models``:
``list`` from the model store, ``import`` from the official-weights converter, ``package`` from training) is a
group: each of its modules exposes ``add_actions(actions)``, so no lower layer imports a higher one to share a
parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .errors import EXIT_CANCELLED, EXIT_OUTPUT_CLOSED, debugging, describe

COMMAND_MODULES = (
    "MedSynLib.pipelines.cli",
    "MedSynLib.train.cli",
    "MedSynLib.train.text_encoder.cli",
    "MedSynLib.phantom.cli",
    "MedSynLib.io.dicom_send",
    "MedSynLib.server.cli",
)

COMMAND_GROUPS = {
    "models": ("list the models; import the official checkpoints; package your own",
               ("MedSynLib.modelstore.cli", "MedSynLib.official.cli", "MedSynLib.train.cli")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsyn",
        description="MedSyn: text-guided, anatomy-aware synthesis of 3D chest CT. Every output is SYNTHETIC.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    for name, (help_text, modules) in COMMAND_GROUPS.items():
        group = sub.add_parser(name, help=help_text)
        actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION")
        actions.required = True
        for module in modules:
            importlib.import_module(module).add_actions(actions)
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as a message and an exit code (:mod:`MedSynLib.errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cancels like Ctrl-C: clean-up runs
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("medsyn: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `medsyn models list | head -1`: the reader has what it wanted; no error message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor a second one when Python exits
        return EXIT_OUTPUT_CLOSED
    except Exception as exc:
        if debugging():
            raise
        failure = describe(exc)
        print(failure.text(), file=sys.stderr)
        return failure.code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
