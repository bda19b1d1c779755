"""The numpy binary morphology of ``MedSynLib.io.morphology`` gives SimpleITK's voxels exactly: the ball's shape
(isotropic and anisotropic radii), the border rules of erosion and dilation, and hole filling slice by slice with
the image's edge open or closed."""

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.morphology import dilate, erode, fill_slice_holes, opened


def itk(filter_, mask, *args):
    return sitk.GetArrayFromImage(filter_(sitk.GetImageFromArray(mask.astype(np.uint8)), *args)) > 0


@pytest.mark.parametrize("radius", [[1, 1, 1], [3, 3, 3], [4, 4, 4], [2, 3, 1], [1, 1, 2]])
def test_erode_dilate_and_open_are_itks_ball_filters(radius):
    rng = np.random.default_rng(sum(radius))
    for density in (0.3, 0.85):  # sparse (dilation matters) and dense (erosion at the border matters)
        mask = rng.random((23, 31, 37)) < density
        np.testing.assert_array_equal(erode(mask, radius), itk(sitk.BinaryErode, mask, radius))
        np.testing.assert_array_equal(dilate(mask, radius), itk(sitk.BinaryDilate, mask, radius))
        np.testing.assert_array_equal(opened(mask, radius), itk(sitk.BinaryMorphologicalOpening, mask, radius))
    one = np.zeros((11, 11, 11), bool)
    one[5, 5, 5] = True
    assert dilate(one, radius).sum() == itk(sitk.BinaryDilate, one, radius).sum() > 1


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_fill_slice_holes_is_itks_fill_on_every_slice(axis):
    rng = np.random.default_rng(axis)
    mask = rng.random((14, 17, 19)) < 0.55
    mask[3] = False
    mask[5, 2:9, 2:9], mask[5, 4:7, 4:7] = True, False  # a ring with a hole
    closed = rng.random(mask.shape) < 0.5
    for edge in (None, closed):
        expected = np.moveaxis(mask, axis, 0).astype(np.uint8).copy()
        border = None if edge is None else np.moveaxis(edge, axis, 0)
        for k in range(expected.shape[0]):
            framed = np.pad(expected[k], 1)
            if border is not None:
                ring = np.ones(framed.shape, bool)
                ring[1:-1, 1:-1] = False
                framed[ring & np.pad(border[k], 1, mode="edge")] = 1
            expected[k] = itk(sitk.BinaryFillhole, framed)[1:-1, 1:-1]
        got = fill_slice_holes(mask, axis, edge)
        np.testing.assert_array_equal(got, np.moveaxis(expected, 0, axis))
        assert got.dtype == np.uint8 and got.sum() > mask.sum()
