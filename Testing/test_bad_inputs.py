"""A hostile user's cases against every ``medsyn`` command: each ends with a message and its documented exit code
(never a traceback), and nothing outside the output's own folder is changed (the tree is hashed before and after).

Exit codes (docs/failure-modes.md): 0 done, 2 bad input or setting, 3 out of memory, 130 cancelled.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.cli import main
from MedSynLib.io.images import Geometry, to_image, write_image

from tiny_model import GRID, build_tiny_model, ellipsoids

REPORT = "FINDINGS: Large bilateral pleural effusions. IMPRESSION: Bilateral effusions."
FAST = ("--steps-lowres", "1", "--steps-sr", "1", "--lowres-only")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def tree(root: Path) -> dict:
    """Every path under ``root`` -> (kind, permission bits, sha256 of the content)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        out[str(path.relative_to(root))] = ("dir" if path.is_dir() else "file", st.st_mode & 0o7777, digest)
    return out


def run(capsys, *args) -> tuple[int, str]:
    """``medsyn ARGS`` in this process: (exit code, stderr); a traceback reaching the user fails the test."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def medsyn(*args, cwd=None, env=None, **popen):
    return subprocess.Popen([sys.executable, "-m", "MedSynLib", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(env or {})},
                            **popen)


def chest(geometry: Geometry = GRID) -> np.ndarray:
    """A (z, y, x) int16 HU chest: air, a 0 HU body, two -850 HU lungs."""
    body = ellipsoids(geometry, [(0.0, 0.0, 0.0)], [(58.0, 45.0, 70.0)], [1], dtype=np.uint8)
    lungs = ellipsoids(geometry, [(-24.0, 0.0, 0.0), (24.0, 0.0, 0.0)], [(18.0, 28.0, 45.0)] * 2, [1, 1],
                       dtype=np.uint8)
    return np.where(lungs > 0, -850, np.where(body > 0, 0, -1000)).astype(np.int16)


def ct_volume(folder: Path, name="ct.nii.gz", geometry: Geometry = GRID) -> Path:
    write_image(to_image(chest(geometry), geometry), folder / name, description="test CT")
    return folder / name


# --- output safety -------------------------------------------------------------------------------------------
def test_out_naming_the_inputs_folder_is_refused_and_the_input_kept(tiny_model, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    ct = ct_volume(scans)
    before = tree(tmp_path)
    code, err = run(capsys, "segment", "--ct", ct, "--model", tiny_model, *FAST, "--out", scans)
    assert code == 2 and "holds an input" in err and "new folder name" in err
    assert tree(tmp_path) == before


def test_out_naming_the_working_directory_is_refused(tiny_model, tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", ".")
    assert code == 2 and "working directory" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "user folder", "earlier result without --overwrite"])
def test_out_naming_something_that_is_not_replaceable_is_refused(tiny_model, tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("a file of mine")
    else:
        out.mkdir()
        (out / ("medsyn.json" if kind.startswith("earlier") else "thesis.docx")).write_text("{}")
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", out)
    assert code == 2 and str(out) in err
    assert {"file": "existing file", "user folder": "not a MedSyn result",
            "earlier result without --overwrite": "--overwrite"}[kind] in err
    assert tree(tmp_path) == before


def test_overwrite_replaces_an_earlier_result_only(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--seed", 1, "--out", out)[0] == 0
    first = json.loads((out / "medsyn.json").read_text())
    assert run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--seed", 2, "--out", out,
               "--overwrite")[0] == 0
    assert json.loads((out / "medsyn.json").read_text())["seed"] == 2 and first["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, partial or replaced folder left
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_outputs_follow_the_umask(tiny_model, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        code, _ = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--preview",
                      "--out", tmp_path / "out")
    finally:
        os.umask(old)
    assert code == 0
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o644}


def test_a_concurrent_run_into_the_same_folder_fails_fast(tiny_model, tmp_path):
    out = tmp_path / "out"
    slow = ("--steps-lowres", "40", "--lowres-only", "--progress", "json")
    first = medsyn("generate", "--report", REPORT, "--model", tiny_model, *slow, "--out", out)
    try:
        for line in first.stdout:  # wait until the first run has claimed the folder and is sampling
            if '"progress"' in line:
                break
        second = medsyn("generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", out)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "another MedSyn run is writing" in err and "Traceback" not in err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert list(tmp_path.iterdir()) == []


def test_a_killed_runs_partial_folder_is_removed_by_the_next_run(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    mine = tmp_path / ".notes.partial-keep"  # looks like a partial folder but was not made by MedSyn
    mine.mkdir()
    (mine / "x.txt").write_text("mine")
    first = medsyn("generate", "--report", REPORT, "--model", tiny_model, "--steps-lowres", "1", "--steps-sr", "60",
                   "--progress", "json", "--out", out)
    for line in first.stdout:
        if '"superres"' in line:
            break
    deadline = time.time() + 60
    while not [p for p in tmp_path.glob(".out.partial-*")] and time.time() < deadline:
        time.sleep(0.1)
    first.kill()  # SIGKILL: no clean-up in the process itself
    first.communicate()
    code, _ = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", tmp_path / "b")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.partial-keep", "b"]
    assert (mine / "x.txt").read_text() == "mine"


# --- the model store ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/some/abs/dir", "../../x", "a/b", ".."])
def test_models_import_name_must_be_a_plain_name(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("mine")
    before = tree(tmp_path)
    code, err = run(capsys, "models", "import", "--lowres", tmp_path / "l", "--superres", tmp_path / "s",
                    "--text-encoder", tmp_path / "t", "--accept-license", "--overwrite",
                    "--name", str(victim) if name.startswith("/") else name)
    assert code == 2 and "not a plain model name" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("damage", ["bad json", "no sha256", "corrupt safetensors"])
def test_a_broken_model_folder_gives_a_message(tiny_model, tmp_path, capsys, monkeypatch, damage):
    import shutil

    home = tmp_path / "home"
    monkeypatch.setenv("MEDSYN_HOME", str(home))
    broken = home / "models" / "broken"
    shutil.copytree(tiny_model, broken)
    if damage == "bad json":
        (broken / "model.json").write_text("{not json")
    elif damage == "no sha256":
        config = json.loads((broken / "lowres" / "config.json").read_text())
        del config["sha256"]
        (broken / "lowres" / "config.json").write_text(json.dumps(config))
    else:
        (broken / "lowres" / "model.safetensors").write_bytes(b"\xff" * 64)
    code, _ = run(capsys, "models", "list")
    assert code == 0
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", broken, *FAST, "--out", tmp_path / "o")
    assert code == 2
    assert {"bad json": "not valid JSON", "no sha256": "records no sha256",
            "corrupt safetensors": "corrupted"}[damage] in err
    assert tree(tmp_path) == before
