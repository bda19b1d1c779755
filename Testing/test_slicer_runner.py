"""The ``medsyn`` process of the Slicer module (MedSynSlicerLib.progress / process / job): JSON progress,
done/error events and Cancel.

The ``medsyn`` command line is played by a small stand-in script written by these tests: it prints
contract-conforming JSON lines (progress / done / error), writes a results folder with a sidecar, and for the
cancel test starts a grandchild process and sleeps. It stands in for the real CLI until the end-to-end test with
a tiny model is added; the runner does not care which program prints the lines.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "MedSynSlicer")):
    if path not in sys.path:
        sys.path.insert(0, path)

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from MedSynSlicerLib import job as jobs, models, process as processes, progress  # noqa: E402
from MedSynLib.run_settings import RunSettings  # noqa: E402
from MedSynSlicerLib.job import MedSynJob  # noqa: E402
from MedSynSlicerLib.progress import Event  # noqa: E402

STAND_IN = textwrap.dedent(r'''
    """Stand-in for `medsyn generate|segment --progress json --out DIR` (behaviour chosen by $STANDIN_MODE)."""
    import json, os, signal, subprocess, sys, time

    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    mode = os.environ.get("STANDIN_MODE", "ok")
    assert args[args.index("--progress") + 1] == "json"

    def emit(**event):
        print(json.dumps(event), flush=True)

    print("stand-in: starting " + args[0], file=sys.stderr, flush=True)
    print("a free text line on stdout is tolerated", flush=True)
    t0 = time.time()
    for stage, total in (("text", 1), ("lowres", 3), ("superres", 2), ("write", 1)):
        for step in range(1, total + 1):
            emit(event="progress", stage=stage, step=step, total=total, elapsed_s=time.time() - t0, eta_s=1.0)
            if mode == "fail" and stage == "lowres":
                emit(event="error", message="CUDA out of memory", fix="Choose CPU or the low-res preview")
                sys.exit(3)
            if mode == "hang" and stage == "lowres":
                partial = out + ".partial"
                os.makedirs(partial, exist_ok=True)
                open(os.path.join(partial, "ct.nii.gz"), "w").write("half written")
                # the grandchild ignores SIGTERM and reports both pids once it does
                subprocess.Popen([sys.executable, "-c",
                    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "open(os.environ['STANDIN_PIDS'], 'w').write(f'{os.getppid()} {os.getpid()}'); "
                    "time.sleep(120)"])
                time.sleep(120)
    os.makedirs(out + ".partial", exist_ok=True)
    files = {"ct": "SYNTHETIC_MedSyn_CT_seed5.nii.gz", "segmentation": "seg.seg.nrrd"}
    for name in files.values():
        open(os.path.join(out + ".partial", name), "w").write("x")
    sidecar = {"synthetic": True, "mode": args[0], "seed": 5, "files": files, "argv": args,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    json.dump(sidecar, open(os.path.join(out + ".partial", "medsyn.json"), "w"))
    os.rename(out + ".partial", out)
    emit(event="done", out=out, sidecar=os.path.join(out, "medsyn.json"))
''')


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    script = tmp_path / "standin_medsyn.py"
    script.write_text(STAND_IN, encoding="utf-8")
    monkeypatch.setenv("STANDIN_PIDS", str(tmp_path / "pids.txt"))
    return lambda arguments: [sys.executable, str(script), *arguments]


def run_to_exit(process, timeout=30.0) -> list[Event]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = process.poll()  # never blocks
        events += batch
        if any(e.kind == "exit" for e in batch):
            return events
        time.sleep(0.02)
    raise AssertionError(f"no exit within {timeout} s; events so far: {events}")


# --- parsing -----------------------------------------------------------------------------------------------------

def test_parse_line_events_and_logs():
    event = progress.parse_line('{"event": "progress", "stage": "lowres", "step": 3, "total": 50, '
                                 '"elapsed_s": 1.5, "eta_s": 23.5}\n')
    assert event.kind == "progress" and event.data["step"] == 3
    assert progress.parse_line('{"event": "done", "out": "/x", "sidecar": "/x/medsyn.json"}').kind == "done"
    error = progress.parse_line('{"event": "error", "message": "m", "fix": "f"}')
    assert error.kind == "error" and error.data["fix"] == "f"
    assert progress.parse_line("Loading weights...\n") == Event(kind="log", text="Loading weights...")
    assert progress.parse_line('{"not": "an event"}').kind == "log"
    assert progress.parse_line("{broken json").kind == "log"


def test_progress_fraction_and_text():
    fractions = [progress.overall_fraction({"stage": s, "step": i, "total": 4})
                 for s in progress.STAGES for i in range(5)]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert progress.overall_fraction({"stage": "lowres", "step": 4, "total": 4}, lowres_only=True) > 0.85
    assert progress.describe_progress({"stage": "lowres", "step": 13, "total": 13, "unit": "network evaluations"}) \
        == "Low-resolution sampling: network evaluation 13 of 13"  # 12 steps: what runs is counted, and named
    text = progress.describe_progress({"stage": "superres", "step": 7, "total": 20, "eta_s": 95})
    assert text == "Super-resolution: step 7 of 20 (about 1 min 35 s left)"


def test_time_left_covers_every_remaining_stage():
    """The ETA of a progress event is its stage's; the panel adds the stages after it (at the current stage's
    pace, weighted by their typical share), and says nothing before the command line has measured a pace."""
    low = {"stage": "lowres", "step": 5, "total": 10, "eta_s": 10.0}
    assert progress.remaining_s(low, lowres_only=True) == pytest.approx(10.0 + 20.0 * 0.05 / 0.35)
    assert progress.remaining_s(low) == pytest.approx(10.0 + 20.0 * (0.57 + 0.05) / 0.35)
    assert progress.remaining_s({"stage": "superres", "step": 3, "total": 4, "eta_s": 2.0}) == \
        pytest.approx(2.0 + 8.0 * 0.05 / 0.57)
    assert progress.remaining_s({"stage": "write", "step": 2, "total": 3, "eta_s": 1.5}) == 1.5
    assert progress.remaining_s({"stage": "lowres", "step": 1, "total": 3, "eta_s": 0.0}) is None
    assert progress.describe_progress(low, lowres_only=False) == "Low-resolution sampling: step 5 of 10 (about 45 s " \
        "left in all)"
    assert progress.parse_line('{"event": "warning", "message": "m"}').kind == "warning"


def test_messages_speak_of_the_panel_s_controls():
    from MedSynSlicerLib import messages

    refusal = ("segmentation not trusted: the lobes do not match the CT's own lungs (Dice 0.12, needs 0.85). Fix: "
               "check the CT (a chest CT in HU, lungs inside the field of view); --force writes it anyway")
    said = messages.failure_messages(refusal, refused=True)
    assert [m.line() for m in said] == [
        "Refused: segmentation not trusted: the lobes do not match the CT's own lungs (Dice 0.12, needs 0.85).",
        'What to do: check the CT (a chest CT in HU, lungs inside the field of view); press "Use anyway" to load '
        'it regardless']
    memory = messages.in_panel_words("use --precision bf16, --lowres-only, or --device cpu; use --device cpu")
    assert memory == 'use Settings > "Low-resolution preview only", or Settings > Device: CPU', memory
    assert "--" not in messages.in_panel_words("Import the official checkpoints with `medsyn models import`.")
    assert messages.is_refusal(4, None) and messages.is_refusal(1, {"kind": "untrusted_segmentation"})
    assert not messages.is_refusal(2, {"kind": "bad_input"})


def test_command_line_follows_contract():
    settings = RunSettings(seed=11, steps_lowres=50, steps_sr=20, guidance=3.0, device="cuda", lowres_only=True)
    args = jobs.generate_arguments("/w/report.txt", "/w/result", "medsyn-official", settings,
                                     {"airway": "/w/c/airway.nii.gz", "lobes": "/w/c/lobes.nii.gz"})
    assert args == ["generate", "--report-file", "/w/report.txt", "--lobes", "/w/c/lobes.nii.gz",
                    "--airway", "/w/c/airway.nii.gz", "--model", "medsyn-official", "--seed", "11",
                    "--steps-lowres", "50", "--steps-sr", "20", "--guidance", "3.0", "--device", "cuda",
                    "--lowres-only", "--progress", "json", "--out", "/w/result"]
    seg = jobs.segment_arguments("/d/ct.nrrd", "/w/result", "default", RunSettings())
    assert seg[:3] == ["segment", "--ct", "/d/ct.nrrd"] and seg[-4:] == ["--progress", "json", "--out", "/w/result"]
    command = processes.medsyn_command(["models", "list", "--json"], python="/x/PythonSlicer")
    assert command == ["/x/PythonSlicer", "-m", "MedSynLib", "models", "list", "--json"]
    env = processes.child_environment({"PATH": "/bin"}, device="cpu")
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["PYTHONPATH"].split(os.pathsep)[0] == ROOT


# --- processes ---------------------------------------------------------------------------------------------------

def test_generate_done_moves_results(tmp_path, stand_in):
    root = tmp_path / "results"
    job = MedSynJob(output_root=str(root), result_name="SYNTHETIC_seed5", command_factory=stand_in)
    process = job.start_generate("FINDINGS: clear.", "default", RunSettings(seed=5, device="cpu"),
                                 {"airway": str(tmp_path / "airway.nii.gz")})
    events = run_to_exit(process)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "exit" and events[-1].data["returncode"] == 0
    stages = [e.data["stage"] for e in events if e.kind == "progress"]
    assert stages == ["text", "lowres", "lowres", "lowres", "superres", "superres", "write"]
    assert kinds.count("done") == 1
    assert "stand-in: starting generate" in process.log  # stderr is kept for error reports
    assert "a free text line on stdout is tolerated" in process.log
    folder = job.finish()
    assert folder == str(root / "SYNTHETIC_seed5")
    sidecar = json.loads((root / "SYNTHETIC_seed5" / "medsyn.json").read_text(encoding="utf-8"))
    assert sidecar["cuda_visible_devices"] == "-1"
    assert sidecar["argv"][sidecar["argv"].index("--airway") + 1] == str(tmp_path / "airway.nii.gz")
    assert os.listdir(root) == ["SYNTHETIC_seed5"], "the work folder must be gone"


def test_error_event_gives_reason_and_fix(tmp_path, stand_in, monkeypatch):
    monkeypatch.setenv("STANDIN_MODE", "fail")
    root = tmp_path / "results"
    job = MedSynJob(output_root=str(root), command_factory=stand_in)
    events = run_to_exit(job.start_generate("report", "default", RunSettings()))
    assert events[-1].data["returncode"] == 3
    assert [e for e in events if e.kind == "error"][0].data["message"] == "CUDA out of memory"
    with pytest.raises(RuntimeError) as failure:
        job.finish()
    assert str(failure.value) == "CUDA out of memory\nFix: Choose CPU or the low-res preview"
    assert os.listdir(root) == []


def hanging_segment(tmp_path, stand_in, monkeypatch):
    """A segment job whose stand-in command line hangs with a grandchild that ignores SIGTERM: (results folder, job,
    process, command line's pid, grandchild's pid), once the stand-in has written the pids (within 20 s)."""
    monkeypatch.setenv("STANDIN_MODE", "hang")
    root = tmp_path / "results"
    job = MedSynJob(output_root=str(root), command_factory=stand_in)
    process = job.start_segment(str(tmp_path / "ct.nii.gz"), "default", RunSettings())
    pid_file = tmp_path / "pids.txt"
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text(encoding="utf-8").strip()) and time.monotonic() < deadline:
        assert process.running, process.log
        time.sleep(0.05)
    cli_pid, grandchild_pid = map(int, pid_file.read_text(encoding="utf-8").split())
    return root, job, process, cli_pid, grandchild_pid


@pytest.mark.skipif(os.name == "nt", reason="the stand-in's grandchild check uses POSIX signals")
def test_cancel_kills_process_tree_and_leaves_nothing(tmp_path, stand_in, monkeypatch):
    root, job, process, cli_pid, grandchild_pid = hanging_segment(tmp_path, stand_in, monkeypatch)
    assert processes.pid_alive(cli_pid) and processes.pid_alive(grandchild_pid)
    assert any(e.kind == "progress" for e in process.poll())

    started = time.monotonic()
    job.cancel(grace_s=1.0)  # the grandchild ignores SIGTERM: the runner must escalate to SIGKILL
    assert time.monotonic() - started < 12
    assert not processes.pid_alive(cli_pid)
    for _ in range(100):  # the grandchild was re-parented; give init a moment to reap it
        if not processes.pid_alive(grandchild_pid):
            break
        time.sleep(0.05)
    assert not processes.pid_alive(grandchild_pid)
    assert process.cancelled and process.returncode is not None and process.returncode != 0
    assert job.failure_message() == "Cancelled."
    assert os.listdir(root) == [], "no temporary files may remain after Cancel"
    assert process.poll()[-1].kind == "exit"


@pytest.mark.skipif(os.name == "nt", reason="the stand-in's grandchild check uses POSIX signals")
def test_request_cancel_does_not_block_and_happens_once(tmp_path, stand_in, monkeypatch):
    """The panel's Cancel: SIGTERM now, SIGKILL from poll() after the grace period; a second request is a no-op."""
    root, job, process, _, grandchild_pid = hanging_segment(tmp_path, stand_in, monkeypatch)
    started = time.monotonic()
    assert job.request_cancel() is True
    assert time.monotonic() - started < 0.5, "request_cancel must not wait for the process"
    assert job.cancelling and job.running
    assert job.request_cancel() is False, "a second Cancel must not start a second cancel"
    events = run_to_exit(process)
    assert events[-1].data["cancelled"] and not job.cancelling
    for _ in range(200):  # SIGKILL reached the grandchild that ignores SIGTERM
        if not processes.pid_alive(grandchild_pid):
            break
        time.sleep(0.05)
    assert not processes.pid_alive(grandchild_pid)
    with pytest.raises(RuntimeError, match="Cancelled"):
        job.finish()
    assert os.listdir(root) == []


def test_import_weights_arguments_are_accepted_by_the_real_command_line():
    from MedSynLib.cli import build_parser

    args = build_parser().parse_args(models.import_weights_arguments("/data/model", "/data/cxr-bert", "medsyn-official",
                                                                     "/data/atlas.nii.gz"))
    assert args.command == "models" and args.accept_license and str(args.text_encoder) == "/data/cxr-bert"
    assert str(args.atlas) == "/data/atlas.nii.gz"
