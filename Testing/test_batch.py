"""``medsyn batch``: prompts CSV -> one result folder per sample, deterministic seeds, manifest, resuming, shards."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.cli import main
from MedSynLib.modelstore.bundle import load_model
from MedSynLib.pipelines import generate
from MedSynLib.pipelines.batch import COLUMNS, Case, Shard, read_prompts
from MedSynLib.run_settings import RunSettings

from tiny_model import build_tiny_model

PROMPTS = 'id,report,seed\nchest A,"FINDINGS: Large bilateral pleural effusions.",7\n,Lungs are clear.,\n'


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_prompts_give_ids_and_deterministic_seeds(tmp_path):
    (tmp_path / "p.csv").write_text(PROMPTS, encoding="utf-8")
    cases = read_prompts(tmp_path / "p.csv", per_prompt=2, base_seed=5)
    assert [(c.folder, c.seed) for c in cases] == [("chest_A_0", 7), ("chest_A_1", 8), ("prompt0001_0", 1005),
                                                    ("prompt0001_1", 1006)]
    for text, message in (("report\n\n", "needs a header with a 'report' column"),
                          ("id,report\na,x\na,y\n", "used twice"), ("id,report\na,  \n", "report is empty"),
                          ("text\nx\n", "'report' column"), ("report,seed\nx,abc\n", "not an integer")):
        (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            read_prompts(tmp_path / "bad.csv", 1)
    # every bad row in one message, each with its CSV line number
    (tmp_path / "bad.csv").write_text("id,report,seed\na,x,1\nb,,2\na,y,3\nc,z,abc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="3 bad rows") as error:
        read_prompts(tmp_path / "bad.csv", 1)
    assert all(f"row {n}:" in str(error.value) for n in (3, 4, 5)) and "row 2:" not in str(error.value)


def test_shards_split_the_cases_whatever_their_count():
    cases = [Case(f"c{i}", 0, i, "r") for i in range(7)]
    for n in (1, 2, 3, 8):
        parts = [Shard(i, n).select(cases) for i in range(n)]
        assert sorted((c.seed for part in parts for c in part)) == list(range(7))  # each case once
    assert [c.seed for c in Shard(1, 3).select(cases)] == [1, 4]
    assert Shard.parse("3/8") == Shard(3, 8) and Shard.from_environment({"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    for text in ("8/8", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError, match="I/N|0 <= I < N"):
            Shard.parse(text)


def batch(capsys, tiny_model, prompts, out, *extra, seed=5):
    code = main(["batch", "--prompts", str(prompts), "--per-prompt", "2", "--seed", str(seed), "--model",
                 str(tiny_model), "--lowres-only", "--steps-lowres", "1", "--preview", "--progress", "json",
                 "--out", str(out), *extra])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, events


def manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_batch_writes_every_case_and_resumes(tiny_model, tmp_path, capsys):
    (tmp_path / "prompts.csv").write_text(PROMPTS, encoding="utf-8")
    out = tmp_path / "out"
    code, events = batch(capsys, tiny_model, tmp_path / "prompts.csv", out)
    assert code == 0 and events[-1]["event"] == "done"
    assert [e["status"] for e in events if e["event"] == "case"] == ["running", "done"] * 4
    assert {e["case"] for e in events if e["event"] == "progress"} == {"chest_A_0", "chest_A_1", "prompt0001_0",
                                                                     "prompt0001_1"}
    rows = manifest(out)
    assert list(rows[0]) == list(COLUMNS) and [r["status"] for r in rows] == ["done"] * 4
    for row in rows:
        sidecar = json.loads((out / row["folder"] / "medsyn.json").read_text(encoding="utf-8"))
        assert sidecar["seed"] == int(row["seed"]) and sidecar["report"] == row["report"]
        assert (out / row["folder"] / row["ct"]).is_file() and (out / row["folder"] / row["segmentation"]).is_file()
        assert (out / row["folder"] / "preview.png").is_file()

    # a case equals a single run with its seed
    single = generate("FINDINGS: Large bilateral pleural effusions.", load_model(tiny_model, load_superres=False),
                      settings=RunSettings(seed=7, steps_lowres=1, lowres_only=True))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "chest_A_0" / rows[0]["ct"])))
    assert np.array_equal(written, single.ct_hu)

    # resume: a finished case is kept, a half-written one is removed and redone
    kept = (out / "chest_A_0" / "medsyn.json").stat().st_mtime_ns
    for path in (out / "prompt0001_1").iterdir():
        path.unlink()
    (out / "prompt0001_1").rmdir()
    (out / ".prompt0001_1.partial-x1y2").mkdir()
    (out / ".prompt0001_1.partial-x1y2" / "junk.nii.gz").write_bytes(b"half")
    (out / ".prompt0001_1.partial-x1y2" / ".medsyn-partial").write_bytes(b"")  # the marker a killed run leaves
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
    (tmp_path / "p.csv").write_text("id,report\na,\n", encoding="utf-8")
    code, events = batch(capsys, tiny_model, tmp_path / "p.csv", tmp_path / "out")
    assert code == 2 and events[-1]["event"] == "error" and "report is empty" in events[-1]["message"]
    assert not (tmp_path / "out").exists()


def tree(folder):
    """Every file under ``folder`` (relative path -> bytes), skipping the shards' own rows and the lock file."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.parts[len(Path(folder).parts)] != "shards" and p.name != ".manifest.lock"}


def test_resume_refuses_cases_whose_report_or_seed_changed(tiny_model, tmp_path, capsys):
    (tmp_path / "prompts.csv").write_text(PROMPTS, encoding="utf-8")
    out = tmp_path / "out"
    assert batch(capsys, tiny_model, tmp_path / "prompts.csv", out)[0] == 0
    before = tree(out)

    # the report of one row changed: its two finished cases were made from the old report
    (tmp_path / "edited.csv").write_text(PROMPTS.replace("Lungs are clear.", "Small right pleural effusion."), encoding="utf-8")
    code, events = batch(capsys, tiny_model, tmp_path / "edited.csv", out)
    assert code == 2 and "2 finished cases were made from another report" in events[-1]["message"]
    assert "prompt0001_0, prompt0001_1" in events[-1]["message"] and "--redo-changed" in events[-1]["fix"]
    assert tree(out) == before  # nothing written, the manifest still describes the images on disk

    # another --seed changes the seeds of the rows without a seed column
    code, events = batch(capsys, tiny_model, tmp_path / "prompts.csv", out, seed=6)
    assert code == 2 and "prompt0001_0" in events[-1]["message"] and "chest_A" not in events[-1]["message"]
    assert tree(out) == before

    # other sampler settings change every case
    code, events = batch(capsys, tiny_model, tmp_path / "prompts.csv", out, "--guidance", "3")
    assert code == 2 and "4 finished cases" in events[-1]["message"]

    # --redo-changed makes the changed cases again and keeps the others
    kept = (out / "chest_A_0" / "medsyn.json").read_bytes()
    code, events = batch(capsys, tiny_model, tmp_path / "edited.csv", out, "--redo-changed")
    assert code == 0
    assert [(e["folder"], e["status"]) for e in events if e["event"] == "case" and e["status"] != "running"] == [
        ("chest_A_0", "skipped"), ("chest_A_1", "skipped"), ("prompt0001_0", "done"), ("prompt0001_1", "done")]
    assert (out / "chest_A_0" / "medsyn.json").read_bytes() == kept
    for row in manifest(out):
        sidecar = json.loads((out / row["folder"] / "medsyn.json").read_text(encoding="utf-8"))
        assert row["status"] == "done" and (sidecar["report"], sidecar["seed"]) == (row["report"], int(row["seed"]))
    assert manifest(out)[2]["report"] == "Small right pleural effusion."


def test_torchrun_shards_write_what_one_process_writes(tiny_model, tmp_path, capsys):
    """2 shards under torchrun (CPU, no collectives) and 1 plain process: the same image bytes, the same manifest,
    and sidecars equal but for their timings. Both with one thread per process, as torchrun sets."""
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(PROMPTS + "third,Cardiomegaly.,\n", encoding="utf-8")
    args = ["--prompts", str(prompts), "--per-prompt", "2", "--seed", "5", "--model", str(tiny_model),
            "--lowres-only", "--steps-lowres", "2", "--preview"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    single = subprocess.run([sys.executable, "-m", "MedSynLib", "batch", *args, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                              "--master-port", "29533", "-m", "MedSynLib", "batch", *args,
                              "--out", str(tmp_path / "sharded")], capture_output=True, text=True, timeout=300, env=env)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "shard 0/2 wrote 3 SYNTHETIC cases" in sharded.stderr and "shard 1/2 wrote 3" in sharded.stderr
    a, b = tree(tmp_path / "single"), tree(tmp_path / "sharded")
    assert sorted(a) == sorted(b) and len(a) == 1 + 6 * 8  # manifest + 6 cases of 8 files
    for name in a:
        if name.endswith("medsyn.json"):
            x, y = json.loads(a[name]), json.loads(b[name])
            del x["timings_s"], y["timings_s"]  # wall-clock seconds of each stage
            assert x == y, name
        else:
            assert a[name] == b[name], name  # images, masks, previews, manifest.csv: byte for byte
    assert sorted(p.name for p in (tmp_path / "sharded" / "shards").iterdir()) == ["shard-0-of-2.csv",
                                                                                   "shard-1-of-2.csv"]

    # a shard run again (as after a kill) finds its cases finished; a job-array shard of another count too
    for shard, skipped in (("1/2", 3), ("2/3", 2)):
        assert main(["batch", *args, "--shard", shard, "--out", str(tmp_path / "sharded")]) == 0
        err = capsys.readouterr().err
        assert err.count(": skipped") == skipped
        assert f"wrote 0 SYNTHETIC cases to {tmp_path / 'sharded'}; {skipped} finished earlier, kept as they are" in err
    assert tree(tmp_path / "sharded") == b
