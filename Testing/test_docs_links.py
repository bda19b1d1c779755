"""Every relative link in README.md, CHANGELOG.md and docs/*.md points to a file that exists and, with `#anchor`, to a
heading of that file (GitHub's anchor rules), so a page or section that moves breaks the test, not the reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of a page outside its fenced code blocks."""
    lines, inside = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append((number, line))
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered -1, -2, …"""
    seen: dict[str, int] = {}
    for _, line in prose(page):
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def links() -> list[tuple[str, Path, str, str]]:
    found = []
    for page in PAGES:
        if not page.exists():
            continue
        for number, line in prose(page):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
                    continue
                path, _, anchor = target.partition("#")
                found.append((f"{page.relative_to(REPO)}:{number}", page, path, anchor))
    return found


@pytest.mark.parametrize("source, page, path, anchor", links(), ids=[f"{s} {p}#{a}" for s, _, p, a in links()])
def test_relative_links_point_to_a_file_and_heading(source, page, path, anchor):
    target = (page.parent / path).resolve() if path else page
    assert target.exists(), f"{source}: {path} does not exist"
    if anchor and target.suffix == ".md":
        assert anchor in anchors(target), f"{source}: no heading #{anchor} in {target.relative_to(REPO)}"


def test_every_test_file_is_in_the_development_pages_table():
    """docs/development.md's "What is where" names every Testing/test_*.py (test_train_*.py and test_slicer_*.py
    as groups), so a new test file gets its line there."""
    page = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_[\w*]+\.py)`", page))
    missing = [path.name for path in sorted((REPO / "Testing").glob("test_*.py"))
               if path.name not in named and not any(Path(path.name).match(group) for group in named if "*" in group)]
    assert not missing, f"docs/development.md does not say what these test: {missing}"
