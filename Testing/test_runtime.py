"""Runtime choices: what ``--precision auto`` resolves to on each device, from the CPU's feature flags (given here, so
the choice is tested on any machine) and the ``MEDSYN_PRECISION`` pin, which the test suite sets to fp32 (conftest);
and that the sampling commands reuse freed memory."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from MedSynLib.runtime import PRECISION_ENV, cpu_runs_bf16_fast, resolve_precision

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = {"avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True}
ZEN4 = {"avx512_f": True, "avx512_bf16": True, "amx_tile": False, "amx_bf16": False}
AVX2_ONLY = {"avx2": True}


@pytest.fixture
def unpinned(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def test_the_suite_pins_auto_to_fp32():
    assert resolve_precision("auto", CPU, SAPPHIRE_RAPIDS) == torch.float32


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN4, torch.float32),
                                             (AVX2_ONLY, torch.float32), ({}, torch.float32)])
def test_auto_on_the_cpu_is_bf16_only_with_amx_bf16(unpinned, flags, expected):
    assert cpu_runs_bf16_fast(flags) is (expected == torch.bfloat16)
    assert resolve_precision("auto", CPU, flags) == expected


def test_an_explicit_precision_is_kept_whatever_the_cpu_or_pin(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    for flags in (SAPPHIRE_RAPIDS, AVX2_ONLY):
        assert resolve_precision("fp32", CPU, flags) == torch.float32
        assert resolve_precision("bf16", CPU, flags) == torch.bfloat16
        assert resolve_precision("fp16", CPU, flags) == torch.float16


def test_the_pin_decides_what_auto_means(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert resolve_precision("auto", CPU, AVX2_ONLY) == torch.bfloat16
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision("auto", CPU, SAPPHIRE_RAPIDS) == torch.float32
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert resolve_precision("auto", CPU, SAPPHIRE_RAPIDS) == torch.bfloat16


def test_a_bad_pin_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(ValueError, match=f"{PRECISION_ENV}='half'.*Fix: set it to one of auto, fp32, bf16, fp16"):
        resolve_precision("auto", CPU)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_the_sampling_commands_reuse_freed_memory():
    """reuse_freed_memory applies glibc's settings (what they save, page faults per network evaluation, is a
    machine figure: ``python -m MedSynLib.bench --page-faults`` measures it)."""
    code = "from MedSynLib.runtime import reuse_freed_memory; print(reuse_freed_memory())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert run.stdout.split() == ["True"], run.stdout[-2000:] + run.stderr[-2000:]


def test_progress_gives_no_time_left_before_it_has_a_pace(monkeypatch, capsys):
    """The first evaluation of a stage has no ETA (the bar printed 'ETA 0 s' with 12 to go); later ones divide the
    time since the first by the evaluations since it."""
    import json

    from MedSynLib import progress

    clock = iter([0.0, 10.0, 12.0, 14.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    reporter = progress.Reporter("json")
    for step in (1, 2, 3):
        reporter("lowres", step, 5)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["eta_s"] for e in events] == [None, 6.0, 4.0]
