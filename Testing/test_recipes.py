"""Shipped training recipes: each loads, the official ones build the paper's networks (on the meta device, no
memory), and each starts training for a step with its architecture shrunk to a tiny one."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from MedSynLib.cli import main
from MedSynLib.models.unet import OFFICIAL_LOWRES, OFFICIAL_SUPERRES, UNetConfig, build_unet
from MedSynLib.recipes import RECIPES, read_config, recipe_names
from MedSynLib.train import demo
from MedSynLib.train.diffusion import TrainConfig
from MedSynLib.train.text_encoder import TextTrainConfig, train_text_encoder

from test_train_diffusion import GRID
from test_train_text import synthetic_reports
from tiny_model import build_tiny_model
from train_cases import write_cases

DIFFUSION = ("demo-lowres", "demo-sr", "official-lowres", "official-sr")
TEXT = ("demo-text", "official-text")
TINY_UNET = {"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "mid_depth": 1, "patch": 1, "init_kernel_size": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks train several times faster on one thread of the shared machine than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_recipe_loads_and_validates(tmp_path):
    assert recipe_names() == sorted(DIFFUSION + TEXT)
    for name in DIFFUSION:
        config = TrainConfig.from_dict({**read_config(f"recipe:{name}"), "manifest": "m.csv", "out": "o",
                                        "text_encoder": "t"})
        config.validate()
        UNetConfig.from_dict({**config.unet, "kind": config.stage})
    for name in TEXT:
        TextTrainConfig.from_dict(read_config(f"recipe:{name}")).validate()
    with pytest.raises(ValueError, match="unknown recipe 'nope'; shipped recipes: demo-lowres"):
        read_config("recipe:nope")
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        read_config(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_config(tmp_path / "missing.json")


def test_the_demo_command_trains_its_recipes():
    """train.demo reads its networks, optimisation and default budgets from the demo-* recipes (one copy)."""
    text, low, sr = (read_config(f"recipe:demo-{s}") for s in ("text", "lowres", "sr"))
    budget = demo.DemoBudget()
    assert (budget.text_steps, budget.lowres_steps, budget.sr_steps, budget.seed) == (6000, 17000, 9000, 2024)
    assert demo.LOWRES_UNET is RECIPES["demo-lowres"]["unet"] and low["unet"] == demo.LOWRES_UNET
    source = Path(demo.__file__).read_text(encoding="utf-8")
    for number in ("17000", "9000", "6000", "2024", "0.995", "2e-4", "2e-3"):  # no second copy of a recipe number
        assert number not in source, number


def test_official_recipes_build_the_papers_networks_on_the_meta_device():
    for name, official in (("official-lowres", OFFICIAL_LOWRES), ("official-sr", OFFICIAL_SUPERRES)):
        recipe = read_config(f"recipe:{name}")
        config = UNetConfig.from_dict({**recipe["unet"], "kind": recipe["stage"]})
        assert config == official, name
        with torch.device("meta"):
            net = build_unet(config)
        assert sum(p.numel() for p in net.parameters()) > 1e7  # built without allocating memory
    text = TextTrainConfig.from_dict(read_config("recipe:official-text"))
    with torch.device("meta"):
        from transformers import BertModel

        bert = BertModel(BertConfig(vocab_size=text.vocab_size, hidden_size=text.hidden,
                                    num_hidden_layers=text.layers, num_attention_heads=text.heads,
                                    intermediate_size=text.intermediate, max_position_embeddings=text.max_positions))
    assert 105e6 < sum(p.numel() for p in bert.parameters()) < 115e6  # BERT-base with 2,048 positions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    return write_cases(root / "cases", n=2), build_tiny_model(root / "model") / "text_encoder"


@pytest.mark.parametrize("name", DIFFUSION)
def test_diffusion_recipes_start_training(name, data, tmp_path, capsys):
    """One step of the recipe's training settings (accumulation, EMA, learning rate) on a tiny network, in fp32
    (fp16 autocast is many times slower on the CPU; the fp16 path is tested in test_train_diffusion)."""
    manifest, text_encoder = data
    stage = read_config(f"recipe:{name}")["stage"]
    unet = {**TINY_UNET, "text_dim": 16} if stage == "lowres" else TINY_UNET
    command = "train-lowres" if stage == "lowres" else "train-sr"
    overrides = {"manifest": str(manifest), "out": str(tmp_path / "run"), "text_encoder": str(text_encoder),
                 "grid": GRID, "unet": unet, "steps": 1, "preview_every": 0, "crop": [16, 16, 16], "precision": "fp32"}
    code = main([command, "--config", f"recipe:{name}",
                 *(a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}"))])
    assert code == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["step"] == 1 and done["last_loss"] > 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text(encoding="utf-8"))
    recipe = read_config(f"recipe:{name}")
    assert all(saved[k] == v for k, v in recipe.items() if k not in overrides), "the recipe's settings are used"


@pytest.mark.parametrize("name", TEXT)
def test_text_recipes_start_training(name, tmp_path):
    tiny = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "steps": 1, "batch_size": 4,
            "eval_repeats": 1}
    metrics = train_text_encoder(synthetic_reports(20), tmp_path / "text", {**read_config(f"recipe:{name}"), **tiny})
    assert metrics["steps"] == 1 and (tmp_path / "text" / "text_encoder" / "config.json").is_file()
