"""Shared fixtures: tiny random networks, the golden fixture folder, deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from MedSynLib.models import LowResUNet, SuperResUNet, UNetConfig

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

os.environ["MEDSYN_PRECISION"] = "fp32"  # "auto" is bf16 on CPUs with AMX-BF16: every test, and every command a test
# runs, computes in fp32 unless it asks for another precision, so that results and golden checks match everywhere

TINY_LOWRES = UNetConfig(kind="lowres", dim=8, dim_mults=(1, 2), attn_heads=2, text_dim=16, mid_depth=2)
TINY_SUPERRES = UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=2, mid_depth=1)


@pytest.fixture(autouse=True, scope="session")
def _torch_settings():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny networks gain nothing from threads, and on a busy machine two threads
    cost several times the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_lowres() -> LowResUNet:
    torch.manual_seed(0)
    return LowResUNet(TINY_LOWRES).eval()


@pytest.fixture
def tiny_superres() -> SuperResUNet:
    torch.manual_seed(1)
    return SuperResUNet(TINY_SUPERRES).eval()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official golden fixtures: $MEDSYN_GOLDEN, else ../shared/reference/golden beside the checkout."""
    path = Path(os.environ.get("MEDSYN_GOLDEN", REPO.parent / "shared" / "reference" / "golden"))
    if not (path / "README.md").exists() and not any(path.glob("*/case.json")):
        if os.environ.get("MEDSYN_REQUIRE_GOLDEN"):
            pytest.fail(f"golden fixtures required (MEDSYN_REQUIRE_GOLDEN) but not found at {path}")
        pytest.skip(f"golden fixtures not found at {path}; set MEDSYN_GOLDEN")
    return path
