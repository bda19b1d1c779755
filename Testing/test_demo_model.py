"""The packaged demo model loads from the registry default and generates (a short low-res run)."""

import json

import numpy as np

from MedSynLib.modelstore.bundle import load_model
from MedSynLib.modelstore.registry import resolve_model
from MedSynLib.pipelines import generate
from MedSynLib.run_settings import RunSettings


def test_packaged_demo_model_is_the_default_and_generates():
    folder = resolve_model(None)
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert spec["name"] == "medsyn-demo" and spec["synthetic_training_data"] is True
    assert "NOT a clinical model" in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    model = load_model(folder, "cpu", load_superres=False)
    result = generate("FINDINGS: Lungs are clear. IMPRESSION: Normal chest CT.", model,
                      settings=RunSettings(seed=0, steps_lowres=2, lowres_only=True))
    assert result.ct_hu.shape == (64, 64, 64) and result.ct_hu.dtype == np.int16
    assert result.ct_hu.min() < -800 and result.ct_hu.max() > 0  # air and soft tissue, not noise around 0
    assert set(np.unique(result.lobes)) <= set(range(6)) and result.lobes.any()
