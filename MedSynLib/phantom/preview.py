"""PNG montages of any CT + masks: axial, coronal and sagittal planes, lung window, coloured mask overlays.

A preview of files (:func:`preview_files`) has two rows: the CT's axial, coronal and sagittal planes, then the same
planes with the masks over them; the planes go through the lungs (:func:`lung_planes`), not through the volume's
mid-line, whose sagittal plane shows only the mediastinum.

Works on arrays (z, y, x) in LPS orientation (x R->L, y A->P, z I->S) or on image files of any orientation
(they are reoriented to LPS first). Images are shown in radiological convention: patient right on the
viewer's left, anterior up (axial), superior up (coronal, sagittal). PNG is written by SimpleITK.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import SimpleITK as sitk

from MedSynLib.io.files import atomic_write
from MedSynLib.io.images import read_image
from MedSynLib.io.segments import SEGMENTS

LUNG_WINDOW = (1500.0, -600.0)  # width, level (HU)
_ALPHA = {"lobes": 0.30, "airway": 0.85, "vessels": 0.75}
RIGHT_LUNG_LABELS = tuple(s.label for s in SEGMENTS if s.channel == "lobes" and s.name.startswith("right "))


def _colors(channel: str) -> dict[int, np.ndarray]:
    return {s.label: np.array(s.color, np.float32) for s in SEGMENTS if s.channel == channel}


def _fit(img2d: np.ndarray, h_mm: float, w_mm: float, panel: int, fill) -> np.ndarray:
    """Nearest-neighbour resample of a 2-D array spanning h_mm x w_mm into a square panel (letterboxed)."""
    scale = panel / max(h_mm, w_mm)
    h, w = max(1, int(round(h_mm * scale))), max(1, int(round(w_mm * scale)))
    ri = np.minimum((np.arange(h) + 0.5) / h * img2d.shape[0], img2d.shape[0] - 1).astype(int)
    ci = np.minimum((np.arange(w) + 0.5) / w * img2d.shape[1], img2d.shape[1] - 1).astype(int)
    out = np.full((panel, panel) + img2d.shape[2:], fill, dtype=img2d.dtype)
    r0, c0 = (panel - h) // 2, (panel - w) // 2
    out[r0:r0 + h, c0:c0 + w] = img2d[ri][:, ci]
    return out


def _views(a: np.ndarray, spacing_zyx, center=None):
    """[(slice2d, h_mm, w_mm)] for axial, coronal, sagittal of a (z, y, x) LPS array."""
    nz, ny, nx = a.shape[:3]
    sz, sy, sx = spacing_zyx
    cz, cy, cx = center or (nz // 2, ny // 2, nx // 2)
    return [(a[cz], ny * sy, nx * sx),
            (a[::-1, cy], nz * sz, nx * sx),
            (a[::-1, :, cx], nz * sz, ny * sy)]


OUTLINE_COLOR = np.array([1.0, 0.85, 0.0], np.float32)


def _outlined(rgb2d: np.ndarray, mask2d: np.ndarray) -> np.ndarray:
    """``rgb2d`` with the border pixels of ``mask2d`` (in the plane) painted :data:`OUTLINE_COLOR`."""
    m = np.asarray(mask2d) > 0
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out = rgb2d.copy()
    out[m & ~inner] = OUTLINE_COLOR
    return out


def montage(ct: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), masks: dict | None = None, panel: int = 256,
            window=LUNG_WINDOW, center=None, outline: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (panel, 3 * panel, 3): axial | coronal | sagittal with coloured mask overlays.

    ``masks`` maps "lobes" / "airway" / "vessels" to (z, y, x) arrays on the CT's grid; ``outline``: a region
    (z, y, x) drawn as a yellow outline in each plane.
    """
    w, l = window
    g = np.clip((ct.astype(np.float32) - (l - w / 2)) / w, 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    for name in ("lobes", "vessels", "airway"):
        m = (masks or {}).get(name)
        if m is None:
            continue
        m = np.asarray(m)
        cols = _colors(name)
        for lab, col in cols.items():
            sel = (m == lab) if name == "lobes" else (m > 0)
            if not sel.any():
                continue
            a = _ALPHA[name]
            rgb[sel] = rgb[sel] * (1 - a) + col * a
    views = _views(rgb, spacing_zyx, center)
    if outline is not None:
        views = [(_outlined(v, m), h, wd) for (v, h, wd), (m, _, _) in zip(views, _views(outline, spacing_zyx,
                                                                                          center))]
    panels = [_fit(v, h, wd, panel, 0.0) for v, h, wd in views]
    return (np.concatenate(panels, axis=1) * 255 + 0.5).astype(np.uint8)


def write_png(rgb: np.ndarray, path, description: str | None = None) -> None:
    """Write an (h, w, 3) uint8 array as PNG (atomically), ``description`` as its ``tEXt`` "Description"."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)  # filter byte 0 per row
    text = chunk(b"tEXt", b"Description\0" + description.encode("latin-1", "replace")) if description else b""
    atomic_write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + text
                 + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))


def is_preview(path) -> bool:
    """Whether the file ``path`` is a PNG that MedSyn wrote (its ``Description`` names MedSyn)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    start = head.find(b"tEXtDescription\0")
    return head.startswith(b"\x89PNG\r\n\x1a\n") and start > 0 and b"MedSyn" in head[start:start + 200]


def read_lps(path, reference: sitk.Image | None = None, label: bool = False) -> tuple[np.ndarray, tuple]:
    """Read an image, resample it onto ``reference`` if given (nearest neighbour for labels), reorient to LPS.

    Returns (array (z, y, x), spacing_zyx).
    """
    img = read_image(path, "image")
    if reference is not None and (img.GetSize() != reference.GetSize() or img.GetOrigin() != reference.GetOrigin()
                                  or img.GetDirection() != reference.GetDirection()):
        img = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                            0)
    img = sitk.DICOMOrient(img, "LPS")
    sx, sy, sz = img.GetSpacing()
    return sitk.GetArrayFromImage(img), (sz, sy, sx)


def _centroid(weights: np.ndarray) -> int:
    return int(round(float((weights * np.arange(weights.size)).sum() / weights.sum())))


def lung_planes(lobes: np.ndarray | None, shape_zyx) -> tuple[int, int, int]:
    """(z, y, x) indices of the planes a preview shows, for a (z, y, x) LPS lobe map (labels 1-5) or None.

    Axial and coronal: through the centre of the lungs; sagittal: through the centre of the right lung (labels 3-5),
    so that each plane cuts lung. Without lobes (or with an empty map): the volume's centre, the sagittal plane at
    30 % of the width from the patient's right (through the right lung of a chest centred in the volume).
    """
    nz, ny, nx = shape_zyx
    lungs = None if lobes is None else np.asarray(lobes) > 0
    if lungs is None or not lungs.any():
        return nz // 2, ny // 2, int(0.3 * nx)
    right = np.isin(lobes, RIGHT_LUNG_LABELS)
    side = right if right.any() else lungs
    return (_centroid(lungs.sum(axis=(1, 2))), _centroid(lungs.sum(axis=(0, 2))), _centroid(side.sum(axis=(0, 1))))


def preview_files(ct: str, out: str, lobes: str | None = None, airway: str | None = None,
                  vessels: str | None = None, panel: int = 256, description: str | None = None,
                  region: str | None = None) -> np.ndarray:
    """Preview of image files (NIfTI, NRRD, ...) -> PNG at ``out`` (``description`` in its metadata); returns the
    RGB array (2 * panel, 3 * panel, 3): the CT's axial, coronal and sagittal planes, then the same planes with the
    masks, through :func:`lung_planes` of the lobes. ``region``: a label map (an edit's region): the planes go
    through its centre instead and it is outlined in both rows."""
    ref = read_image(ct, "CT")
    arr, sp = read_lps(ct)
    masks = {}
    for name, pth in (("lobes", lobes), ("airway", airway), ("vessels", vessels)):
        if pth:
            masks[name] = read_lps(pth, ref, label=True)[0]
    outline, center = None, None
    if region:
        outline = read_lps(region, ref, label=True)[0] > 0
        if outline.any():
            center = tuple(int(round(c)) for c in np.argwhere(outline).mean(0))
    center = center or lung_planes(masks.get("lobes"), arr.shape)
    rgb = stack_rows([montage(arr, sp, None, panel, center=center, outline=outline),
                      montage(arr, sp, masks, panel, center=center, outline=outline)])
    write_png(rgb, out, description)
    return rgb


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Stack montages vertically (same widths)."""
    return np.concatenate(rows, axis=0)


GALLERY_CASES = (
    (3, dict(effusion="none", cardiomegaly=False, emphysema="none", consolidation=0, ggo=0, nodules=1)),
    (7, dict(effusion=("bilateral", "moderate"), cardiomegaly=True, emphysema="none", consolidation=0, ggo=0,
             nodules=0)),
    (11, dict(effusion="none", cardiomegaly=False, emphysema="moderate", consolidation=1, ggo=1, nodules=2)),
)


def gallery(size: int = 256, spacing: float = 1.0, panel: int = 160, cases=GALLERY_CASES) -> np.ndarray:
    """Rows of phantoms: CT alone (axial, coronal, sagittal through the right lung) | the same with overlays."""
    from .compose import make_phantom
    from .grid import Grid

    rows = []
    for seed, force in cases:
        ph = make_phantom(seed, Grid.cube(size, spacing), **force)
        nz, ny, nx = ph.ct.shape
        c = (nz // 2, ny // 2, int(0.3 * nx))
        masks = {"lobes": ph.lobes, "airway": ph.airway, "vessels": ph.vessels}
        rows.append(np.concatenate([montage(ph.ct, ph.grid.spacing_zyx, None, panel, center=c),
                                    montage(ph.ct, ph.grid.spacing_zyx, masks, panel, center=c)], axis=1))
    return stack_rows(rows)


if __name__ == "__main__":  # python -m MedSynLib.phantom.preview OUT.png [size spacing panel]
    import sys

    args = sys.argv[1:] or ["Resources/Screenshots/phantoms.png"]
    size = int(args[1]) if len(args) > 1 else 256
    sp = float(args[2]) if len(args) > 2 else 1.0
    pn = int(args[3]) if len(args) > 3 else 160
    write_png(gallery(size, sp, pn), args[0])
    print("wrote", args[0])
