"""Load on ``medsyn serve``: C concurrent clients each submit J low-resolution generates; prints jobs per minute
and the queue wait (from the server's own job records), measured on this machine.

    nice -n 10 python Testing/benchmark_server.py --clients 8 --jobs-per-client 2 [--model medsyn-demo]

The server runs on 127.0.0.1 with a fresh token and work folder; with no GPU it has ``--cpu-workers`` workers.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedSynLib.remote import MedSynServer  # noqa: E402

REPORTS = ["No pleural effusion.", "Large bilateral effusions.", "The heart is enlarged.", "Lungs are clear."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs-per-client", type=int, default=2)
    parser.add_argument("--model", default="medsyn-demo")
    parser.add_argument("--cpu-workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        token = secrets.token_urlsafe(32)
        (tmp / "token").write_text(token, encoding="utf-8")
        (tmp / "token").chmod(0o600)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "MedSynLib", "serve", "--port", str(port), "--token-file",
                                   str(tmp / "token"), "--work-dir", str(tmp / "server"), "--cpu-workers",
                                   str(args.cpu_workers), "--max-queue", str(args.clients * args.jobs_per_client)],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"),
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/v1/health", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            api = MedSynServer(url, token, timeout=300)
            info = api.info()

            def client(c: int) -> list[dict]:
                records = []
                for k in range(args.jobs_per_client):
                    job = api.submit("generate", [f"--report={REPORTS[(c + k) % 4]}", f"--seed={c * 100 + k}",
                                                  f"--model={args.model}", "--lowres-only"])
                    job = api.follow(job["id"])
                    assert job["state"] == "done", job
                    api.download(job["id"], tmp / f"c{c}-{k}")
                    api.delete(job["id"])
                    records.append(job)
                return records

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                jobs = [j for records in pool.map(client, range(args.clients)) for j in records]
            wall = time.perf_counter() - start
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    waits = [j["queue_wait_s"] for j in jobs]
    runs = [j["finished"] - j["started"] for j in jobs]
    print(f"server: {', '.join(w['name'] + ' ' + w['device'] for w in info['workers'])}; model {args.model}, "
          f"--lowres-only; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{len(jobs)} jobs from {args.clients} concurrent clients in {wall:.1f} s: "
          f"{len(jobs) / wall * 60:.2f} jobs per minute")
    print(f"queue wait: median {statistics.median(waits):.1f} s, max {max(waits):.1f} s; "
          f"run time per job: median {statistics.median(runs):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
