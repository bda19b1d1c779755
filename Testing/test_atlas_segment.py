"""Atlas-space models: lung masks of a CT, affine alignment to the atlas lung mask, segmentation mapped back.

The tiny atlas (``tiny_model.ATLAS_LUNGS``) has two ellipsoid lungs; the test CT has shifted, scaled ellipsoid lungs
inside an elliptic body, on an anisotropic grid of its own.
"""

import importlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSynLib.io.images import Geometry, to_image, write_image
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.pipelines import generate, segment
from MedSynLib.pipelines.outputs import model_info, write_result
from MedSynLib.io.lungs import LEFT_LUNG, RIGHT_LUNG, find_chest
from MedSynLib.pipelines.atlas import align_to_atlas
from MedSynLib.run_settings import RunSettings

from tiny_model import ATLAS_GRID, ATLAS_LUNGS, build_tiny_model, ellipsoids

CT_GRID = Geometry((48, 40, 36), (3.2, 3.5, 4.0), (-80.0, -75.0, -70.0))
CENTRE = np.array([-80 + 24 * 3.2 + 6.0, -75 + 20 * 3.5 - 5.0, -70 + 18 * 4.0 + 8.0])
LUNGS = {"centres": (CENTRE + [-24, 0, 0], CENTRE + [25, 0, 0]), "radii": ((17, 27, 38), (16, 28, 37))}


def chest_ct(bridge: bool = False) -> sitk.Image:
    """Body (40 HU) in air (-1000 HU) with two lungs (-850 HU); ``bridge`` joins them with an air tube."""
    ct = ellipsoids(CT_GRID, [CENTRE], [(70, 60, 1000)], [40], background=-1000)
    lungs = ellipsoids(CT_GRID, LUNGS["centres"], LUNGS["radii"], (1, 2))
    ct[lungs > 0] = -850
    if bridge:
        ct[ellipsoids(CT_GRID, [CENTRE], [(30, 4, 4)], [1]) > 0] = -900
    return to_image(ct, CT_GRID)


def ct_lungs() -> np.ndarray:
    return ellipsoids(CT_GRID, LUNGS["centres"], LUNGS["radii"], (RIGHT_LUNG, LEFT_LUNG))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def atlas_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-atlas", atlas=True)


@pytest.mark.parametrize("bridge", [False, True], ids=["separate lungs", "lungs joined by airways"])
def test_lung_labels_find_right_and_left(bridge):
    labels = find_chest(chest_ct(bridge)).image("lungs")
    array = sitk.GetArrayFromImage(labels)
    assert set(np.unique(array)) == {0, RIGHT_LUNG, LEFT_LUNG}
    x = {v: np.mean([labels.TransformIndexToPhysicalPoint(idx[::-1].tolist())[0]
                     for idx in np.argwhere(array == v)[::7]]) for v in (RIGHT_LUNG, LEFT_LUNG)}
    assert x[RIGHT_LUNG] < CENTRE[0] < x[LEFT_LUNG]  # LPS: the right lung has the smaller x


def test_lung_centred_grid_samples_the_ct_voxels_themselves():
    from MedSynLib.io.alignment import lung_centred_grid, resample

    ct = chest_ct()
    texture = np.random.default_rng(0).integers(-40, 40, CT_GRID.size[::-1]).astype(np.int16)
    ct = to_image(sitk.GetArrayFromImage(ct) + texture, CT_GRID)  # every voxel differs from its neighbours
    model_grid = Geometry((16, 12, 10), (6.4, 7.0, 8.0), (1.3, -2.1, 0.7))  # twice the CT spacing, any origin
    grid = lung_centred_grid(ct, model_grid)
    index = np.array(ct.TransformPhysicalPointToContinuousIndex(grid.origin))
    assert np.allclose(index, np.round(index), atol=1e-6)  # on a CT voxel centre
    lungs_centre = CENTRE + [0.5, 0, 0]  # of the two lungs' bounding box
    tolerance = np.array(CT_GRID.spacing) / 2 + 4.0  # the snap, plus the coarse (4 mm) lung mask's quantisation

    def centre(g):
        half = (np.array(g.size) - 1) / 2 * np.array(g.spacing)
        return np.array(g.origin) + np.array(g.direction).reshape(3, 3) @ half

    assert (np.abs(centre(grid) - lungs_centre) <= tolerance).all()
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    linear = resample(ct, grid, sitk.sitkLinear, -1024)
    assert np.abs(linear - resample(ct, grid, sitk.sitkNearestNeighbor, -1024)).max() < 1e-3  # no interpolation blur
    rotated = Geometry(model_grid.size, model_grid.spacing, model_grid.origin, (0, 1, 0, -1, 0, 0, 0, 0, 1))
    assert (np.abs(centre(lung_centred_grid(ct, rotated)) - lungs_centre) <= 4.0).all()  # centred, not snapped


def test_no_lungs_is_a_clear_error():
    with pytest.raises(ValueError, match="no lungs found"):
        find_chest(to_image(np.full((20, 20, 20), 40, np.int16), Geometry((20, 20, 20), (3.0, 3.0, 3.0))))


def test_alignment_maps_the_atlas_onto_the_ct_lungs(atlas_model):
    atlas = sitk.ReadImage(str(atlas_model / "atlas_lung_mask.nii.gz"))
    alignment = align_to_atlas(find_chest(chest_ct()).image("lungs"), atlas)
    assert alignment.lung_dice > 0.85
    back = sitk.GetArrayFromImage(sitk.Resample(atlas, chest_ct(), alignment.transform.GetInverse(),
                                                sitk.sitkNearestNeighbor, 0))
    lungs = ct_lungs()
    for value in (RIGHT_LUNG, LEFT_LUNG):
        assert dice(back == value, lungs == value) > 0.8
    identity = sitk.GetArrayFromImage(sitk.Resample(atlas, chest_ct(), sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    assert dice(identity > 0, lungs > 0) < 0.6  # the CT really is displaced from the atlas


class AtlasLungsNet(torch.nn.Module):
    """A stand-in SR network predicting the atlas lungs as lobe label 5 and nothing else (model grid)."""

    def __init__(self, config, lungs: np.ndarray):
        super().__init__()
        self.config, self.lungs = config, torch.from_numpy(lungs > 0)

    def forward(self, x, time, lowres_up):
        out = -torch.ones_like(x)
        out[:, 1] = torch.where(self.lungs, 1.0, -1.0)
        return out

    # The sampler's folded interface (SuperResUNet.fold / unfold / forward_folded); patch 1 folds nothing.
    def fold(self, x):
        assert self.config.patch == 1
        return x

    def unfold(self, x):
        return x

    def forward_folded(self, net_input, time):
        return self.forward(net_input[:, 4:], time, net_input[:, :4])


def test_segment_aligns_the_ct_and_maps_the_masks_back(atlas_model, monkeypatch, tmp_path):
    model = load_model(atlas_model)
    assert model.space == "atlas"
    atlas = sitk.ReadImage(str(model.atlas_mask_file()))
    atlas_on_grid = sitk.GetArrayFromImage(sitk.Resample(atlas, ATLAS_GRID.reference(), sitk.Transform(),
                                                         sitk.sitkNearestNeighbor, 0))
    model.superres = AtlasLungsNet(model.superres.config, atlas_on_grid)
    pipeline, held = importlib.import_module("MedSynLib.pipelines.generation"), {}
    original = pipeline.hold_channels

    def capture(known, channels):
        held[known.shape[-1]] = known[0, 0].numpy().copy()  # the model-space CT, low-res and full-res
        return original(known, channels)

    monkeypatch.setattr(pipeline, "hold_channels", capture)
    result = segment(chest_ct(), model, None, RunSettings(seed=0, steps_lowres=1, steps_sr=1))
    # the CT went into model space through the alignment: the atlas lungs hold air there (measured 0.96)
    assert (held[ATLAS_GRID.size[0]][atlas_on_grid > 0] < 0.0).mean() > 0.9
    # masks come back on the CT's grid, over the CT's lungs
    assert Geometry.from_dict(result.geometry.to_dict()) == CT_GRID and result.lobes.shape == (36, 40, 48)
    assert dice(result.lobes == 5, ct_lungs() > 0) > 0.8
    assert result.metadata["space"] == "atlas" and result.metadata["alignment"]["lung_dice"] > 0.85
    assert "scan_check_s" in result.metadata["timings_s"] and result.metadata["quality"]["passed"]
    write_image(chest_ct(), tmp_path / "ct.nrrd", description="test CT")
    write_result(result, tmp_path / "seg", model_info(model), preview=True, source_ct=tmp_path / "ct.nrrd")
    lobes = sitk.ReadImage(str(next((tmp_path / "seg").glob("MedSyn_segmentation_lobes_*.nii.gz"))))
    assert Geometry.of(lobes).size == CT_GRID.size and (tmp_path / "seg" / "preview.png").is_file()


def test_conditions_follow_a_reference_ct_only_when_given(atlas_model):
    model = load_model(atlas_model, load_superres=False)
    lungs = ct_lungs()
    airway = to_image((lungs == RIGHT_LUNG).astype(np.uint8), CT_GRID)
    settings = RunSettings(steps_lowres=1, lowres_only=True)
    aligned = generate("findings normal chest ct", model, {"airway": airway}, settings, reference_ct=chest_ct())
    plain = generate("findings normal chest ct", model, {"airway": airway}, settings)
    right = ellipsoids(aligned.geometry, ATLAS_LUNGS["centres"][:1], ATLAS_LUNGS["radii"][:1], [1])
    assert dice(aligned.airway > 0, right > 0) > dice(plain.airway > 0, right > 0) + 0.1
    assert "alignment" in aligned.metadata and "alignment" not in plain.metadata
