"""A real PACS for the DICOM tests: Orthanc (Debian package ``orthanc``) with its own temporary configuration and
storage, on free ports, stopped at the end.

Orthanc 1.10 cannot bind to one address, so :func:`round_trip_command` runs it inside a network namespace of its
own (``unshare --net``) whose only interface is loopback: nothing outside this process tree can reach it. There
``python Testing/pacs.py OUT FOLDER...`` starts Orthanc, stores the FOLDERs with ``medsyn send`` (C-STORE), queries
the series back (C-FIND), downloads every stored instance (REST) into OUT/retrieved/ and writes OUT/pacs.json.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

AET = "ORTHANC"
START_TIMEOUT_S = 30


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (("/usr/sbin/Orthanc") if Path("/usr/sbin/Orthanc").is_file() else None)


def round_trip_command(out: Path, folders: list[Path]) -> list[str] | None:
    """The command that runs :func:`main` in a private network namespace, or None where none can be made."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if unshare is None or not Path(ip).exists():
        return None
    probe = subprocess.run([unshare, "--net", ip, "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return None
    script = f"{ip} link set lo up && exec \"$0\" \"$@\""
    return [unshare, "--net", "sh", "-c", script, sys.executable, __file__, str(out), *map(str, folders)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """Orthanc on 127.0.0.1 with its configuration, index, storage and log under ``work``."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.http_port, self.dicom_port = _free_port(), _free_port()
        self.process = None

    def __enter__(self) -> "Orthanc":
        self.work.mkdir(parents=True, exist_ok=True)
        config = {"Name": "medsyn-test", "StorageDirectory": str(self.work / "storage"),
                  "IndexDirectory": str(self.work / "storage"), "Plugins": [], "HttpServerEnabled": True,
                  "HttpPort": self.http_port, "DicomServerEnabled": True, "DicomPort": self.dicom_port,
                  "DicomAet": AET, "DicomCheckCalledAet": True, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
                  "DicomAlwaysAllowEcho": True, "SaveJobs": False, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
                  "StorageCompression": False, "DicomModalities": {}, "OrthancPeers": {},
                  "SyncStorageArea": False}  # no fsync per file: a throw-away store
        (self.work / "orthanc.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        log = open(self.work / "orthanc.log", "wb")
        self.process = subprocess.Popen([orthanc_binary(), f"--logdir={self.work}", str(self.work / "orthanc.json")],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.work}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s; see {self.work}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as answer:
            return answer.read()


def find_series(port: int) -> list[dict]:
    """C-FIND at SERIES level: every series Orthanc holds, with its study, patient and descriptions."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="MEDSYN")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    if not assoc.is_established:
        raise RuntimeError("C-FIND association refused")
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "PatientName",
                    "PatientID", "NumberOfSeriesRelatedInstances"):
        setattr(query, keyword, "")
    found = []
    try:
        for status, answer in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01) and answer is not None:
                found.append({k: str(answer.get(k, "")) for k in query.dir() if k != "QueryRetrieveLevel"})
    finally:
        assoc.release()
    return found


def main(out: Path, folders: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with Orthanc(out / "orthanc") as pacs:
        r = subprocess.run([sys.executable, "-m", "MedSynLib", "send", *map(str, folders), "--host", "127.0.0.1",
                            "--port", str(pacs.dicom_port), "--aet", AET, "--progress", "json"],
                           capture_output=True, text=True, timeout=300)
        send = {"returncode": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        series = find_series(pacs.dicom_port)
        retrieved = out / "retrieved"
        retrieved.mkdir(exist_ok=True)
        instances = json.loads(pacs.get("/instances"))
        for instance in instances:
            (retrieved / f"{instance}.dcm").write_bytes(pacs.get(f"/instances/{instance}/file"))
    (out / "pacs.json").write_text(json.dumps({"send": send, "series": series, "instances": len(instances)},
                                              indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
