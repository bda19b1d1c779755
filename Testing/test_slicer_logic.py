"""MedSynSlicerLogic (MedSynSlicerLib/logic.py) end to end outside Slicer: parameters -> conditions -> process -> scene.

The logic is Qt-free; its parameter node class is declared in MedSynSlicer.py, which imports
``slicer.ScriptedLoadableModule`` and ``parameterNodeWrapper``. slicer-core has neither (they need the application),
so minimal stand-ins are installed to import it; everything else (scene, segmentations, storage nodes) is real.
The ``medsyn`` command line is played by a stand-in script that writes a contract-conforming results folder (small
CT, label maps, sidecar) and copies a held airway through; it stands in for the real CLI until the end-to-end test
with a tiny model is added.
"""

import enum
import os
import re
import sys
import textwrap
import types
import typing

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "MedSynSlicer"), os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
sitk = pytest.importorskip("SimpleITK")

from test_slicer_scene import SHAPE, make_condition_segmentation, rotated_ijk_to_ras, scene  # noqa: E402,F401


# --- stand-ins for the application-only parts of slicer -----------------------------------------------------------

class _WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _parameter_node_wrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_values", {})
            for name in hints:
                self._values[name] = getattr(cls, name, None)

        def __getattr__(self, name):
            if name in hints:
                return self._values[name]
            raise AttributeError(name)

        def __setattr__(self, name, value):
            if name not in hints:
                raise AttributeError(f"unknown parameter {name}")
            self._values[name] = value
            self.parameterNode.Modified()

    Wrapped.__name__ = cls.__name__
    return Wrapped


@pytest.fixture(scope="module")
def module():
    stubs = {
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=type("ScriptedLoadableModule", (), {}),
            ScriptedLoadableModuleWidget=type("ScriptedLoadableModuleWidget", (), {}),
            ScriptedLoadableModuleTest=type("ScriptedLoadableModuleTest", (), {})),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(parameterNodeWrapper=_parameter_node_wrapper,
                                                             WithinRange=_WithinRange),
    }
    saved = {k: sys.modules.get(k) for k in [*stubs, "MedSynSlicer"]}  # the harness's module too: panel tests that
    sys.modules.update(stubs)                                              # ran before reuse it after this one
    try:
        sys.modules.pop("MedSynSlicer", None)
        import MedSynSlicer

        yield MedSynSlicer
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


STAND_IN = textwrap.dedent(r'''
    """Stand-in for `medsyn generate|segment ... --progress json --out DIR`: writes a small results folder."""
    import json, os, sys
    import numpy as np
    import SimpleITK as sitk

    args = sys.argv[1:]
    opt = lambda name: args[args.index(name) + 1] if name in args else None
    out, mode, seed = opt("--out"), args[0], int(opt("--seed") or 0)  # --seed 0 is the default: not passed
    part = out + ".partial"
    os.makedirs(part)
    def emit(**e): print(json.dumps(e), flush=True)
    for stage in ("text", "lowres", "superres", "write"):
        emit(event="progress", stage=stage, step=1, total=1, elapsed_s=0.1, eta_s=0.0)
    if mode == "segment":
        reference = sitk.ReadImage(opt("--ct"))
    else:
        reference = sitk.Image(16, 14, 12, sitk.sitkInt16)
        reference.SetSpacing((1.5, 1.5, 2.0)); reference.SetOrigin((-10.0, 5.0, 20.0))
    shape = sitk.GetArrayFromImage(reference).shape
    def write(array, name):
        image = sitk.GetImageFromArray(array); image.CopyInformation(reference)
        sitk.WriteImage(image, os.path.join(part, name), True)
        return name
    lobes = np.zeros(shape, np.uint8); lobes[1:4, 1:5, 1:6] = 1; lobes[5:9, 1:5, 1:6] = 3
    airway = np.zeros(shape, np.uint8); airway[:, 6:8, 7:9] = 1
    if opt("--airway"):
        held = sitk.ReadImage(opt("--airway"))
        assert held.GetSize() == reference.GetSize(), "held airway must come in the result geometry"
        airway = sitk.GetArrayFromImage(held)
    vessels = np.zeros(shape, np.uint8); vessels[2:10, 9:12, 10:13] = 1
    files = {"lobes": write(lobes, "lobes.nii.gz"), "airway": write(airway, "airway.nii.gz"),
             "vessels": write(vessels, "vessels.nii.gz")}
    if mode == "generate":
        ct = np.full(shape, -800, np.int16); ct[lobes == 0] = 40
        files["ct"] = write(ct, f"SYNTHETIC_MedSyn_CT_seed{seed}.nii.gz")
        report = open(opt("--report-file")).read()
    else:
        report = None
    sidecar = {"synthetic": True, "mode": mode, "report": report, "seed": seed,
               "model": {"name": opt("--model"), "sha256": {"weights": "0" * 64}},
               "settings": {"argv": args}, "timings_s": {"total": 0.1}, "files": files}
    json.dump(sidecar, open(os.path.join(part, "medsyn.json"), "w"))
    os.rename(part, out)
    emit(event="done", out=out, sidecar=os.path.join(out, "medsyn.json"))
''')


@pytest.fixture
def logic(module, scene, tmp_path):  # noqa: F811 - the scene fixture
    script = tmp_path / "standin_medsyn.py"
    script.write_text(STAND_IN, encoding="utf-8")
    lg = module.MedSynSlicerLogic(module.MedSynSlicerParameterNode)
    lg.commandFactory = lambda arguments: [sys.executable, str(script), *arguments]
    p = lg.getParameterNode()
    p.outputFolder = tmp_path / "results"
    return lg, p


def test_parameter_defaults_and_settings(module, logic):
    lg, p = logic
    assert isinstance(p.device, enum.Enum) and p.device.value == "auto"
    assert module.Device.label(module.Device.GPU) == "GPU (CUDA)"
    p.seed, p.stepsLowres, p.stepsSuperres, p.guidance, p.device, p.lowresOnly = 9, 5, 3, 2.5, \
        module.Device.CPU, True
    s = lg.settings(p)
    assert (s.seed, s.steps_lowres, s.steps_sr, s.guidance, s.device, s.lowres_only) == (9, 5, 3, 2.5, "cpu", True)


def test_generate_edit_airway_generate_again(module, logic, tmp_path):
    """Generate -> result is the condition segmentation -> hold the airway -> Generate again keeps it."""
    lg, p = logic
    p.reportText = "FINDINGS: Large bilateral pleural effusions."
    p.seed = 21
    events = []
    first = lg.run(p, timeout_s=60, progress=events.append)
    assert [e.data["stage"] for e in events if e.kind == "progress"] == ["text", "lowres", "superres", "write"]
    assert re.fullmatch(r"SYNTHETIC MedSyn CT \(seed 21, \d\d:\d\d\)", first.ct_node.GetName())
    assert first.ct_node.GetAttribute("MedSyn.report") == p.reportText
    assert p.conditionSegmentation is first.segmentation_node
    assert lg.conditionSelection(p).is_empty(), "nothing is held until the user asks for it"
    assert os.listdir(tmp_path / "results") == [os.path.basename(first.folder)]

    # "Edit" next to Airway: the airway becomes held; the user paints into it in the Segment Editor
    airway_id = lg.holdForEditing(p, "airway")
    assert p.airwaySegmentId == airway_id and lg.conditionSelection(p).airway == airway_id
    from MedSynSlicerLib import conditions
    edited = conditions.segment_array(first.segmentation_node, airway_id)
    edited[0:3, 0:2, 0:2] = 1
    import vtk
    lm = slicer.util.addVolumeFromArray(edited, conditions.reference_geometry_matrix_and_shape(
        first.segmentation_node)[0], "edit", "vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(airway_id)
    from MedSynSlicerLib import sceneutil
    assert sceneutil.segmentations_logic().ImportLabelmapToSegmentationNode(lm, first.segmentation_node, ids)
    sceneutil.remove_temporary_node(lm)

    p.seed = 22
    second = lg.run(p, timeout_s=60)
    argv = second.sidecar["settings"]["argv"]
    assert "--airway" in argv and "--lobes" not in argv and "--vessels" not in argv
    np.testing.assert_array_equal(conditions.segment_array(second.segmentation_node, "airway"), edited)
    assert p.conditionSegmentation is second.segmentation_node


def test_hold_lobes_exports_all_five(module, logic, tmp_path):
    lg, p = logic
    seg, *_ = make_condition_segmentation()
    p.conditionSegmentation = seg
    first_lobe = lg.holdForEditing(p, "lobes")
    assert p.holdLobes and first_lobe == "Segment_1"
    assert sorted(lg.conditionSelection(p).lobes) == [1, 2, 3, 4, 5]
    p.holdLobes = False
    assert lg.conditionSelection(p).lobes == {}


def test_segment_mode_returns_aligned_segmentation(module, logic):
    lg, p = logic
    ct = slicer.util.addVolumeFromArray(np.zeros(SHAPE, np.int16), rotated_ijk_to_ras(), "patient CT")
    p.mode, p.inputVolume, p.outputSegmentation = "segment", ct, None
    loaded = lg.run(p, timeout_s=60)
    seg = loaded.segmentation_node
    assert loaded.ct_node is None and p.outputSegmentation is seg
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is ct
    from MedSynSlicerLib import conditions
    matrix, shape = conditions.reference_geometry_matrix_and_shape(seg)
    assert shape == SHAPE
    np.testing.assert_allclose(matrix, rotated_ijk_to_ras(), atol=1e-4)
    assert seg.GetSegmentation().GetNumberOfSegments() == 7


def test_empty_report_is_refused_with_fix(logic):
    lg, p = logic
    p.reportText = "   "
    with pytest.raises(ValueError, match="Fix"):
        lg.startGenerate(p)


def test_real_cli_with_tiny_model_generate_edit_generate(module, scene, tmp_path):  # noqa: F811
    """End to end with the real `medsyn` command line and a tiny random-weight model: generate, hold the airway of
    the result, generate again; the CT overlays the conditions and the held airway comes back exactly."""
    import vtk
    from MedSynSlicerLib import conditions
    from tiny_model import build_tiny_model

    lg = module.MedSynSlicerLogic(module.MedSynSlicerParameterNode)
    p = lg.getParameterNode()
    p.outputFolder = tmp_path / "results"
    p.model = str(build_tiny_model(tmp_path / "tiny"))
    p.reportText = "FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly."
    p.seed, p.stepsLowres, p.stepsSuperres, p.device = 5, 3, 2, module.Device.CPU
    first = lg.run(p, timeout_s=300)
    assert first.ct_node.GetName().startswith("SYNTHETIC MedSyn CT (seed 5, ")
    assert first.ct_node.GetAttribute("synthetic") == "true"
    seg = first.segmentation_node.GetSegmentation()
    assert seg.GetNumberOfSegments() == 7
    airway_id = lg.holdForEditing(p, "airway")
    held = conditions.segment_array(first.segmentation_node, airway_id)
    p.seed = 6
    second = lg.run(p, timeout_s=300)
    assert second.sidecar["held_channels"] == [2]
    np.testing.assert_array_equal(conditions.segment_array(second.segmentation_node, "airway"), held)
    m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    first.ct_node.GetIJKToRASMatrix(m1)
    second.ct_node.GetIJKToRASMatrix(m2)
    assert all(abs(m1.GetElement(i, j) - m2.GetElement(i, j)) < 1e-6 for i in range(4) for j in range(4))
