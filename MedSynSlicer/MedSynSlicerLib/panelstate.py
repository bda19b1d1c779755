"""Which of the panel's controls apply now, decided without Qt: the Widget sets what :func:`control_states` returns.

A control that cannot change the next run is disabled or hidden: every setting while a run goes (the run keeps
the settings it started with), the super-resolution steps for a low-resolution preview, the guidance for a
segmentation (it reads no report), the run button while the tab or Settings miss something (the tooltip says
what), a device that is not there.
"""

from __future__ import annotations

RUN_BUTTON = {"generate": ("Generate", "Generate a synthetic CT from the report", "Generating"),
              "segment": ("Segment", "Segment the selected CT into lobes, airway and vessels", "Segmenting"),
              "edit": ("Replace region", "Replace the region of the CT by what the model generates for the report "
                       "(a new volume marked EDITED; the CT is not changed)", "Editing")}
"""Text and tooltip of the run button, and the status while it runs, per mode (tab)."""
SETTINGS_CONTROLS = ("modelComboBox", "refreshModelsButton", "importWeightsButton", "seedSpinBox", "randomSeedButton",
                     "lowresStepsSpinBox", "superresStepsSpinBox", "guidanceSliderWidget", "deviceComboBox",
                     "lowresOnlyCheckBox", "outputFolderPathLineEdit", "removeLibraryButton")
"""The Settings section's controls (fixed while a run goes)."""
TAB_PAGES = ("generateTab", "segmentTab", "editTab")
"""The tabs' pages: their inputs are fixed while a run goes (the tab bar still switches)."""
GUIDANCE_ROW = ("settingsFormLayoutLabel5", "guidanceSliderWidget")
"""The guidance row (label and slider): hidden for segmentation."""


def control_states(p, busy: bool, cancelling: bool, why_not_ready: str, refused: bool,
                   has_messages: bool) -> dict[str, dict]:
    """Widget name -> properties to set (``enabled``, ``visible``, ``text``, ``toolTip``) for parameter node ``p``:
    ``busy``/``cancelling``: a run or import goes / is stopping; ``why_not_ready``: the logic's reason the tab
    cannot run ("" when it can); ``refused``/``has_messages``: the tab's last run was refused / left messages."""
    text, tooltip, _ = RUN_BUTTON[p.mode]
    states: dict[str, dict] = {name: {"enabled": not busy} for name in SETTINGS_CONTROLS + TAB_PAGES}
    states["superresStepsSpinBox"]["enabled"] = not busy and not p.lowresOnly
    states["superresStepsSpinBox"]["toolTip"] = (
        "Not used: 'Low-resolution preview only' stops before super-resolution" if p.lowresOnly
        else "Super-resolution sampler steps")
    for name in GUIDANCE_ROW:
        states.setdefault(name, {})["visible"] = p.mode != "segment"
    states["generateButton"] = {"text": text, "enabled": not why_not_ready and not busy,
                                "toolTip": why_not_ready or tooltip}
    states["cancelButton"] = {"enabled": busy and not cancelling}
    states["useAnywayButton"] = {"visible": refused, "enabled": refused and not busy and not why_not_ready}
    states["messagesTextEdit"] = {"visible": has_messages}
    return states
