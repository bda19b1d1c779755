"""What the panel's message area says: warnings and refusals of a run, in the panel's words.

The command line speaks in options (``--device cpu``, ``--force``, ``medsyn models import``); the panel user has
controls. :func:`in_panel_words` rewrites those phrases to the controls that do the same. A refusal is a run the
command line stopped on purpose (exit code 4: its check did not trust the input or the result) and may be
overridden: the panel then offers "Use anyway", which runs again with ``--force``.
"""

from __future__ import annotations

import dataclasses
import re

REFUSED_EXIT_CODE = 4
"""``MedSynLib.errors.EXIT_UNTRUSTED``: the command's check refused the input or the result; ``--force`` overrides."""
REFUSAL_KINDS = ("untrusted_segmentation", "scan_refused")
"""``kind`` of the JSON error events that are refusals (``--force`` overrides them)."""
USE_ANYWAY = "Use anyway"
"""The text of the button that reruns a refused run with the override."""

_PHRASES = [
    (r"[;,]?\s*--force writes it anyway", f'; press "{USE_ANYWAY}" to load it regardless'),
    (r"\s*\(written because of --force\)", f' (loaded because you pressed "{USE_ANYWAY}")'),
    (r"--force runs it anyway", f'press "{USE_ANYWAY}" to run it regardless'),
    (r"because of --force", f'because you pressed "{USE_ANYWAY}"'),
    (r"(?:`|')?medsyn models import(?:`|')?", '"Import weights..." under Settings'),
    (r"--device cpu", "Settings > Device: CPU"),
    (r"--device cuda", "Settings > Device: GPU"),
    (r"--lowres-only", 'Settings > "Low-resolution preview only"'),
    (r"--precision \w+(?: or auto)?(?:, (?:or )?)?", ""),  # the panel runs at the automatic precision
    (r"--steps-lowres", "Settings > Low-res steps"),
    (r"--steps-sr", "Settings > Super-res steps"),
    (r"--guidance", "Settings > Guidance"),
    (r"--seed", "Settings > Seed"),
    (r"--model \S+", "Settings > Model"),
]


def in_panel_words(text: str) -> str:
    """``text`` with the command line's options replaced by the panel's controls; a clause (between semicolons)
    that only repeats a control already named is left out."""
    for pattern, replacement in _PHRASES:
        text = re.sub(pattern, replacement, text)
    clauses: list[str] = []
    for clause in text.split("; "):
        control = re.sub(r"^(use|choose)\s+", "", clause.strip())
        if not clauses or control not in "; ".join(clauses):
            clauses.append(clause)
    return "; ".join(clauses)


@dataclasses.dataclass
class Message:
    """One entry of the message area: ``level`` is "warning", "refusal", "error", "fix" (what to do) or
    "figures" (what a refusing check measured)."""

    level: str
    text: str

    def line(self) -> str:
        return {"warning": "Warning: ", "refusal": "Refused: ", "error": "Failed: ", "fix": "What to do: ",
                "figures": ""}[self.level] + self.text


def is_refusal(returncode: int | None, error: dict | None) -> bool:
    """Whether a failed run was a refusal that ``--force`` overrides."""
    return returncode == REFUSED_EXIT_CODE or (error or {}).get("kind") in REFUSAL_KINDS


def split_fix(text: str) -> tuple[str, str]:
    """``"reason. Fix: what to do"`` -> (reason, what to do); the fix is "" when the text has none."""
    match = re.search(r"\s*\bFix:\s*", text)
    if not match:
        return text.strip(), ""
    return text[:match.start()].strip(), text[match.end():].strip()


def failure_messages(text: str, refused: bool) -> list[Message]:
    """The message area's entries for a failed run: the reason, then what to do, both in the panel's words."""
    reason, fix = split_fix(text)
    level = "refusal" if refused else "error"
    messages = [Message(level, in_panel_words(reason))]
    if fix:
        messages.append(Message("fix", in_panel_words(fix)))
    return messages
