"""The model card (``MODEL_CARD.md``) of a model folder, in the Hugging Face card convention.

The prose is the template :data:`MedSynLib.modelstore.model_card_template.MODEL_CARD`; the code fills in only names,
sizes and measured numbers (``model.json``, the stage configs and ``training.json``). A *notes* file (Markdown)
may replace or add sections of the template: a section of the notes whose title (``## Training data``) is one of
the template's replaces it, any other is added before *Citation*. Notes may use the same ``${...}`` fields.
The evaluation tables are added later by ``python -m MedSynLib.eval --card``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from string import Template

from safetensors import safe_open

from .model_card_template import MODEL_CARD

LICENSE_IDS = {"apache-2.0": "apache-2.0", "mit": "mit", "cc-by-nc 4.0": "cc-by-nc-4.0", "cc-by-nc-4.0": "cc-by-nc-4.0",
               "cc-by-4.0": "cc-by-4.0", "cc-by 4.0": "cc-by-4.0"}
"""Licence names as written in ``model.json`` -> the Hugging Face licence identifiers (else ``other``)."""


def _sections(text: str) -> list[tuple[str, str]]:
    """(title, body) per level-2 section; the text before the first one has the title ""."""
    parts = ("\n" + text).split("\n## ")
    return [("", parts[0].lstrip("\n"))] + [(p.split("\n", 1)[0].strip(), p) for p in parts[1:]]


def merge_notes(card: str, notes: str) -> str:
    """``card`` with each ``## section`` of ``notes`` in place of the card's section of that title, or added before
    the card's *Citation* section."""
    sections = _sections(card.rstrip() + "\n")
    titles = [title for title, _ in sections]
    for title, body in _sections(notes.rstrip() + "\n")[1:]:
        if title in titles:
            sections[titles.index(title)] = (title, body)
        else:
            at = titles.index("Citation") if "Citation" in titles else len(sections)
            sections.insert(at, (title, body))
            titles.insert(at, title)
    head, rest = sections[0][1], [body.rstrip() + "\n" for _, body in sections[1:]]
    return head.rstrip() + "\n\n## " + "\n## ".join(rest)


def _parameters(stage: Path) -> str:
    """Millions of stored parameters of a stage folder (from the safetensors header; nothing is loaded)."""
    config = json.loads((stage / "config.json").read_text(encoding="utf-8"))
    with safe_open(str(stage / config.get("weights", "model.safetensors")), framework="np") as f:
        n = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return f"{n / 1e6:.2f} M"


def _wall(seconds) -> str:
    return "?" if seconds is None else f"{float(seconds):,.0f} s"


def training_rows(training: dict) -> str:
    """The rows of the card's training table from ``training.json`` (measured: steps, loss, wall time)."""
    rows = []
    text = training.get("text_encoder") or {}
    if text:
        held = text.get("heldout") or {}
        loss = (f"held-out MLM accuracy {held['mlm_accuracy']:.3f}, pairing accuracy {held['pairing_accuracy']:.3f}"
                if held else "not measured")
        rows.append(f"| text encoder | {text.get('steps', '?')} | {loss} | {_wall(text.get('wall_time_s'))} |")
    for stage, label in (("lowres", "low-res"), ("superres", "super-resolution")):
        s = training.get(stage) or {}
        if s:
            loss = "?" if s.get("mean_loss_last_10") is None else f"{s['mean_loss_last_10']:.4f} (mean of last 10)"
            rows.append(f"| {label} | {s.get('step', '?')} | {loss} | {_wall(s.get('wall_s'))} |")
    return "\n".join(rows) or "| (not recorded) | | | |"


def render_model_card(folder: Path, notes: str | None = None, fields: dict | None = None) -> str:
    """The card of the model folder ``folder`` (``model.json``, stage configs, optional ``training.json``)."""
    folder = Path(folder)
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    stages = {k: json.loads((folder / spec[k] / "config.json").read_text(encoding="utf-8")) for k in ("lowres", "superres")}
    text_config = json.loads((folder / spec["text_encoder"] / "config.json").read_text(encoding="utf-8"))
    training = json.loads((folder / "training.json").read_text(encoding="utf-8")) if (folder / "training.json").is_file() else {}
    grid = spec["grid"]
    space = spec.get("space", {}).get("kind", "grid")
    values = {
        "name": spec.get("name", folder.name), "title": spec.get("title", folder.name),
        "statement": spec.get("statement", "Every output of this model is a SYNTHETIC image, not patient data."),
        "license": spec.get("license", "unknown"),
        "license_id": LICENSE_IDS.get(str(spec.get("license", "")).lower(), "other"),
        "datasets": "".join(f"\n- {d}" for d in spec.get("datasets", [])) or " []",
        "format": spec["format"], "lowres_factor": spec.get("lowres_factor", 4),
        "grid": "{} voxels of {} mm".format("x".join(map(str, grid["size"])),
                                           " x ".join(f"{s:g}" for s in grid["spacing"])),
        "space": "a patient-space box centred on the lungs" if space == "grid" else
                 "an atlas space (CTs are aligned to the atlas lung mask in the folder)",
        "defaults": ", ".join(f"{k} {v}" for k, v in spec.get("defaults", {}).items()),
        "text_layers": text_config.get("num_hidden_layers", "?"), "text_hidden": text_config.get("hidden_size", "?"),
        "text_vocab": text_config.get("vocab_size", "?"),
        "training_table": training_rows(training),
        "hardware": training.get("hardware", "not recorded"),
        **{f"{k}_unet": json.dumps({n: v for n, v in stages[k]["unet"].items()
                                    if n != "kind" and (k == "lowres" or not n.startswith("text_"))})
           for k in stages},
        **{f"{k}_parameters": _parameters(folder / spec[k]) for k in stages},
        **(fields or {}),
    }
    card = Template(MODEL_CARD).safe_substitute(values)
    if notes:
        card = merge_notes(card, Template(notes).safe_substitute(values))
    return card
