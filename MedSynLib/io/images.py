"""Volumes with explicit geometry, and the files MedSyn reads and writes (NIfTI, NRRD, Slicer ``.seg.nrrd``).

Arrays are numpy in SimpleITK order (z, y, x) = (k, j, i); geometry is LPS as ITK uses: spacing and origin in mm,
direction a row-major 3x3 matrix. Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .files import atomic_write
from .segments import SEGMENTS, terminology_entry

SYNTHETIC_DESCRIPTION = "SYNTHETIC MedSyn output - not a patient scan"


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in LPS: ``size`` (x, y, z) voxels, ``spacing`` mm, ``origin`` mm, ``direction`` 9 floats."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(int(v) for v in d["size"]), tuple(map(float, d.get("spacing", (1, 1, 1)))),
                   tuple(map(float, d.get("origin", (0, 0, 0)))),
                   tuple(map(float, d.get("direction", cls.__dataclass_fields__["direction"].default))))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def reference(self) -> sitk.Image:
        """An empty image on this grid (a resampling reference)."""
        return self.apply(sitk.Image(list(self.size), sitk.sitkUInt8))

    def subsampled(self, factor: int) -> "Geometry":
        """The grid of every ``factor``-th voxel (same origin, spacing x factor): the 64³ grid of a 256³ one."""
        return Geometry(tuple(s // factor for s in self.size), tuple(s * factor for s in self.spacing),
                        self.origin, self.direction)


def to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """(z, y, x) array -> SimpleITK image on ``geometry`` (checks the size)."""
    if tuple(array.shape[::-1]) != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} (z, y, x) does not fit geometry size {geometry.size} (x, y, z)")
    return geometry.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))


def write_image(image: sitk.Image, path: str | Path, description: str = SYNTHETIC_DESCRIPTION,
                compress: bool = True) -> Path:
    """Write NIfTI / NRRD atomically; ``description`` goes into NIfTI ``descrip`` / NRRD ``content`` metadata."""
    path = Path(path)
    image = sitk.Image(image)
    image.SetMetaData("ITK_FileNotes", description[:79])  # ITK writes this as NIfTI descrip (79 chars)
    if not path.name.endswith((".nii", ".nii.gz")):
        image.SetMetaData("content", description)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=compress))


def read_image(path: str | Path, what: str = "image") -> sitk.Image:
    """Read a 3D image (NIfTI, NRRD, .seg.nrrd, MHA ...) with a clear error for missing / unreadable / non-3D files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read {what} {path}: not a readable NIfTI/NRRD image ({str(exc).strip()[:200]})") \
            from exc
    if image.GetDimension() != 3:
        raise ValueError(f"{what} {path} is {image.GetDimension()}-D; a 3D volume is needed")
    return image


def write_segmentation(lobes: np.ndarray, airway: np.ndarray, vessels: np.ndarray, geometry: Geometry,
                       path: str | Path, description: str = SYNTHETIC_DESCRIPTION) -> Path:
    """Write a Slicer ``.seg.nrrd``: three layers (lobes 1..5, airway, vessels), segment names, colours, terminology.

    Arrays are (z, y, x) label maps on ``geometry``: lobes uint8 0..5, airway and vessels binary.
    """
    layers = {"lobes": lobes, "airway": airway, "vessels": vessels}
    layer_index = {"lobes": 0, "airway": 1, "vessels": 2}
    for name, array in layers.items():
        if tuple(array.shape[::-1]) != tuple(geometry.size):
            raise ValueError(f"{name} array shape {array.shape} (z, y, x) does not fit geometry size {geometry.size}")
    stack = np.stack([np.asarray(layers[k], dtype=np.uint8) for k in ("lobes", "airway", "vessels")], axis=-1)
    image = geometry.apply(sitk.GetImageFromArray(stack, isVector=True))
    x, y, z = geometry.size
    extent = f"0 {x - 1} 0 {y - 1} 0 {z - 1}"
    meta = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
        "content": description,
    }
    for i, seg in enumerate(SEGMENTS):
        prefix = f"Segment{i}_"
        r, g, b = seg.color
        meta.update({
            prefix + "ID": seg.segment_id,
            prefix + "Name": seg.name,
            prefix + "NameAutoGenerated": "0",
            prefix + "Color": f"{r:g} {g:g} {b:g}",
            prefix + "ColorAutoGenerated": "0",
            prefix + "LabelValue": str(seg.label),
            prefix + "Layer": str(layer_index[seg.channel]),
            prefix + "Extent": extent,
            prefix + "Tags": f"Segmentation.Status:inprogress|TerminologyEntry:{terminology_entry(seg)}|",
        })
    for key, value in meta.items():
        image.SetMetaData(key, value)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))
