"""`medsyn generate` / `medsyn segment` end to end with a tiny random-weight model (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.images import Geometry, to_image, write_image

from tiny_model import GRID, TINY_STATEMENT, build_tiny_model

REPORT = "FINDINGS: Large bilateral pleural effusions. IMPRESSION: Bilateral effusions."


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def medsyn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "MedSynLib", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _events(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_generate_writes_a_complete_synthetic_result(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = medsyn("generate", "--report", REPORT, "--model", tiny_model, "--seed", 3, "--progress", "json", "--out", out)
    assert r.returncode == 0, r.stderr
    events = _events(r.stdout)
    stages = [(e["stage"], e["step"], e["total"]) for e in events if e["event"] == "progress"]
    assert ("lowres", 5, 5) in stages and ("superres", 3, 3) in stages  # 4 and 2 steps: what runs, each + 1
    assert {e["unit"] for e in events if e["event"] == "progress"} == {"network evaluations"}
    assert events[-1]["event"] == "done" and events[-1]["statement"] == TINY_STATEMENT
    sidecar = json.loads((out / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["model"]["statement"] == TINY_STATEMENT  # the model's sentence, shown with every result
    assert sidecar["synthetic"] is True and sidecar["report"] == REPORT and sidecar["seed"] == 3
    assert set(sidecar["model"]["sha256"]) == {"lowres", "superres", "text_encoder"}
    assert {"lowres_s", "superres_s", "text_s"} <= set(sidecar["timings_s"])
    assert {"torch", "medsyn", "SimpleITK"} <= set(sidecar["versions"])
    ct = sitk.ReadImage(str(out / sidecar["files"]["ct"]))
    assert "SYNTHETIC" in sidecar["files"]["ct"] and "SYNTHETIC" in ct.GetMetaData("descrip")
    assert ct.GetSize() == GRID.size and np.allclose(ct.GetSpacing(), GRID.spacing)
    assert np.allclose(ct.GetOrigin(), GRID.origin) and ct.GetPixelID() == sitk.sitkInt16
    for name in ("lobes", "airway", "vessels", "segmentation", "lowres"):
        assert (out / sidecar["files"][name]).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_same_seed_same_files_different_seed_different_volume(tiny_model, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert medsyn("generate", "--report", REPORT, "--model", tiny_model, "--seed", seed, "--lowres-only",
                      "--out", tmp_path / name).returncode == 0
    read = lambda n: sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n / "SYNTHETIC_MedSyn_CT_seed{}.nii.gz".format(  # noqa: E731
        {"a": 1, "b": 1, "c": 2}[n]))))
    assert np.array_equal(read("a"), read("b"))
    assert not np.array_equal(read("a"), read("c"))


def test_conditions_in_a_rotated_anisotropic_geometry_are_held(tiny_model, tmp_path):
    # an airway mask given on a rotated, 2.5 x 3 x 5 mm grid covering the model's field of view
    geometry = Geometry((60, 50, 30), (2.5, 3.0, 5.0), (70.0, -75.0, -70.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
    mask = np.zeros((30, 50, 60), np.uint8)
    mask[10:20, 20:30, 25:35] = 1
    write_image(to_image(mask, geometry), tmp_path / "airway.nrrd")
    r = medsyn("generate", "--report", REPORT, "--model", tiny_model, "--airway", tmp_path / "airway.nrrd",
               "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    sidecar = json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["held_channels"] == [2] and sidecar["lobe_majority_vote_mm"] == 20.0  # generated lobes voted
    assert sidecar["lobe_islands_below_ml"] == 5.0
    airway = sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["airway"]))
    expected = sitk.Resample(sitk.ReadImage(str(tmp_path / "airway.nrrd")), airway, sitk.Transform(),
                             sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(sitk.GetArrayFromImage(airway), sitk.GetArrayFromImage(expected))
    # the held airway sits where it was drawn, in physical space
    centre = np.array(airway.TransformContinuousIndexToPhysicalPoint(
        (np.argwhere(sitk.GetArrayFromImage(airway)).mean(0)[::-1]).tolist()))
    drawn = np.array(geometry.reference().TransformContinuousIndexToPhysicalPoint([29.5, 24.5, 14.5]))
    assert np.linalg.norm(centre - drawn) < 4.0


def test_held_lobes_come_back_exactly(tiny_model, tmp_path):
    lobes = np.zeros(tuple(reversed(GRID.size)), np.uint8)
    z, y, x = (n // 2 for n in lobes.shape)
    for label, (zs, xs) in enumerate(((slice(z, -4), slice(4, x)), (slice(4, z), slice(4, x)),
                                      (slice(z + 2, -4), slice(x, -4)), (slice(z - 2, z + 2), slice(x, -4)),
                                      (slice(4, z - 2), slice(x, -4))), start=1):
        lobes[zs, 6:-6, xs] = label
    write_image(to_image(lobes, GRID), tmp_path / "lobes.nrrd")
    r = medsyn("generate", "--report", REPORT, "--model", tiny_model, "--lobes", tmp_path / "lobes.nrrd",
               "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    sidecar = json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["held_channels"] == [1] and sidecar["lobe_majority_vote_mm"] is None
    assert sidecar["lobe_islands_below_ml"] is None
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["lobes"])))
    assert np.array_equal(back, lobes)


def test_segment_returns_masks_on_the_ct_grid(tiny_model, tmp_path):
    geometry = Geometry((40, 36, 30), (3.5, 3.5, 4.5), (-70.0, -60.0, -60.0))
    ct = np.full((30, 36, 40), 40, np.int16)
    ct[:, :2] = ct[:, -2:] = -1000
    ct[5:25, 8:28, 6:18] = -850
    ct[5:25, 8:28, 22:34] = -850
    write_image(to_image(ct, geometry), tmp_path / "ct.nii.gz", description="test CT")
    # a random-weight model's lobes do not fit the CT's lungs: refused (exit 4), nothing written ...
    r = medsyn("segment", "--ct", tmp_path / "ct.nii.gz", "--model", tiny_model, "--progress", "json",
               "--out", tmp_path / "seg")
    assert r.returncode == 4, r.stderr
    assert "segmentation not trusted" in r.stderr and "do not match the CT's own lungs" in r.stderr
    error = _events(r.stdout)[-1]
    assert error["kind"] == "untrusted_segmentation" and not error["quality"]["passed"]
    assert not (tmp_path / "seg").exists()
    # ... unless --force, which writes it with the figure and a warning
    r = medsyn("segment", "--ct", tmp_path / "ct.nii.gz", "--model", tiny_model, "--force", "--progress", "json",
               "--out", tmp_path / "seg")
    assert r.returncode == 0, r.stderr
    assert any(e["event"] == "warning" and "not trusted" in e["message"] for e in _events(r.stdout))
    sidecar = json.loads((tmp_path / "seg" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["mode"] == "segment" and "ct" not in sidecar["files"] and sidecar["held_channels"] == [0]
    quality = sidecar["quality"]
    assert quality["lung_covered"] < quality["lung_covered_min"] or quality["lobes_on_lung"] < quality[
        "lobes_on_lung_min"]
    assert sidecar["placement"]["lung_outside_ml"] == 0.0 and sidecar["placement"]["lung_ml"] > 100
    lobes = sitk.ReadImage(str(tmp_path / "seg" / sidecar["files"]["lobes"]))
    assert lobes.GetSize() == geometry.size and np.allclose(lobes.GetSpacing(), geometry.spacing)


@pytest.mark.parametrize("args, message", [
    (["--report", "   "], "report is empty"),
    (["--report-file", "missing.txt"], "report file not found"),
    (["--report", REPORT, "--lobes", "missing.nii.gz"], "lobes file not found"),
    (["--report", REPORT, "--airway", "{nonbinary}"], "must be a binary mask"),
    (["--report", REPORT, "--vessels", "{flat}"], "2-D; a 3D volume is needed"),
    (["--report", REPORT, "--airway", "{huge}"], "outside the model's"),
    (["--report", REPORT, "--vessels", "{junk}"], "cannot read vessels"),
    (["--report", REPORT, "--lobes", "{nan}"], "NaN"),
    (["--report", REPORT, "--model", "nonexistent-model"], "unknown model"),
])
def test_bad_inputs_give_clear_errors_and_write_nothing(tiny_model, tmp_path, args, message):
    inside = np.zeros((8, 8, 8), np.uint8)
    inside[2:5, 2:5, 2:5] = 2
    write_image(to_image(inside, Geometry((8, 8, 8), (4.0, 4.0, 4.0), (-10.0, -10.0, -10.0))), tmp_path / "nb.nrrd")
    huge = Geometry((8, 8, 8), (100.0, 100.0, 100.0), (500.0, 500.0, 500.0))  # 800 mm: no box can hold it
    write_image(to_image(np.ones((8, 8, 8), np.uint8), huge), tmp_path / "huge.nrrd")
    sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), str(tmp_path / "flat.nrrd"))
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    nan = np.full((8, 8, 8), np.nan, np.float32)
    write_image(to_image(nan, Geometry((8, 8, 8))), tmp_path / "nan.nrrd")
    paths = {"nonbinary": tmp_path / "nb.nrrd", "huge": tmp_path / "huge.nrrd", "flat": tmp_path / "flat.nrrd",
             "junk": tmp_path / "junk.nii.gz", "nan": tmp_path / "nan.nrrd"}
    args = [str(a).format(**paths) if "{" in str(a) else a for a in args]
    if "--model" not in args:
        args += ["--model", tiny_model]
    r = medsyn("generate", *args, "--progress", "json", "--out", tmp_path / "out")
    assert r.returncode == 2
    assert message in r.stderr
    assert _events(r.stdout)[-1]["event"] == "error"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_sigterm_stops_and_leaves_nothing(tiny_model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "MedSynLib", "generate", "--report", REPORT, "--model",
                             str(tiny_model), "--steps-lowres", "1000", "--progress", "json",
                             "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:  # wait until sampling runs
        if '"lowres"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - t0 < 30
    assert "cancelled" in out and "nothing was written" in err
    assert os.listdir(tmp_path) == []


def test_the_terminal_counts_what_runs_and_ends_with_the_models_statement(tiny_model, tmp_path):
    r = medsyn("generate", "--report", REPORT, "--model", tiny_model, "--lowres-only", "--steps-lowres", "3",
               "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.replace("\r", "\n").strip().splitlines()
    assert "4/4 network evaluations" in lines[-3]  # 3 steps evaluate the network 4 times (the end point too)
    assert lines[-2:] == [f"wrote {tmp_path / 'run'} (SYNTHETIC)", f"model tiny-test: {TINY_STATEMENT}"]
