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
import sys

from .errors import run_guarded

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


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as a message and an exit code (:func:`MedSynLib.errors.run_guarded`)."""
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
