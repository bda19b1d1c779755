"""``medsyn serve`` and its clients on loopback (127.0.0.1 only), with a real server process and real jobs.

Results through ``--server`` are compared bit for bit with the same command run here; refusals are checked at
the HTTP level too (status, JSON error, exit code, nothing run). The many-clients test uses the tiny model.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.images import Geometry, to_image, write_image
from MedSynLib.remote import MedSynServer, RemoteError

from test_edit import RIGHT_LUNG_CENTRE, ball, rotated_ct
from tiny_model import build_tiny_model

REPORT = "FINDINGS: Large right pleural effusion. IMPRESSION: Right effusion."
TOKEN = "test-token-0123456789abcdef"
HOST = "127.0.0.1"
TINY = ["--model", "tiny-test", "--lowres-only", "--steps-lowres", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ``medsyn serve`` process on 127.0.0.1 with the tiny model installed, 2 CPU workers, a 1 MB upload limit."""
    home = tmp_path_factory.mktemp("home")
    build_tiny_model(home / "models" / "tiny-test")
    token_file = home / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    env = {**os.environ, "MEDSYN_HOME": str(home)}
    env.pop("MEDSYN_SERVER_TOKEN", None)
    port = _free_port()
    work = home / "server"
    log = open(home / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "MedSynLib", "serve", "--host", HOST, "--port", str(port),
                                "--token-file", str(token_file), "--work-dir", str(work), "--cpu-workers", "2",
                                "--max-upload-mb", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    for _ in range(600):  # up to 2 min for a busy machine
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                break
        except OSError:
            assert process.poll() is None, (home / "server.log").read_text()
            time.sleep(0.2)
    else:
        pytest.fail("the server did not start: " + (home / "server.log").read_text())
    yield {"url": url, "port": port, "home": home, "env": env, "work": work, "process": process}
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    log.close()


def medsyn(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "MedSynLib", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def remote_env(server, token=TOKEN):
    return {**server["env"], "MEDSYN_SERVER_TOKEN": token}


def client(server, token=TOKEN) -> MedSynServer:
    return MedSynServer(server["url"], token, timeout=120)


def assert_same_result(local: Path, remote: Path):
    """The same files, the same voxels and geometry, the same sidecar but for timings and where it ran."""
    a = json.loads((local / "medsyn.json").read_text(encoding="utf-8"))
    b = json.loads((remote / "medsyn.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in remote.iterdir())
    for name in a["files"].values():
        x, y = sitk.ReadImage(str(local / name)), sitk.ReadImage(str(remote / name))
        assert np.array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y)), name
        assert (x.GetOrigin(), x.GetSpacing(), x.GetDirection()) == (y.GetOrigin(), y.GetSpacing(), y.GetDirection())
    ran_on = b.pop("ran_on")
    assert ran_on["worker"].startswith("cpu") and ran_on["server"].startswith(f"http://{HOST}")
    for sidecar in (a, b):  # what differs between any two runs: how long they took
        sidecar.pop("timings_s")
        sidecar.get("scan_check", {}).pop("seconds", None)
    assert a == b


def job_folders(server) -> list[str]:
    return [p.name for p in server["work"].iterdir() if p.is_dir()]


def test_generate_through_the_server_is_the_local_result_bit_for_bit(server, tmp_path):
    args = ["generate", "--report", REPORT, "--seed", "5", "--lowres-only", "--steps-lowres", "3"]
    local = medsyn(*args, "--out", tmp_path / "local", env=server["env"])
    assert local.returncode == 0, local.stderr
    remote = medsyn(*args, "--server", server["url"], "--progress", "json", "--out", tmp_path / "remote",
                    env=remote_env(server))
    assert remote.returncode == 0, remote.stderr
    events = [json.loads(line) for line in remote.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "done"
    local_model = json.loads((tmp_path / "local" / "medsyn.json").read_text(encoding="utf-8"))["model"]
    assert events[-1]["statement"] == local_model["statement"]  # the model's sentence goes with a remote result too
    steps = [(e["step"], e["total"]) for e in events if e["event"] == "progress"]
    assert steps and [step for step, _ in steps] == list(range(1, steps[-1][1] + 1))
    assert all("eta_s" in e and e["stage"] == "lowres" for e in events if e["event"] == "progress")
    assert events[-1]["out"] == str(tmp_path / "remote")
    assert_same_result(tmp_path / "local", tmp_path / "remote")
    assert job_folders(server) == []  # the client removed the job once it had the result


def _segment_ct(path: Path) -> None:
    geometry = Geometry((40, 36, 30), (3.5, 3.5, 4.5), (-70.0, -60.0, -60.0))
    ct = np.full((30, 36, 40), 40, np.int16)
    ct[:, :2] = ct[:, -2:] = -1000
    ct[5:25, 8:28, 6:18] = ct[5:25, 8:28, 22:34] = -850
    write_image(to_image(ct, geometry), path, description="test CT")


def test_segment_and_edit_through_the_server_match_local_runs(server, tmp_path):
    _segment_ct(tmp_path / "ct.nii.gz")
    write_image(rotated_ct(), tmp_path / "scan.nrrd", description="test CT")
    write_image(ball(Geometry((30, 30, 30), (2.0, 2.0, 2.0), (-55.0, -40.0, -30.0)), RIGHT_LUNG_CENTRE, 14.0),
                tmp_path / "region.nii.gz", description="region")
    env = remote_env(server)
    # the quality gate refuses a random model's segmentation: exit 4 and the same message, remote as local
    args = ["segment", "--ct", tmp_path / "ct.nii.gz", *TINY]
    local = medsyn(*args, "--out", tmp_path / "seg-local", env=env)
    remote = medsyn(*args, "--out", tmp_path / "seg-remote", "--server", server["url"], env=env)
    assert local.returncode == remote.returncode == 4, remote.stderr
    error = [line for line in local.stderr.splitlines() if line.startswith("medsyn: error")]
    assert error and error[0] in remote.stderr and "Traceback" not in remote.stderr
    assert not (tmp_path / "seg-remote").exists()
    runs = {"seg": [*args, "--force"],
            "edit": ["edit", "--ct", tmp_path / "scan.nrrd", "--region", tmp_path / "region.nii.gz", "--report",
                     REPORT, "--seed", "2", *TINY]}
    for name, args in runs.items():
        local = medsyn(*args, "--out", tmp_path / f"{name}-local", env=env)
        assert local.returncode == 0, local.stderr
        remote = medsyn(*args, "--out", tmp_path / f"{name}-remote", "--server", server["url"], env=env)
        assert remote.returncode == 0, remote.stderr
        assert_same_result(tmp_path / f"{name}-local", tmp_path / f"{name}-remote")
        wrote = [line.replace(f"{name}-local", "OUT").replace(f"{name}-remote", "OUT") for run in (local, remote)
                 for line in run.stderr.splitlines() if line.startswith("wrote ")]
        assert len(wrote) == 2 and wrote[0] == wrote[1], wrote  # the same last lines: "(EDITED: 12.3 mL replaced)"


def _post(server, path, body=b"", headers=None, method="POST"):
    conn = http.client.HTTPConnection(HOST, server["port"], timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    status, data = response.status, response.read()
    conn.close()
    return status, json.loads(data or b"{}")


def _form(fields: dict, files: dict) -> tuple[bytes, dict]:
    boundary = "testboundary0123"
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, content) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_no_or_wrong_token_is_refused_and_runs_nothing(server, tmp_path):
    body, headers = _form({"command": "generate", "options": json.dumps(["--report=x", *TINY])}, {})
    for auth in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        status, answer = _post(server, "/v1/jobs", body, {**headers, **auth})
        assert status == 401 and answer["error"]["kind"] == "token" and answer["error"]["exit_code"] == 2
    assert job_folders(server) == [] and client(server).info()["queue"] == {"queued": 0, "running": 0}
    r = medsyn("generate", "--report", REPORT, *TINY, "--server", server["url"], "--out", tmp_path / "out",
               env=remote_env(server, "wrong-token-0123456789"))
    assert r.returncode == 2 and "the token is wrong" in r.stderr and "fix: set MEDSYN_SERVER_TOKEN" in r.stderr
    r = medsyn("generate", "--report", REPORT, *TINY, "--server", server["url"], "--out", tmp_path / "out",
               env={**server["env"], "MEDSYN_HOME": str(tmp_path)})
    assert r.returncode == 2 and "no token" in r.stderr
    assert not (tmp_path / "out").exists()


def test_bad_requests_get_clean_errors(server, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # an upload over the limit: refused by the client before sending, and by the server from its declared size
    big = tmp_path / "big.nii.gz"
    big.write_bytes(os.urandom(3 << 19))
    r = medsyn("segment", "--ct", big, *TINY, "--server", server["url"], "--out", tmp_path / "o", env=remote_env(server))
    assert r.returncode == 2 and "over the server's limit of 1 MB" in r.stderr and "Traceback" not in r.stderr
    conn = http.client.HTTPConnection(HOST, server["port"], timeout=60)
    conn.putrequest("POST", "/v1/jobs")
    for key, value in {**auth, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": "5000000"}.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["kind"] == "too_large"
    conn.close()
    # job ids the server did not make
    for path in ("/v1/jobs/..%2F..%2Fetc", "/v1/jobs/../../etc", "/v1/jobs/..%2F..%2Fetc/result",
                 "/v1/jobs/0123/events", "/v1/jobs/" + "0" * 32, "/v1/jobs/" + "0" * 32 + "/events?wait=nan"):
        status, answer = _post(server, path, method="GET", headers=auth)
        assert status == 404 and answer["error"]["exit_code"] == 2, (path, answer)
    # options the command line refuses, or that would name a file on the server
    for options, message in ((["--report=x", "--frobnicate=1"], "unrecognized arguments: --frobnicate=1"),
                             (["--report=x", "--seed=x"], "argument --seed"),
                             (["--report-file=/etc/passwd"], "names a file on the server"),
                             (["--report=x", "--model=/etc"], "is not a model of this server"),
                             (["--report=x", "--device=cuda"], "not an option of a server job")):
        body, headers = _form({"command": "generate", "options": json.dumps(options)}, {})
        status, answer = _post(server, "/v1/jobs", body, {**headers, **auth})
        assert status == 400 and message in answer["error"]["message"], answer
        assert answer["error"]["exit_code"] == 2
    body, headers = _form({"command": "batch", "options": "[]"}, {})
    assert _post(server, "/v1/jobs", body, {**headers, **auth})[0] == 400
    body, headers = _form({"command": "segment", "options": "[]"}, {"ct": ("../../x.nii.gz", b"\0")})
    status, job = _post(server, "/v1/jobs", body, {**headers, **auth})  # the file's name is not used
    assert status == 200 and job["inputs"]["ct"] == str(server["work"].resolve() / job["id"] / "inputs" / "ct.nii.gz")
    client(server).delete(job["id"])
    # a malformed NIfTI: the command's own message and exit code, no traceback
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 10)
    r = medsyn("segment", "--ct", bad, *TINY, "--server", server["url"], "--out", tmp_path / "o", env=remote_env(server))
    assert r.returncode == 2 and "medsyn: error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(bad) in r.stderr and str(server["work"].resolve()) not in r.stderr, "named as the user gave it"
    assert not (tmp_path / "o").exists()
    _wait_idle(server)


def _wait_idle(server, limit_s=300):
    for _ in range(int(limit_s / 0.2)):
        info = client(server).info()
        if info["queue"] == {"queued": 0, "running": 0}:
            return info
        time.sleep(0.2)
    pytest.fail(f"the server stayed busy: {info}")


def test_cancel_frees_the_worker(server, tmp_path):
    api = client(server)
    jobs = [api.submit("generate", ["--report=x", "--model=tiny-test", "--lowres-only", "--steps-lowres=1000"])
            for _ in range(2)]
    for job in jobs:  # both workers are busy sampling
        after = 0
        for _ in range(300):
            answer = api.events(job["id"], after, wait=5)
            after = answer["next"]
            if any(e["event"] == "progress" for e in answer["events"]):
                break
            assert answer["job"]["state"] in ("queued", "running"), answer["job"]
        else:
            pytest.fail("the job did not start sampling")
    queued = api.submit("generate", ["--report=x", *TINY])
    assert api.job(queued["id"])["state"] == "queued"
    status, answer = _post(server, f"/v1/jobs/{queued['id']}/events?wait=nan", method="GET",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and answer["events"][0]["event"] == "queued"  # no wait, no error
    cancelled = api.cancel(queued["id"])
    assert cancelled["state"] == "cancelled" and cancelled["exit_code"] == 130
    for job in jobs:
        api.cancel(job["id"])
    finished = [api.follow(job["id"]) for job in jobs]
    assert [(j["state"], j["exit_code"]) for j in finished] == [("cancelled", 130)] * 2
    assert all(not w["busy"] for w in _wait_idle(server)["workers"])
    sidecar = api.generate(tmp_path / "after", report=REPORT, model="tiny-test", lowres_only=True, steps_lowres=2)
    assert json.loads(sidecar.read_text(encoding="utf-8"))["ran_on"]["worker"].startswith("cpu")
    for job in (*jobs, queued):
        api.delete(job["id"])
    assert job_folders(server) == []


def test_a_client_killed_mid_upload_leaves_the_server_serving(server, tmp_path):
    uploader = ("import socket, sys, time\n"
                "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
                "s.sendall(b'POST /v1/jobs HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer " + TOKEN + "\\r\\n'\n"
                "          b'Content-Type: multipart/form-data; boundary=b\\r\\nContent-Length: 900000\\r\\n\\r\\n'\n"
                "          b'--b\\r\\nContent-Disposition: form-data; name=\"ct\"; filename=\"ct.nii.gz\"\\r\\n\\r\\n')\n"
                "s.sendall(b'x' * 300000)\n"
                "print('sent', flush=True)\n"
                "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", uploader, str(server["port"])], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "sent"
    process.kill()
    process.wait(timeout=30)
    assert client(server).info()["queue"] == {"queued": 0, "running": 0}
    assert job_folders(server) == []
    assert server["process"].poll() is None


def test_eight_clients_sixteen_jobs_each_get_their_own_result(server, tmp_path):
    """8 (report, seed) requests, each sent by two different clients at once: the two results of a request are
    identical, different requests differ, and each sidecar holds its own request."""
    reports = ["No pleural effusion.", "Large bilateral effusions.", "The heart is enlarged.", "Lungs are clear."]
    requests = [(reports[i % 4], 10 + i) for i in range(8)]
    plan = [[requests[c], requests[(c + 3) % 8]] for c in range(8)]  # client c: two requests, every one twice

    def run_client(c):
        api = client(server)
        return [(report, seed, api.generate(tmp_path / f"c{c}-{k}", report=report, seed=seed, model="tiny-test",
                                            lowres_only=True, steps_lowres=2))
                for k, (report, seed) in enumerate(plan[c])]

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(run_client, range(8), timeout=1200) for r in rs]
    assert len(results) == 16
    arrays = {}
    for report, seed, sidecar_path in results:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        assert (sidecar["report"], sidecar["seed"]) == (report, seed)
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(sidecar_path.parent / sidecar["files"]["ct"])))
        arrays.setdefault((report, seed), []).append(ct)
    assert len(arrays) == 8 and all(len(pair) == 2 and np.array_equal(*pair) for pair in arrays.values())
    firsts = [pair[0] for pair in arrays.values()]
    assert all(not np.array_equal(firsts[i], firsts[j]) for i in range(8) for j in range(i))
    assert job_folders(server) == []


def test_the_python_api_reports_the_commands_error(server, tmp_path):
    with pytest.raises(RemoteError) as caught:
        client(server).generate(tmp_path / "out", report=REPORT, model="tiny-test", sampler="nonsense",
                                lowres_only=True)
    assert caught.value.failure.code == 2 and "nonsense" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, message", [
    ("no-token elsewhere", "--no-token is allowed on a loopback address only"),
    ("open token file", "is readable by others"),
    ("short token", "shorter than 16 characters"),
    ("no token", "medsyn serve needs a token"),
])
def test_serve_refuses_to_start_without_a_safe_token(tmp_path, case, message):
    token = tmp_path / "token"
    token.write_text("short" if case == "short token" else TOKEN, encoding="utf-8")
    token.chmod(0o644 if case == "open token file" else 0o600)
    args = {"no-token elsewhere": ["--no-token", "--host", "192.0.2.1"],  # TEST-NET: refused before any bind
            "no token": []}.get(case, ["--token-file", token])
    env = {k: v for k, v in os.environ.items() if k != "MEDSYN_SERVER_TOKEN"}
    r = medsyn("serve", *args, "--work-dir", tmp_path / "work", "--gpus", "none", env=env, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "work").exists()


def test_a_finished_result_is_removed_after_the_keep_time(tmp_path):
    import asyncio

    from MedSynLib.server.jobs import Job, JobQueue, Limits

    async def run():
        queue = JobQueue(tmp_path, [], Limits(keep_hours=1 / 3600))  # kept 1 s
        job_id, folder = queue.new_folder()
        (folder / "result.zip").write_bytes(b"result")
        queue.jobs[job_id] = Job(job_id, "generate", [], folder, {}, state="done", finished=time.time())
        await queue.start()
        kept = folder.exists()
        for _ in range(100):  # at most 10 s
            if not folder.exists():
                break
            await asyncio.sleep(0.1)
        await queue.stop()
        return kept, folder.exists(), job_id in queue.jobs

    assert asyncio.run(run()) == (True, False, False)
