"""The lung/body finder and the model box's placement on the variant family (``ct_variants``, small sizes), and
the placement of condition masks drawn in a patient's scanner coordinates."""

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.alignment import inside_fraction, lung_centred_grid
from MedSynLib.io.images import Geometry
from MedSynLib.io.lungs import LEFT_LUNG, RIGHT_LUNG, find_chest
from MedSynLib.phantom.measure import dice
from MedSynLib.pipelines.placement import MAX_LOST_FRACTION, place_masks
from MedSynLib.run_settings import RunSettings

from ct_variants import SCANNER_SHIFT_MM, VARIANTS, base_phantom, make_variant

SCALE = 4.0  # 128² in-plane, 75-150 slices; the finder works at 3-5 mm anyway
MODEL_GRID = Geometry((64, 64, 64), (4.0, 4.0, 4.0), (-126.0, -126.0, -126.0))  # the demo model's 256 mm box


@pytest.fixture(scope="module")
def base():
    return base_phantom(seed=0, spacing_mm=4.0)


def _truth_on(chest, lobes: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(lobes, chest.grid.reference(), sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0))


@pytest.mark.parametrize("name", [v for v in VARIANTS if v != "lost_orientation"])  # that one is for the gate
def test_finder_and_box_on_every_variant(base, name):
    variant = make_variant(base, name, SCALE)
    chest = find_chest(variant.ct)
    truth = _truth_on(chest, variant.lobes)
    assert dice(chest.lungs > 0, truth > 0) > 0.9  # measured 0.92-0.96
    right, left = np.isin(truth, (3, 4, 5)), np.isin(truth, (1, 2))  # LOBE_LABELS: 3-5 right, 1-2 left
    assert dice(chest.lungs == RIGHT_LUNG, right) > 0.85 and dice(chest.lungs == LEFT_LUNG, left) > 0.85
    if name != "cut_apex":  # there the trachea beside the cut lung tops joins the lungs; a bronchus is found
        assert chest.trachea.sum() * chest.voxel_ml > 2.0  # the trachea's lumen, apart from the lungs
        assert not (chest.trachea & (truth > 0)).any()
    else:
        assert chest.trachea.sum() * chest.voxel_ml > 1.0  # measured 1.35 mL (5 mm slices)
    assert chest.lungs_cut == {"cut_apex": ["apex"], "cut_bases": ["bases"]}.get(name, [])
    grid = lung_centred_grid(variant.ct, MODEL_GRID, chest)
    index = np.argwhere(sitk.GetArrayViewFromImage(variant.lobes) > 0)[::7]
    points = np.array([variant.lobes.TransformIndexToPhysicalPoint(i[::-1]) for i in index.tolist()])
    assert inside_fraction(points, grid) > 0.995  # the whole lung (as much as the scan holds) is in the box
    assert inside_fraction(points, MODEL_GRID) == 0.0  # scanner coordinates: the box had to move


def _box_centre(grid: Geometry) -> np.ndarray:
    return np.array(grid.origin) + (np.array(grid.size) - 1) / 2 * np.array(grid.spacing)


@pytest.mark.parametrize("off_mm", [0.0, 12.0])
def test_a_ct_framed_like_the_model_box_keeps_its_framing(base, off_mm):
    """A CT on a grid of the model box's size, its lungs off-centre (as in the model's own CTs): the box stays on
    the CT's grid, which holds the whole lung (the demo segments its own CTs best there: lobe Dice 0.87-0.90
    against 0.65-0.78 with the box moved 10 mm onto the lungs' centre)."""
    low, high = base.lung_box()
    framed = Geometry(MODEL_GRID.size, MODEL_GRID.spacing,
                      tuple((low + high) / 2 + [0.0, 0.0, off_mm] - (np.array(MODEL_GRID.size) - 1) / 2 * 4.0))
    ct = sitk.Resample(base.ct, framed.reference(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    chest = find_chest(ct)
    assert not chest.lungs_cut
    assert lung_centred_grid(ct, MODEL_GRID, chest) == framed


def test_lobes_drawn_on_such_a_ct_go_where_the_ct_goes(base):
    """Condition lobes drawn on a box-sized CT in scanner coordinates: the box goes onto the lobes' own grid, as
    it would for that CT (:func:`test_a_ct_framed_like_the_model_box_keeps_its_framing`)."""
    low, high = base.lung_box()
    framed = Geometry(MODEL_GRID.size, MODEL_GRID.spacing,
                      tuple((low + high) / 2 + [0.0, 0.0, 12.0] - (np.array(MODEL_GRID.size) - 1) / 2 * 4.0))
    lobes = sitk.Resample(base.lobes, framed.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    placement = place_masks({"lobes": lobes}, _GridModel())
    assert np.allclose(placement.grid.origin, framed.origin) and placement.grid.size == framed.size
    assert placement.metadata["placement"]["outside"]["lobes"]["fraction"] == 0.0


def test_the_box_stays_centred_on_the_lungs_inside_a_larger_field_of_view(base):
    variant = make_variant(base, "1mm", SCALE)
    chest = find_chest(variant.ct)
    points = chest.lung_points()
    centre = (points.min(0) + points.max(0)) / 2
    assert np.abs(_box_centre(lung_centred_grid(variant.ct, MODEL_GRID, chest)) - centre).max() <= SCALE / 2


def test_a_ct_whose_top_slices_are_air_still_has_lungs(base):
    """The project's generated CTs: the top slices 74-100 % air, the trachea open to that air."""
    variant = make_variant(base, "air_padding", SCALE)
    array = sitk.GetArrayFromImage(variant.ct)
    top = np.nonzero((array > -400).any(axis=(1, 2)))[0][-1]
    assert (array[top - 3:top + 1] < -400).mean() > 0.74
    chest = find_chest(variant.ct)
    assert chest.lung_ml > 2000 and 0 < chest.trachea.sum() * chest.voxel_ml < 100


def _lobes_at(base, shift_mm) -> sitk.Image:
    """The phantom's lobes, moved by ``shift_mm`` from the scanner coordinates back towards the model's box."""
    lobes = sitk.Image(base.lobes)
    lobes.SetOrigin(tuple(np.array(base.lobes.GetOrigin()) - SCANNER_SHIFT_MM + shift_mm))
    return lobes


class _GridModel:
    space, grid = "grid", MODEL_GRID


def test_masks_inside_the_box_stay_where_they_are(base):
    placement = place_masks({"lobes": _lobes_at(base, [0.0, 0.0, 0.0])}, _GridModel())
    assert placement.grid == MODEL_GRID and not placement.warnings
    assert placement.metadata["placement"]["outside"]["lobes"]["fraction"] == 0.0


@pytest.mark.parametrize("shift", [[0.0, 0.0, 60.0], list(SCANNER_SHIFT_MM)], ids=["partly outside", "scanner"])
def test_masks_partly_or_wholly_outside_the_box_move_it_onto_their_lungs(base, shift):
    lobes = _lobes_at(base, shift)
    airway = sitk.Cast(lobes > 0, sitk.sitkUInt8)  # any second mask follows the same box
    placement = place_masks({"lobes": lobes, "airway": airway}, _GridModel())
    assert placement.grid != MODEL_GRID
    assert placement.metadata["placement"]["outside"]["lobes"]["fraction"] <= MAX_LOST_FRACTION
    assert "outline" in placement.metadata["placement"]["on"]
    held = placement.to_model(lobes)
    assert (held > 0).sum() * 64 / 1000 > 0.99 * (sitk.GetArrayViewFromImage(lobes) > 0).sum() * 64 / 1000


def test_masks_no_box_can_hold_are_refused_with_the_share_lost(base):
    lobes = _lobes_at(base, [0.0, 0.0, 0.0])
    lobes.SetSpacing((8.0, 8.0, 8.0))  # lungs twice as large: about half would be cut
    with pytest.raises(ValueError, match=r"\d+\.\d % of the lobes lie outside the model's 256 x 256 x 256 mm"):
        place_masks({"lobes": lobes}, _GridModel())


def test_generate_with_masks_partly_outside_the_box_moves_it_and_records_how(tmp_path):
    """A patient's lobes 30 mm off the tiny model's 128 mm box: the box moves onto them; the held lobes come back
    whole where they were drawn, and the sidecar says so."""
    from MedSynLib.modelstore.bundle import load_model
    from MedSynLib.pipelines import generate

    from tiny_model import ATLAS_LUNGS, GRID, build_tiny_model, ellipsoids

    model = load_model(build_tiny_model(tmp_path / "tiny"), load_superres=False)
    drawn = Geometry((40, 40, 40), (3.0, 3.0, 3.0), (-30.0, -40.0, -20.0))  # the lungs' centre at (28, 18.5, 38.5)
    centres = [np.array(c) + [28.0, 18.5, 38.5] for c in ATLAS_LUNGS["centres"]]
    lobes = ellipsoids(drawn, centres, [(16.0, 24.0, 30.0)] * 2, (3, 1)).astype(np.uint8)
    image = sitk.GetImageFromArray(lobes)
    drawn.apply(image)
    assert 0.05 < 1 - inside_fraction(np.argwhere(lobes > 0)[:, ::-1] * 3.0 + drawn.origin, GRID) < 0.5
    result = generate("findings normal chest ct", model, {"lobes": image},
                      settings=RunSettings(steps_lowres=1, lowres_only=True))
    placement = result.metadata["placement"]
    assert "outline" in placement["on"] and placement["outside"]["lobes"]["fraction"] == 0.0
    assert Geometry.from_dict(result.metadata["model_grid_used"]).origin != GRID.origin
    assert np.allclose(result.geometry.origin, result.metadata["model_grid_used"]["origin"])  # the CT lies there
    back = sitk.Resample(image, result.geometry.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(result.lobes, sitk.GetArrayFromImage(back))  # held where drawn, nothing cropped
    held_ml = (result.lobes > 0).sum() * np.prod(result.geometry.spacing) / 1000  # on the 16 mm low-res grid
    assert held_ml > 0.7 * (lobes > 0).sum() * 27 / 1000


def _upright_lobes_in_box(base, grid: Geometry, target: Geometry) -> np.ndarray:
    """What a model draws: the phantom's upright lobes, centred in the placed box ``grid``, on ``target``."""
    lobes = sitk.Image(base.lobes)
    low, high = base.lung_box()
    corner = np.array(grid.origin) + np.array(grid.direction).reshape(3, 3) @ (
        (np.array(grid.size) - 1) * np.array(grid.spacing))
    lobes.SetOrigin(tuple(np.array(lobes.GetOrigin()) + (np.array(grid.origin) + corner) / 2 - (low + high) / 2))
    return sitk.GetArrayFromImage(sitk.Resample(lobes, target.reference(), sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0))


@pytest.mark.parametrize("name", VARIANTS)
def test_the_gate_trusts_a_right_segmentation_only_where_it_can(base, name):
    """The quality gate on every variant class, given the segmentation a good model would return (the true lobes,
    the CT's airway air): passed where the scan holds the whole lung; refused, naming the cut, where the field of
    view cuts the lungs; and on a CT whose orientation is lost (the chest on its side in the file) the upright
    lobes a model draws do not match the CT's lungs: refused."""
    from MedSynLib.pipelines.placement import LUNG_COVER_MIN, place_ct, segmentation_quality

    variant = make_variant(base, name, SCALE)
    placement = place_ct(variant.ct, _GridModel())
    target = Geometry.of(variant.ct)
    ct = sitk.GetArrayFromImage(variant.ct)
    if name == "lost_orientation":
        lobes = _upright_lobes_in_box(base, placement.grid, target)
    else:
        lobes = sitk.GetArrayFromImage(variant.lobes)
    quality = segmentation_quality(placement, lobes, (ct < -400) & (lobes == 0), target)
    if name == "lost_orientation":
        assert not quality["passed"] and quality["lung_covered"] < LUNG_COVER_MIN  # measured 0.40
        assert "do not match the CT's own lungs" in " ".join(quality["problems"])
    elif variant.whole_lung:
        assert quality["passed"] and quality["lung_dice"] > 0.9 and quality["trachea_covered"] > 0.8
    else:
        assert not quality["passed"]
        assert quality["lungs_cut_by_scan"] == [name.removeprefix("cut_")]
        assert "field of view cuts the lungs" in quality["problems"][0]
