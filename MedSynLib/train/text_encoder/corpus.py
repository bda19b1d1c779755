"""The report corpus: FINDINGS / IMPRESSION sections, where reports come from, and the held-out split."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ...data.manifest import read_report_rows
from ...io.text import read_text
from .config import TextTrainConfig, draw_generator

log = logging.getLogger(__name__)


class ReportFormatError(ValueError):
    """A report lacks its FINDINGS or IMPRESSION section."""


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    text: str
    findings: str
    impression: str
    group: str = ""  # reports of one case (paraphrases) share a group: held out together; "" = its own

    @property
    def case(self) -> str:
        """The case the report belongs to: its group, else the report itself."""
        return self.group or self.name


_HEADER = re.compile(r"\b(FINDINGS|IMPRESSIONS?)\s*:", re.IGNORECASE)


def split_sections(text: str, name: str = "report") -> tuple[str, str]:
    """(findings, impression) of a report with "FINDINGS:" and "IMPRESSION:" headers (any case, any order);
    the text before the first header (e.g. a clinical header line) is dropped. Raises ReportFormatError."""
    sections: dict[str, list[str]] = {"findings": [], "impression": []}
    marks = list(_HEADER.finditer(text))
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        key = "findings" if mark.group(1).lower() == "findings" else "impression"
        sections[key].append(" ".join(text[mark.end():end].split()))
    missing = [key.upper() for key, parts in sections.items() if not parts]
    if missing:
        raise ReportFormatError(f"{name}: no {' or '.join(m + ':' for m in missing)} section "
                                "(a training report needs both 'FINDINGS:' and 'IMPRESSION:')")
    findings, impression = (" ".join(p for p in sections[k] if p) for k in ("findings", "impression"))
    empty = [key.upper() for key, value in (("findings", findings), ("impression", impression)) if not value]
    if empty:
        raise ReportFormatError(f"{name}: empty {' and '.join(empty)} section")
    return findings, impression


def load_corpus(source: str | Path | Sequence[str], skip_bad: bool = False) -> tuple[list[Report], list[str]]:
    """Reports from a list of strings, a manifest CSV (``report`` path relative to it, or ``report_text``; read by
    :func:`MedSynLib.data.manifest.read_report_rows`) or a folder of ``*.txt`` (searched recursively, sorted).
    Returns (reports, skipped: one message per bad report)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise FileNotFoundError(f"no *.txt report in {path}")
            items = [(str(f), read_text(f, "report file"), "") for f in files]
        elif path.is_file() and path.suffix.lower() == ".csv":
            # a case's several reports (paraphrases) share the row as their group
            items = [(source_name, text, row.name) for row in read_report_rows(path)
                     for source_name, text in zip(row.sources, row.reports)]
        elif path.exists():
            raise ValueError(f"{path}: give a manifest .csv or a folder of .txt reports")
        else:
            raise FileNotFoundError(f"reports not found: {path}")
    else:
        items = [(f"report {i}", text, "") for i, text in enumerate(source)]
    reports, skipped = [], []
    for name, text, group in items:
        try:
            reports.append(Report(name, text, *split_sections(text, name), group=group))
        except ReportFormatError as err:
            if not skip_bad:
                raise ReportFormatError(f"{err} (pass --skip-bad / skip_bad=True to skip such reports)") from None
            log.warning("skipping %s", err)
            skipped.append(str(err))
    if len(reports) < 2:
        raise ValueError(f"need at least 2 usable reports to train on, found {len(reports)}")
    return reports, skipped


def corpus_digest(reports: Sequence[Report]) -> str:
    h = hashlib.sha256()
    for r in reports:
        h.update(r.findings.encode() + b"\0" + r.impression.encode() + b"\1")
    return h.hexdigest()


def heldout_split(corpus: Sequence[Report], cfg: TextTrainConfig) -> tuple[list[int], list[int]]:
    """(train rows, held-out rows): a seeded ``cfg.heldout`` fraction of the cases (a case's paraphrases stay on
    one side, so held-out accuracy is measured on findings never trained on)."""
    groups = list(dict.fromkeys(r.case for r in corpus))
    n = len(groups)
    order = torch.randperm(n, generator=draw_generator(cfg.seed, "split")).tolist()
    held = 0 if cfg.heldout <= 0 or n < 4 else max(1, round(cfg.heldout * n))
    held_groups = {groups[i] for i in order[:min(held, n - 2)]}
    rows = [r.case in held_groups for r in corpus]
    return [i for i, h in enumerate(rows) if not h], [i for i, h in enumerate(rows) if h]
