"""The "exit code 1 only for bugs" sweep (issue #28): every option of every ``medsyn`` command, given hostile values.

The commands and their options are read from ``medsyn``'s own parser (a new command fails the test until
:func:`valid_arguments` gives it valid required options). Phase 1 (parse): every option that takes a value, of every
command, with each value of :data:`BAD` and :data:`RANDOM_VALUES` seeded random ones, on top of valid required
options; argparse either refuses it (exit code 2, a usage line) or accepts it. Phase 2 (run): a fixed-seed sample of
the accepted cases runs for real (the tiny model, one low-res step; training and import commands stop at their
first missing file; ``serve`` checks everything and stops before it would listen) and must end with exit code 0, 2,
3 or 4: never 1, never a traceback, never a signal, and the inputs unchanged. Both phases print how many cases they
ran. ``MEDSYN_SWEEP_RUN=N`` runs N accepted cases (CI: :data:`RUN_SAMPLE`), ``MEDSYN_SWEEP_SEED`` another sample,
``MEDSYN_SWEEP_LOG=FILE`` appends each run case's exit code to FILE as it ends.
"""

from __future__ import annotations

import argparse
import os
import random
import socket

import pytest

from MedSynLib.cli import build_parser, main

from test_bad_inputs import FAST, REPORT, ct_volume, tiny_model, tree  # noqa: F401 (tiny_model: a fixture)

BAD = ["nan", "inf", "-inf", "-1", "0", "-0", "1e400", "1e30", "-1e30", str(2**64), "-" + str(2**64), "abc", "",
       " ", "1.5", "0x10", "☃", "../..", "/", "/dev/null", "missing/x", "3/2", "-1/4", "cuda:99", "gpu", "a=b",
       "recipe:nothing", "\u200b", "65536", "1,x", "-5.5e-3", "..", "~", "\x7f", "%s%n", "a" * 300]
"""Hostile option values: not numbers, non-finite, out of range, huge, empty, paths that are no input."""
RANDOM_VALUES = 4
"""Seeded random values per option on top of :data:`BAD` (a number of any sign and size, a short random text)."""
RUN_SAMPLE = int(os.environ.get("MEDSYN_SWEEP_RUN", "30"))
"""How many accepted cases phase 2 runs (a fixed-seed sample; each is a short real run)."""
OUTPUTS = ("out", "run", "tt", "ph", "p.png", "pkg", "srv")
"""The output names of :func:`valid_arguments`, made unique per case."""


def random_values(rng: random.Random) -> list[str]:
    return [f"{rng.choice([-1, 1]) * 10 ** rng.uniform(-5, 30):.6g}", str(rng.randint(-2**70, 2**70)),
            "".join(rng.choice("0123456789.,:/-+eE xyz") for _ in range(rng.randint(1, 12))),
            "".join(chr(rng.randint(0x21, 0x2FFF)) for _ in range(rng.randint(1, 8)))][:RANDOM_VALUES]


def commands(parser: argparse.ArgumentParser, prefix=()):
    """(command words, its parser) for every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*prefix, name))
            return
    yield prefix, parser


def valid_arguments(tmp, model) -> dict[tuple, list]:
    """Required (and run-shortening) options of each command, as a flat list per command."""
    ct = ct_volume(tmp)
    region = tmp / "region.nii.gz"
    region.write_bytes(ct.read_bytes())
    (tmp / "prompts.csv").write_text(f"id,report\na,{REPORT}\n", encoding="utf-8")
    (tmp / "reports").mkdir()
    fast = [str(a) for a in FAST]
    one = ["--model", str(model), *fast]
    return {
        ("generate",): ["--report", REPORT, *one, "--out", "out"],
        ("segment",): ["--ct", str(ct), *one, "--force", "--out", "out"],
        ("edit",): ["--ct", str(ct), "--region", str(region), "--report", REPORT, *one, "--out", "out"],
        ("batch",): ["--prompts", str(tmp / "prompts.csv"), *one, "--out", "out"],
        ("train-lowres",): ["--set", f"manifest={tmp / 'none.csv'}", "--set", "out=run"],
        ("train-sr",): ["--set", f"manifest={tmp / 'none.csv'}", "--set", "out=run"],
        ("train-text",): ["--reports", str(tmp / "reports"), "--out", "tt", "--steps", "1"],
        ("phantoms",): ["--n", "1", "--size", "16", "--no-measure", "--out", "ph"],
        ("preview",): ["--ct", str(ct), "--out", "p.png"],
        ("send",): ["--host", "127.0.0.1", "--port", "9", str(tmp / "no-such-folder")],
        ("serve",): ["--no-token", "--gpus", "none", "--port", str(_free_port()), "--work-dir", "srv"],
        ("models", "list"): [],
        ("models", "import"): ["--text-encoder", str(tmp / "none"), "--lowres", str(tmp / "none"),
                               "--superres", str(tmp / "none"), "--name", "x"],
        ("models", "package"): ["--text-encoder", str(tmp / "none"), "--lowres", str(tmp / "none"),
                                "--superres", str(tmp / "none"), "--name", "x", "--out", "pkg"],
    }


def _much_work(value: str) -> bool:
    """A whole number over 1,000 that the parser accepted asks for that much work (``phantoms --n 65536``): a valid
    request, left out of the run phase."""
    return value.strip().isdigit() and int(value) > 1000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _without(args: list, option: str, takes_value: bool) -> list:
    out, skip = [], False
    for item in args:
        if skip:
            skip = False
        elif item == option:
            skip = takes_value
        else:
            out.append(item)
    return out


def cases(parser, base: dict) -> list[tuple[tuple, list]]:
    """(command, argv) for every option that takes a value x every bad value (:data:`BAD` and random ones)."""
    found, rng = [], random.Random(28)
    for words, sub in commands(parser):
        assert words in base, f"the sweep has no valid arguments for `medsyn {' '.join(words)}`: add them"
        groups = {a.option_strings[-1]: [x.option_strings[-1] for x in g._group_actions]
                  for g in sub._mutually_exclusive_groups for a in g._group_actions}
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.option_strings[-1] == "--help":
                continue
            option = action.option_strings[-1]
            args = base[words]
            for other in groups.get(option, [option]):
                args = _without(args, other, True)
            found += [(words, [*words, *args, option, value]) for value in BAD + random_values(rng)]
    return found


def test_no_hostile_option_value_ends_as_exit_code_1(tiny_model, tmp_path, capsys, monkeypatch):
    import uvicorn

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # serve: every check, then no listening
    parser = build_parser()
    all_cases = cases(parser, valid_arguments(tmp_path, tiny_model))
    inputs = {path: tree(path) if path.is_dir() else path.read_bytes() for path in [*tmp_path.iterdir(), tiny_model]}
    accepted, refused = [], 0
    for words, argv in all_cases:
        try:
            parser.parse_args(argv)
            accepted.append((words, argv))
        except SystemExit as exc:
            assert exc.code == 2, argv
            refused += 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    accepted = [(words, argv) for words, argv in accepted if not _much_work(argv[-1])]
    sample = random.Random(int(os.environ.get("MEDSYN_SWEEP_SEED", "28"))).sample(
        accepted, min(RUN_SAMPLE, len(accepted)))
    codes, commands_run = {}, set()
    for k, (words, argv) in enumerate(sample):
        argv = [f"{a}{k}" if a in OUTPUTS else a for a in argv]
        argv = [f"out=run{k}" if a == "out=run" else a for a in argv]
        try:
            code = main(argv)
        except SystemExit as exc:  # e.g. a value argparse accepted but a later parser refuses
            code = exc.code
        captured = capsys.readouterr()
        assert code in (0, 2, 3, 4), (argv, code, captured.err[-2000:])
        assert "Traceback" not in captured.err, argv
        codes[code] = codes.get(code, 0) + 1
        commands_run.add(" ".join(words))
        if os.environ.get("MEDSYN_SWEEP_LOG"):  # a long local run's progress, one line per case
            with open(os.environ["MEDSYN_SWEEP_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{k}\t{code}\t{' '.join(words)}\t{argv[len(words):]!r}\n")
    assert {path: tree(path) if path.is_dir() else path.read_bytes() for path in inputs} == inputs
    print(f"\noption sweep: {len(all_cases)} cases parsed ({refused} refused by the parser with exit code 2), "
          f"{len(sample)} accepted ones run over {len(commands_run)} commands: exit codes "
          f"{dict(sorted(codes.items()))}")
    assert len(all_cases) > 1000 and len(sample) == min(RUN_SAMPLE, len(accepted))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
