"""A ``medsyn`` results folder -> nodes in the scene.

The folder follows the command line's contract: ``medsyn.json`` (the sidecar) names the files relative to the
folder: ``ct`` (generate mode, int16 HU NIfTI), ``segmentation`` (``.seg.nrrd``), and the label maps ``lobes``,
``airway``, ``vessels``. The CT becomes a scalar volume "SYNTHETIC MedSyn CT (seed N, HH:MM)" with the CT-lung
window; the masks become one segmentation node whose segments are named, coloured and tagged with standard terminology
from ``MedSynLib.io.segments``. Provenance from the sidecar is stored as node attributes, and both nodes go under
one subject-hierarchy folder. An edit (mode ``edit``) loads beside the CT it was made from, marked EDITED.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

import slicer

from MedSynLib.io.segments import SEGMENTS, SegmentInfo, terminology_entry

from . import ATTRIBUTE_PREFIX, SYNTHETIC_ATTRIBUTE, dicomexport, sceneutil
from .conditions import _norm

SIDECAR_NAME = "medsyn.json"
CT_LUNG_WINDOW = 1400.0
CT_LUNG_LEVEL = -500.0
REGION_SEGMENT_NAME = "Edited region"
REGION_COLOR = (1.0, 0.85, 0.1)
"""Name and colour of the segment holding an edit's region (drawn by the user, loaded with the edit's result)."""


@dataclass
class LoadedResults:
    """The nodes created from one results folder."""

    sidecar: dict
    folder: str
    ct_node: object = None
    segmentation_node: object = None
    folder_item: int = 0
    warnings: list[str] = field(default_factory=list)


def read_sidecar(folder: str) -> dict:
    path = os.path.join(folder, SIDECAR_NAME)
    with open(path, encoding="utf-8") as f:
        sidecar = json.load(f)
    if not isinstance(sidecar, dict) or "files" not in sidecar:
        raise ValueError(f"{path} is not a MedSyn sidecar (no 'files')")
    return sidecar


def _file(folder: str, sidecar: dict, key: str) -> str | None:
    name = (sidecar.get("files") or {}).get(key)
    if not name:
        return None
    path = name if os.path.isabs(name) else os.path.join(folder, name)
    return path if os.path.exists(path) else None


# --- geometry ----------------------------------------------------------------------------------------------------

def ijk_to_ras_from_sitk(image) -> np.ndarray:
    """IJK-to-RAS 4x4 of a SimpleITK image (SimpleITK works in LPS: flip the first two world axes)."""
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), float)
    origin = np.array(image.GetOrigin(), float)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = lps_to_ras @ direction @ np.diag(spacing)
    m[:3, 3] = lps_to_ras @ origin
    return m


def read_image(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Voxel array (k, j, i) and IJK-to-RAS of an image file (NIfTI, NRRD, ...)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), ijk_to_ras_from_sitk(image)


# --- provenance --------------------------------------------------------------------------------------------------

def provenance_attributes(sidecar: dict, folder: str = "") -> dict[str, str]:
    """Node attributes recording where a node came from (all values are strings)."""
    model = sidecar.get("model") or {}
    sha = model.get("sha256")
    attributes = {
        SYNTHETIC_ATTRIBUTE: "true" if sidecar.get("synthetic", True) else "false",
        ATTRIBUTE_PREFIX + "mode": str(sidecar.get("mode", "")),
        ATTRIBUTE_PREFIX + "report": sidecar.get("report") or "",
        ATTRIBUTE_PREFIX + "seed": str(sidecar.get("seed", "")),
        ATTRIBUTE_PREFIX + "model": str(model.get("name", "")),
        ATTRIBUTE_PREFIX + "modelSha256": json.dumps(sha, sort_keys=True) if isinstance(sha, dict) else str(sha or ""),
        ATTRIBUTE_PREFIX + "settings": json.dumps(sidecar.get("settings") or {}, sort_keys=True),
        ATTRIBUTE_PREFIX + "timings": json.dumps(sidecar.get("timings_s") or {}, sort_keys=True),
    }
    if folder:
        attributes[ATTRIBUTE_PREFIX + "outputFolder"] = os.path.abspath(folder)
    if sidecar.get("quality"):
        attributes[ATTRIBUTE_PREFIX + "quality"] = json.dumps(sidecar["quality"], sort_keys=True)
    if sidecar.get("edited"):
        attributes[ATTRIBUTE_PREFIX + "edited"] = "true"
        attributes[ATTRIBUTE_PREFIX + "region"] = json.dumps(sidecar.get("region") or {}, sort_keys=True)
    return attributes


def set_attributes(node, attributes: dict[str, str]) -> None:
    for key, value in attributes.items():
        node.SetAttribute(key, value)


# --- CT ----------------------------------------------------------------------------------------------------------

def apply_ct_lung_window(volume_node) -> None:
    """Grey colour map with the CT-lung window (W 1400 / L -500)."""
    volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetDisplayNode()
    if display is None:
        return
    display.AutoWindowLevelOff()
    display.SetWindowLevel(CT_LUNG_WINDOW, CT_LUNG_LEVEL)
    try:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    except Exception:  # noqa: BLE001 - colour tables are not loaded without the Colors logic
        pass


def load_ct(path: str, name: str, dtype=np.int16):
    """A CT file as a new scalar volume with the lung window, cast to ``dtype`` (None: the file's pixel type)."""
    array, ijk_to_ras = read_image(path)
    node = slicer.util.addVolumeFromArray(array if dtype is None else array.astype(dtype, copy=False), ijk_to_ras,
                                          name)
    apply_ct_lung_window(node)
    return node


# --- segmentation ------------------------------------------------------------------------------------------------

def _info_for(segment_id: str, name: str, label_value: int | None = None) -> SegmentInfo | None:
    for info in SEGMENTS:
        if _norm(segment_id) in (_norm(info.segment_id), _norm(info.name)) or \
                _norm(name) in (_norm(info.segment_id), _norm(info.name)):
            return info
    return None


def style_segment(segment, info: SegmentInfo) -> None:
    """Name, colour and terminology tag of one segment from the shared segment table."""
    segment.SetName(info.name)
    segment.SetColor(*info.color)
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(info))


def style_segments(segmentation_node) -> list[str]:
    """Apply names, colours and terminology to every segment recognised by ID or name; returns unknown names."""
    segmentation = segmentation_node.GetSegmentation()
    unknown = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        info = _info_for(segment_id, segment.GetName())
        if info is None:
            unknown.append(segment.GetName())
        else:
            style_segment(segment, info)
    return unknown


def set_reference(segmentation_node, reference_volume) -> None:
    """Make ``reference_volume`` the segmentation's reference geometry (the grid its segments are drawn on)."""
    if reference_volume is not None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        segmentation_node.SetNodeReferenceID(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole(), reference_volume.GetID())


def read_segmentation_file(path: str, segmentation_node) -> None:
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(path)
    if not storage.ReadData(segmentation_node):
        raise OSError(f"Could not read segmentation {path}")


def import_mask(segmentation_node, mask: np.ndarray, ijk_to_ras: np.ndarray, segment_id: str) -> None:
    """Write a uint8 {0, 1} array (k, j, i) on the grid ``ijk_to_ras`` into the existing segment ``segment_id``."""
    import vtk

    labelmap = slicer.util.addVolumeFromArray(mask, ijk_to_ras, "__MedSyn_import__", "vtkMRMLLabelMapVolumeNode")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not sceneutil.segmentations_logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids):
            raise RuntimeError(f"Import of segment {segment_id} failed")
    finally:
        sceneutil.remove_temporary_node(labelmap)


def add_segments_from_label_maps(segmentation_node, label_maps: dict[str, str]) -> None:
    """Fill ``segmentation_node`` from the per-channel label maps (``{"lobes"|"airway"|"vessels": path}``)."""
    segmentation = segmentation_node.GetSegmentation()
    for channel, path in label_maps.items():
        array, ijk_to_ras = read_image(path)
        for info in (s for s in SEGMENTS if s.channel == channel):
            mask = (array == info.label).astype(np.uint8)
            if segmentation.GetSegment(info.segment_id) is None:
                segmentation.AddEmptySegment(info.segment_id, info.name, list(info.color))
            style_segment(segmentation.GetSegment(info.segment_id), info)
            if not mask.any():
                continue
            import_mask(segmentation_node, mask, ijk_to_ras, info.segment_id)


def reference_of(segmentation_node):
    """The volume whose geometry ``segmentation_node`` follows (its reference image geometry), or None."""
    return segmentation_node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())


def load_segmentation(folder: str, sidecar: dict, name: str, reference_volume=None):
    """Segmentation node from the results folder: the ``.seg.nrrd`` if present, else the label maps."""
    scene = sceneutil.scene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg_path = _file(folder, sidecar, "segmentation")
    if seg_path is not None:
        read_segmentation_file(seg_path, node)
    else:
        label_maps = {k: p for k in ("lobes", "airway", "vessels") if (p := _file(folder, sidecar, k))}
        if not label_maps:
            scene.RemoveNode(node)
            raise FileNotFoundError(f"No segmentation or label maps listed in {os.path.join(folder, SIDECAR_NAME)}")
        set_reference(node, reference_volume)
        add_segments_from_label_maps(node, label_maps)
    style_segments(node)
    set_reference(node, reference_volume)
    node.CreateDefaultDisplayNodes()
    return node


# --- the whole folder --------------------------------------------------------------------------------------------

def run_label(sidecar: dict, clock: str = "") -> str:
    """How names tell runs apart: ``"seed 3, 14:05"`` (the seed and the time the result was loaded, ``clock``
    overriding it)."""
    return f"seed {sidecar.get('seed', '')}, {clock or time.strftime('%H:%M')}"


def unique_name(name: str) -> str:
    """``name``, or ``name [2]``, ``[3]``... when a node of the scene already has it (two runs in one minute)."""
    scene, candidate, i = sceneutil.scene(), name, 2
    while scene.GetFirstNodeByName(candidate) is not None:
        candidate, i = f"{name} [{i}]", i + 1
    return candidate


def result_names(sidecar: dict, input_name: str = "", clock: str = "") -> tuple[str, str, str]:
    """Names of (CT volume, segmentation, subject-hierarchy folder) for a results folder, after the input
    (``input_name``: the segmented CT) and the run: "SYNTHETIC MedSyn CT (seed 3, 14:05)", "patient B CT – MedSyn
    segmentation (seed 3, 14:05)"."""
    label = run_label(sidecar, clock)
    if sidecar.get("mode") == "segment":
        seg = f"{input_name} – MedSyn segmentation ({label})" if input_name else f"MedSyn segmentation ({label})"
        return "", unique_name(seg), seg
    return (unique_name(f"SYNTHETIC MedSyn CT ({label})"), unique_name(f"SYNTHETIC MedSyn segmentation ({label})"),
            f"SYNTHETIC MedSyn ({label})")


def load_results(folder: str, input_volume=None, output_segmentation=None, show: bool = True) -> LoadedResults:
    """Load a results folder into ``slicer.mrmlScene``.

    Generate mode: a new CT volume and a segmentation whose reference geometry is that CT.
    Segment mode: the segmentation aligned with ``input_volume`` (the CT that was segmented), written into
    ``output_segmentation`` when given (its previous segments are replaced and it is renamed after this run), else
    into a new node. Names say the input and the run (:func:`result_names`).
    """
    sidecar = read_sidecar(folder)
    ct_name, seg_name, folder_name = result_names(sidecar, input_volume.GetName() if input_volume is not None else "")
    loaded = LoadedResults(sidecar=sidecar, folder=folder, warnings=list(sidecar.get("warnings") or []))
    attributes = provenance_attributes(sidecar, folder)
    segment_mode = sidecar.get("mode") == "segment"

    if not segment_mode:
        ct_path = _file(folder, sidecar, "ct")
        if ct_path is None:
            raise FileNotFoundError(f"The results in {folder} list no CT file")
        loaded.ct_node = load_ct(ct_path, ct_name)
        set_attributes(loaded.ct_node, attributes)
        reference = loaded.ct_node
    else:
        reference = input_volume

    new_node = load_segmentation(folder, sidecar, seg_name, reference)
    if output_segmentation is not None and segment_mode:
        output_segmentation.GetSegmentation().RemoveAllSegments()
        output_segmentation.GetSegmentation().DeepCopy(new_node.GetSegmentation())
        style_segments(output_segmentation)  # the copy resets the 'auto-generated' flags
        set_reference(output_segmentation, reference)
        output_segmentation.CreateDefaultDisplayNodes()
        sceneutil.scene().RemoveNode(new_node)
        output_segmentation.SetName(seg_name)  # the run it now holds
        loaded.segmentation_node = output_segmentation
    else:
        loaded.segmentation_node = new_node
    set_attributes(loaded.segmentation_node, attributes)

    if segment_mode:
        parent = sceneutil.folder_of(input_volume)
        if parent:
            sceneutil.put_in_folder(loaded.segmentation_node, parent)
    else:
        loaded.folder_item = sceneutil.create_folder(folder_name)
        sh = sceneutil.subject_hierarchy()
        if sh is not None and loaded.folder_item:
            sh.SetItemAttribute(loaded.folder_item, SYNTHETIC_ATTRIBUTE, "true")
        sceneutil.put_in_folder(loaded.ct_node, loaded.folder_item)
        sceneutil.put_in_folder(loaded.segmentation_node, loaded.folder_item)
    dicomexport.tag_series(loaded.ct_node, sidecar, "ct")  # what Slicer's DICOM export writes (docs/slicer.md)
    dicomexport.tag_series(loaded.segmentation_node, sidecar, "segmentation")

    if show:
        sceneutil.show_in_views(loaded.ct_node if loaded.ct_node is not None else input_volume,
                                loaded.segmentation_node)
    return loaded


def load_edit_results(folder: str, input_volume=None, show: bool = True) -> LoadedResults:
    """Load a ``medsyn edit`` folder as new nodes beside ``input_volume`` (the CT that was edited, not changed):
    the edited CT "EDITED <input> (MedSyn seed N, HH:MM)" in the file's pixel type, and a segmentation on it holding
    the region (segment "Edited region") and the anatomy generated inside it. Both carry the provenance attributes,
    ``MedSyn.edited`` = true and the region; ``synthetic`` is "true" only when the input itself was synthetic."""
    sidecar = read_sidecar(folder)
    ct_path, region_path = _file(folder, sidecar, "ct"), _file(folder, sidecar, "region")
    if ct_path is None or region_path is None:
        raise FileNotFoundError(f"The edit results in {folder} list no CT or no region file")
    base = input_volume.GetName() if input_volume is not None else "CT"
    label = run_label(sidecar)
    attributes = provenance_attributes(sidecar, folder)
    if input_volume is not None:
        attributes[SYNTHETIC_ATTRIBUTE] = "true" if input_volume.GetAttribute(SYNTHETIC_ATTRIBUTE) == "true" \
            else "false"
        attributes[ATTRIBUTE_PREFIX + "editedFrom"] = base
    loaded = LoadedResults(sidecar=sidecar, folder=folder, warnings=list(sidecar.get("warnings") or []))
    loaded.ct_node = load_ct(ct_path, unique_name(f"EDITED {base} (MedSyn {label})"), dtype=None)
    segmentation = load_segmentation(folder, sidecar, unique_name(f"EDITED {base} region anatomy (MedSyn {label})"),
                                     loaded.ct_node)
    region, ijk_to_ras = read_image(region_path)
    region_id = segmentation.GetSegmentation().AddEmptySegment("edited_region", REGION_SEGMENT_NAME,
                                                               list(REGION_COLOR))
    import_mask(segmentation, (region > 0).astype(np.uint8), ijk_to_ras, region_id)
    loaded.segmentation_node = segmentation
    for node, what in ((loaded.ct_node, "ct"), (segmentation, "segmentation")):
        set_attributes(node, attributes)
        sceneutil.put_in_folder(node, sceneutil.folder_of(input_volume))
        dicomexport.tag_series(node, sidecar, what)
    if show:
        sceneutil.show_in_views(loaded.ct_node, segmentation)
    return loaded


def quality_line(quality: dict) -> str:
    """A segmentation's quality check (the sidecar's ``quality``) in words."""
    if "lung_covered" in quality:  # the gate since #29: coverage both ways, dense disease counted as lung
        text = (f"Quality check: lobes cover {100 * quality['lung_covered']:.0f} % of the CT's aerated lung "
                f"(needs {100 * quality['lung_covered_min']:.0f} %), {100 * quality['lobes_on_lung']:.0f} % of "
                f"them lie on its lungs (needs {100 * quality['lobes_on_lung_min']:.0f} %)")
    else:  # a result written before
        text = (f"Quality check: lobes vs. the CT's own lungs Dice {quality['lung_dice']:.2f} "
                f"(needs {quality['lung_dice_min']})")
    if quality.get("trachea_covered") is not None:
        text += (f", airway covers {100 * quality['trachea_covered']:.0f} % of the trachea "
                 f"(needs {100 * quality['trachea_covered_min']:.0f} %)")
    return text + (": passed." if quality.get("passed") else ": FAILED, do not trust this segmentation.")


def summary(loaded: LoadedResults) -> list[str]:
    """Lines the panel shows after a run: what was loaded, a segmentation's quality check, the model's statement
    (the sentence it asks to be shown with every result), where its files are."""
    node = loaded.ct_node if loaded.ct_node is not None else loaded.segmentation_node
    quality = loaded.sidecar.get("quality")
    region = (loaded.sidecar.get("region") or {}) if loaded.sidecar.get("edited") else {}
    statement = (loaded.sidecar.get("model") or {}).get("statement")
    return [f"Loaded '{node.GetName()}'.", *([quality_line(quality)] if quality else []),
            *([f"Replaced {region['volume_ml']:.1f} mL; every voxel outside the region is the input's."]
              if "volume_ml" in region else []), *([f"Model: {statement}"] if statement else []),
            f"Files: {loaded.folder}"]
