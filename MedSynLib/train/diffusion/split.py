"""Which cases train and which validate: the manifest's ``split`` column, else a hash of each case's id."""

from __future__ import annotations

import hashlib


def held_out(case_id: str, fraction: float) -> bool:
    """Whether a case is a validation case when ``fraction`` of the cases are held out: its id's sha256 falls in
    the lowest ``fraction`` of the range, so the choice does not depend on the order or number of cases."""
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def split_cases(cases: list, fraction: float) -> tuple[list, list]:
    """(training, validation) cases: the manifest's ``split`` column where it marks any case ``val``, else
    :func:`held_out` by id; errors when a split leaves no training case or no validation case."""
    marked = any(c.split == "val" for c in cases)
    val = [c for c in cases if (c.split == "val" if marked else held_out(c.case_id, fraction))]
    train = [c for c in cases if c not in val]
    if not train:
        raise ValueError("every case is held out for validation; lower val_fraction or mark fewer cases 'val'")
    if (marked or fraction > 0) and not val:
        raise ValueError(f"val_fraction {fraction} holds out none of the {len(cases)} cases; raise it, or mark "
                         "validation cases with split=val in the manifest")
    return train, val
