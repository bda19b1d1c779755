"""Radiology-style reports ("FINDINGS:" / "IMPRESSION:") consistent with a phantom's ground truth.

Wording comes from :data:`PHRASES`, a pool of templates per statement (several per finding, with synonyms).
:func:`split_phrases` holds some templates out, so an evaluation can prompt with wordings never seen in training.
Placeholders: ``{side}`` (right / left), ``{size}`` (small / moderate / large), ``{lobe}``, ``{lobes}``,
``{mm}``, ``{n}``, ``{grade}`` (mild / moderate / severe), ``{cm}``.
"""

from __future__ import annotations

import numpy as np

from MedSynLib.io.codecs import LOBE_LABELS as LOBE_NAMES

from .findings import EFFUSION_SIZES, effusion_size_word

PHRASES: dict[str, tuple[str, ...]] = {
    "header": ("{age} year old {sex}.", "{age}-year-old {sex}.", "Patient: {age} year old {sex}."),
    "airways": ("The central airways are patent.", "The trachea and main bronchi are patent.",
                "Patent central airways.", "The tracheobronchial tree is patent."),
    "effusion.neg": ("No pleural effusion.", "No pleural effusion or pneumothorax.",
                     "There is no pleural effusion.", "The pleural spaces are clear."),
    "effusion.one": ("{Size} {side} pleural effusion.", "There is a {size} {side} pleural effusion.",
                     "{Size} {side}-sided pleural effusion.",
                     "A {size} effusion is present in the {side} pleural space."),
    "effusion.bil": ("Bilateral pleural effusions, {rsize} on the right and {lsize} on the left.",
                     "There are bilateral pleural effusions ({rsize} right, {lsize} left).",
                     "{Rsize} right and {lsize} left pleural effusions."),
    "atelectasis": ("Adjacent compressive atelectasis.", "with associated passive atelectasis of the adjacent lung.",
                    "Compressive atelectasis of the dependent lung."),
    "heart.neg": ("Heart size is normal.", "Normal heart size.", "The heart is not enlarged.",
                  "The cardiac silhouette is within normal limits."),
    "heart.pos": ("Cardiomegaly.", "The heart is enlarged.", "Enlarged cardiac silhouette.",
                  "Cardiomegaly with a cardiothoracic ratio of about {ctr}."),
    "pericardium": ("No pericardial effusion.", "No pericardial effusion is seen."),
    "mediastinum": ("No mediastinal or hilar lymphadenopathy.", "No enlarged mediastinal or hilar lymph nodes.",
                    "The mediastinum is unremarkable."),
    "emph.neg": ("No emphysema.", "No emphysematous change.", "No evidence of emphysema."),
    "emph.pos": ("{Grade} centrilobular emphysema, upper lobe predominant.",
                 "{Grade} emphysema, predominantly in the upper lobes.",
                 "There is {grade} centrilobular emphysema.", "{Grade} emphysematous changes of the lungs."),
    "bullae": ("{N} apical bullae, the largest measuring {cm} cm.", "Bullous change with {n} bullae up to {cm} cm.",
               "A few subpleural bullae in the upper lobes (largest {cm} cm)."),
    "bulla1": ("A single apical bulla measuring {cm} cm.", "One subpleural bulla of {cm} cm in the upper lung."),
    "cons.neg": ("No consolidation.", "No focal consolidation.", "No airspace consolidation."),
    "cons.pos": ("Consolidation in the {lobe} with air bronchograms.",
                 "Airspace consolidation of the {lobe} with air bronchograms.",
                 "There is consolidation in the {lobe}, with air bronchograms.",
                 "Dense consolidation of the {lobe}."),
    "ggo.neg": ("No ground-glass opacity.", "No ground-glass opacities."),
    "ggo.pos": ("Patchy ground-glass opacities in the {lobes}.", "Ground-glass opacity in the {lobes}.",
                "Hazy ground-glass attenuation involving the {lobes}."),
    "nod.neg": ("No suspicious pulmonary nodule.", "No pulmonary nodules.", "No suspicious nodules or masses."),
    "nod.one": ("A {mm} mm solid nodule in the {lobe}.", "Solid pulmonary nodule in the {lobe} measuring {mm} mm.",
                "There is a {mm} mm nodule in the {lobe}."),
    "nod.many": ("{N} pulmonary nodules, the largest {mm} mm in the {lobe}.",
                 "Multiple ({n}) solid nodules, up to {mm} mm in the {lobe}.",
                 "{N} solid pulmonary nodules; the largest measures {mm} mm ({lobe})."),
    "bones": ("No acute osseous abnormality.", "The visualized bones are unremarkable.",
              "No destructive osseous lesion."),
    "imp.normal": ("No acute cardiopulmonary abnormality.", "Normal chest CT.",
                   "No acute abnormality in the chest."),
    "imp.emph": ("{Grade} emphysema.", "{Grade} emphysematous change.", "Emphysema, {grade}."),
    "imp.effusion.one": ("{Size} {side} pleural effusion.", "{Side} pleural effusion, {size}.",
                         "{Size} effusion in the {side} pleural space."),
    "imp.effusion.bil": ("Bilateral pleural effusions ({rsize} right, {lsize} left).",
                         "{Rsize} right and {lsize} left pleural effusions.",
                         "Pleural effusions on both sides, {rsize} on the right and {lsize} on the left."),
    "imp.heart.pos": ("Cardiomegaly.", "Enlarged heart.", "Cardiac enlargement."),
}
"""Template pool: statement key -> alternative wordings."""

_NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def split_phrases(holdout_fraction: float = 0.3, seed: int = 0,
                  pool: dict | None = None) -> tuple[dict, dict]:
    """(train_pool, heldout_pool): each key keeps at least one wording in train; held-out keys may be empty."""
    pool = pool or PHRASES
    rng = np.random.default_rng(seed)
    train, held = {}, {}
    for k, v in pool.items():
        order = list(rng.permutation(len(v)))
        n_h = min(len(v) - 1, int(round(holdout_fraction * len(v))))
        held[k] = tuple(v[i] for i in sorted(order[:n_h]))
        train[k] = tuple(v[i] for i in sorted(order[n_h:]))
    return train, held


WORDINGS = ("all", "train", "heldout")
"""Which templates reports use: every wording, or the two halves of :func:`split_phrases` (default split)."""


def phrase_pool(wording: str = "all") -> dict:
    """The template pool for a wording in :data:`WORDINGS`: train a model on "train" reports and prompt it with
    "heldout" ones to test wordings it never saw."""
    if wording not in WORDINGS:
        raise ValueError(f"report wording must be one of {WORDINGS}, got {wording!r}")
    return PHRASES if wording == "all" else dict(zip(("train", "heldout"), split_phrases()))[wording]


def prompt_truth(effusion: str = "none", cardiomegaly: bool = False, emphysema: str = "none",
                 age: int = 60, sex: str = "male", nodule: tuple[int, float] | None = None) -> dict:
    """A minimal ``truth`` for :func:`render_report` with only the named findings (nothing else abnormal).

    effusion: "none" or "<size> <side>" (size small/moderate/large, side right/left/bilateral);
    emphysema: "none" or a grade (mild/moderate/severe); nodule: (lobe label 1..5, diameter in mm) or None.
    """
    sides = {"right": ("right",), "left": ("left",), "bilateral": ("right", "left")}
    ml = {"right": 0.0, "left": 0.0}
    if effusion != "none":
        size, side = effusion.split()
        for s in sides[side]:
            ml[s] = float(np.mean(EFFUSION_SIZES[size]))
    findings = {"effusion_ml": ml, "ctr": 0.6 if cardiomegaly else 0.45, "bullae": 0, "consolidation": [],
                "ggo": [], "emphysema_laa": 0.0 if emphysema == "none" else 20.0,
                "nodules": [] if nodule is None else [{"lobe": int(nodule[0]), "diameter_mm": float(nodule[1])}]}
    return {"age": age, "sex": sex, "findings": findings, "effusion_ml_true": ml,
            "effusion_size": {k: effusion_size_word(v) for k, v in ml.items()}, "cardiomegaly": bool(cardiomegaly),
            "emphysema_grade": emphysema}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_report(truth: dict, seed: int = 0, pool: dict | None = None, header: bool | None = None) -> str:
    """Report text for a phantom's ``truth`` dict; ``pool`` overrides :data:`PHRASES` (e.g. a train split)."""
    pool = pool or PHRASES
    rng = np.random.default_rng(seed)

    def say(key, **kw):
        opts = pool.get(key) or PHRASES[key]
        kw.update({k[:1].upper() + k[1:]: _cap(str(v)) for k, v in list(kw.items()) if isinstance(v, str)})
        return opts[int(rng.integers(len(opts)))].format(**kw)

    f = truth["findings"]
    lines, imp = [], []
    # lungs
    lung = [say("airways")]
    laa = float(f.get("emphysema_laa", 0))
    grade = truth.get("emphysema_grade", "none")
    if laa > 0:
        lung.append(say("emph.pos", grade=grade))
        nb = int(f.get("bullae", 0))
        if nb > 0:
            cm = f"{rng.uniform(1.6, 3.6):.1f}"
            lung.append(say("bullae", n=_NUM.get(nb, str(nb)), cm=cm) if nb > 1 else say("bulla1", cm=cm))
        imp.append(say("imp.emph", grade=grade))
    elif rng.random() < 0.7:
        lung.append(say("emph.neg"))
    cons = f.get("consolidation", [])
    for c in cons:
        lung.append(say("cons.pos", lobe=LOBE_NAMES[int(c["lobe"])]))
    if cons:
        imp.append("Consolidation in the " + _join([LOBE_NAMES[int(c["lobe"])] for c in cons])
                   + ", compatible with pneumonia in the appropriate clinical setting.")
    elif rng.random() < 0.8:
        lung.append(say("cons.neg"))
    ggo = f.get("ggo", [])
    if ggo:
        lobes = _join([LOBE_NAMES[int(g["lobe"])] for g in ggo])
        lobes = lobes.replace(" lobe and ", " and ").replace(" lobe, ", ", ") if len(ggo) > 1 else lobes
        if len(ggo) > 1:
            lobes = lobes + "s" if lobes.endswith("lobe") else lobes
        lung.append(say("ggo.pos", lobes=lobes))
        imp.append("Ground-glass opacities in the " + lobes + ".")
    elif rng.random() < 0.5:
        lung.append(say("ggo.neg"))
    nods = [n for n in f.get("nodules", []) if n.get("placed", True)]
    if nods:
        big = max(nods, key=lambda n: n["diameter_mm"])
        mm, lobe = f"{big['diameter_mm']:.0f}", LOBE_NAMES[int(big["lobe"])]
        if len(nods) == 1:
            lung.append(say("nod.one", mm=mm, lobe=lobe))
            imp.append(f"{mm} mm pulmonary nodule in the {lobe}.")
        else:
            lung.append(say("nod.many", n=_NUM.get(len(nods), str(len(nods))), mm=mm, lobe=lobe))
            imp.append(f"Multiple pulmonary nodules, the largest {mm} mm.")
    else:
        lung.append(say("nod.neg"))
    # pleura
    eff = {k: float(v) for k, v in truth.get("effusion_ml_true", f.get("effusion_ml", {})).items()}
    size = truth.get("effusion_size", {})
    sides = [s for s in ("right", "left") if eff.get(s, 0) > 0]
    pleura = []
    if not sides:
        pleura.append(say("effusion.neg"))
    elif len(sides) == 1:
        s = sides[0]
        pleura.append(say("effusion.one", side=s, size=size[s]))
        imp.append(say("imp.effusion.one", side=s, size=size[s]))
    else:
        pleura.append(say("effusion.bil", rsize=size["right"], lsize=size["left"]))
        imp.append(say("imp.effusion.bil", rsize=size["right"], lsize=size["left"]))
    if sides and max(eff.values()) > 190:
        a = say("atelectasis")
        pleura[-1] = pleura[-1][:-1] + ", " + a if a.startswith("with") else pleura[-1] + " " + a
    # heart and mediastinum
    heart = []
    if truth.get("cardiomegaly"):
        heart.append(say("heart.pos", ctr=f"{float(f['ctr']):.2f}"))
        imp.insert(0, say("imp.heart.pos"))
    else:
        heart.append(say("heart.neg"))
    if rng.random() < 0.6:
        heart.append(say("pericardium"))
    heart.append(say("mediastinum"))
    bones = [say("bones")] if rng.random() < 0.7 else []
    sections = [lung, pleura, heart, bones]
    order = [0, 1, 2, 3] if rng.random() < 0.6 else [2, 0, 1, 3]
    for i in order:
        lines += sections[i]
    if not imp:
        imp.append(say("imp.normal"))
    text = ""
    if header if header is not None else rng.random() < 0.5:
        text += say("header", age=truth["age"], sex=truth["sex"]) + "\n"
    text += "FINDINGS: " + " ".join(lines) + "\n"
    text += "IMPRESSION: " + " ".join(f"{i + 1}. {s}" if len(imp) > 1 else s for i, s in enumerate(imp)) + "\n"
    return text
