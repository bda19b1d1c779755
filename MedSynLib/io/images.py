"""Volumes with explicit geometry, and the files MedSyn reads and writes (NIfTI, NRRD, Slicer ``.seg.nrrd``).

Arrays are numpy in SimpleITK order (z, y, x) = (k, j, i); geometry is LPS as ITK uses: spacing and origin in mm,
direction a row-major 3x3 matrix. Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom_series import DICOM_DESCRIPTION_KEYS, read_dicom_series
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


DESCRIPTION_KEYS = ("descrip", "ITK_FileNotes", "content", *DICOM_DESCRIPTION_KEYS)
"""Where a file's header holds its description: NIfTI ``descrip``, ITK's own notes, NRRD ``content``; a DICOM
series' Series and Study Description (copied from its first slice when the series is read)."""


@dataclass(frozen=True)
class Provenance:
    """What an image's header says it is: ``synthetic`` (made by a generator: SYNTHETIC in its description) and
    ``edited`` (a scan with a region replaced: EDITED). A result inherits its input's marks (docs/failure-modes.md)."""

    synthetic: bool = False
    edited: bool = False

    @classmethod
    def of(cls, image: sitk.Image) -> "Provenance":
        text = " ".join(image.GetMetaData(k) for k in DESCRIPTION_KEYS if image.HasMetaDataKey(k)).upper()
        return cls("SYNTHETIC" in text, "EDITED" in text)


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


def read_image(path: str | Path, what: str = "image", series: str | None = None) -> sitk.Image:
    """Read a 3D image (NIfTI, NRRD, .seg.nrrd, MHA ..., or a DICOM series folder) and check it before use.

    ``series``: the Series Instance UID to read from a DICOM folder that holds several (they are listed otherwise).

    Refused with a message naming the file and the fix (ValueError; :class:`InputTooLargeError`, a MemoryError,
    when it would not fit in memory): a missing or unreadable file, a file shorter than its header says (a
    truncated download, which ITK would fill with zeros), a non-3D image, spacing that is not positive (NIfTI
    ``pixdim`` 0, which ITK reads as 1 mm), a direction that is not orthonormal (a sheared NIfTI ``sform``, which
    ITK would silently replace), and non-finite voxel values.
    """
    path = Path(path)
    if path.is_dir():
        return _validated(read_dicom_series(path, what, series), path, what)
    if series is not None:
        raise ValueError(f"--series chooses a series of a DICOM folder, but {what} {path} is a file. Fix: give the "
                         "DICOM folder, or leave out --series")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is an empty file. Fix: copy or export it again")
    if path.name.endswith((".nii", ".nii.gz")):
        _check_nifti_header(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        _check_memory(reader.GetSize(), reader.GetNumberOfComponents(),
                      sitk.GetPixelIDValueAsString(reader.GetPixelID()), path, what)
        image = reader.Execute()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].removeprefix("sitk::ERROR: ").strip()  # ITK's own words
        if "Unable to determine ImageIO reader" in reason:
            raise ValueError(f"cannot read {what} {path}: not an image format this program reads. Fix: give a NIfTI "
                             "(.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd) file or a folder holding one "
                             "DICOM series") from exc
        if "spacing" in reason.lower():  # ITK refuses a zero spacing in an NRRD / MetaImage header
            raise ValueError(f"{what} {path} has a voxel spacing that is not positive ({reason[:120]}). Fix: set the "
                             "true voxel size in the file's header") from exc
        if any(k in reason for k in TRUNCATED_REASONS):  # ITK's words for data shorter than the header says
            raise ValueError(f"cannot read {what} {path}: it is truncated or corrupted (its data is shorter than its "
                             "header says). Fix: copy or download it again") from exc
        raise ValueError(f"cannot read {what} {path}: {reason[:200]}. Fix: check that the file is complete (copy "
                         "or export it again)") from exc
    return _validated(image, path, what)


TRUNCATED_REASONS = ("No such file or directory", "fread got only", "not read completely", "Read failed",
                     "ran out of data", "premature end")
"""What ITK's readers say (MetaImage: "No such file", for a file that exists) when the data stops early."""


class InputTooLargeError(MemoryError):
    """An input image that would not fit in the memory available (names the file, the need and the fix)."""


BYTES_PER_VOXEL_IN_USE = 12
"""Working memory per voxel of an input while it is used: the file's pixels, a float32 copy and a resampled one."""


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_memory(size, components: int, pixel: str, path: Path, what: str) -> None:
    voxels = int(np.prod(size, dtype=np.int64)) * max(components, 1)
    need = voxels * BYTES_PER_VOXEL_IN_USE
    available = _available_memory()
    if available is not None and need > available:
        raise InputTooLargeError(f"{what} {path} has {'x'.join(map(str, size))} voxels ({pixel}); using it needs "
                                 f"about {need / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is available. Fix: "
                                 "crop it to the chest or resample it to a coarser grid (e.g. 1 mm) first")


def _validated(image: sitk.Image, path: Path, what: str) -> sitk.Image:
    if image.GetDimension() != 3:
        raise ValueError(f"{what} {path} is {image.GetDimension()}-D; a 3D volume is needed")
    spacing = np.array(image.GetSpacing())
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise ValueError(f"{what} {path} has voxel spacing {tuple(spacing.tolist())} mm; every spacing must be "
                         "positive. Fix: set the true voxel size in the file's header")
    _check_direction(np.array(image.GetDirection()).reshape(3, 3), path, what, "direction")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64):
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise ValueError(f"{what} {path} contains NaN or infinite voxel values. Fix: replace them (e.g. by "
                             "-1024 HU for a CT, 0 for a mask) before using the file")
    return image


def _check_direction(matrix: np.ndarray, path: Path, what: str, name: str) -> None:
    """``matrix`` (3x3, columns = axis directions, any lengths) must have orthogonal columns."""
    lengths = np.linalg.norm(matrix, axis=0)
    if not (np.isfinite(matrix).all() and (lengths > 0).all()):
        raise ValueError(f"{what} {path} has a degenerate {name} matrix {matrix.round(4).tolist()}")
    unit = matrix / lengths
    if not np.allclose(unit.T @ unit, np.eye(3), atol=1e-4):
        raise ValueError(f"{what} {path} has a sheared (non-orthogonal) {name} {matrix.round(4).tolist()}: ITK "
                         "supports only orthonormal grids and would silently change its geometry. Fix: resample it "
                         "onto an orthogonal grid first (e.g. 3D Slicer: Resample Scalar Volume, or "
                         "Transforms > Harden transform then export)")


NIFTI1 = {"sizeof": 348, "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"),
          "vox_offset": (108, "f"), "sform_code": (254, "h"), "srow": (280, "12f")}
NIFTI2 = {"sizeof": 540, "dim": (16, "8q"), "datatype": (12, "h"), "bitpix": (14, "h"), "pixdim": (104, "8d"),
          "vox_offset": (168, "q"), "sform_code": (348, "i"), "srow": (400, "12d")}
"""Byte offsets and struct formats of the NIfTI-1 / NIfTI-2 header fields checked by :func:`_check_nifti_header`."""
NIFTI_FLOATS = {16: "f4", 64: "f8"}
"""NIfTI datatype codes of float voxels -> numpy type (without byte order)."""


def _check_nifti_header(path: Path, what: str) -> None:
    """What ITK does not check in a NIfTI file: the data is as long as the header says (a truncated file is
    otherwise zero-filled), ``pixdim`` of the spatial axes is positive (otherwise taken as 1 mm), and a used
    ``sform`` is not sheared (otherwise replaced by the ``qform``)."""
    import gzip
    import struct
    import zlib

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
        layout = endian = None
        for fields in (NIFTI1, NIFTI2):
            for order in "<>":
                if len(head) >= fields["sizeof"] and struct.unpack_from(order + "i", head, 0)[0] == fields["sizeof"]:
                    layout, endian = fields, order
        if layout is None:
            raise ValueError(f"{what} {path} is not a NIfTI file (its header size is not 348 or 540 bytes). "
                             "Fix: check the file, or give it the extension of its real format")
        field = {k: struct.unpack_from(endian + v[1], head, v[0]) for k, v in layout.items() if k != "sizeof"}
        offset = int(field["vox_offset"][0])
        floats = NIFTI_FLOATS.get(field["datatype"][0])
        dtype = np.dtype(endian + floats) if floats else None
        finite, length, rest = True, 0, b""
        with opener(path, "rb") as f:  # ITK reads NaN and Inf in NIfTI files as 0: check the stored values
            length = len(f.read(offset))
            while block := f.read(1 << 24):
                length += len(block)
                if dtype is not None and finite:
                    block, n = rest + block, (len(rest) + len(block)) // dtype.itemsize * dtype.itemsize
                    finite, rest = bool(np.isfinite(np.frombuffer(block[:n], dtype)).all()), block[n:]
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"cannot read {what} {path}: it is truncated or corrupted ({exc}). Fix: copy or download "
                         "it again") from None
    dims = field["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise ValueError(f"{what} {path} has an invalid NIfTI header (dim[0] = {ndim})")
    expected = int(field["vox_offset"][0]) + int(np.prod([max(int(d), 1) for d in dims[1:ndim + 1]], dtype=np.int64)
                                               ) * field["bitpix"][0] // 8
    if length < expected:
        raise ValueError(f"cannot read {what} {path}: it is truncated: its header describes {expected:,} bytes of data but the file "
                         f"holds {length:,}. Fix: copy or download it again")
    pixdim = np.array(field["pixdim"][1:4], float)
    if not (np.isfinite(pixdim[:min(ndim, 3)]).all() and (pixdim[:min(ndim, 3)] > 0).all()):
        raise ValueError(f"{what} {path} has voxel spacing (NIfTI pixdim) {tuple(pixdim.tolist())}; every spacing "
                         "must be positive (ITK would read 0 as 1 mm). Fix: set the true voxel size in the header")
    if field["sform_code"][0] > 0:
        _check_direction(np.array(field["srow"], float).reshape(3, 4)[:, :3], path, what, "sform")
    if not finite:
        raise ValueError(f"{what} {path} contains NaN or infinite voxel values (ITK would read them as 0). Fix: "
                         "replace them (e.g. by -1024 HU for a CT, 0 for a mask) before using the file")


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
