"""Runtime choices: what ``--precision auto`` resolves to on each device, from the CPU's feature flags (given here, so
the choice is tested on any machine) and the ``MEDSYN_PRECISION`` pin, which the test suite sets to fp32 (conftest);
and the sampling commands' reuse of freed memory."""

import statistics
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


def test_this_machine_flags_are_read(unpinned):
    fast = cpu_runs_bf16_fast()
    assert isinstance(fast, bool)
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if fast else torch.float32)


EVALUATIONS = """
import resource, sys, torch
from MedSynLib.runtime import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
faults = []
for _ in range(7):  # network evaluations: a chain of 64 MiB activations, each freed once the next is made
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    for _ in range(4):
        x = x * 2
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_memory_is_reused_without_new_page_faults():
    def later_evaluation_faults(mode):
        """Whether reuse applied, and the median page faults of the last 3 of 7 evaluations (with reuse the heap
        grows over the first few evaluations, by how many depends on where it lies, until it holds the chain's
        peak)."""
        run = subprocess.run([sys.executable, "-c", EVALUATIONS, mode], capture_output=True, text=True, cwd=REPO,
                             timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        applied, *faults = run.stdout.split()
        return applied, statistics.median(int(f) for f in faults[-3:]), faults

    pages = 64 * 2**20 // 4096  # of one activation
    applied, reused, reused_all = later_evaluation_faults("reuse")
    _, fresh, fresh_all = later_evaluation_faults("default")
    assert fresh > 4 * pages, (fresh_all, pages)  # glibc maps blocks this large afresh each time: all five fault again
    assert applied == "True" and reused < pages / 20, (applied, reused_all, pages)
