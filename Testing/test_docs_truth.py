"""What the project tells a user agrees with what was measured.

- Every figure a doc quotes as ``NUMBER UNIT<!-- measured: NAME -->`` is docs/measurements.json's figure NAME (rounded
  to the digits quoted), every figure there is quoted, and the pages that give the demo's speed quote the same one.
- The panel's example reports, and the README's quick-start report, ask only for findings the packaged demo model's
  card says it renders: the tables of its conditioning benchmark (the JSON beside the card) with the finding
  rendered significantly more than without it.
- The README's count of the tests that skip without ../shared (golden fixtures, Slicer harness) is right.
- The demo's title is the same in the registry (`medsyn models list`) and in its model.json (every medsyn.json).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "Resources" / "Models" / "medsyn-demo"
CARD_TABLES = DEMO / "eval_lowres_heldout_tablesII-V_8seeds.json"
"""The demo card's conditioning benchmark on held-out report wordings (Tables II-IV: effusion, cardiomegaly,
emphysema)."""

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MEASUREMENTS = json.loads((REPO / "docs" / "measurements.json").read_text(encoding="utf-8"))["figures"]
NUMBER = r"\d[\d,]*(?:\.\d+)?"
QUOTE = re.compile(rf"(?P<low>{NUMBER})(?:\s*[–-]\s*(?P<high>{NUMBER}))?\s*(?P<unit>[A-Za-z%]+)\**"
                   r"<!-- measured: (?P<name>[\w.-]+) -->")
MARKER = re.compile(r"<!-- measured: ([\w.-]+) -->")
SPEED_PAGES = ("README.md", "docs/cli.md", "docs/slicer.md", "docs/performance.md")
"""The pages that say how long the demo takes: each quotes the same measured figure."""

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


def _quotes() -> list[tuple[str, re.Match | None, str]]:
    """(doc, the quote before a marker or None, the marker's figure name) for every marker in the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for marker in MARKER.finditer(text):
            if text[marker.start() - 1] == "`":  # the marker's syntax shown as code (docs/development.md)
                continue
            quote = QUOTE.search(text, max(0, marker.start() - 40), marker.end())
            found.append((str(doc.relative_to(REPO)), quote if quote and quote.end() == marker.end() else None,
                          marker.group(1)))
    return found


def _agrees(quoted: str, value: float) -> bool:
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return float(quoted.replace(",", "")) == round(value, digits)


def test_every_quoted_figure_is_the_measured_one():
    wrong = []
    for doc, quote, name in _quotes():
        figure = MEASUREMENTS.get(name)
        if figure is None or quote is None:
            wrong.append(f"{doc}: {name}: " + ("no such figure in docs/measurements.json" if figure is None
                                               else "no 'NUMBER UNIT' right before the marker"))
            continue
        values = figure["value"] if isinstance(figure["value"], list) else [figure["value"]] * 2
        quoted = [quote["low"], quote["high"] or quote["low"]]
        if quote["unit"] != figure["unit"] or not all(map(_agrees, quoted, values)):
            wrong.append(f"{doc}: {name} is quoted as {quote.group(0).split('<!--')[0]!r} but measured "
                         f"{figure['value']} {figure['unit']}")
    assert not wrong, "\n".join(wrong)


def test_every_measured_figure_is_quoted_and_the_speed_pages_agree():
    quoted = {(doc, name) for doc, _, name in _quotes()}
    assert set(MEASUREMENTS) <= {name for _, name in quoted}, "figures no doc quotes: remove them or quote them"
    assert all((page, "demo_run_wall") in quoted for page in SPEED_PAGES)


def test_a_figure_that_drifted_is_caught():
    text = "About 18 s<!-- measured: demo_run_wall --> and 3.6 GiB<!-- measured: demo_run_max_rss -->"
    quotes = [QUOTE.search(text, m.start() - 40 if m.start() > 40 else 0, m.end()) for m in MARKER.finditer(text)]
    assert [q["low"] for q in quotes] == ["18", "3.6"]
    assert not _agrees("18", MEASUREMENTS["demo_run_wall"]["value"]) and _agrees("17", 16.93)
    assert _agrees("3.6", MEASUREMENTS["demo_run_max_rss"]["value"]) and not _agrees("3.5", 3.59)


NEEDS_SHARED = {"golden_dir", "slicer_harness", "mrml_scene"}
"""The fixtures that skip their tests without ../shared beside the checkout (Testing/conftest.py,
Testing/test_slicer_panel.py)."""
COUNTER_PLUGIN = """
import os


def pytest_collection_finish(session):
    count = sum(1 for item in session.items if set({names}) & set(getattr(item, "fixturenames", ())))
    with open(os.environ["NEEDS_SHARED_COUNT"], "w") as f:
        f.write(str(count))
"""


def test_the_readme_says_how_many_tests_skip_without_the_shared_folder(request, tmp_path):
    said = int(re.search(r"(\d+)<!-- count: tests that skip without \.\./shared -->",
                         (REPO / "README.md").read_text(encoding="utf-8")).group(1))
    items = request.session.items
    if any(item.nodeid.startswith("Testing/test_golden.py") for item in items):  # the whole suite (CI): count here
        count = sum(1 for item in items if NEEDS_SHARED & set(getattr(item, "fixturenames", ())))
    else:  # this file alone: collect the suite in another process (about 15 s of CPU)
        (tmp_path / "count_shared.py").write_text(COUNTER_PLUGIN.format(names=sorted(NEEDS_SHARED)), encoding="utf-8")
        env = {**os.environ, "NEEDS_SHARED_COUNT": str(tmp_path / "count"),
               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "count_shared", "Testing"],
                       capture_output=True, env=env, cwd=REPO, timeout=600)
        count = int((tmp_path / "count").read_text())
    assert said == count, f"README.md says {said} tests skip without ../shared; {count} do"
