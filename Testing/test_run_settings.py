"""RunSettings: one description of a run, checked once, from the command line / panel / sidecar to the sampler."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from MedSynLib.run_settings import MODEL_DEFAULTS, RunSettings, add_arguments


def _parse(argv: list[str]) -> RunSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return RunSettings.from_args(parser.parse_args(argv))


def test_command_line_and_argv_give_the_same_settings_back():
    assert _parse([]) == RunSettings()
    settings = RunSettings(seed=7, steps_lowres=3, steps_sr=2, guidance=2.5, sampler="dpmpp2m", precision="fp32",
                           device="cuda:1", lowres_only=True, max_gpu_memory_gb=6.5, sr_tiles=3)
    argv = settings.to_argv()
    assert argv[:2] == ["--seed", "7"] and "--lowres-only" in argv and argv[argv.index("--guidance") + 1] == "2.5"
    assert _parse(argv) == settings
    assert RunSettings(seed=4).to_argv() == ["--seed", "4"]  # defaults (the model's sampler settings) left out
    assert RunSettings.from_dict(settings.as_dict()) == settings


@pytest.mark.parametrize("change, named", [
    ({"guidance": -0.5}, "--guidance"), ({"seed": -1}, "--seed"), ({"steps_lowres": 1001}, "--steps-lowres"),
    ({"guidance": float("nan")}, "--guidance"), ({"steps_lowres": 0}, "--steps-lowres"),
    ({"steps_sr": 2.5}, "--steps-sr"), ({"sampler": "euler"}, "--sampler"), ({"precision": "fp8"}, "--precision"),
    ({"device": "gpu"}, "--device"), ({"max_gpu_memory_gb": 0}, "--max-gpu-memory"), ({"sr_tiles": 0}, "--sr-tiles"),
    ({"seed": "1"}, "--seed"), ({"lowres_only": 1}, "--lowres-only")])
def test_each_setting_is_checked_when_made(change, named):
    with pytest.raises(ValueError, match=named) as raised:
        RunSettings(**change)
    assert "Fix:" in str(raised.value)
    with pytest.raises(ValueError, match=named):
        RunSettings().replace(**change)


def test_the_command_line_refuses_what_the_settings_refuse(capsys):
    """The parser's types (MedSynLib.arguments) refuse at parse time, with the usage line, what validate refuses."""
    for argv in (["--guidance", "-1"], ["--sr-tiles", "0"], ["--seed", "-1"], ["--device", "gpu"], ["--steps-sr", "0"]):
        with pytest.raises(SystemExit):
            _parse(argv)
        name = argv[0][2:].replace("-", "_")
        value = {"guidance": -1.0, "sr_tiles": 0, "seed": -1, "device": "gpu", "steps_sr": 0}[name]
        with pytest.raises(ValueError, match=argv[0]):
            RunSettings(**{name: value})


def test_unset_sampler_settings_take_the_model_defaults():
    class Model:
        defaults = {"steps_lowres": 12, "steps_sr": 2, "guidance": 2.0, "sampler": "dpmpp2m"}

    resolved = RunSettings(seed=3, steps_sr=5).resolved(Model())
    assert resolved.sampling() == {"steps_lowres": 12, "steps_sr": 5, "guidance": 2.0, "sampler": "dpmpp2m"}
    assert resolved.seed == 3
    assert RunSettings().resolved({}).sampling() == MODEL_DEFAULTS  # a model.json without defaults
    with pytest.raises(ValueError, match="unknown run settings"):
        RunSettings.from_dict({"seeds": 1})


def test_one_default_per_setting():
    """The parser leaves every option None, so the dataclass's default is the only one; the sampler names are
    the samplers'; model.json's fallback and a new model's defaults are MODEL_DEFAULTS."""
    from MedSynLib.diffusion.samplers import SAMPLERS
    from MedSynLib.modelstore import bundle
    from MedSynLib.run_settings import SAMPLER_NAMES

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert all(value is None for value in vars(parser.parse_args([])).values())
    assert set(SAMPLER_NAMES) == set(SAMPLERS)
    assert not hasattr(bundle, "DEFAULTS")
    assert {f.name for f in dataclasses.fields(RunSettings)} >= set(MODEL_DEFAULTS)


def test_importing_the_settings_loads_no_torch():
    code = "import sys, MedSynLib.run_settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_guidance_goes_from_the_panel_settings_to_the_sampler(tmp_path, monkeypatch):
    """The panel's settings become ``medsyn`` arguments (the Slicer job's argv); the command line turns them back
    into the same RunSettings, and GuidedDenoiser gets that guidance; left unset, the model's."""
    from MedSynLib.cli import main
    from MedSynLib.pipelines import generation

    from tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    seen = []

    class Recording(generation.GuidedDenoiser):
        def __init__(self, net, text, guidance, **kwargs):
            seen.append(guidance)
            super().__init__(net, text, guidance, **kwargs)

    monkeypatch.setattr(generation, "GuidedDenoiser", Recording)
    panel = RunSettings(seed=2, steps_lowres=1, guidance=2.5, device="cpu", lowres_only=True)
    argv = ["generate", "--report", "FINDINGS: clear lungs.", "--model", str(model), *panel.to_argv()]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv[:5], "--seed", "2", "--steps-lowres", "1", "--lowres-only", "--out", str(tmp_path / "b")]) == 0
    assert seen == [2.5, 1.0]  # 1.0: the tiny model's model.json
    sidecar = json.loads((tmp_path / "a" / "medsyn.json").read_text(encoding="utf-8"))
    assert RunSettings.from_dict(sidecar["settings"]) == panel.resolved({"steps_sr": 2, "sampler": "ddim"})
