"""Statistics and bookkeeping of the conditioning benchmark and the demo training command."""

import json
import math

from MedSynLib.eval.conditioning import _summary, air_inside_body, finding_prompts, markdown_table, permutation_p, write_to_card
from MedSynLib.train.package import log_summary


def test_permutation_test_is_one_sided_and_exact_for_small_groups():
    assert math.isclose(permutation_p([5, 6, 7, 8], [1, 2, 3, 4]), 1 / 70)  # the one most extreme split of 8 in 4+4
    assert permutation_p([1, 2, 3, 4], [5, 6, 7, 8]) == 1.0
    assert permutation_p([10 + i for i in range(10)], list(range(10))) < 1e-3  # sampled permutations


def test_summary_skips_unmeasurable_values():
    s = _summary([1.0, float("nan"), 3.0])
    assert s["mean"] == 2.0 and s["n"] == 2 and s["unmeasurable"] == 1


def test_log_summary_adds_up_resumed_runs(tmp_path):
    log = tmp_path / "train_log.jsonl"
    entries = [(1, 0.9, 1.0), (2, 0.8, 2.0), (3, 0.5, 0.5), (4, 0.4, 1.5)]  # the clock restarts at step 3
    log.write_text("".join(json.dumps({"step": s, "loss": l, "elapsed_s": e}) + "\n" for s, l, e in entries), encoding="utf-8")
    summary = log_summary(log)
    assert summary["step"] == 4 and math.isclose(summary["wall_s"], 3.5)
    assert math.isclose(summary["mean_loss_last_10"], 0.65)


def test_finding_prompts_use_no_training_template():
    from MedSynLib.phantom.report import phrase_pool

    fixed = lambda pool: {t for templates in pool.values() for t in templates if "{" not in t}  # noqa: E731
    train_only = fixed(phrase_pool("train")) - fixed(phrase_pool("heldout"))  # "Cardiomegaly." is both
    prompts = finding_prompts()
    assert set(prompts) == {"effusion", "cardiomegaly", "emphysema"}
    with_finding = {"effusion": "effusion", "cardiomegaly": "enlarge", "emphysema": "emphysema"}
    for name, (positive, negative) in prompts.items():
        assert positive != negative and with_finding[name] in positive.lower()
        for text in (positive, negative):
            assert not [t for t in train_only if t in text], text


def _result(lowres_only=True):
    s = lambda *v: _summary(list(v))  # noqa: E731
    tables = {name: {"with_finding": s(a, a + 2), "without": s(b, b + 2), "ratio": a / b, "p_one_sided": 0.01}
              for name, a, b in (("effusion", 600.0, 60.0), ("cardiomegaly", 0.6, 0.45), ("emphysema", 20.0, 2.0))}
    return {"model": "m", "lowres_only": lowres_only, "seeds": [0, 1], "prompt_set": "heldout",
            "tables_II_IV": tables,
            "table_V": {"anatomy_conditioned_lung_dice": s(0.9, float("nan")), "segmentation_lobe_dice": s(0.8, 0.82),
                        "segmentation_lobe_dice_with_report": s(0.81, 0.83), "segmentation_airway_dice": s(0.5, 0.6)}}


def test_benchmark_table_goes_into_the_model_card(tmp_path):
    table = markdown_table(_result())
    assert "| II effusion volume (mL, from the CT) | 601 ± 1 | 61 ± 1 | 10.00 | 0.0100 |" in table
    assert "0.90 ± 0.00 (1 of 2 unmeasurable)" in table and "airway Dice | 0.55 ± 0.07 |" in table
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model\n\nAbout.\n\n## Data\nPhantoms.\n", encoding="utf-8")
    write_to_card(tmp_path, _result())
    write_to_card(tmp_path, _result(lowres_only=False))
    write_to_card(tmp_path, _result())  # a second low-res run replaces its own section, in place
    text = card.read_text(encoding="utf-8")
    assert text.startswith("# Model\n\nAbout.\n\n## Data\nPhantoms.\n\n## Conditioning benchmark, Tables II-V: 64³")
    assert text.count("## Conditioning benchmark, Tables II-V: 64³ low-res, heldout prompts") == 1
    assert text.index("Tables II-V: 64³") < text.index("Tables II-V: 256³") and text.endswith(".json`.\n")
    assert text.count("## Cond") == 2
    assert json.loads((tmp_path / "eval_lowres_heldout_tablesII-V_2seeds.json").read_text(encoding="utf-8"))["model"] == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "MODEL_CARD.md", "eval_full_heldout_tablesII-V_2seeds.json", "eval_lowres_heldout_tablesII-V_2seeds.json"]
    only_v = {k: v for k, v in _result().items() if k != "tables_II_IV"}
    assert "| table |" not in markdown_table(only_v) and "Table V:" in markdown_table(only_v)


def test_lung_region_of_a_ct_is_the_air_inside_the_body():
    from MedSynLib.phantom import Grid, make_phantom, measure

    ph = make_phantom(seed=900000, grid=Grid.cube(64, 4.0))
    lungs = air_inside_body(ph.ct)
    assert measure.dice(lungs, ph.lobes > 0) > 0.93  # the phantom's own CT against its lobes
    assert not lungs[:, 0].any() and not lungs[:, :, 0].any()  # the air outside the body is not lung
    leaky = ph.ct.copy()
    leaky[-1] = -1000  # the top slice all air: the trachea now meets the outside air there
    assert measure.dice(air_inside_body(leaky)[:-1], lungs[:-1]) == 1.0
