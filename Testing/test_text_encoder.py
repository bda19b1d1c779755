"""Report encoder with a tiny BERT built locally (random weights, a vocabulary written by the test)."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from MedSynLib.models.text_encoder import ReportEncoder

WORDS = ("no pleural effusion large bilateral effusions the heart is enlarged lungs are clear emphysema with bullae "
         "consolidation in right lower lobe . , impression findings").split()


@pytest.fixture
def tiny_bert_dir(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(config).eval()
    torch.save(mlm.state_dict(), tmp_path / "pytorch_model.bin")  # masked-LM keys: bert.*, cls.*
    config.to_json_file(str(tmp_path / "config.json"))
    return tmp_path, mlm


def test_features_match_the_official_recipe(tiny_bert_dir):
    folder, mlm = tiny_bert_dir
    encoder = ReportEncoder.from_pretrained(folder)
    reports = ["Large bilateral pleural effusions. The heart is enlarged.", "Lungs are clear."]
    features = encoder(reports)
    assert features.shape == (2, 192, 32) and features.dtype == torch.float32
    table = encoder.bert.embeddings.position_embeddings.weight
    assert table.shape[0] == 2048 and torch.equal(table[:512], mlm.bert.embeddings.position_embeddings.weight)
    # official: pad to 2048, pass token_type_ids, take hidden_states[-1][:, :192]
    tok = BertTokenizer(str(folder / "vocab.txt"))
    enc = tok(reports[:1], padding="max_length", truncation=True, max_length=2048, return_tensors="pt")
    with torch.no_grad():
        ref = encoder.bert(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                           attention_mask=enc["attention_mask"]).last_hidden_state[:, :192]
    assert torch.allclose(features[:1], ref, atol=1e-5)
    assert features[0, 150].abs().sum() > 0  # padding positions are kept, not zeroed
    assert not torch.allclose(features[0], features[1])


def test_fine_tuned_overlay_and_round_trip(tiny_bert_dir, tmp_path):
    folder, mlm = tiny_bert_dir
    tuned = {k: v + 0.5 for k, v in mlm.state_dict().items()}
    torch.save(tuned, tmp_path / "tuned.bin")
    base = ReportEncoder.from_pretrained(folder)
    encoder = ReportEncoder.from_pretrained(folder, fine_tuned=tmp_path / "tuned.bin")
    assert not torch.allclose(base(["no pleural effusion"]), encoder(["no pleural effusion"]))
    encoder.save_pretrained(tmp_path / "saved")
    again = ReportEncoder.from_pretrained(tmp_path / "saved")
    assert torch.equal(again(["no pleural effusion"]), encoder(["no pleural effusion"]))
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="no key of"):
        ReportEncoder.from_pretrained(folder, fine_tuned=tmp_path / "bad.bin")


def test_empty_report_and_missing_files_are_named(tiny_bert_dir, tmp_path):
    folder, _ = tiny_bert_dir
    with pytest.raises(ValueError, match="report 0 is empty"):
        ReportEncoder.from_pretrained(folder)(["   "])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ReportEncoder.from_pretrained(tmp_path / "nowhere")
