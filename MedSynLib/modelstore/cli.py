"""``medsyn models list``: the registry and the installed models, with where they are and their licence."""

from __future__ import annotations

import json
import sys

from .registry import GET_A_MODEL, list_models

LIST_FIELDS = ("name", "title", "available", "license", "requires_license_acceptance", "packaged", "path")


def add_actions(actions) -> None:
    """Register the model-store actions of ``medsyn models`` (``actions``: its sub-parsers)."""
    lst = actions.add_parser("list", help="registry and imported models, with where they are and their licence")
    lst.add_argument("--json", action="store_true", help="print a JSON list (one object per model)")
    lst.set_defaults(func=_list)


def _list(args) -> int:
    """Print the models (exit 0); with no usable one, say so and how to get one, on stderr under --json."""
    models = [{k: entry.get(k) for k in LIST_FIELDS} for entry in list_models()]
    if args.json:
        print(json.dumps(models, indent=2))
    else:
        for entry in models:
            state = "installed" if entry["available"] else "not installed"
            print(f"{entry['name']:20s} {state:14s} {entry['license'] or '':14s} {entry['title']}")
            print(f"{'':20s} {entry['path']}")
    if not any(entry["available"] for entry in models):
        print(f"No usable model is installed. Fix: {GET_A_MODEL}.", file=sys.stderr if args.json else sys.stdout)
    return 0
