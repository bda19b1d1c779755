"""The anatomy the tabs hold or replace: the Generate tab's kept lobes / airway / vessels and the Edit tab's region and
kept anatomy, chosen in the parameter node (:class:`AnatomyChoices`, a part of ``MedSynSlicerLogic``)."""

from __future__ import annotations

from typing import Optional

import slicer

from . import conditions, results
from .conditions import ConditionSelection

LOBE_FIELDS = ("leftUpperLobeSegmentId", "leftLowerLobeSegmentId", "rightUpperLobeSegmentId",
               "rightMiddleLobeSegmentId", "rightLowerLobeSegmentId")
"""Parameter names of the lobe segments, in label order 1..5 (see MedSynLib.io.segments)."""


def modifying(p):
    """One Modified event for several parameter changes."""
    return slicer.util.NodeModify(p.parameterNode)


class AnatomyChoices:
    """The Logic's methods for the anatomy a run holds (Generate) or replaces and keeps (Edit)."""

    # --- conditions -----------------------------------------------------------------------------------------------

    @staticmethod
    def conditionSelection(p) -> ConditionSelection:
        if p is None or p.conditionSegmentation is None:
            return ConditionSelection()
        segmentation = p.conditionSegmentation.GetSegmentation()

        def valid(segmentId: str) -> str:
            return segmentId if segmentId and segmentation.GetSegment(segmentId) is not None else ""

        lobes = {}
        if p.holdLobes:
            for label, field in enumerate(LOBE_FIELDS, start=1):
                if valid(getattr(p, field)):
                    lobes[label] = getattr(p, field)
        return ConditionSelection(lobes=lobes, airway=valid(p.airwaySegmentId), vessels=valid(p.vesselsSegmentId))

    def describeConditions(self, p) -> str:
        """What will be kept, in a sentence for the panel."""
        selection = self.conditionSelection(p)
        held = []
        if selection.lobes:
            held.append("lobes" if len(selection.lobes) == 5 else f"{len(selection.lobes)} of 5 lobes")
        if selection.airway:
            held.append("airway")
        if selection.vessels:
            held.append("vessels")
        if not held:
            return "No anatomy is held: the model generates all of it."
        text = "Keeping: " + ", ".join(held) + ". The model generates the rest around it."
        if p.holdLobes and len(selection.lobes) < 5:
            text += " Missing lobes are held as background."
        return text

    @staticmethod
    def heldChannels(p) -> tuple[str, ...]:
        """The channels (lobes, airway, vessels) the Generate tab holds now."""
        selection = AnatomyChoices.conditionSelection(p)
        return tuple(name for name, held in (("lobes", selection.lobes), ("airway", selection.airway),
                                             ("vessels", selection.vessels)) if held)

    @staticmethod
    def useConditionSegmentation(p, node, keep: tuple[str, ...] = ()) -> None:
        """Make ``node`` the condition segmentation. The lobe fields are pre-filled with its lobe segments (used
        once "keep the lung lobes" is ticked); the channels in ``keep`` stay held, on ``node``'s segments of them
        (a Generate's result, whose held channels are the ones it kept), the others are not (the old segment IDs
        belong to the old node)."""
        found = conditions.find_condition_segments(node) if node is not None else ConditionSelection()
        with modifying(p):
            p.conditionSegmentation = p.conditionSegmentsOf = node
            p.holdLobes = "lobes" in keep and bool(found.lobes)
            p.airwaySegmentId = found.airway if "airway" in keep else ""
            p.vesselsSegmentId = found.vessels if "vessels" in keep else ""
            for label, field in enumerate(LOBE_FIELDS, start=1):
                setattr(p, field, found.lobes.get(label, ""))

    @staticmethod
    def useInputVolume(p, node) -> None:
        """Make ``node`` the CT to segment; the output follows it: the chosen output segmentation stays only when
        it was made on ``node``, otherwise the next Segment makes a new one (another CT's result is never
        overwritten)."""
        output = p.outputSegmentation
        with modifying(p):
            p.inputVolume = node
            if output is not None and (node is None or results.reference_of(output) is not node):
                p.outputSegmentation = None

    def holdForEditing(self, p, channel: Optional[str]) -> str:
        """Mark ``channel`` as held (creating an empty segment if missing); returns the segment ID to edit."""
        segmentationNode = p.conditionSegmentation
        if segmentationNode is None:
            raise ValueError("No condition segmentation. Fix: generate once, or select a segmentation.")
        if channel is None:
            return ""
        found = conditions.find_condition_segments(segmentationNode)
        segmentation = segmentationNode.GetSegmentation()

        def ensure(info) -> str:
            segmentId = segmentation.GetSegmentIdBySegmentName(info.name)
            if not segmentId:
                segmentId = segmentation.AddEmptySegment(info.segment_id, info.name, list(info.color))
                results.style_segment(segmentation.GetSegment(segmentId), info)
            return segmentId

        with modifying(p):
            if channel == "lobes":
                p.holdLobes = True
                for info, field in zip(conditions.LOBE_SEGMENTS, LOBE_FIELDS):
                    if not getattr(p, field):
                        setattr(p, field, found.lobes.get(info.label) or ensure(info))
                return getattr(p, LOBE_FIELDS[0])
            if channel == "airway":
                p.airwaySegmentId = p.airwaySegmentId or found.airway or ensure(conditions.AIRWAY_SEGMENT)
                return p.airwaySegmentId
            if channel == "vessels":
                p.vesselsSegmentId = p.vesselsSegmentId or found.vessels or ensure(conditions.VESSELS_SEGMENT)
                return p.vesselsSegmentId
        raise ValueError(f"Unknown condition channel {channel!r}")

    @staticmethod
    def whyEditNotReady(p) -> str:
        """What the edit tab still needs ("" when ready): the CT, a non-empty region segment and the report."""
        if p.editVolume is None:
            return "Select the CT to edit."
        segmentation, segmentId = p.regionSegmentation, p.regionSegmentId
        if segmentation is None or not segmentId or segmentation.GetSegmentation().GetSegment(segmentId) is None:
            return "Select the region segment to replace, or press Edit to draw it."
        if conditions.segment_is_empty(segmentation, segmentId):
            name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
            return f"The region segment '{name}' is empty: paint it in the Segment Editor (Edit)."
        return "" if (p.editReportText or "").strip() else "Write the report of the edited scan."

    # --- the edit tab ---------------------------------------------------------------------------------------------

    @staticmethod
    def editAnatomySelection(p) -> ConditionSelection:
        """The lobe, airway and vessel segments of the anatomy segmentation (found by name or terminology) that
        are kept outside the region; empty ones are skipped."""
        node = p.editAnatomySegmentation
        if node is None:
            return ConditionSelection()
        found = conditions.find_condition_segments(node)
        filled = lambda segmentId: bool(segmentId) and not conditions.segment_is_empty(node, segmentId)  # noqa: E731
        return ConditionSelection(lobes={k: v for k, v in found.lobes.items() if filled(v)},
                                  airway=found.airway if filled(found.airway) else "",
                                  vessels=found.vessels if filled(found.vessels) else "")

    def describeEdit(self, p) -> str:
        """What an edit will replace and keep, in a sentence for the panel."""
        why = self.whyEditNotReady(p)
        if why:
            return why
        selection = conditions.find_condition_segments(p.editAnatomySegmentation)  # by name: cheap on every change
        kept = (["lobes" if len(selection.lobes) == 5 else f"{len(selection.lobes)} of 5 lobes"]
                if selection.lobes else []) + [n for n in ("airway", "vessels") if getattr(selection, n)]
        name = p.regionSegmentation.GetSegmentation().GetSegment(p.regionSegmentId).GetName()
        return (f"The model replaces '{name}' of '{p.editVolume.GetName()}' and keeps the CT"
                + (", " + ", ".join(kept) if kept else "") + " outside it. The result is a new volume marked "
                "EDITED; the original is not changed.")

    @staticmethod
    def useRegionSegmentation(p, node) -> None:
        """Make ``node`` the segmentation holding the region, with its segment "Edited region" (or its only
        segment) chosen; otherwise the user picks the segment."""
        segmentId = ""
        if node is not None:
            segmentation = node.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            segmentId = segmentation.GetSegmentIdBySegmentName(results.REGION_SEGMENT_NAME) or \
                (ids[0] if len(ids) == 1 else "")
        with modifying(p):
            p.regionSegmentation = node
            p.regionSegmentId = segmentId

    def regionForEditing(self, p) -> tuple:
        """The region segment to draw on (a new segmentation on the CT and an empty segment 'Edited region' when
        none is chosen); returns (segmentation node, segment ID)."""
        volume = p.editVolume
        if volume is None:
            raise ValueError("No CT to edit. Fix: select the CT first, then draw the region on it.")
        segmentationNode = p.regionSegmentation
        with modifying(p):
            if segmentationNode is None:
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                      f"{volume.GetName()} edit region")
                segmentationNode.CreateDefaultDisplayNodes()
                results.set_reference(segmentationNode, volume)
                p.regionSegmentation = segmentationNode
            segmentation = segmentationNode.GetSegmentation()
            if not p.regionSegmentId or segmentation.GetSegment(p.regionSegmentId) is None:
                p.regionSegmentId = segmentation.AddEmptySegment("", results.REGION_SEGMENT_NAME,
                                                                 list(results.REGION_COLOR))
        return segmentationNode, p.regionSegmentId
