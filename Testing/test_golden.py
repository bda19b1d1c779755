"""The official golden fixtures replay through this implementation (python -m MedSynLib.official.check)."""

import shutil
import subprocess
import sys

import torch


def _check(directory):
    return subprocess.run([sys.executable, "-m", "MedSynLib.official.check", str(directory)],
                          capture_output=True, text=True, timeout=600)


def test_every_golden_case_passes(golden_dir):
    result = _check(golden_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    cases = {line.split()[1].split("/")[0] for line in lines if line.startswith("ok")}
    assert {"lowres_forward", "sr_forward", "schedule", "lowres_sampling", "sr_sampling",
            "conditional_lowres"} <= cases
    assert all(line.startswith("ok") for line in lines[:-1])


def test_a_tampered_or_unrunnable_case_fails(golden_dir, tmp_path):
    case = tmp_path / "sr_forward"
    shutil.copytree(golden_dir / "sr_forward", case)
    io = torch.load(case / "io.pt", weights_only=True)
    io["out"] = io["out"] + 0.01
    torch.save(io, case / "io.pt")
    broken = tmp_path / "lowres_forward"
    shutil.copytree(golden_dir / "lowres_forward", broken)
    (broken / "weights.pt").write_bytes(b"not a checkpoint")
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "FAIL sr_forward/out:" in result.stdout
    assert "FAIL lowres_forward: cannot run" in result.stdout
    assert "ok   sr_forward/out_train_order" in result.stdout  # other tensors of the case still compared


def test_empty_directory_fails(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 1 and "no case folders" in result.stdout
