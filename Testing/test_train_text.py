"""Text encoder training (MLM + Findings/Impression pairing) on a synthetic report corpus written by the test."""

import json
import os
import random

import pytest
import torch
from safetensors.torch import load_file

from MedSynLib.cli import main
from MedSynLib.models.text_encoder import ReportEncoder
from MedSynLib.train.text_encoder import (SPECIAL_TOKENS, Examples, Report, ReportFormatError, TextTrainConfig,
                                          load_corpus, load_tokenizer, mask_tokens, split_sections,
                                          train_text_encoder, train_wordpiece_vocab, write_vocab)

TINY = dict(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=300, batch_size=8, max_length=128,
            steps=24, lr=1e-3, log_every=4, checkpoint_every=1000, eval_repeats=2)


def synthetic_reports(n: int, seed: int = 0) -> list[str]:
    """Chest CT reports from a few templates; the impression restates the findings."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        side, lobe = rng.choice(["right", "left"]), rng.choice(["upper", "lower"])
        size = rng.choice(["small", "moderate", "large"])
        kinds = rng.sample(["effusion", "nodule", "emphysema", "cardiomegaly"], rng.randint(0, 2))
        findings, impression = [], []
        if "effusion" in kinds:
            findings.append(f"There is a {size} {side} pleural effusion with adjacent atelectasis.")
            impression.append(f"{size.capitalize()} {side} pleural effusion.")
        else:
            findings.append("No pleural effusion or pneumothorax.")
        if "nodule" in kinds:
            findings.append(f"A {rng.randint(4, 25)} mm solid nodule is seen in the {side} {lobe} lobe.")
            impression.append(f"{side.capitalize()} {lobe} lobe pulmonary nodule.")
        if "emphysema" in kinds:
            findings.append("Centrilobular emphysema is present in both upper lobes.")
            impression.append("Emphysema.")
        if "cardiomegaly" in kinds:
            findings.append("The heart is enlarged.")
            impression.append("Cardiomegaly.")
        else:
            findings.append("Heart size is normal.")
        header = f"CT chest, {rng.randint(30, 85)} year old.\n" if rng.random() < 0.5 else ""
        out.append(header + "FINDINGS: " + " ".join(findings) + "\nIMPRESSION: "
                   + (" ".join(impression) or "No acute cardiopulmonary abnormality.") + "\n")
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train fastest (and reproducibly) on one thread


@pytest.fixture(scope="module")
def corpus():
    return synthetic_reports(60)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("text_run")
    return out, train_text_encoder(corpus, out, TINY)


def _weights(out):
    return load_file(str(out / "text_encoder" / "model.safetensors"))


def test_training_lowers_the_loss_and_writes_a_loadable_encoder(trained):
    out, metrics = trained
    history = metrics["history"]
    assert metrics["steps"] == 24 and len(history) == 6
    assert history[-1]["loss"] < history[0]["loss"] - 0.3, history
    assert history[-1]["mlm_accuracy"] > history[0]["mlm_accuracy"]
    saved = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert saved["corpus"]["reports"] == 60 and saved["corpus"]["heldout"] == 3
    assert 0 <= saved["heldout"]["mlm_accuracy"] <= 1 and 0 <= saved["heldout"]["pairing_accuracy"] <= 1
    assert saved["wall_time_s"] > 0 and saved["config"]["lr"] == 1e-3
    folder = out / "text_encoder"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert not any(k.startswith(("cls.", "pairing")) for k in _weights(out))
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert tuple(vocab[:5]) == SPECIAL_TOKENS and len(vocab) - 1 <= 300
    encoder = ReportEncoder.from_pretrained(folder)
    features = encoder(["FINDINGS: Large right pleural effusion. IMPRESSION: Effusion.", "Heart size is normal."])
    assert features.shape == (2, 192, 32) and features.dtype == torch.float32
    assert encoder.bert.embeddings.position_embeddings.weight.shape[0] == 2048
    assert encoder.tokenizer.tokenize("pleural effusion") == ["pleural", "effusion"]


def test_same_seed_same_weights_and_resume_is_bit_exact(trained, corpus, tmp_path):
    out, _ = trained
    reference = _weights(out)
    again = tmp_path / "again"
    train_text_encoder(corpus, again, TINY)
    assert all(torch.equal(reference[k], v) for k, v in _weights(again).items())

    split = tmp_path / "split"
    stopped = train_text_encoder(corpus, split, {**TINY, "stop_at": 12})
    assert stopped == {"stopped": True, "step": 12, "total_steps": 24}
    assert (split / "checkpoint" / "state.pt").is_file() and not (split / "text_encoder").exists()
    with pytest.raises(FileExistsError, match="resume"):
        train_text_encoder(corpus, split, TINY)
    with pytest.raises(ValueError, match="batch_size"):
        train_text_encoder(corpus, split, {**TINY, "batch_size": 4}, resume=True)
    metrics = train_text_encoder(corpus, split, TINY, resume=True)
    assert metrics["steps"] == 24
    resumed = _weights(split)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_log_validation_and_tensorboard(trained, corpus, tmp_path):
    """train_log.jsonl and TensorBoard get the logged steps (loss, lr, steps/s, ETA) and the held-out loss every
    val_every steps; validation leaves the weights as they are without it; a resumed run logs each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = trained
    watched = tmp_path / "watched"
    train_text_encoder(corpus, watched, {**TINY, "val_every": 8, "stop_at": 12})
    train_text_encoder(corpus, watched, {**TINY, "val_every": 8}, resume=True)
    resumed = _weights(watched)
    assert [k for k, v in _weights(out).items() if not torch.equal(v, resumed[k])] == []
    log = [json.loads(line) for line in (watched / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["step"] for e in log] == [4, 8, 12, 16, 20, 24]
    assert all(e["lr"] > 0 and e["steps_per_s"] > 0 and e["eta_s"] >= 0 and e["loss"] > 0 for e in log)
    assert [e["step"] for e in log if "val_loss" in e] == [8, 16, 24]
    assert all(0 <= e["val_mlm_accuracy"] <= 1 and e["val_loss"] > 0 for e in log if "val_loss" in e)
    events = EventAccumulator(str(watched / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [8, 16, 24]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([e["loss"] for e in log])


def test_masking_never_touches_special_or_padding_tokens(corpus, tmp_path):
    reports = [Report(f"r{i}", t, *split_sections(t)) for i, t in enumerate(corpus)]
    write_vocab(train_wordpiece_vocab(corpus, 300), tmp_path / "vocab.txt")
    examples = Examples(reports, load_tokenizer(tmp_path), max_length=64)
    gen = torch.Generator().manual_seed(0)
    batch = examples.batch(examples.pairs(list(range(32)), gen, 0.5))
    ids, maskable = batch["input_ids"], batch["maskable"]
    special = (ids == examples.cls) | (ids == examples.sep) | (ids == examples.pad)
    assert torch.equal(maskable, ~special) and (batch["attention_mask"] == 0).any()
    counts = torch.zeros(3)
    for _ in range(50):
        inputs, labels = mask_tokens(ids, maskable, examples.mask, examples.random_ids, gen, prob=0.15)
        chosen = labels != -100
        assert not (chosen & special).any() and torch.equal(inputs[special], ids[special])
        assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
        assert not torch.isin(inputs[chosen & (inputs != examples.mask)], torch.tensor([0, 1, 2, 3, 4])).any()
        counts += torch.tensor([(inputs[chosen] == examples.mask).sum(), (inputs[chosen] != ids[chosen]).sum()
                                - (inputs[chosen] == examples.mask).sum(), chosen.sum()])
    chosen_total = counts[2]
    assert abs(chosen_total / maskable.sum() / 50 - 0.15) < 0.02
    fraction = counts[:2] / chosen_total  # [MASK] 80 %; random (≠ original) ≈ 10 % minus chance hits
    assert abs(fraction[0] - 0.8) < 0.03 and 0.07 < fraction[1] < 0.12


def test_pairs_are_swapped_half_the_time_with_segment_ids(corpus, tmp_path):
    reports = [Report(f"r{i}", t, *split_sections(t)) for i, t in enumerate(corpus)]
    write_vocab(train_wordpiece_vocab(corpus, 300), tmp_path / "vocab.txt")
    examples = Examples(reports, load_tokenizer(tmp_path), max_length=128)
    gen = torch.Generator().manual_seed(1)
    labels = []
    for _ in range(200):
        pairs = examples.pairs(random.Random(len(labels)).sample(range(60), 16), gen, 0.5)
        for f_row, i_row, label in pairs:
            assert (label == 1) == (f_row == i_row)
            if label == 0:
                assert examples.impressions[i_row] != examples.impressions[f_row]
            labels.append(label)
    assert abs(1 - sum(labels) / len(labels) - 0.5) < 0.03
    batch = examples.batch(pairs)
    row = batch["input_ids"][0].tolist()
    first_sep = row.index(examples.sep)
    types = batch["token_type_ids"][0]
    assert row[0] == examples.cls and (types[: first_sep + 1] == 0).all()
    assert (types[first_sep + 1: int(batch["attention_mask"][0].sum())] == 1).all()
    assert torch.equal(batch["pair_labels"], torch.tensor([p[2] for p in pairs]))


def test_a_cases_paraphrases_are_held_out_together_and_never_swapped_in(corpus, tmp_path):
    """A manifest row listing several reports (';') is one case: all its reports fall on one side of the held-out
    split, and a swapped impression always comes from another case."""
    from MedSynLib.train.text_encoder import heldout_split as _split

    rows = []
    for i in range(20):
        names = []
        for k in range(3):
            (tmp_path / f"c{i}_{k}.txt").write_text(corpus[i].replace("IMPRESSION:", f"IMPRESSION: Note {k}."), encoding="utf-8")
            names.append(f"c{i}_{k}.txt")
        rows.append(f"c{i},{';'.join(names)}")
    (tmp_path / "manifest.csv").write_text("case_id,report\n" + "\n".join(rows) + "\n", encoding="utf-8")
    reports, _ = load_corpus(tmp_path / "manifest.csv")
    assert len(reports) == 60 and len({r.group for r in reports}) == 20
    train, held = _split(reports, TextTrainConfig(heldout=0.2))
    assert len(held) == 12 and sorted(train + held) == list(range(60))
    assert not {reports[i].group for i in train} & {reports[i].group for i in held}

    write_vocab(train_wordpiece_vocab([r.text for r in reports], 300), tmp_path / "vocab.txt")
    examples = Examples(reports, load_tokenizer(tmp_path), max_length=128)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        for f_row, i_row, label in examples.pairs(list(range(60)), gen, 0.5):
            assert label == 1 or reports[f_row].group != reports[i_row].group


def test_sections_and_bad_reports(tmp_path):
    findings, impression = split_sections("Clinical: cough.\nfindings : Small effusion.\n\nImpression:  Effusion.")
    assert (findings, impression) == ("Small effusion.", "Effusion.")
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(synthetic_reports(4)):
        (folder / f"case{i}.txt").write_text(text, encoding="utf-8")
    (folder / "case_bad.txt").write_text("FINDINGS: The lungs are clear.\n", encoding="utf-8")
    with pytest.raises(ReportFormatError, match=r"case_bad\.txt: no IMPRESSION: section"):
        load_corpus(folder)
    reports, skipped = load_corpus(folder, skip_bad=True)
    assert len(reports) == 4 and len(skipped) == 1 and "case_bad.txt" in skipped[0]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,report,report_text\na,reports/case0.txt,\n"
                        "b,,\"FINDINGS: Clear lungs. IMPRESSION: Normal.\"\nc,,IMPRESSION: only\n")
    with pytest.raises(ReportFormatError, match=r"manifest\.csv line 4 \(c\): no FINDINGS:"):
        load_corpus(manifest)
    reports, skipped = load_corpus(manifest, skip_bad=True)
    assert [r.findings for r in reports][1] == "Clear lungs." and reports[0].name.endswith("case0.txt")
    with pytest.raises(ValueError, match="unknown text-training option"):
        TextTrainConfig.from_dict({"hiden": 64})


def test_command_line_with_a_recipe(tmp_path, capsys):
    reports = tmp_path / "reports"
    reports.mkdir()
    for i, text in enumerate(synthetic_reports(12)):
        (reports / f"r{i}.txt").write_text(text, encoding="utf-8")
    old = os.umask(0o022)
    try:
        assert main(["train-text", "--reports", str(reports), "--out", str(tmp_path / "out"), "--config",
                     "recipe:demo-text", "--steps", "2", "--hidden", "16", "--heads", "2", "--vocab-size", "200"]) == 0
    finally:
        os.umask(old)
    saved = json.loads((tmp_path / "out" / "training.json").read_text(encoding="utf-8"))
    assert saved["config"]["max_length"] == 160 and saved["config"]["seed"] == 2024 and saved["steps"] == 2
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*")}
    wrong = {n: oct(m) for n, m in modes.items() if m != (0o755 if (tmp_path / n).is_dir() else 0o644)}
    assert not wrong, wrong


def test_command_line_with_config_file(tmp_path, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(synthetic_reports(12)):
        (folder / f"case{i:02d}.txt").write_text(text, encoding="utf-8")
    (folder / "bad.txt").write_text("no sections at all", encoding="utf-8")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({**TINY, "steps": 50, "seed": 5}), encoding="utf-8")
    args = ["train-text", "--reports", str(folder), "--out", str(tmp_path / "out"), "--config", str(config)]
    assert main(args + ["--steps", "3"]) == 2
    assert "bad.txt: no FINDINGS: or IMPRESSION: section" in capsys.readouterr().err
    assert main(args + ["--steps", "3", "--skip-bad", "--layers", "1"]) == 0
    saved = json.loads((tmp_path / "out" / "training.json").read_text(encoding="utf-8"))
    assert saved["steps"] == 3 and saved["config"]["seed"] == 5 and saved["model"]["layers"] == 1
    assert len(saved["corpus"]["skipped"]) == 1 and saved["corpus"]["reports"] == 12


def test_init_from_a_bert_checkpoint(corpus, tmp_path):
    from transformers import BertConfig, BertForPreTraining

    init = tmp_path / "init"
    init.mkdir()
    vocab = train_wordpiece_vocab(corpus, 200)
    write_vocab(vocab, init / "vocab.txt")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    bert = BertForPreTraining(config)
    torch.save(bert.state_dict(), init / "pytorch_model.bin")  # bert.*, cls.predictions.*, cls.seq_relationship.*
    config.to_json_file(str(init / "config.json"))
    metrics = train_text_encoder(corpus, tmp_path / "out", {**TINY, "init": str(init), "steps": 2, "lr": None})
    assert metrics["config"]["lr"] == 1e-4 and metrics["model"]["init_mlm_head"]
    assert metrics["tokenizer"]["source"].startswith("init")
    encoder = ReportEncoder.from_pretrained(tmp_path / "out" / "text_encoder")
    table = encoder.bert.embeddings.position_embeddings.weight
    assert table.shape == (2048, 32)
    # rows never seen by 2 steps of short reports move only by AdamW's weight decay (2 · 1e-4 · 0.01)
    assert torch.allclose(table[200:512], bert.bert.embeddings.position_embeddings.weight[200:512], rtol=3e-6)
    assert encoder(["FINDINGS: x IMPRESSION: y"]).shape == (1, 192, 32)
