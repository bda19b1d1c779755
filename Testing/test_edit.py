"""Editing a region of a CT (``medsyn edit``) with tiny random-weight models: grid and atlas space.

The weights are random, so the generated content means nothing; what is tested is where it goes: inside the region
only, every voxel outside it bit-identical to the input, on the input's own grid.
"""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSynLib.io.images import Geometry, to_image, write_image
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.pipelines import edit as edit_module
from MedSynLib.pipelines.edit import EditOptions, edit
from MedSynLib.run_settings import RunSettings

from test_atlas_segment import chest_ct
from tiny_model import build_tiny_model, ellipsoids

REPORT = "FINDINGS: Large right pleural effusion. IMPRESSION: Right effusion."
ANGLE = math.radians(25)
ROTATED = Geometry((44, 40, 30), (3.5, 3.0, 4.5), (-60.0, -110.0, -65.0),
                   (math.cos(ANGLE), -math.sin(ANGLE), 0.0, math.sin(ANGLE), math.cos(ANGLE), 0.0, 0.0, 0.0, 1.0))
"""A rotated, anisotropic CT grid (about 150 x 120 x 135 mm)."""
CENTRE = np.array([0.0, -10.0, 0.0])
RIGHT_LUNG_CENTRE = CENTRE + [-25, 0, 0]


def rotated_ct() -> sitk.Image:
    """Body (40 HU) in air with two lungs (-850 HU) and voxel texture, int16, on :data:`ROTATED`."""
    ct = ellipsoids(ROTATED, [CENTRE], [(70, 55, 1000)], [40], background=-1000)
    lungs = ellipsoids(ROTATED, [RIGHT_LUNG_CENTRE, CENTRE + [25, 0, 0]], [(17, 27, 40)] * 2, (1, 2))
    ct[lungs > 0] = -850
    ct += np.random.default_rng(0).integers(-30, 30, ct.shape).astype(np.int16)
    return to_image(ct, ROTATED)


def ball(geometry: Geometry, centre, radius_mm: float) -> sitk.Image:
    return to_image(ellipsoids(geometry, [centre], [(radius_mm,) * 3], [1], dtype=np.uint8), geometry)


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def atlas_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-atlas", atlas=True)


def _check_outside_is_the_input(result, ct: sitk.Image, region: np.ndarray):
    values = sitk.GetArrayFromImage(ct)
    assert result.ct.dtype == values.dtype and result.ct.shape == values.shape
    assert np.array_equal(result.ct[~region], values[~region])
    assert not np.array_equal(result.ct[region], values[region])
    assert np.array_equal(result.region.astype(bool), region)
    assert np.array_equal(result.difference_hu[region], (result.ct.astype(np.float32) - values)[region])
    assert not result.difference_hu[~region].any()
    for mask in (result.lobes, result.airway, result.vessels):
        assert not mask[~region].any()


@pytest.mark.parametrize("lowres_only, resamples", [(True, 0), (False, 0), (False, 1)],
                         ids=["lowres", "full", "full-resampled"])
def test_grid_model_keeps_every_voxel_outside_the_region(grid_model, lowres_only, resamples):
    ct = rotated_ct()
    region = ball(ROTATED, RIGHT_LUNG_CENTRE, 14.0)
    result = edit(ct, region, REPORT, load_model(grid_model), RunSettings(seed=1, lowres_only=lowres_only),
                  options=EditOptions(resamples=resamples))
    _check_outside_is_the_input(result, ct, sitk.GetArrayFromImage(region) > 0)
    assert result.geometry == Geometry.of(ct)
    assert result.metadata["mode"] == "edit" and "model_grid_used" in result.metadata
    assert result.metadata["region"]["volume_ml"] == pytest.approx(4 / 3 * math.pi * 14 ** 3 / 1000, rel=0.25)


def test_atlas_model_keeps_every_voxel_outside_the_region(atlas_model):
    ct = chest_ct()
    geometry = Geometry.of(ct)
    index = np.argwhere(sitk.GetArrayFromImage(ct) == -850)[0]
    centre = ct.TransformIndexToPhysicalPoint(index[::-1].tolist())
    centre = np.array(centre) + [10, 10, 15]  # inside the right lung
    region = ball(geometry, centre, 12.0)
    result = edit(ct, region, REPORT, load_model(atlas_model), RunSettings(seed=0, steps_lowres=2, steps_sr=1))
    _check_outside_is_the_input(result, ct, sitk.GetArrayFromImage(region) > 0)
    assert result.metadata["space"] == "atlas" and result.metadata["alignment"]["lung_dice"] > 0.8


KEEP = [list(c) for n in (1, 2, 3) for c in itertools.combinations(("lobes", "airway", "vessels"), n)]
"""Every non-empty subset of the anatomy channels (7)."""


@pytest.fixture(scope="module")
def loaded_grid_model(grid_model):
    return load_model(grid_model)


@pytest.mark.parametrize("keep", KEEP, ids="+".join)
def test_kept_anatomy_is_held_outside_the_region_and_generated_inside(loaded_grid_model, keep, monkeypatch):
    ct = rotated_ct()
    region = ball(ROTATED, RIGHT_LUNG_CENTRE, 14.0)
    lobes = ellipsoids(ROTATED, [RIGHT_LUNG_CENTRE, CENTRE + [25, 0, 0]], [(17, 27, 40)] * 2, (5, 2),
                       dtype=np.uint8)
    masks = {"lobes": lobes, "airway": (lobes == 5).astype(np.uint8), "vessels": (lobes == 2).astype(np.uint8)}
    seen = {}
    original = edit_module._Run.sample_both_stages

    def capture(run, text, held, *args):
        seen["held"], (seen["x64"], seen["x256"]) = held, original(run, text, held, *args)
        return seen["x64"], seen["x256"]

    monkeypatch.setattr(edit_module._Run, "sample_both_stages", capture)
    result = edit(ct, region, REPORT, loaded_grid_model, RunSettings(steps_lowres=2, steps_sr=1),
                  options=EditOptions(keep={k: to_image(masks[k], ROTATED) for k in keep}))
    _check_outside_is_the_input(result, ct, sitk.GetArrayFromImage(region) > 0)
    held, out = seen["held"], seen["x256"]
    channels = [0] + sorted({"lobes": 1, "airway": 2, "vessels": 3}[k] for k in keep)
    assert held.channels == channels and result.metadata["kept_anatomy"] == sorted(keep)
    mask = held.mask.expand(out.shape)
    assert torch.equal(out[mask], held.known[mask])
    free = ~held.mask[0, 0]
    assert free.any() and (~free).any()
    for c in range(4):
        assert not torch.equal(out[0, c][free], held.known[0, c][free]), f"channel {c} must be generated inside"


def medsyn(*args):
    return subprocess.run([sys.executable, "-m", "MedSynLib", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_the_edited_ct_on_its_own_grid_marked_edited(grid_model, tmp_path):
    ct = rotated_ct()
    write_image(ct, tmp_path / "ct.nrrd", description="test CT")
    region_grid = Geometry((30, 30, 30), (2.0, 2.0, 2.0), (-55.0, -40.0, -30.0))  # the region on a grid of its own
    write_image(ball(region_grid, RIGHT_LUNG_CENTRE, 14.0), tmp_path / "region.nii.gz", description="region")
    r = medsyn("edit", "--ct", tmp_path / "ct.nrrd", "--region", tmp_path / "region.nii.gz", "--report", REPORT,
               "--model", grid_model, "--lowres-only", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    sidecar = json.loads((tmp_path / "out" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["edited"] is True and sidecar["synthetic"] is False and sidecar["mode"] == "edit"
    assert "EDITED" in sidecar["notice"] and "not a patient scan" not in json.dumps(sidecar)
    assert all(name.startswith("EDITED_") for name in sidecar["files"].values())
    assert sidecar["region"]["volume_ml"] > 5 and len(sidecar["region"]["bbox_lps_mm"]) == 2
    edited = sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["ct"]))
    assert edited.GetMetaData("ITK_FileNotes").startswith("EDITED")
    assert edited.GetSize() == ct.GetSize() and np.allclose(edited.GetSpacing(), ct.GetSpacing())
    assert np.allclose(edited.GetOrigin(), ct.GetOrigin()) and np.allclose(edited.GetDirection(), ct.GetDirection())
    assert edited.GetPixelID() == ct.GetPixelID()
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["region"]))) > 0
    assert region.any() and not region.all()
    assert np.array_equal(sitk.GetArrayFromImage(edited)[~region], sitk.GetArrayFromImage(ct)[~region])
    difference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / sidecar["files"]["difference"])))
    assert difference[region].any() and not difference[~region].any()


@pytest.mark.parametrize("case, message", [
    ("empty", "the region is empty"),
    ("far", "outside the CT's field of view"),
    ("everything", "covers the whole CT"),
    ("outside_model", "outside the model's field of view"),
])
def test_bad_regions_exit_2_and_write_nothing(grid_model, tmp_path, case, message):
    ct = rotated_ct()
    write_image(ct, tmp_path / "ct.nrrd", description="test CT")
    region = {"empty": to_image(np.zeros((30, 40, 44), np.uint8), ROTATED),
              "far": ball(Geometry((8, 8, 8), (2.0, 2.0, 2.0), (500.0, 500.0, 500.0)), (507, 507, 507), 5.0),
              "everything": to_image(np.ones((30, 40, 44), np.uint8), ROTATED),
              "outside_model": ball(ROTATED, CENTRE + [0, 0, 60], 10.0)}[case]  # the tiny model's box is 128 mm
    write_image(region, tmp_path / "region.nrrd", description="region")
    r = medsyn("edit", "--ct", tmp_path / "ct.nrrd", "--region", tmp_path / "region.nrrd", "--report", REPORT,
               "--model", grid_model, "--lowres-only", "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_benchmark_seam_and_paired_test_measure_what_they_say():
    """The editing benchmark's seam: a region lifted by 100 HU steps 100 HU across its border, 0 inside it and 0
    on the input; the paired sign-flip test is exact (8 pairs all lower: 1 / 256)."""
    from MedSynLib.eval.edit import paired_p_lower, seam

    original = np.zeros((20, 20, 20), np.int16)
    region = np.zeros(original.shape, bool)
    region[5:15, 5:15, 5:15] = True
    edited = np.where(region, original + 100, original).astype(np.int16)
    measured = seam(edited, original, region, lag=3)
    assert measured == {"border": 100.0, "inside": 0.0, "border_input": 0.0}
    assert paired_p_lower([1.0] * 8, [2.0] * 8) == 1 / 256
    assert paired_p_lower([2.0, 1.0, 2.0, 1.0], [1.0, 2.0, 1.0, 2.0]) == 11 / 16  # no difference: P(sum <= 0)
    assert paired_p_lower([2.0] * 4, [1.0] * 4) == 1.0
