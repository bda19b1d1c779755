"""Statistics and bookkeeping of the conditioning benchmark and the demo training command."""

import json
import math

from MedSynLib.eval.conditioning import _summary, heldout_prompts, permutation_p
from MedSynLib.train.demo import log_summary


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
    log.write_text("".join(json.dumps({"step": s, "loss": l, "elapsed_s": e}) + "\n" for s, l, e in entries))
    summary = log_summary(log)
    assert summary["step"] == 4 and math.isclose(summary["wall_s"], 3.5)
    assert math.isclose(summary["mean_loss_last_10"], 0.65)


def test_heldout_prompts_use_no_training_template():
    from MedSynLib.phantom.report import phrase_pool

    fixed = lambda pool: {t for templates in pool.values() for t in templates if "{" not in t}  # noqa: E731
    train_only = fixed(phrase_pool("train")) - fixed(phrase_pool("heldout"))  # "Cardiomegaly." is both
    prompts = heldout_prompts()
    assert set(prompts) == {"effusion", "cardiomegaly", "emphysema"}
    with_finding = {"effusion": "effusion", "cardiomegaly": "enlarge", "emphysema": "emphysema"}
    for name, (positive, negative) in prompts.items():
        assert positive != negative and with_finding[name] in positive.lower()
        for text in (positive, negative):
            assert not [t for t in train_only if t in text], text
