"""``medsyn models list`` / ``medsyn models import`` with official-style checkpoints built from tiny networks."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from MedSynLib.cli import main
from MedSynLib.io.images import Geometry
from MedSynLib.models import LowResUNet, SuperResUNet, UNetConfig
from MedSynLib.models.text_encoder import ReportEncoder
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.official.importer import OFFICIAL_GRID
from MedSynLib.pipelines import generate
from MedSynLib.run_settings import RunSettings

from tiny_model import ATLAS_LUNGS, WORDS, ellipsoids

LIST_FIELDS = {"name", "title", "available", "license", "requires_license_acceptance", "path", "packaged"}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-style ``model/`` folder (DDP prefixes, diffusion buffers), a BERT folder and an atlas mask."""
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    nets = {"results_text_low_res_improved_unet_seg": LowResUNet(UNetConfig(kind="lowres", dim=8, dim_mults=(1, 2),
                                                                            attn_heads=1, text_dim=16, mid_depth=1)),
            "results_SR_gaussian_aug_full_volume_seg": SuperResUNet(UNetConfig(kind="superres", dim=8,
                                                                               dim_mults=(1, 2), attn_heads=1))}
    for folder, net in nets.items():
        ckpt = root / "model" / folder / "3000_ckpt"
        ckpt.mkdir(parents=True)
        state = {f"module.denoise_fn.{k}": v for k, v in net.state_dict().items()}
        state["module.betas"] = torch.linspace(0, 1, 10)
        for name in ("pytorch_model.bin", "pytorch_model_1.bin"):
            torch.save(state, ckpt / name)
    bert_dir = root / "cxr-bert"
    bert_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=512), add_pooling_layer=False)
    ReportEncoder(bert, BertTokenizer(str(bert_dir / "vocab.txt"))).save_pretrained(bert_dir)
    tuned = {"bert.embeddings.position_embeddings.weight": torch.full((2048, 16), 0.25),
             "cls.predictions.bias": torch.zeros(len(vocab))}
    (root / "model" / "pretrained_lm").mkdir()
    torch.save(tuned, root / "model" / "pretrained_lm" / "pytorch_model.bin")
    atlas = Geometry((40, 40, 37), (8.0, 8.0, 8.0), (-156.0, 156.0, -321.0), OFFICIAL_GRID.direction)
    centre = np.array([0.0, 0.0, -175.0])
    mask = ellipsoids(atlas, [centre + c for c in ATLAS_LUNGS["centres"]], ATLAS_LUNGS["radii"],
                      ATLAS_LUNGS["values"])
    sitk.WriteImage(atlas.apply(sitk.GetImageFromArray(mask)), str(root / "atlas_mask.nii.gz"))
    return root


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def run_json(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_list_json_names_every_registry_model(home, capsys):
    code, out = run_json(capsys, "models", "list", "--json")
    assert code == 0
    models = {m["name"]: m for m in json.loads(out.out)}
    assert all(LIST_FIELDS <= set(m) for m in models.values())
    official = models["medsyn-official"]
    assert official["available"] is False and official["requires_license_acceptance"] is True
    assert official["path"] == str(home / "medsyn-official")


def test_import_requires_licence_acceptance(official, home, capsys):
    code, out = run_json(capsys, "models", "import", official / "model", "--text-encoder", official / "cxr-bert")
    assert code == 2
    assert "CC-BY-NC" in out.err and "--accept-license" in out.err
    assert not home.exists() or not any(home.iterdir())
    problem, fix = out.err.strip().splitlines()  # docs/failure-modes.md: two lines, the fix on its own
    assert problem.startswith("medsyn: error: ") and fix.startswith("fix: ") and "--accept-license" in fix


def test_import_of_missing_checkpoints_says_the_fix(home, tmp_path, capsys):
    code, out = run_json(capsys, "models", "import", tmp_path / "model", "--text-encoder", tmp_path / "cxr-bert",
                         "--accept-license", "--progress", "json")
    assert code == 2
    event = json.loads(out.out.strip().splitlines()[-1])
    assert event["event"] == "error" and "not found" in event["message"] and event["fix"]
    assert out.err.strip().splitlines()[-1].startswith("fix: ")


def test_import_converts_once_and_the_model_generates_in_atlas_space(official, home, capsys):
    model_dir = official / "model"
    code, out = run_json(capsys, "models", "import", "--lowres", model_dir / "results_text_low_res_improved_unet_seg",
                         "--superres", model_dir / "results_SR_gaussian_aug_full_volume_seg" / "3000_ckpt",
                         "--text-encoder", official / "cxr-bert",
                         "--text-finetuned", model_dir / "pretrained_lm" / "pytorch_model.bin",
                         "--atlas", official / "atlas_mask.nii.gz", "--accept-license", "--progress", "json")
    assert code == 0, out.err
    assert json.loads(out.out.splitlines()[-1])["event"] == "done"
    folder = home / "medsyn-official"
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert spec["space"] == {"kind": "atlas", "atlas_mask": "atlas_lung_mask.nii.gz"}
    assert Geometry.from_dict(spec["grid"]) == OFFICIAL_GRID and spec["lowres_factor"] == 4
    assert spec["defaults"] == {"steps_lowres": 50, "steps_sr": 20, "guidance": 1.0, "sampler": "ddim"}
    assert spec["license"].startswith("CC-BY-NC") and spec["license_accepted"]
    assert sorted(p.name for p in home.iterdir()) == ["medsyn-official"]  # no temporary folder left

    code, out = run_json(capsys, "models", "list", "--json")
    entry = next(m for m in json.loads(out.out) if m["name"] == "medsyn-official")
    assert entry["available"] is True

    model = load_model(folder, load_superres=False)
    positions = model.text_encoder.bert.embeddings.position_embeddings.weight
    assert positions.shape == (2048, 16) and torch.all(positions == 0.25)  # the fine-tuned table was merged
    assert model.space == "atlas" and model.atlas_mask_file().is_file()
    result = generate("findings normal chest ct", model, settings=RunSettings(steps_lowres=1, lowres_only=True))
    assert result.lobes.shape == (64, 64, 64)
    assert result.geometry == OFFICIAL_GRID.subsampled(4)

    code, out = run_json(capsys, "models", "import", model_dir, "--text-encoder", official / "cxr-bert",
                         "--accept-license")
    assert code == 2 and "--overwrite" in out.err


def test_import_rejects_a_mask_that_is_not_the_atlas(official, home, tmp_path, capsys):
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkUInt8) + 1, str(tmp_path / "ones.nii.gz"))
    code, out = run_json(capsys, "models", "import", official / "model", "--text-encoder", official / "cxr-bert",
                         "--atlas", tmp_path / "ones.nii.gz", "--accept-license")
    assert code == 2 and "labels must be 0, 50 (right lung) and 100" in out.err
    assert not home.exists() or not any(home.iterdir())


def test_a_closed_output_ends_quietly(home, tmp_path):
    """`medsyn models list | head -1`: no 'cannot use: Broken pipe / fix: check the path and the disk'."""
    import subprocess
    import sys

    env = {**os.environ, "MEDSYN_HOME": str(home.parent)}
    process = subprocess.Popen([sys.executable, "-m", "MedSynLib", "models", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before the first line is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and stderr == ""
