"""Every command keeps the promises of docs/failure-modes.md (issue #28), one test per class of broken promise:
the output-folder rule in every command that writes, links resolved, the synthetic mark carried from input to
output, garbage refused as a result, reports the model cannot read, DICOM series with gaps, model folders trusted
only as far as they are hashed, and bad input ending as exit code 2 with a structured fix (never 1, never a signal).
Each case changed nothing outside its output (the folder tree is hashed before and after).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.cli import main
from MedSynLib.io.images import Geometry, to_image, write_image

from test_bad_inputs import FAST, REPORT, chest, ct_volume, tiny_model, tree  # noqa: F401 (tiny_model: a fixture)
from tiny_model import GRID, ellipsoids

TRAIN_GRID = Geometry((32, 32, 32), (4.0, 4.0, 4.0), (-62.0, -62.0, -62.0))
"""The grid of Testing/train_cases.py's cases."""


def run(capsys, *args, env: dict | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """``medsyn ARGS`` in this process: (exit code, stderr, stdout); argparse refusals included (exit code 2)."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err, captured.out


def refused(capsys, root, *args, expect: str, **kwargs) -> str:
    """Run ``args``: exit code 2, ``expect`` in the message, a ``fix:`` line, and the tree under ``root`` unchanged."""
    before = tree(root)
    code, err, _ = run(capsys, *args, **kwargs)
    assert code == 2, err
    assert expect in err, err
    assert "\nfix: " in err or "usage:" in err, err
    assert tree(root) == before
    return err


def right_lung_ball(geometry: Geometry = GRID, radius: float = 12.0) -> np.ndarray:
    return ellipsoids(geometry, [(-24.0, 0.0, 0.0)], [(radius, radius, radius)], [1], dtype=np.uint8)


# --- 1. the output-folder rule in every command that writes ---------------------------------------------------------
def test_preview_writes_over_no_input_and_no_users_file(tmp_path, capsys):
    ct = ct_volume(tmp_path)
    (tmp_path / "holiday.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
    refused(capsys, tmp_path, "preview", "--ct", ct, "--out", ct, expect="input of this run")
    refused(capsys, tmp_path, "preview", "--ct", ct, "--out", tmp_path / "holiday.png", "--overwrite",
            expect="not a MedSyn preview")
    refused(capsys, tmp_path, "preview", "--ct", ct, "--out", tmp_path / "p.nii.gz", expect="does not end with .png")
    assert run(capsys, "preview", "--ct", ct, "--out", tmp_path / "p.png")[0] == 0
    refused(capsys, tmp_path, "preview", "--ct", ct, "--out", tmp_path / "p.png", expect="--overwrite")
    assert run(capsys, "preview", "--ct", ct, "--out", tmp_path / "p.png", "--overwrite")[0] == 0


def test_phantoms_and_train_text_refuse_a_users_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.csv").write_text("patient,diagnosis\n1,flu\n", encoding="utf-8")
    refused(capsys, tmp_path, "phantoms", "--n", 1, "--size", 16, "--out", mine, expect="not a MedSyn phantom")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "a.txt").write_text("FINDINGS: x. IMPRESSION: y.", encoding="utf-8")
    refused(capsys, tmp_path, "train-text", "--reports", tmp_path / "reports", "--out", mine, "--steps", 1,
            expect="not a MedSyn text-encoder training folder")


def test_batch_refuses_a_users_folder_and_never_writes_over_its_prompts(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.csv").write_text("my,own,table\n", encoding="utf-8")
    (out / "user_0").mkdir()
    (out / "user_0" / "notes.txt").write_text("mine", encoding="utf-8")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(f"id,report\nuser,{REPORT}\n", encoding="utf-8")
    refused(capsys, tmp_path, "batch", "--prompts", prompts, "--model", tiny_model, *FAST, "--out", out,
            expect="not a MedSyn batch output")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(prompts, fresh / "manifest.csv")
    refused(capsys, tmp_path, "batch", "--prompts", fresh / "manifest.csv", "--model", tiny_model, *FAST,
            "--out", fresh, expect="input of this run")


def _train(capsys, command, manifest, out, *extra, **values):
    """``medsyn train-lowres|train-sr`` for one step of a tiny network on the 32³ training cases."""
    unet = {"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "mid_depth": 1}
    values = {"manifest": str(manifest), "out": str(out), "grid": TRAIN_GRID.to_dict(), "steps": 1,
              "unet": {**unet, "text_dim": 16} if command == "train-lowres" else unet, **values}
    return run(capsys, command, *[a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")], *extra)


def test_a_training_run_continues_only_its_own_folder(tiny_model, tmp_path, capsys):
    from train_cases import write_cases

    manifest = write_cases(tmp_path / "cases", n=2)
    encoder = {"text_encoder": str(tiny_model / "text_encoder")}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes", encoding="utf-8")
    before = tree(tmp_path)
    for out, expect in ((mine, "not a MedSyn training run"), (tmp_path / "cases", "input of this run"),
                        (mine / "notes.txt", "existing file")):
        code, err, _ = _train(capsys, "train-lowres", manifest, out, **encoder)
        assert code == 2 and expect in err and "\nfix: " in err, err
        assert tree(tmp_path) == before
    os.symlink(tmp_path, tmp_path / "alias")  # the input's folder through a link is that folder
    code, err, _ = _train(capsys, "train-lowres", manifest, tmp_path / "alias" / "cases", **encoder)
    assert code == 2 and "input of this run" in err, err
    code, err, _ = _train(capsys, "train-lowres", manifest, tmp_path / "run", "--export", mine, **encoder)
    assert code == 2 and "not a MedSyn stage folder" in err and not (tmp_path / "run").exists(), err
    # a new folder is created; the same folder is continued (resumed), never restarted over its files
    assert _train(capsys, "train-lowres", manifest, tmp_path / "run", **encoder)[0] == 0
    first = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    code, err, out = _train(capsys, "train-lowres", manifest, tmp_path / "run", steps=2, **encoder)
    assert code == 0 and '"resumed": true' in out, err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() != first
    before = tree(tmp_path)
    code, err, _ = _train(capsys, "train-sr", manifest, tmp_path / "run", crop=[16, 16, 16])
    assert code == 2 and "is a train-lowres run" in err and "\nfix: " in err, err
    assert tree(tmp_path) == before


# --- 2. links are resolved ---------------------------------------------------------------------------------------
def test_out_through_a_link_to_the_inputs_folder_is_refused(tiny_model, tmp_path, capsys):
    result = tmp_path / "result"
    assert run(capsys, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", result)[0] == 0
    ct = ct_volume(result, "patient.nii.gz")  # an input kept inside an earlier result folder
    os.symlink(tmp_path, tmp_path / "link")
    refused(capsys, tmp_path, "segment", "--ct", ct, "--model", tiny_model, *FAST, "--force", "--overwrite",
            "--out", tmp_path / "link" / "result", expect="input of this run")


# --- 3. the synthetic mark survives every command -------------------------------------------------------------------
@pytest.mark.parametrize("synthetic", [True, False], ids=["synthetic input", "patient input"])
def test_an_edit_keeps_the_inputs_synthetic_mark(tiny_model, tmp_path, capsys, synthetic):
    ct = tmp_path / "ct.nii.gz"
    write_image(to_image(chest(), GRID), ct, **({} if synthetic else {"description": "patient CT"}))
    write_image(to_image(right_lung_ball(), GRID), tmp_path / "region.nii.gz", description="region")
    code, err, _ = run(capsys, "edit", "--ct", ct, "--region", tmp_path / "region.nii.gz", "--report", REPORT,
                       "--model", tiny_model, *FAST, "--preview", "--out", tmp_path / "out")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["edited"] is True and sidecar["synthetic"] is synthetic
    names = [name for key, name in sidecar["files"].items() if key != "preview"]
    assert all(name.startswith("SYNTHETIC_EDITED_" if synthetic else "EDITED_") for name in names)
    header = sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["ct"])).GetMetaData("descrip")
    assert "EDITED" in header and ("SYNTHETIC" in header) is synthetic
    assert (b"SYNTHETIC" in (tmp_path / "out" / "preview.png").read_bytes()[:300]) is synthetic
    code, _, _ = run(capsys, "preview", "--ct", tmp_path / "out" / sidecar["files"]["ct"], "--out", tmp_path / "p.png")
    assert code == 0 and (b"SYNTHETIC" in (tmp_path / "p.png").read_bytes()[:300]) is synthetic


MARKS = {"patient": ("patient CT", False, False), "synthetic": (None, True, False),
         "synthetic edited": ("SYNTHETIC, EDITED by MedSyn", True, True), "edited patient": ("EDITED by MedSyn", False, True)}


@pytest.mark.parametrize("kind", MARKS)
def test_a_segmentation_says_what_its_ct_was(tiny_model, tmp_path, capsys, kind):
    """The masks of a SYNTHETIC (or EDITED) CT say so in their sidecar, names and headers; a patient's CT's masks
    are not synthetic; every segmentation names its CT in ``source_ct``."""
    description, synthetic, edited = MARKS[kind]
    ct = tmp_path / "ct.nii.gz"
    write_image(to_image(chest(), GRID), ct, **({"description": description} if description else {}))
    code, err, _ = run(capsys, "segment", "--ct", ct, "--model", tiny_model, *FAST, "--force", "--preview",
                       "--out", tmp_path / "seg")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "seg" / "medsyn.json").read_text(encoding="utf-8"))
    assert (sidecar["synthetic"], sidecar["edited"], sidecar["source_ct"]) == (synthetic, edited, str(ct))
    mark = "_".join(["SYNTHETIC"] * synthetic + ["EDITED"] * edited)
    names = [name for key, name in sidecar["files"].items() if key != "preview"]
    assert all(name.startswith(f"{mark}_MedSyn_segmentation" if mark else "MedSyn_segmentation") for name in names)
    header = sitk.ReadImage(str(tmp_path / "seg" / sidecar["files"]["lobes"])).GetMetaData("descrip")
    assert ("SYNTHETIC" in header, "EDITED" in header) == (synthetic, edited), header
    assert ("SYNTHETIC" in sidecar["notice"]) is synthetic
    assert (b"SYNTHETIC" in (tmp_path / "seg" / "preview.png").read_bytes()[:300]) is synthetic


# --- 4. finite garbage is not a result -------------------------------------------------------------------------------
def test_a_saturated_ct_from_a_huge_guidance_is_refused(tiny_model, tmp_path, capsys):
    refused(capsys, tmp_path, "generate", "--report", REPORT, "--model", tiny_model, *FAST, "--guidance", "1e30",
            "--out", tmp_path / "out", expect="saturated")


@pytest.mark.parametrize("case", ["blend inf", "blend deeper than the region", "region is the CT",
                                  "region is nearly everything"])
def test_an_edit_that_would_replace_nothing_or_everything_is_refused(tiny_model, tmp_path, capsys, case):
    ct = ct_volume(tmp_path)
    region, extra = tmp_path / "region.nii.gz", ()
    if case == "region is the CT":  # a scan has hundreds of values, nonzero almost everywhere
        noisy = chest() + np.random.default_rng(0).integers(-200, 200, GRID.size[::-1]).astype(np.int16)
        write_image(to_image(noisy, GRID), region, description="a CT given as the region")
    elif case == "region is nearly everything":
        mask = np.ones(GRID.size[::-1], np.uint8)
        mask[:2] = 0
        write_image(to_image(mask, GRID), region, description="region")
    else:
        write_image(to_image(right_lung_ball(radius=6.0), GRID), region, description="region")
        extra = ("--blend-mm", "inf" if case == "blend inf" else "500")
    expect = {"blend inf": "not a finite number", "blend deeper than the region": "deeper than the region",
              "region is the CT": "not a label map", "region is nearly everything": "covers 93.8 % of the CT"}[case]
    refused(capsys, tmp_path, "edit", "--ct", ct, "--region", region, "--report", REPORT, "--model", tiny_model,
            *FAST, *extra, "--out", tmp_path / "out", expect=expect)


# --- 5. reports the model cannot read; warnings in every command -----------------------------------------------------
@pytest.mark.parametrize("report", ["\u200b\u200b\u200b", "\x01\x02\x03\x7f", "\u200b \u200c\u2060"])
def test_a_report_without_a_readable_word_is_refused(tiny_model, tmp_path, capsys, report):
    refused(capsys, tmp_path, "generate", "--report", report, "--model", tiny_model, *FAST,
            "--out", tmp_path / "out", expect="no word the text encoder can read")


def test_edit_warns_like_generate(tiny_model, tmp_path, capsys, monkeypatch):
    ct = ct_volume(tmp_path)
    write_image(to_image(right_lung_ball(), GRID), tmp_path / "region.nii.gz", description="region")
    code, err, out = run(capsys, "edit", "--ct", ct, "--region", tmp_path / "region.nii.gz", "--report",
                         "FINDINGS: " + "large bilateral effusions . " * 900, "--model", tiny_model, *FAST,
                         "--progress", "json", "--out", tmp_path / "out", env={"MEDSYN_PRECISION": "fp16"},
                         monkeypatch=monkeypatch)
    assert code == 0, err
    warnings = [json.loads(line)["message"] for line in out.splitlines() if '"warning"' in line]
    assert any("dropped" in w for w in warnings) and any("MEDSYN_PRECISION=fp16" in w for w in warnings)
    sidecar = json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))
    assert any("dropped" in w for w in sidecar["warnings"])


# --- 8. bad input is exit code 2 with a structured fix, never 1, never a signal --------------------------------------
def _mha(folder, name: str, damage: str):
    image = sitk.GetImageFromArray(chest())
    sitk.WriteImage(image, str(folder / name))
    data = (folder / name).read_bytes()
    if damage == "truncated":
        data = data[: len(data) - 4000]
    else:
        data = data.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 4 4")
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("case", [
    "phantoms size 0", "phantoms n -1", "phantoms spacing 1e30", "seed 2**64", "device gpu", "shard 3/2", "sr-tiles 0", "max-gpu-memory 0",
    "WORLD_SIZE=abc", "WORLD_SIZE=2 without RANK", "RANK=5 WORLD_SIZE=2", "csv field over 128 kB",
    "csv not utf-8", "csv seed over the range", "truncated mha", "zero spacing mha",
])
def test_bad_input_is_exit_code_2_with_a_fix(tiny_model, tmp_path, capsys, monkeypatch, case):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(f"id,report\na,{REPORT}\n", encoding="utf-8")
    env, expect = {}, None
    gen = ("generate", "--report", REPORT, "--model", tiny_model, *FAST, "--out", tmp_path / "out")
    batch = ("batch", "--prompts", prompts, "--model", tiny_model, *FAST, "--out", tmp_path / "out")
    args = {"phantoms size 0": ("phantoms", "--n", 1, "--size", 0, "--out", tmp_path / "p"),
            "phantoms n -1": ("phantoms", "--n", -1, "--size", 16, "--out", tmp_path / "p"),
            "phantoms spacing 1e30": ("phantoms", "--n", 1, "--size", 16, "--spacing", "1e30", "--out", tmp_path / "p"),
            "seed 2**64": (*gen, "--seed", 2**64), "device gpu": (*gen, "--device", "gpu"),
            "shard 3/2": (*batch, "--shard", "3/2"), "sr-tiles 0": (*gen, "--sr-tiles", 0),
            "max-gpu-memory 0": (*gen, "--max-gpu-memory", 0)}.get(case, batch)
    if case.startswith(("WORLD", "RANK")):
        env = dict(item.split("=") for item in case.split()[:2] if "=" in item)
        env.setdefault("RANK", "")
        expect = "WORLD_SIZE"
    elif case == "csv field over 128 kB":
        prompts.write_text(f'id,report\na,"{REPORT}\nb,{"x" * 140_000}\n', encoding="utf-8")
        expect = "not a valid CSV file"
    elif case == "csv not utf-8":
        prompts.write_bytes("id,report\na,Pleuraerguss größer\n".encode("latin-1"))
        expect = "not UTF-8"
    elif case == "csv seed over the range":
        prompts.write_text(f"id,report,seed\na,{REPORT},{2**64}\n", encoding="utf-8")
        expect = "out of range"
    elif case.endswith("mha"):
        ct = _mha(tmp_path, "ct.mha", case.split()[0])
        args = ("segment", "--ct", ct, "--model", tiny_model, *FAST, "--out", tmp_path / "out")
        expect = {"truncated mha": "truncated", "zero spacing mha": "voxel spacing that is not positive"}[case]
    err = refused(capsys, tmp_path, *args, expect=expect or "", env=env, monkeypatch=monkeypatch)
    if case == "zero spacing mha":
        assert "fix: set the true voxel size" in err


def test_the_json_error_event_and_stderr_carry_a_structured_fix(tiny_model, tmp_path, capsys):
    report = tmp_path / "report.txt"
    report.write_bytes("Befund: größer".encode("latin-1"))
    code, err, out = run(capsys, "generate", "--report-file", report, "--model", tiny_model, *FAST,
                         "--progress", "json", "--out", tmp_path / "out")
    event = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    assert code == 2 and event["event"] == "error" and event["kind"] == "bad_input"
    assert "not UTF-8" in event["message"] and "Fix" not in event["message"] and event["fix"].startswith("save it")
    lines = err.strip().splitlines()
    assert lines[0].startswith("medsyn: error: ") and lines[1] == f"fix: {event['fix']}"


# --- 6. DICOM series: one regular grid, or the reason ---------------------------------------------------------------
def _dicom_series(folder, drop=(), twice=(), description="patient CT"):
    """The test chest as a DICOM series (one file per slice), without the slices ``drop`` and with ``twice`` written
    a second time under another name; ``description``: its Series Description."""
    folder.mkdir()
    volume = to_image(chest(), GRID)
    uid = "1.2.826.0.1.3680043.2.1125.7"
    for k in [k for k in range(volume.GetDepth()) if k not in drop] + list(twice):
        slice_ = sitk.Cast(volume[:, :, k], sitk.sitkInt16)
        x, y, z = volume.TransformIndexToPhysicalPoint((0, 0, k))
        copy = int(k in twice and (folder / f"{k:03d}.dcm").exists())
        for tag, value in (("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", uid + ".0"),
                           ("0020|0032", f"{x}\\{y}\\{z}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(k + 1)), ("0028|0030", "4\\4"), ("0018|0050", "4"),
                           ("0008|0018", f"{uid}.{k + 1}.{copy}"), ("0008|103e", description)):
            slice_.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{k:03d}{'b' * copy}.dcm"))
        writer.Execute(slice_)
    return folder


@pytest.mark.parametrize("damage", ["one slice missing", "twenty slices missing", "a slice twice"])
def test_a_dicom_series_with_gaps_or_duplicates_is_refused(tiny_model, tmp_path, capsys, damage):
    drop, twice = {"one slice missing": ((20,), ()), "twenty slices missing": (tuple(range(5, 25)), ()),
                   "a slice twice": ((), (12,))}[damage]
    folder = _dicom_series(tmp_path / "dicom", drop, twice)
    expect = {"one slice missing": "about 1 slice is missing between", "twenty slices missing": "about 20 slices",
              "a slice twice": "given twice"}[damage]
    refused(capsys, tmp_path, "segment", "--ct", folder, "--model", tiny_model, *FAST, "--force",
            "--out", tmp_path / "seg", expect=expect)


# --- 7. model folders: every listed file hashed, every path inside, the schema checked ----------------------------
def _packaged(tiny_model, tmp_path):
    """The tiny model packaged by ``medsyn models package`` (model.json lists every file's sha256)."""
    from MedSynLib.modelstore.package import ModelParts, package_model

    parts = ModelParts(tiny_model / "text_encoder", tiny_model / "lowres", tiny_model / "superres")
    return package_model(tmp_path / "packaged", parts, name="packaged", title="t", license="Apache-2.0", grid=GRID)


@pytest.mark.parametrize("damage", ["changed vocab.txt", "part outside the folder", "part through a link outside",
                                    "missing key", "zero factor", "string spacing", "unknown sampler"])
def test_a_model_folder_is_trusted_only_as_far_as_it_is_checked(tiny_model, tmp_path, capsys, damage):
    model = _packaged(tiny_model, tmp_path)
    spec = json.loads((model / "model.json").read_text(encoding="utf-8"))
    if damage == "changed vocab.txt":
        with open(model / "text_encoder" / "vocab.txt", "a", encoding="utf-8") as f:
            f.write("extra\n")
    elif damage == "part outside the folder":
        shutil.copytree(model / "text_encoder", tmp_path / "elsewhere")
        spec["text_encoder"] = "../elsewhere"
    elif damage == "part through a link outside":
        shutil.move(model / "lowres", tmp_path / "lowres_elsewhere")
        os.symlink(tmp_path / "lowres_elsewhere", model / "lowres")
    elif damage == "missing key":
        del spec["grid"]
    elif damage == "zero factor":
        spec["lowres_factor"] = 0
    elif damage == "string spacing":
        spec["grid"]["spacing"] = ["4", "4", "4"]
    else:
        spec["defaults"]["sampler"] = "euler"
    (model / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    expect = {"changed vocab.txt": "vocab.txt is corrupted or was altered", "part outside the folder":
              "points outside the model folder", "part through a link outside": "points outside the model folder",
              "missing key": "'grid' is missing", "zero factor": "lowres_factor must be",
              "string spacing": "grid.spacing must be", "unknown sampler": "defaults.sampler must be"}[damage]
    refused(capsys, tmp_path, "generate", "--report", REPORT, "--model", model, *FAST, "--out", tmp_path / "out",
            expect=expect)


def test_an_installed_model_with_a_broken_model_json_says_so(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    shutil.copytree(tiny_model, tmp_path / "home" / "models" / "mine")
    spec = json.loads((tmp_path / "home" / "models" / "mine" / "model.json").read_text(encoding="utf-8"))
    spec["lowres_factor"] = "four"
    (tmp_path / "home" / "models" / "mine" / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    err = refused(capsys, tmp_path, "generate", "--report", REPORT, "--model", "mine", *FAST,
                  "--out", tmp_path / "out", expect="lowres_factor must be")
    assert "import the official" not in err.lower()


@pytest.mark.parametrize("description", ["SYNTHETIC CT MedSyn seed 3", "CT THORAX"])
def test_a_dicom_series_keeps_its_synthetic_mark(tiny_model, tmp_path, capsys, description):
    folder = _dicom_series(tmp_path / "dicom", description=description)
    code, err, _ = run(capsys, "segment", "--ct", folder, "--model", tiny_model, *FAST, "--force",
                       "--out", tmp_path / "seg")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "seg" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["synthetic"] is description.startswith("SYNTHETIC")


def test_a_folder_without_dicom_files_gets_only_our_message(tmp_path, capfd):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image", encoding="utf-8")
    code = main(["preview", "--ct", str(tmp_path / "notes"), "--out", str(tmp_path / "p.png")])
    err = capfd.readouterr().err  # ITK writes its warnings to the process's stderr, beside sys.stderr
    assert code == 2 and err.splitlines() == [
        f"medsyn: error: CT {tmp_path / 'notes'} is a folder without a DICOM series",
        "fix: give a NIfTI, NRRD or MetaImage file, or the folder that holds the DICOM files of one series"], err


# --- 8 (again). send, serve and --server: every bad value is a message with exit code 2 ------------------------------
@pytest.mark.parametrize("case", ["port 99999", "port in use", "unknown host", "token file is a device",
                                  "work dir is a file", "gpus -1", "keep-hours inf"])
def test_serve_refuses_what_it_cannot_serve_before_listening(tmp_path, capsys, monkeypatch, case):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server would have started"))
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    token = tmp_path / "token"
    token.write_text("t" * 40, encoding="utf-8")
    token.chmod(0o600)
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args, expect = {
            "port 99999": (["--port", 99999], "out of range"),
            "port in use": (["--port", busy.getsockname()[1]], "cannot listen on 127.0.0.1"),
            "unknown host": (["--host", "no-such-host.invalid", "--token-file", token], "not an address"),
            "token file is a device": (["--token-file", "/dev/null"], "is not a file"),
            "work dir is a file": (["--work-dir", tmp_path / "notes.txt"], "is a file, not a folder"),
            "gpus -1": (["--gpus", "-1"], "use auto, none or GPU indices"),
            "keep-hours inf": (["--keep-hours", "inf"], "not a finite number")}[case]
        if "--token-file" not in args:
            args = ["--no-token", *args]
        if "--port" not in args:  # the default port may be another program's
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                args = ["--port", probe.getsockname()[1], *args]
        refused(capsys, tmp_path, "serve", "--gpus", "none", *args, expect=expect)


@pytest.mark.parametrize("url", ["http://exa mple.com", "http://127.0.0.1:99999", "http://[::1", "http://☃.invalid"])
def test_a_server_url_that_is_no_address_is_a_message(tmp_path, capsys, monkeypatch, url):
    refused(capsys, tmp_path, "generate", "--report", REPORT, "--server", url, "--out", tmp_path / "out",
            env={"MEDSYN_SERVER_TOKEN": "t" * 40}, monkeypatch=monkeypatch, expect="is not an http(s) address")


@pytest.mark.parametrize("option", ["--aet", "--calling-aet"])
def test_send_names_a_bad_ae_title(tmp_path, capsys, option):
    refused(capsys, tmp_path, "send", "--host", "127.0.0.1", "--port", 9, option, "A\\B", tmp_path,
            expect=f"argument {option}: 'A\\\\B' is not an AE title")
