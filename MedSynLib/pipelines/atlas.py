"""Affine alignment of a CT's lungs to an atlas lung mask (as the official preprocessing does).

The official models work in an atlas space: each training CT's lung mask (right lung 50, left lung 100) was
registered affinely to the atlas lung mask with ANTs. Here the lung mask comes from
:func:`MedSynLib.io.lungs.find_chest` and the registration from SimpleITK at a few mm (centre-of-mass start, affine,
mean squares on the label images, 3 resolution levels): enough to bring a chest CT into the model's space for
segmentation in seconds.

Physical points are LPS (ITK): x grows towards the patient's left, so the right lung has the smaller x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..io.lungs import LEFT_LUNG, RIGHT_LUNG, coarse_grid


@dataclass
class AtlasAlignment:
    """An affine map from the atlas (= model space) to a patient CT.

    ``transform`` maps atlas points to CT points: resampling the CT into the model grid uses it directly, and
    model-grid label maps go back to the CT with its inverse. ``lung_dice`` is the overlap (0..1) of the CT's lung
    mask, moved into the atlas, with the atlas lung mask: under about 0.7 the alignment is doubtful.
    """

    transform: sitk.AffineTransform
    lung_dice: float

    def to_dict(self) -> dict:
        return {"kind": "affine, atlas -> CT (LPS mm)", "matrix": list(self.transform.GetMatrix()),
                "translation": list(self.transform.GetTranslation()), "center": list(self.transform.GetCenter()),
                "lung_dice": round(self.lung_dice, 4)}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = (RIGHT_LUNG, LEFT_LUNG)
    return float(np.mean([2 * ((a == v) & (b == v)).sum() / max((a == v).sum() + (b == v).sum(), 1) for v in labels]))


def align_to_atlas(lungs: sitk.Image, atlas_mask: sitk.Image, iterations: int = 100) -> AtlasAlignment:
    """Affine registration of a CT's lung labels (``lungs``, e.g. ``find_chest(ct).image("lungs")``) to
    ``atlas_mask`` (both labelled 50 right, 100 left).

    Centre-of-mass start; mean squares between the label images, linear interpolation; regular-step gradient
    descent, ``iterations`` per level at shrink factors 4/2/1 with smoothing 2/1/0 voxels of 3 mm.
    """
    values = np.unique(sitk.GetArrayViewFromImage(atlas_mask))
    if not {RIGHT_LUNG, LEFT_LUNG} <= set(values.tolist()):
        raise ValueError(f"the atlas lung mask must hold labels {RIGHT_LUNG} (right lung) and {LEFT_LUNG} (left lung);"
                         f" found {values[:10].tolist()}")
    moving = sitk.Cast(lungs, sitk.sitkFloat32)
    grid = coarse_grid(atlas_mask)
    fixed = sitk.Resample(sitk.Cast(atlas_mask, sitk.sitkFloat32), grid.reference(), sitk.Transform(),
                          sitk.sitkLinear, 0.0)
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.2)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(start, inPlace=False)
    result = reg.Execute(fixed, moving)
    affine = sitk.AffineTransform(sitk.CompositeTransform(result).GetNthTransform(0))
    moved = sitk.Resample(sitk.Cast(moving, sitk.sitkUInt8), fixed, affine, sitk.sitkNearestNeighbor, 0)
    reference = sitk.Resample(atlas_mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return AtlasAlignment(affine, _dice(sitk.GetArrayViewFromImage(moved), sitk.GetArrayViewFromImage(reference)))
