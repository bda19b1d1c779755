"""A user's install: the sdist and the wheel built from the checkout, the wheel installed (not editable) into a fresh
virtual environment, run from outside the source tree. `medsyn models list` finds the packaged demo model inside the
installed package and a low-resolution generate runs; without the packaged model the list says how to get one.

The fresh environment reuses this one's dependencies (torch, transformers, ...) through a ``.pth`` file instead of
downloading them, and the install runs with ``--no-index``: no network. Building needs ``build`` and
``setuptools>=77`` (the ``test`` extra).
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_FILES = ["models.json", "Models/medsyn-demo/model.json", "Models/medsyn-demo/MODEL_CARD.md",
              "Models/medsyn-demo/lowres/model.safetensors", "Models/medsyn-demo/superres/model.safetensors",
              "Models/medsyn-demo/text_encoder/model.safetensors", "Models/medsyn-demo/text_encoder/vocab.txt"]


def run(command: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, built as `python -m build` does (the wheel from the unpacked sdist)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable); dependencies come from this environment."""
    env_dir = tmp_path_factory.mktemp("venv") / "user"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "medsyn_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    # --force-reinstall: this environment's editable install of the same version is visible through the .pth
    wheel = next(dist.glob("medsyn-*.whl"))
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index", "--no-deps",
         "--force-reinstall", str(wheel)], cwd=env_dir)
    return env_dir


def user_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MEDSYN_", "VIRTUAL_ENV"))}
    env["MEDSYN_HOME"] = str(home)
    return env


def test_wheel_and_sdist_carry_the_library_the_demo_model_and_the_licence(dist):
    wheel = zipfile.ZipFile(next(dist.glob("medsyn-*.whl")))
    names = set(wheel.namelist())
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "MedSynLib").rglob("*.py") if "__pycache__" not in p.parts}
    assert tree <= names, f"library files missing from the wheel (pyproject.toml's packages): {sorted(tree - names)}"
    for rel in DEMO_FILES:
        info = wheel.getinfo(f"MedSynLib/resources/{rel}")
        assert info.file_size == (ROOT / "Resources" / rel).stat().st_size, rel
    assert not [n for n in names if "Screenshots" in n or "Icons" in n], "the wheel carries Slicer-only images"
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/licenses/LICENSE" in names
    meta = email.message_from_string(wheel.read(f"{dist_info}/METADATA").decode())
    assert meta["Name"] == "medsyn" and meta["License-Expression"] == "Apache-2.0"
    assert "Topic :: Scientific/Engineering :: Medical Science Apps." in meta.get_all("Classifier")
    assert any(u.startswith("Homepage, https://") for u in meta.get_all("Project-URL"))
    import MedSynLib

    assert meta["Version"] == MedSynLib.__version__
    sdist = tarfile.open(next(dist.glob("medsyn-*.tar.gz")))
    top = sdist.getnames()[0].split("/")[0]
    for rel in ["LICENSE", "README.md", "pyproject.toml"] + [f"Resources/{r}" for r in DEMO_FILES]:
        assert f"{top}/{rel}" in sdist.getnames(), rel


def test_installed_wheel_lists_and_generates_from_another_folder(installed, tmp_path):
    medsyn = str(installed / "bin" / "medsyn")
    env = user_env(tmp_path / "home")
    listed = json.loads(run([medsyn, "models", "list", "--json"], cwd=tmp_path, env=env).stdout)
    demo = next(m for m in listed if m["name"] == "medsyn-demo")
    assert demo["available"] and Path(demo["path"]).is_relative_to(installed), demo
    out = tmp_path / "result"
    run([medsyn, "generate", "--report", "FINDINGS: Clear lungs.", "--lowres-only", "--steps-lowres", "2",
         "--device", "cpu", "--seed", "1", "--out", str(out)], cwd=tmp_path, env=env)
    sidecar = json.loads((out / "medsyn.json").read_text(encoding="utf-8"))
    assert str(installed) in json.dumps(sidecar["model"]), sidecar["model"]
    assert any(p.name.endswith(".nii.gz") for p in out.iterdir())
    code = ("import importlib.metadata as m, MedSynLib; from packaging.requirements import Requirement; "
            "bad = [r for r in m.requires('medsyn') if 'extra ==' not in r "
            "and not Requirement(r).specifier.contains(m.version(Requirement(r).name), prereleases=True)]; "
            "print(MedSynLib.__file__); assert not bad, bad")
    where = run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).is_relative_to(installed), f"MedSynLib came from {where}, not the installed wheel"


def test_without_the_packaged_model_the_list_says_how_to_get_one(installed, tmp_path):
    """Nothing beside the installed package is read: a Resources/ folder there (a checkout's layout) is ignored."""
    site = next((installed / "lib").glob("python*/site-packages"))
    moved = tmp_path / "resources"
    shutil.move(str(site / "MedSynLib" / "resources"), moved)
    decoy = site / "Resources"  # where a source checkout keeps them: an installed package never looks there
    shutil.copytree(moved, decoy)
    try:
        env = user_env(tmp_path / "home")
        listed = run([str(installed / "bin" / "medsyn"), "models", "list"], cwd=tmp_path, env=env).stdout
        assert "No usable model is installed" in listed and "pip install --force-reinstall" in listed, listed
        failed = subprocess.run([str(installed / "bin" / "medsyn"), "generate", "--report", "FINDINGS: Clear.",
                                 "--lowres-only", "--out", str(tmp_path / "r")], cwd=str(tmp_path), env=env,
                                capture_output=True, text=True, timeout=300)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
        assert "no model is installed" in failed.stderr and "pip install" in failed.stderr, failed.stderr
        assert not (tmp_path / "r").exists()
    finally:
        shutil.move(str(moved), site / "MedSynLib" / "resources")
        shutil.rmtree(decoy)
