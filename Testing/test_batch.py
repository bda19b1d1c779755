"""``medsyn batch``: prompts CSV -> one result folder per sample, deterministic seeds, manifest, resuming."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.cli import main
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.pipelines import generate
from MedSynLib.pipelines.batch import COLUMNS, read_prompts

from tiny_model import build_tiny_model

PROMPTS = 'id,report,seed\nchest A,"FINDINGS: Large bilateral pleural effusions.",7\n,Lungs are clear.,\n'


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_prompts_give_ids_and_deterministic_seeds(tmp_path):
    (tmp_path / "p.csv").write_text(PROMPTS)
    cases = read_prompts(tmp_path / "p.csv", per_prompt=2, base_seed=5)
    assert [(c.folder, c.seed) for c in cases] == [("chest_A_0", 7), ("chest_A_1", 8), ("prompt0001_0", 1005),
                                                    ("prompt0001_1", 1006)]
    for text, message in (("report\n\n", "needs a header with a 'report' column"),
                          ("id,report\na,x\na,y\n", "used twice"), ("id,report\na,  \n", "report is empty"),
                          ("text\nx\n", "'report' column"), ("report,seed\nx,abc\n", "not an integer")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_prompts(tmp_path / "bad.csv", 1)


def batch(capsys, tiny_model, prompts, out):
    code = main(["batch", "--prompts", str(prompts), "--per-prompt", "2", "--seed", "5", "--model", str(tiny_model),
                 "--lowres-only", "--steps-lowres", "1", "--preview", "--progress", "json", "--out", str(out)])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, events


def manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_batch_writes_every_case_and_resumes(tiny_model, tmp_path, capsys):
    (tmp_path / "prompts.csv").write_text(PROMPTS)
    out = tmp_path / "out"
    code, events = batch(capsys, tiny_model, tmp_path / "prompts.csv", out)
    assert code == 0 and events[-1]["event"] == "done"
    assert [e["status"] for e in events if e["event"] == "case"] == ["running", "done"] * 4
    assert {e["case"] for e in events if e["event"] == "progress"} == {"chest_A_0", "chest_A_1", "prompt0001_0",
                                                                     "prompt0001_1"}
    rows = manifest(out)
    assert list(rows[0]) == list(COLUMNS) and [r["status"] for r in rows] == ["done"] * 4
    for row in rows:
        sidecar = json.loads((out / row["folder"] / "medsyn.json").read_text())
        assert sidecar["seed"] == int(row["seed"]) and sidecar["report"] == row["report"]
        assert (out / row["folder"] / row["ct"]).is_file() and (out / row["folder"] / row["segmentation"]).is_file()
        assert (out / row["folder"] / "preview.png").is_file()

    # a case equals a single run with its seed
    single = generate("FINDINGS: Large bilateral pleural effusions.", load_model(tiny_model, load_superres=False),
                      seed=7, steps_lowres=1, lowres_only=True)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "chest_A_0" / rows[0]["ct"])))
    assert np.array_equal(written, single.ct_hu)

    # resume: a finished case is kept, a half-written one is removed and redone
    kept = (out / "chest_A_0" / "medsyn.json").stat().st_mtime_ns
    for path in (out / "prompt0001_1").iterdir():
        path.unlink()
    (out / "prompt0001_1").rmdir()
    (out / ".prompt0001_1.partial-x1y2").mkdir()
    (out / ".prompt0001_1.partial-x1y2" / "junk.nii.gz").write_bytes(b"half")
    (out / "notes").mkdir()  # not a case: left alone
    code, events = batch(capsys, tiny_model, tmp_path / "prompts.csv", out)
    assert code == 0
    statuses = [(e["folder"], e["status"]) for e in events if e["event"] == "case"]
    assert statuses == [("chest_A_0", "skipped"), ("chest_A_1", "skipped"), ("prompt0001_0", "skipped"),
                        ("prompt0001_1", "running"), ("prompt0001_1", "done")]
    assert (out / "chest_A_0" / "medsyn.json").stat().st_mtime_ns == kept
    assert not (out / ".prompt0001_1.partial-x1y2").exists() and (out / "notes").is_dir()
    assert [r["status"] for r in manifest(out)] == ["done"] * 4


def test_bad_prompts_file_is_a_clear_error(tiny_model, tmp_path, capsys):
    (tmp_path / "p.csv").write_text("id,report\na,\n")
    code, events = batch(capsys, tiny_model, tmp_path / "p.csv", tmp_path / "out")
    assert code == 2 and events[-1]["event"] == "error" and "report is empty" in events[-1]["message"]
    assert not (tmp_path / "out").exists()
