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


def chest(geometry: Geometry = GRID, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A (z, y, x) int16 HU chest centred at ``centre`` (LPS mm): air, a 0 HU body, two -850 HU lungs."""
    x, y, z = centre
    body = ellipsoids(geometry, [centre], [(58.0, 45.0, 70.0)], [1], dtype=np.uint8)
    lungs = ellipsoids(geometry, [(x - 24.0, y, z), (x + 24.0, y, z)], [(18.0, 28.0, 45.0)] * 2, [1, 1],
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
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", ".")
    assert code == 2 and "working directory" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "user folder", "earlier result without --overwrite"])
def test_out_naming_something_that_is_not_replaceable_is_refused(tiny_model, tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("a file of mine", encoding="utf-8")
    else:
        out.mkdir()
        (out / ("medsyn.json" if kind.startswith("earlier") else "thesis.docx")).write_text("{}", encoding="utf-8")
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", out)
    assert code == 2 and str(out) in err
    assert {"file": "existing file", "user folder": "not a MedSyn result",
            "earlier result without --overwrite": "--overwrite"}[kind] in err
    assert tree(tmp_path) == before


def test_overwrite_replaces_an_earlier_result_only(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--seed", 1, "--out", out)[0] == 0
    first = json.loads((out / "medsyn.json").read_text(encoding="utf-8"))
    assert run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--seed", 2, "--out", out,
               "--overwrite")[0] == 0
    assert json.loads((out / "medsyn.json").read_text(encoding="utf-8"))["seed"] == 2 and first["seed"] == 1
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
    slow = ("--steps-lowres", "1000", "--lowres-only", "--progress", "json")
    first = medsyn("generate", "--report", REPORT, "--model", tiny_model, *slow, "--out", out)
    try:
        for line in first.stdout:  # wait until the first run has claimed the folder and is sampling
            if '"progress"' in line:
                break
        second = medsyn("generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", out)
        _, err = second.communicate(timeout=600)
        assert second.returncode == 2 and "another MedSyn run is writing" in err and "Traceback" not in err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=600)
    assert first.returncode == 130
    assert list(tmp_path.iterdir()) == []


def test_a_killed_runs_partial_folder_is_removed_by_the_next_run(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    mine = tmp_path / ".notes.partial-keep"  # looks like a partial folder but was not made by MedSyn
    mine.mkdir()
    (mine / "x.txt").write_text("mine", encoding="utf-8")
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
    assert (mine / "x.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("error", [(28, "No space left on device", "free disk space"),
                                   (30, "Read-only file system", "writable disk")])
def test_a_full_or_read_only_disk_is_a_message_and_leaves_nothing(tiny_model, tmp_path, capsys, monkeypatch,
                                                                    error):
    import MedSynLib.io.files as files

    number, text, fix = error

    def failing(*args, **kwargs):
        raise OSError(number, text, str(kwargs.get("dir", "")))

    monkeypatch.setattr(files.tempfile, "mkstemp", failing)  # every file written goes through it
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", tmp_path / "out")
    assert code == 2 and text in err and fix in err
    assert tree(tmp_path) == before


# --- the model store ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/some/abs/dir", "../../x", "a/b", ".."])
def test_models_import_name_must_be_a_plain_name(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("mine", encoding="utf-8")
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
        (broken / "model.json").write_text("{not json", encoding="utf-8")
    elif damage == "no sha256":
        config = json.loads((broken / "lowres" / "config.json").read_text(encoding="utf-8"))
        del config["sha256"]
        (broken / "lowres" / "config.json").write_text(json.dumps(config), encoding="utf-8")
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


# --- input images ---------------------------------------------------------------------------------------------
def _nifti_bytes(array: np.ndarray, spacing=(4.0, 4.0, 4.0)) -> bytearray:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(GRID.origin)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"medsyn-test-{os.getpid()}.nii"
    sitk.WriteImage(image, str(path))
    data = bytearray(path.read_bytes())
    path.unlink()
    return data


def _damaged(kind: str, array: np.ndarray) -> bytes:
    """A NIfTI file (gzip) of ``array`` damaged as ``kind`` says."""
    import struct

    if kind == "nan":
        array = array.astype(np.float32)
        array[5, 5, 5], array[6, 6, 6] = np.nan, np.inf
    data = _nifti_bytes(array)
    if kind == "zero pixdim":
        data[80:84] = struct.pack("<f", 0.0)  # pixdim[1]
    elif kind == "sheared":
        srow = list(struct.unpack("<12f", data[280:328]))
        srow[1] = 1.5  # x also moves with j: a sheared grid (the qform stays orthonormal)
        data[280:328] = struct.pack("<12f", *srow)
    packed = gzip.compress(bytes(data))
    return packed[: len(packed) * 2 // 3] if kind == "truncated" else packed


CASES = {"truncated": "truncated", "nan": "NaN or infinite", "zero pixdim": "spacing", "sheared": "sheared"}


@pytest.mark.parametrize("kind", CASES)
def test_a_damaged_ct_is_refused(tiny_model, tmp_path, capsys, kind):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(_damaged(kind, chest()))
    before = tree(tmp_path)
    code, err = run(capsys, "segment", "--ct", ct, "--model", tiny_model, *FAST, "--out", tmp_path / "seg")
    assert code == 2 and CASES[kind] in err and str(ct) in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", CASES)
def test_a_damaged_condition_mask_is_refused(tiny_model, tmp_path, capsys, kind):
    mask = (chest() == -850).astype(np.uint8)
    (tmp_path / "lungs.nii.gz").write_bytes(_damaged(kind, mask))
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--airway", tmp_path / "lungs.nii.gz",
                    "--model", tiny_model, *FAST, "--out", tmp_path / "out")
    assert code == 2 and CASES[kind] in err
    assert tree(tmp_path) == before


def test_a_dicom_series_folder_is_read(tiny_model, tmp_path, capsys):
    folder = tmp_path / "dicom"
    folder.mkdir()
    volume = to_image(chest(), GRID)
    uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(volume.GetDepth()):
        slice_ = sitk.Cast(volume[:, :, k], sitk.sitkInt16)
        x, y, z = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", uid + ".0"),
                           ("0020|0032", f"{x}\\{y}\\{z}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(k + 1)), ("0028|0030", "4\\4"), ("0018|0050", "4"),
                           ("0008|0018", f"{uid}.{k + 1}")):
            slice_.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(slice_)
    code, err = run(capsys, "segment", "--ct", folder, "--model", tiny_model, *FAST, "--force",  # random weights
                    "--out", tmp_path / "seg")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "seg" / "medsyn.json").read_text(encoding="utf-8"))
    assert tuple(sidecar["geometry"]["size"]) == GRID.size
    assert np.allclose(sidecar["geometry"]["spacing"], GRID.spacing)

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no images", encoding="utf-8")
    code, err = run(capsys, "segment", "--ct", tmp_path / "notes", "--model", tiny_model, *FAST,
                    "--out", tmp_path / "seg2")
    assert code == 2 and "without a DICOM series" in err


# --- reports and settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["not utf-8", "a folder", "nan guidance", "inf guidance"])
def test_bad_reports_and_settings_are_refused_up_front(tiny_model, tmp_path, capsys, kind):
    report = tmp_path / "report.txt"
    args = ["--report-file", report]
    if kind == "not utf-8":
        report.write_bytes("Befund: Pleuraerguss rechts, größer".encode("latin-1"))
    elif kind == "a folder":
        report.mkdir()
    else:
        args = ["--report", REPORT, "--guidance", kind.split()[0]]
    before = tree(tmp_path)
    try:
        code, err = run(capsys, "generate", *args, "--model", tiny_model, *FAST, "--out", tmp_path / "out")
    except SystemExit as exc:  # argparse refuses the value with a usage message
        code, err = exc.code, capsys.readouterr().err
    assert code == 2
    assert {"not utf-8": "not UTF-8", "a folder": "is a folder", "nan guidance": "not a finite number",
            "inf guidance": "not a finite number"}[kind] in err
    assert tree(tmp_path) == before


def test_a_text_encoder_with_nan_weights_gives_no_blank_result(tiny_model, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from MedSynLib.modelstore.bundle import read_model_spec, write_model_spec

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "text_encoder" / "model.safetensors"
    state = load_file(str(weights))
    state = {k: v.fill_(float("nan")) if "LayerNorm.weight" in k else v for k, v in state.items()}
    save_file(state, str(weights))
    write_model_spec(model, **{k: v for k, v in read_model_spec(model).items() if k != "text_encoder_sha256"})
    before = tree(tmp_path)
    code, err = run(capsys, "generate", "--report", REPORT, "--model", model, *FAST, "--out", tmp_path / "out")
    assert code == 2 and "text encoder produced NaN" in err
    assert tree(tmp_path) == before


def test_the_text_encoder_is_hashed_like_the_stages(tiny_model, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert run(capsys, "generate", "--report", REPORT, "--model", model, *FAST, "--out", tmp_path / "ok")[0] == 0
    sidecar = json.loads((tmp_path / "ok" / "medsyn.json").read_text(encoding="utf-8"))
    weights = model / "text_encoder" / "model.safetensors"
    assert sidecar["model"]["sha256"]["text_encoder"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    code, err = run(capsys, "generate", "--report", REPORT, "--model", model, *FAST, "--out", tmp_path / "bad")
    assert code == 2 and "sha256 does not match" in err and not (tmp_path / "bad").exists()


# --- segment-mode outputs -------------------------------------------------------------------------------------
def test_segment_outputs_do_not_mark_the_patients_ct_and_carry_the_grid_used(tiny_model, tmp_path, capsys):
    geometry = Geometry((48, 48, 48), (4.0, 4.0, 4.0), (-90.0, -90.0, -90.0))
    write_image(to_image(chest(geometry, centre=(20.0, -12.0, 8.0)), geometry), tmp_path / "ct.nii.gz",
                description="test CT")
    code, err = run(capsys, "segment", "--ct", tmp_path / "ct.nii.gz", "--model", tiny_model, "--steps-lowres", 1,
                    "--steps-sr", 1, "--preview", "--force", "--out", tmp_path / "seg")
    assert code == 0, err
    folder = tmp_path / "seg"
    sidecar = json.loads((folder / "medsyn.json").read_text(encoding="utf-8"))
    assert not any(name.startswith("SYNTHETIC") and "lowres" in name for name in sidecar["files"].values())
    lowres = sitk.ReadImage(str(folder / sidecar["files"]["lowres"]))
    assert lowres.GetNumberOfComponentsPerPixel() == 3  # lobes, airway, vessels: no CT channel
    used = Geometry.from_dict(sidecar["model_grid_used"]).subsampled(4)
    assert np.allclose(lowres.GetOrigin(), used.origin) and np.allclose(lowres.GetSpacing(), used.spacing)
    assert not np.allclose(used.origin, GRID.subsampled(4).origin)  # the grid moved onto the lungs
    assert Geometry.from_dict(sidecar["lowres_geometry"]) == Geometry.of(lowres)
    assert b"MedSyn segmentation" in (folder / "preview.png").read_bytes()[:200]
    assert sitk.ReadImage(str(folder / "preview.png")).GetNumberOfComponentsPerPixel() == 3


def test_generate_preview_is_marked_synthetic(tiny_model, tmp_path, capsys):
    code, _ = run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--preview",
                  "--out", tmp_path / "out")
    assert code == 0
    assert b"SYNTHETIC" in (tmp_path / "out" / "preview.png").read_bytes()[:200]


def test_preview_of_an_empty_file_is_refused(tmp_path, capsys):
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    before = tree(tmp_path)
    code, err = run(capsys, "preview", "--ct", tmp_path / "ct.nii.gz", "--out", tmp_path / "p.png")
    assert code == 2 and "empty file" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["long report", "unknown word-pieces", "fp16 on the CPU"])
def test_warnings_reach_stderr_the_json_events_and_the_sidecar(tiny_model, tmp_path, capsys, kind):
    report, extra = {"long report": ("FINDINGS: " + "large bilateral effusions . " * 900, ()),
                     "unknown word-pieces": ("所見：両側に大量の胸水 😷🫁 心拡大", ()),
                     "fp16 on the CPU": (REPORT, ("--precision", "fp16"))}[kind]
    code = main(["generate", "--report", report, "--model", str(tiny_model), *FAST, *extra, "--progress", "json",
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    key = {"long report": "dropped", "unknown word-pieces": "unknown to the text encoder",
           "fp16 on the CPU": "slower than fp32"}[kind]
    assert "medsyn: warning: " in captured.err and key in captured.err
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert any(e["event"] == "warning" and key in e["message"] for e in events)
    if kind != "fp16 on the CPU":
        assert any(key in w for w in json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))["warnings"])


# --- training commands ----------------------------------------------------------------------------------------
@pytest.fixture
def cases(tmp_path, tiny_model):
    from train_cases import write_cases

    return write_cases(tmp_path / "cases", n=2), tiny_model / "text_encoder"


def _train(capsys, manifest, text_encoder, out, *sets):
    unet = json.dumps({"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "text_dim": 16, "mid_depth": 1})
    grid = json.dumps(GRID.to_dict())
    args = ["train-lowres", "--set", f"manifest={manifest}", "--set", f"out={out}", "--set", f"unet={unet}",
            "--set", f"text_encoder={text_encoder}", "--set", f"grid={grid}", "--set", "steps=1", *sets]
    return run(capsys, *args)


@pytest.mark.parametrize("kind", ["missing manifest", "unknown option", "missing case file", "truncated case",
                                  "no config file"])
def test_training_failures_are_messages(cases, tmp_path, capsys, kind):
    manifest, text_encoder = cases
    sets = []
    if kind == "missing manifest":
        manifest = tmp_path / "nowhere.csv"
    elif kind == "unknown option":
        sets = ["--set", "learning_rate=1"]
    elif kind == "missing case file":
        (tmp_path / "cases" / "case001" / "lobes.nii.gz").unlink()
    elif kind == "truncated case":
        ct = tmp_path / "cases" / "case001" / "ct.nii.gz"
        ct.write_bytes(ct.read_bytes()[:-200])
    else:
        sets = ["--config", str(tmp_path / "missing.json")]
    before = tree(tmp_path / "cases")
    code, err = _train(capsys, manifest, text_encoder, tmp_path / "run", *sets)
    assert code == 2
    expected = {"missing manifest": "nowhere.csv", "unknown option": "unknown training options",
                "missing case file": "case001", "truncated case": "truncated", "no config file": "missing.json"}
    assert expected[kind] in err
    assert tree(tmp_path / "cases") == before


def test_train_text_without_reports_is_a_message(tmp_path, capsys):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "notes.bin").write_bytes(b"\x00\x01")
    code, err = run(capsys, "train-text", "--reports", tmp_path / "reports", "--out", tmp_path / "out")
    assert code == 2


@pytest.mark.parametrize("module", ["MedSynLib.bench", "MedSynLib.eval", "MedSynLib.eval.edit"])
def test_the_documented_python_modules_refuse_a_missing_gpu_without_a_traceback(module, tmp_path):
    """`python -m MedSynLib.bench --device cuda` on a machine without that GPU: the message and the fix, exit 2."""
    run = subprocess.run([sys.executable, "-m", module, "--device", "cuda:99", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MEDSYN_DEBUG": ""})
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("medsyn: error: ") and "\nfix: " in run.stderr
