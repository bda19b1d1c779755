"""What the project tells a user agrees with what was measured.

- The panel's example reports, and the README's quick-start report, ask only for findings the packaged demo model's
  card says it renders: the tables of its conditioning benchmark (the JSON beside the card) with the finding
  rendered significantly more than without it.
- The demo's title is the same in the registry (`medsyn models list`) and in its model.json (every medsyn.json).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "Resources" / "Models" / "medsyn-demo"
CARD_TABLES = DEMO / "eval_lowres_heldout_tablesII-V_8seeds.json"
"""The demo card's conditioning benchmark on held-out report wordings (Tables II-IV: effusion, cardiomegaly,
emphysema)."""

FINDING_WORDS = {
    "effusion": r"pleural effusion",
    "cardiomegaly": r"cardiomegaly|heart is (?:\w+ )?enlarged|enlarged heart|cardiothoracic ratio above",
    "emphysema": r"emphysema|bulla",
    "consolidation": r"consolidation",
    "nodule": r"nodule|mass\b",
    "ground-glass": r"ground-glass",
}
"""What a report says to ask for a finding (the benchmark has no table for the last three: not shown rendered)."""


def rendered_findings() -> set[str]:
    tables = json.loads(CARD_TABLES.read_text(encoding="utf-8"))["tables_II_IV"]
    return {name for name, t in tables.items() if t["p_one_sided"] < 0.05 and t["ratio"] > 1}


def findings_asked(report: str) -> set[str]:
    """The findings a report asks for: named in a sentence before any 'no' / 'without' (which negates the rest)."""
    asked = set()
    for sentence in re.split(r"(?<=\.)\s+|\n", report):
        positive = re.split(r"\b(?:no|without)\b", sentence.split(":", 1)[-1], maxsplit=1, flags=re.I)[0]
        asked |= {name for name, words in FINDING_WORDS.items() if re.search(words, positive, re.I)}
    return asked


def test_the_reading_of_reports_is_right():
    assert findings_asked("FINDINGS: The heart is enlarged. No pleural effusion.") == {"cardiomegaly"}
    assert findings_asked("The lungs are clear without focal consolidation, nodule or mass.") == set()
    assert findings_asked("IMPRESSION: 1. Cardiomegaly. 2. Large right pleural effusion.") == {"cardiomegaly",
                                                                                              "effusion"}


def test_the_demo_card_says_it_renders_effusions_only():
    assert rendered_findings() == {"effusion"}


def test_example_reports_ask_only_for_what_the_packaged_model_renders():
    sys.path.insert(0, str(REPO / "MedSynSlicer"))
    try:
        from MedSynSlicerLib.examples import DEFAULT_REPORT, EXAMPLE_FINDINGS, EXAMPLE_REPORTS
    finally:
        sys.path.remove(str(REPO / "MedSynSlicer"))
    assert list(EXAMPLE_FINDINGS) == list(EXAMPLE_REPORTS) and DEFAULT_REPORT in EXAMPLE_REPORTS.values()
    for title, report in EXAMPLE_REPORTS.items():
        assert findings_asked(report) == EXAMPLE_FINDINGS[title], title
        assert EXAMPLE_FINDINGS[title] <= rendered_findings(), f"{title!r} asks for what the demo does not render"


def test_the_quick_start_asks_for_what_the_demo_renders():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if "medsyn generate --report" in line)
    words = shlex.split(command[command.index("medsyn generate"):])
    report = words[words.index("--report") + 1]
    assert findings_asked(report) and findings_asked(report) <= rendered_findings(), report


def test_the_demo_title_is_the_same_in_the_registry_and_its_model_json():
    from MedSynLib.modelstore.registry import list_models

    entry = next(e for e in list_models() if e["name"] == "medsyn-demo")
    spec = json.loads((Path(entry["path"]) / "model.json").read_text(encoding="utf-8"))
    assert entry["title"] == spec["title"]
