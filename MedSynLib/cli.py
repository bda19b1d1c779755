"""The ``medsyn`` command line: argument parsing only; each sub-command lives beside the code it drives.

A sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func(args) -> int`` as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "MedSynLib.pipelines.cli",
    "MedSynLib.models_hub.cli",
    "MedSynLib.train.cli",
    "MedSynLib.train.text_encoder",
    "MedSynLib.phantom.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsyn",
        description="MedSyn: text-guided, anatomy-aware synthesis of 3D chest CT. Every output is SYNTHETIC.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("medsyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
