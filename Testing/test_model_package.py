"""Your own weights as a model: train-text, train-lowres and train-sr (a few steps on small cases), then
`medsyn models package --install`, `medsyn models list` and `medsyn generate --model NAME` with it."""

from __future__ import annotations

import json

import pytest

import MedSynLib
from MedSynLib.cli import main
from MedSynLib.eval.conditioning import write_to_card
from MedSynLib.modelstore.store import sha256_file

from test_eval import _result
from train_cases import write_cases

GRID = {"size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0], "origin": [-62.0] * 3,
        "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}
UNET = {"dim": 8, "dim_mults": [1, 2], "attn_heads": 1, "mid_depth": 1}
REPORT = "FINDINGS: Large bilateral pleural effusions. IMPRESSION: Bilateral effusions."


def _settings(**values) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three training runs, a few steps each (the outputs `medsyn models package` takes)."""
    root = tmp_path_factory.mktemp("own")
    manifest = write_cases(root / "cases", n=3)
    assert main(["train-text", "--reports", str(manifest), "--out", str(root / "text"), "--steps", "3",
                 "--hidden", "16", "--layers", "1", "--heads", "2", "--vocab-size", "80", "--batch-size", "4",
                 "--max-length", "64"]) == 0
    common = dict(manifest=str(manifest), grid=GRID, steps=2, batch_size=1, cache=str(root / "cache"),
                  checkpoint_every=100, log_every=100)
    assert main(["train-lowres", *_settings(out=str(root / "lowres"), text_encoder=str(root / "text" / "text_encoder"),
                                            unet={**UNET, "text_dim": 16}, **common)]) == 0
    assert main(["train-sr", *_settings(out=str(root / "superres"), unet=UNET, crop=[16, 16, 16], **common)]) == 0
    return root


def test_trained_runs_become_an_installed_model_that_generates(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSYN_HOME", str(tmp_path / "home"))
    parts = ["--text-encoder", str(runs / "text"), "--lowres", str(runs / "lowres"), "--superres",
             str(runs / "superres")]
    options = ["--name", "my-own", "--install", "--license", "Apache-2.0", "--title", "my tiny model",
               "--steps-lowres", "2", "--steps-sr", "1", "--guidance", "1.5"]
    # neither the data nor all sampler defaults are known: refused, naming what to give
    assert main(["models", "package", *parts, *options]) == 2
    assert "sampler defaults are not given (--sampler)" in capsys.readouterr().err
    assert main(["models", "package", *parts, *options, "--official-sampler-defaults"]) == 2
    assert "\nfix: pass --training-data TEXT" in capsys.readouterr().err
    assert not (tmp_path / "home" / "models" / "my-own").exists()
    assert main(["models", "package", *parts, *options, "--sampler", "ddim", "--dataset", "ellipsoids",
                 "--training-data", "3 ellipsoid test cases (Testing/train_cases.py); no patient data.",
                 "--statement", "A test model: its outputs are SYNTHETIC."]) == 0
    assert "sampler defaults: steps_lowres 2, steps_sr 1, guidance 1.5, sampler ddim; statement: A test" in (
        capsys.readouterr().out)
    folder = tmp_path / "home" / "models" / "my-own"
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert spec["name"] == "my-own" and spec["grid"] == GRID and spec["space"] == {"kind": "grid"}
    assert spec["defaults"] == {"steps_lowres": 2, "steps_sr": 1, "guidance": 1.5, "sampler": "ddim"}
    assert spec["statement"] == "A test model: its outputs are SYNTHETIC." and not spec.get("synthetic_training_data")
    loaded = {p.relative_to(folder).as_posix() for part in ("text_encoder", "lowres", "superres")
              for p in (folder / part).iterdir()}
    assert set(spec["files"]) == loaded  # every file the model loads, with its hash
    assert all(sha256_file(folder / name) == digest for name, digest in spec["files"].items())
    stage = json.loads((folder / "lowres" / "config.json").read_text(encoding="utf-8"))
    assert stage["provenance"]["weights"] == "EMA" and stage["provenance"]["trained_steps"] == 2

    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: medsyn\n")
    for section in ("## Uses", "### Out-of-scope use", "## How to get started", "## Training data",
                    "## Training procedure", "## Evaluation", "## Limitations", "## Citation"):
        assert section in card, section
    assert "| low-res | 2 |" in card and "| super-resolution | 2 |" in card and "| text encoder | 3 |" in card
    assert 'MedSynLib.load_model("my-own", "cpu")' in card and "${" not in card
    assert "## Training data\n3 ellipsoid test cases" in card and "datasets:\n- ellipsoids\n" in card

    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["my-own"]["available"] and listed["my-own"]["path"] == str(folder)

    out = tmp_path / "result"
    assert main(["generate", "--model", "my-own", "--lowres-only", "--report", REPORT, "--out", str(out)]) == 0
    sidecar = json.loads((out / "medsyn.json").read_text(encoding="utf-8"))
    assert json.dumps(sidecar).count("my-own") >= 1
    model = MedSynLib.load_model("my-own")
    assert model.name == "my-own" and model.defaults["steps_lowres"] == 2 and model.superres is not None

    write_to_card(folder, _result())  # benchmark tables go under Evaluation, before Limitations
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.index("## Evaluation") < card.index("## Conditioning benchmark") < card.index("## Limitations")


def test_package_refuses_what_it_must_not_replace(runs, tmp_path, capsys):
    parts = ["--text-encoder", str(runs / "text" / "text_encoder"), "--lowres", str(runs / "lowres"),
             "--superres", str(runs / "superres"), "--training-data", "test cases", "--official-sampler-defaults"]
    out = tmp_path / "model"
    assert main(["models", "package", *parts, "--name", "a", "--out", str(out)]) == 0
    before = (out / "model.json").read_text(encoding="utf-8")
    assert main(["models", "package", *parts, "--name", "a", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "model.json").read_text(encoding="utf-8") == before
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep", encoding="utf-8")
    assert main(["models", "package", *parts, "--name", "a", "--out", str(user), "--overwrite"]) == 2
    assert "not a MedSyn model" in capsys.readouterr().err and sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    assert main(["models", "package", *parts, "--name", "../escape", "--out", str(tmp_path / "x")]) == 2
    assert "not a plain model name" in capsys.readouterr().err and not (tmp_path / "x").exists()
    swapped = ["--text-encoder", str(runs / "text"), "--lowres", str(runs / "superres"), "--superres",
               str(runs / "lowres"), *parts[6:]]
    assert main(["models", "package", *swapped, "--name", "a", "--out", str(tmp_path / "y")]) == 2
    assert "not the lowres stage" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_the_demo_command_packages_through_the_same_code(runs, tmp_path):
    from safetensors import safe_open

    from MedSynLib.train.demo import STATEMENT, package_model

    folder = package_model(tmp_path / "demo", runs, dict(lowres_cases=3, sr_cases=3, seed=7, report_variants=1,
                                                          lowres_steps=2))
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert spec["name"] == "medsyn-demo" and spec["statement"] == STATEMENT and spec["synthetic_training_data"]
    assert spec["defaults"] == {"steps_lowres": 12, "steps_sr": 2, "guidance": 2.0, "sampler": "dpmpp2m"}
    with safe_open(str(folder / "lowres" / "model.safetensors"), framework="pt") as f:
        assert all(str(f.get_slice(k).get_dtype()) == "F16" for k in f.keys())  # EMA weights stored as float16
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Procedural chest CT phantoms" in card and "3 cases at 64³" in card and "master seed 7" in card
    assert "python -m MedSynLib.train.demo --work runs/demo" in card and "${" not in card
    assert card.index("## Training data") < card.index("## Training procedure") < card.index("## Limitations")
    assert "lr_extended_from" not in card and "pooled_text" not in card  # history lives in docs/experiments.md


def test_the_parser_offers_every_storage_dtype_packaging_knows():
    """`models package --dtype` is parsed without torch, so its choices are spelled twice; they must agree."""
    from MedSynLib.train.cli import STORAGE_DTYPES
    from MedSynLib.train.package import DTYPES

    assert sorted(STORAGE_DTYPES) == sorted(DTYPES)


def test_a_manifest_of_synthetic_cases_is_what_the_card_and_statement_say(tmp_path):
    from MedSynLib.phantom.dataset import MANIFEST_COLUMNS
    from MedSynLib.train.package import manifest_facts

    manifest = tmp_path / "manifest.csv"
    rows = [",".join("1" if c == "synthetic" else f"case{i}" for c in MANIFEST_COLUMNS) for i in range(3)]
    manifest.write_text(",".join(MANIFEST_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert manifest_facts({"manifest": str(manifest)}) == {"manifest": str(manifest), "cases": 3, "synthetic": True}
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(",1\n", ",0\n", 1), encoding="utf-8")
    assert manifest_facts({"manifest": str(manifest)})["synthetic"] is False  # one real case: not synthetic
    assert manifest_facts({"manifest": str(tmp_path / "moved.csv")}) == {} == manifest_facts({})
