"""Condition segments -> label-map files for ``medsyn generate --lobes/--airway/--vessels``.

Segments are exported in the *reference geometry of their segmentation* (origin, spacing, axis directions and
extent of the volume the segmentation was drawn on, e.g. a previous MedSyn result), so what the user drew is what
the model holds, voxel for voxel. Lobes become one uint8 label map with the values of ``MedSynLib.io.segments``
(1 left upper, 2 left lower, 3 right upper, 4 right middle, 5 right lower); airway and vessels become binary uint8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

import slicer

from MedSynLib.io.segments import SEGMENTS, SegmentInfo

from . import sceneutil

LOBE_SEGMENTS: tuple[SegmentInfo, ...] = tuple(s for s in SEGMENTS if s.channel == "lobes")
AIRWAY_SEGMENT: SegmentInfo = next(s for s in SEGMENTS if s.channel == "airway")
VESSELS_SEGMENT: SegmentInfo = next(s for s in SEGMENTS if s.channel == "vessels")

_SYNONYMS = {
    "airway": ("airway", "airways", "trachea and bronchi", "bronchial tree", "airway structure"),
    "vessels": ("pulmonary vessels", "vessels", "vessel", "lung vessels", "blood vessel", "pulmonary vasculature"),
}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).strip()


@dataclass
class ConditionSelection:
    """Which segments to hold fixed: lobe label (1..5) -> segment ID, and optional airway / vessels segment IDs."""

    lobes: dict[int, str] = field(default_factory=dict)
    airway: str = ""
    vessels: str = ""

    def is_empty(self) -> bool:
        return not (self.lobes or self.airway or self.vessels)


def get_terminology_tag(segment) -> str:
    """The serialised terminology entry of a segment ("" when it has none)."""
    import vtk

    holder = vtk.reference("")
    if segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), holder):
        return str(holder)
    return ""


def _segment_matches(segment, segment_id: str, info: SegmentInfo, synonyms: tuple[str, ...] = ()) -> bool:
    names = {_norm(info.name), _norm(info.segment_id), *(_norm(s) for s in synonyms)}
    if _norm(segment.GetName()) in names or _norm(segment_id) in names:
        return True
    tag = get_terminology_tag(segment)
    if tag and isinstance(tag, str):
        parts = tag.split("~")
        if len(parts) >= 4:
            type_value = parts[2].split("^")[1] if "^" in parts[2] else ""
            modifier_value = parts[3].split("^")[1] if "^" in parts[3] else ""
            want_modifier = info.modifier[1] if info.modifier else ""
            if type_value == info.type_code[1] and modifier_value == want_modifier:
                return True
    return False


def find_condition_segments(segmentation_node) -> ConditionSelection:
    """Guess which segments of ``segmentation_node`` are the lobes, airway and vessels (by name or terminology)."""
    selection = ConditionSelection()
    if segmentation_node is None:
        return selection
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    for segment_id in ids:
        segment = segmentation.GetSegment(segment_id)
        for info in LOBE_SEGMENTS:
            if info.label not in selection.lobes and _segment_matches(segment, segment_id, info):
                selection.lobes[info.label] = segment_id
                break
        else:
            if not selection.airway and _segment_matches(segment, segment_id, AIRWAY_SEGMENT, _SYNONYMS["airway"]):
                selection.airway = segment_id
            elif not selection.vessels and _segment_matches(segment, segment_id, VESSELS_SEGMENT,
                                                            _SYNONYMS["vessels"]):
                selection.vessels = segment_id
    return selection


def reference_geometry_matrix_and_shape(segmentation_node) -> tuple[np.ndarray, tuple[int, int, int]]:
    """IJK-to-RAS matrix and array shape (k, j, i) of the segmentation's reference geometry.

    Raises ``ValueError`` (with the fix in the message) when the segmentation has no reference geometry.
    """
    import vtk

    converter = slicer.vtkSegmentationConverter
    geometry = segmentation_node.GetSegmentation().GetConversionParameter(
        converter.GetReferenceImageGeometryParameterName())
    if not geometry:
        raise ValueError(
            f"Segmentation '{segmentation_node.GetName()}' has no reference geometry. "
            "Fix: create it on a volume (Segment Editor: choose a source volume) or use a MedSyn result.")
    image = slicer.vtkOrientedImageData()
    converter.DeserializeImageGeometry(geometry, image)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    extent = image.GetExtent()
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(m)
    # the extent may not start at 0: shift the origin so that index 0 is the first voxel
    start = np.array([extent[0], extent[2], extent[4], 1.0])
    ijk_to_ras[:3, 3] = (ijk_to_ras @ start)[:3]
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return ijk_to_ras, shape


def segment_array(segmentation_node, segment_id: str) -> np.ndarray:
    """Binary uint8 array (k, j, i) of one segment in the segmentation's reference geometry."""
    import vtk

    scene = sceneutil.scene()
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise ValueError(f"Segment '{segment_id}' does not exist in '{segmentation_node.GetName()}'.")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__MedSyn_export__")
    try:
        ok = sceneutil.segmentations_logic().ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, None, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise RuntimeError(f"Export of segment '{segment_id}' failed")
        array = slicer.util.arrayFromVolume(labelmap)
        return (array > 0).astype(np.uint8)
    finally:
        sceneutil.remove_temporary_node(labelmap)


def segment_is_empty(segmentation_node, segment_id: str) -> bool:
    """True when the segment's binary labelmap has no voxel (read in place, no export); a segment stored as
    another representation counts as not empty (its export checks it)."""
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if labelmap is None:
        return False
    scalars = labelmap.GetPointData().GetScalars() if labelmap.GetPointData() is not None else None
    if scalars is None or scalars.GetNumberOfTuples() == 0:
        return True
    return not bool((numpy_support.vtk_to_numpy(scalars) == segment.GetLabelValue()).any())


def write_label_map(array: np.ndarray, ijk_to_ras: np.ndarray, path: str) -> str:
    """Write a uint8 label map with its geometry (NIfTI or NRRD by extension) through a Slicer storage node."""
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array, dtype=np.uint8), ijk_to_ras,
                                          "__MedSyn_condition__", "vtkMRMLLabelMapVolumeNode")
    try:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(path)
        storage.SetUseCompression(True)
        if not storage.WriteData(node):
            raise OSError(f"Could not write {path}")
    finally:
        sceneutil.remove_temporary_node(node)
    return path


def export_segment(segmentation_node, segment_id: str, path: str) -> str:
    """Write one segment as a binary uint8 label map in the segmentation's reference geometry (``medsyn edit
    --region``); raises ``ValueError`` (with the fix) for an empty segment."""
    ijk_to_ras, _ = reference_geometry_matrix_and_shape(segmentation_node)
    array = segment_array(segmentation_node, segment_id)
    if not array.any():
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise ValueError(f"Segment '{name}' is empty. Fix: paint the region in the Segment Editor.")
    return write_label_map(array, ijk_to_ras, path)


def export_conditions(segmentation_node, selection: ConditionSelection, out_dir: str,
                      extension: str = ".nii.gz") -> dict[str, str]:
    """Write the selected condition segments as label maps into ``out_dir``.

    Returns ``{"lobes"|"airway"|"vessels": path}`` for the channels that are held (nothing for an empty selection).
    Raises ``ValueError`` for an empty selected segment or a segmentation without reference geometry.
    """
    if segmentation_node is None or selection.is_empty():
        return {}
    os.makedirs(out_dir, exist_ok=True)
    ijk_to_ras, shape = reference_geometry_matrix_and_shape(segmentation_node)
    segmentation = segmentation_node.GetSegmentation()

    def checked(segment_id: str) -> np.ndarray:
        array = segment_array(segmentation_node, segment_id)
        if array.shape != shape:
            raise RuntimeError(f"Exported segment has shape {array.shape}, expected {shape}")
        if not array.any():
            name = segmentation.GetSegment(segment_id).GetName()
            raise ValueError(f"Segment '{name}' is empty. Fix: paint it in the Segment Editor or deselect it.")
        return array

    files: dict[str, str] = {}
    if selection.lobes:
        lobes = np.zeros(shape, np.uint8)
        for label in sorted(selection.lobes):
            if label not in {s.label for s in LOBE_SEGMENTS}:
                raise ValueError(f"Unknown lobe label {label}")
            lobes[checked(selection.lobes[label]) > 0] = label  # later lobes win where segments overlap
        files["lobes"] = write_label_map(lobes, ijk_to_ras, os.path.join(out_dir, "lobes" + extension))
    if selection.airway:
        files["airway"] = write_label_map(checked(selection.airway), ijk_to_ras,
                                          os.path.join(out_dir, "airway" + extension))
    if selection.vessels:
        files["vessels"] = write_label_map(checked(selection.vessels), ijk_to_ras,
                                           os.path.join(out_dir, "vessels" + extension))
    return files
