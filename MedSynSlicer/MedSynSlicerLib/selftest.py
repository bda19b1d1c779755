"""The module's in-Slicer self-test: generate with the packaged demo model and load, generate again with the airway
held, segment the generated CT, edit a region of it. Needs Slicer (``slicer.app``), the packaged demo model and the
Python packages (installed on first use); the CPU is enough with the few steps used here.

:class:`SelfTestCases` holds the test bodies; ``MedSynSlicerTest`` in the module file runs them.
"""

from __future__ import annotations

import os
import pathlib
import re

import slicer

from . import conditions, dependencies
from .examples import EXAMPLE_REPORTS
from .logic import Device, MedSynSlicerLogic


class SelfTestCases:
    """Mixed into the module's ``ScriptedLoadableModuleTest`` (a ``unittest.TestCase``); ``parameterNodeClass`` is the
    module's parameter node wrapper."""

    parameterNodeClass = None

    def _logic(self):
        import tempfile

        logic = MedSynSlicerLogic(self.parameterNodeClass)
        status = dependencies.ensure(confirm=None)
        self.assertIn(status, ("ok", "restart"))
        p = logic.getParameterNode()
        p.model = "default"
        p.seed = 3
        p.stepsLowres = 4
        p.stepsSuperres = 2
        p.device = Device.AUTO
        p.lowresOnly = False
        p.outputFolder = pathlib.Path(tempfile.mkdtemp(prefix="MedSynSelfTest-", dir=slicer.app.temporaryPath))
        return logic, p

    def _generate(self, logic, p):
        stages = []

        def onEvent(event):
            if event.kind == "progress":
                stages.append(event.data["stage"])
                slicer.app.processEvents()

        loaded = logic.run(p, timeout_s=3600, progress=onEvent)
        self.assertIn("lowres", stages)
        return loaded

    def test_GenerateAndLoad(self):
        self.delayDisplay("MedSyn: generate from a report")
        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Large bilateral pleural effusions"]
        loaded = self._generate(logic, p)

        ct, seg = loaded.ct_node, loaded.segmentation_node
        self.assertRegex(ct.GetName(), r"^SYNTHETIC MedSyn CT \(seed 3, \d\d:\d\d\)$")
        self.assertEqual(ct.GetAttribute("synthetic"), "true")
        self.assertEqual(ct.GetAttribute("MedSyn.seed"), "3")
        self.assertEqual(ct.GetAttribute("MedSyn.report"), p.reportText.strip())
        self.assertTrue(ct.GetAttribute("MedSyn.modelSha256"))
        self.assertEqual(ct.GetDisplayNode().GetWindow(), 1400)
        self.assertEqual(ct.GetDisplayNode().GetLevel(), -500)
        array = slicer.util.arrayFromVolume(ct)
        self.assertEqual(array.ndim, 3)
        self.assertGreaterEqual(int(array.min()), -1024)
        self.assertLessEqual(int(array.max()), 600)
        names = sorted(seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(i)).GetName()
                       for i in range(seg.GetSegmentation().GetNumberOfSegments()))
        from MedSynLib.io.segments import SEGMENTS
        self.assertEqual(names, sorted(s.name for s in SEGMENTS))
        self.assertIs(seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()), ct)
        self.assertIs(p.conditionSegmentation, seg)
        self.assertTrue(os.path.isfile(os.path.join(loaded.folder, "medsyn.json")))

        self.delayDisplay("MedSyn: generate again with the airway held")
        logic.holdForEditing(p, "airway")
        self.assertTrue(p.airwaySegmentId)
        p.seed = 4
        p.lowresOnly = True
        again = self._generate(logic, p)
        self.assertRegex(again.ct_node.GetName(), r"^SYNTHETIC MedSyn CT \(seed 4, \d\d:\d\d\)$")
        self.assertEqual(p.airwaySegmentId, conditions.find_condition_segments(again.segmentation_node).airway,
                         "the held airway stays held, on the new result")
        self.delayDisplay("Generate test passed")

    def test_SegmentGeneratedCT(self):
        self.delayDisplay("MedSyn: segment a CT")
        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Normal chest CT"]
        p.lowresOnly = True
        ct = self._generate(logic, p).ct_node
        p.mode = "segment"
        p.inputVolume = ct
        p.outputSegmentation = None
        loaded = logic.run(p, timeout_s=3600)
        seg = loaded.segmentation_node
        self.assertIsNone(loaded.ct_node)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 7)
        self.assertIs(seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()), ct)
        self.assertIs(p.outputSegmentation, seg)
        self.delayDisplay("Segment test passed")

    def test_EditRegionOfGeneratedCT(self):
        self.delayDisplay("MedSyn: edit a region of a CT")
        import numpy as np

        logic, p = self._logic()
        p.reportText = EXAMPLE_REPORTS["Normal chest CT"]
        p.lowresOnly = True
        ct = self._generate(logic, p).ct_node
        before = slicer.util.arrayFromVolume(ct).copy()
        p.mode = "edit"
        p.editVolume = ct
        self.assertEqual(logic.whyNotReady(p), "Select the region segment to replace, or press Edit to draw it.")
        segmentation, segmentId = logic.regionForEditing(p)
        region = np.zeros(before.shape, np.uint8)
        k, j, i = before.shape
        region[k // 2 - 4:k // 2 + 4, j // 2 - 4:j // 2 + 4, i // 4 - 4:i // 4 + 4] = 1  # a box in one lung
        slicer.util.updateSegmentBinaryLabelmapFromArray(region, segmentation, segmentId, ct)
        p.editReportText = EXAMPLE_REPORTS["Large bilateral pleural effusions"]
        self.assertEqual(logic.whyNotReady(p), "")
        loaded = logic.run(p, timeout_s=3600)
        edited = loaded.ct_node
        self.assertRegex(edited.GetName(), rf"^EDITED {re.escape(ct.GetName())} \(MedSyn seed 3, \d\d:\d\d\)$")
        self.assertEqual(edited.GetAttribute("MedSyn.edited"), "true")
        self.assertEqual(edited.GetAttribute("synthetic"), "true")  # the input was synthetic
        array = slicer.util.arrayFromVolume(edited)
        self.assertTrue((array[region == 0] == before[region == 0]).all())
        self.assertFalse((array[region > 0] == before[region > 0]).all())
        self.assertTrue((slicer.util.arrayFromVolume(ct) == before).all())
        self.delayDisplay("Edit test passed")
