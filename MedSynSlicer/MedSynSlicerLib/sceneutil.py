"""Small helpers around the MRML scene that work both in 3D Slicer and with only the ``slicer-core`` wheel.

Inside the application they use ``slicer.modules`` / ``slicer.app``; without it they fall back to logics that a
caller registered with :func:`register_application_logic` (the tests do), or to fresh logic instances.
View helpers (slice/3D display) silently do nothing when there is no main window.
"""

from __future__ import annotations

import logging

import numpy as np

import slicer

_application_logic = None
_fallback_logics: dict[str, object] = {}


def register_application_logic(app_logic) -> None:
    """Use ``app_logic`` (a ``vtkSlicerApplicationLogic`` with module logics set) when ``slicer.app`` is absent."""
    global _application_logic
    _application_logic = app_logic
    _fallback_logics.clear()


def application_logic():
    app = getattr(slicer, "app", None)
    if app is not None:
        try:
            return app.applicationLogic()
        except Exception:  # noqa: BLE001 - application without logic (should not happen)
            pass
    return _application_logic


def scene():
    """The current MRML scene (``slicer.mrmlScene``); raises a clear error when none is set."""
    s = getattr(slicer, "mrmlScene", None)
    if s is None:
        raise RuntimeError("slicer.mrmlScene is not set: create a vtkMRMLScene and assign it first")
    return s


def module_logic(name: str, vtk_class_name: str):
    """The logic of module ``name`` (e.g. ``"Segmentations"``) from the application, or a fresh instance."""
    modules = getattr(slicer, "modules", None)
    if modules is not None:
        module = getattr(modules, name.lower(), None)
        if module is not None:
            return module.logic()
    app = application_logic()
    if app is not None:
        logic = app.GetModuleLogic(name)
        if logic is not None:
            return logic
    logic = _fallback_logics.get(name)
    if logic is None or logic.GetMRMLScene() is not scene():
        logic = getattr(slicer, vtk_class_name)()
        if app is not None:
            logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene())
        _fallback_logics[name] = logic
    return logic


def segmentations_logic():
    return module_logic("Segmentations", "vtkSlicerSegmentationsModuleLogic")


def gui_available() -> bool:
    """True inside the Slicer application with a main window (display calls are skipped otherwise)."""
    app = getattr(slicer, "app", None)
    if app is None:
        return False
    try:
        return not app.commandOptions().noMainWindow
    except Exception:  # noqa: BLE001
        return False


def ijk_to_ras(volume_node) -> np.ndarray:
    """IJK-to-RAS matrix of a volume node as a 4x4 numpy array."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


# --- subject hierarchy -------------------------------------------------------------------------------------------

def subject_hierarchy():
    try:
        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene())
    except Exception:  # noqa: BLE001 - no subject hierarchy available
        return None


def create_folder(name: str) -> int:
    """A new subject-hierarchy folder under the scene item; 0 when no subject hierarchy is available."""
    sh = subject_hierarchy()
    if sh is None:
        return 0
    return sh.CreateFolderItem(sh.GetSceneItemID(), name)


def put_in_folder(node, folder_item: int) -> None:
    """Move ``node`` under ``folder_item`` (creating its subject-hierarchy item when no plugin did)."""
    sh = subject_hierarchy()
    if sh is None or not folder_item or node is None:
        return
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, folder_item)
    else:
        sh.CreateItem(folder_item, node)


def folder_of(node) -> int:
    sh = subject_hierarchy()
    if sh is None or node is None:
        return 0
    item = sh.GetItemByDataNode(node)
    return sh.GetItemParent(item) if item else 0


# --- views (no-ops without the application) ----------------------------------------------------------------------

def show_in_views(volume_node=None, segmentation_node=None, show_3d: bool = True) -> None:
    """Show the volume as background in the slice views and the segmentation in slice and 3D views."""
    if not gui_available():
        return
    try:
        if volume_node is not None:
            slicer.util.setSliceViewerLayers(background=volume_node, foreground=None, label=None, fit=True)
        if segmentation_node is not None:
            segmentation_node.CreateDefaultDisplayNodes()
            display = segmentation_node.GetDisplayNode()
            if display is not None:
                display.SetVisibility(True)
                display.SetVisibility3D(show_3d)
            if show_3d:
                segmentation_node.CreateClosedSurfaceRepresentation()
                slicer.util.resetThreeDViews()
    except Exception:  # noqa: BLE001 - display is a convenience, never fail a run because of it
        logging.exception("MedSyn: could not update the views")


def remove_temporary_node(node) -> None:
    """Remove a temporary volume node with its display and storage nodes and any colour table made for it."""
    if node is None:
        return
    s = scene()
    extras = []
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is None:
            continue
        extras.append(display)
        color = display.GetColorNode() if hasattr(display, "GetColorNode") else None
        if color is not None and not color.GetSingletonTag():
            extras.append(color)
    storage = node.GetStorageNode()
    if storage is not None:
        extras.append(storage)
    s.RemoveNode(node)
    for extra in extras:
        if s.IsNodePresent(extra):
            s.RemoveNode(extra)


def open_segment_editor(segmentation_node, segment_id: str, source=None) -> None:
    """Switch to the Segment Editor on ``segmentation_node`` / ``segment_id``, drawing on ``source`` (default: the
    segmentation's reference volume). Needs the application."""
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation_node)
    source = source or segmentation_node.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    if source is not None:
        set_source = getattr(editor, "setSourceVolumeNode", None) or getattr(editor, "setMasterVolumeNode")
        set_source(source)
    if segment_id:
        editor.setCurrentSegmentID(segment_id)
