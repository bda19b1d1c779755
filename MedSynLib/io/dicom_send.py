"""``medsyn send``: store a result's DICOM objects in a PACS over DICOM networking (C-STORE, pynetdicom).

C-STORE is what every PACS accepts (Orthanc, dcm4chee, a hospital's archive); a web upload (Orthanc's REST API,
DICOMweb STOW-RS) is one server's or an optional service. Needs the ``dicom`` extra (pynetdicom).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..progress import Reporter
from .dicom_series import INSTALL_FIX, require

SEND_TIMEOUT_S = 30


def dicom_files(folders: list[Path]) -> list[Path]:
    """The DICOM files under each of ``folders`` (result folders or any folders of DICOM files), sorted by path."""
    pydicom, _ = require()
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder. Fix: give a result folder written with --format dicom, "
                             "or a folder of DICOM files")
        files = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            except Exception:  # not DICOM: pydicom raises several kinds
                continue
            files.append(path)
        if not files:
            raise ValueError(f"{folder} holds no DICOM file. Fix: write the result with --format dicom first")
        found += files
    return found


def send(folders: list[Path], host: str, port: int, called_aet: str = "ANY-SCP", calling_aet: str = "MEDSYN",
         on_file=None) -> int:
    """C-STORE every DICOM file under ``folders`` (in their order) to the PACS at ``host``:``port`` (AE title ``called_aet``) in one
    association; returns the number stored. ``on_file(path, index, count)`` after each. Refused with the fix
    (ValueError): no connection, association rejected, a file the PACS did not store."""
    pydicom, _ = require()
    try:
        from pynetdicom import AE
    except ImportError:
        raise ValueError(f"sending needs pynetdicom. Fix: {INSTALL_FIX}") from None
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    files = dicom_files(folders)
    classes = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = SEND_TIMEOUT_S
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(host, port, ae_title=called_aet)
    except OSError as exc:  # an unknown host name
        raise ValueError(f"cannot reach the PACS at {host}:{port} ({exc.strerror or exc}). Fix: check --host and "
                         "--port") from None
    if not assoc.is_established:
        raise ValueError(f"the PACS at {host}:{port} (AE title {called_aet}) did not accept a connection from "
                         f"{calling_aet}. Fix: check --host, --port and --aet, and that the PACS knows the AE "
                         f"title {calling_aet} (or accepts any)")
    stored = 0
    try:
        for index, path in enumerate(files):
            status = assoc.send_c_store(pydicom.dcmread(path))
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success, or stored with a warning
                reason = "no answer" if code is None else f"status 0x{code:04X}"
                raise ValueError(f"the PACS did not store {path} ({reason}); {stored} of {len(files)} files were "
                                 "stored. Fix: see the PACS's log")
            stored += 1
            if on_file is not None:
                on_file(path, index, len(files))
    finally:
        assoc.release()
    return stored


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    import argparse

    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1..65535)")
    return int(text)


def _ae_title(text: str) -> str:
    """An argparse type: a DICOM AE title, 1 to 16 printable ASCII characters without a backslash."""
    import argparse

    if not text.strip() or len(text) > 16 or not all(" " <= c <= "~" and c != "\\" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an AE title (1 to 16 printable ASCII characters, no "
                                         "backslash, e.g. ORTHANC)")
    return text


def add_parser(sub) -> None:
    p = sub.add_parser("send", help="store a result's DICOM objects in a PACS (DICOM C-STORE)")
    p.add_argument("folders", type=Path, nargs="+", metavar="FOLDER",
                   help="result folder written with --format dicom, or a folder of DICOM files (e.g. the patient's "
                        "series, before the segmentation that references it)")
    p.add_argument("--host", required=True, help="the PACS's host name or address")
    p.add_argument("--port", required=True, type=_port, help="the PACS's DICOM port (e.g. 104, 4242, 11112)")
    p.add_argument("--aet", type=_ae_title, default="ANY-SCP", help="the PACS's AE title (called AE)")
    p.add_argument("--calling-aet", type=_ae_title, default="MEDSYN", help="this program's AE title, as the PACS knows it")
    p.add_argument("--progress", choices=("text", "json"), default="text")
    p.set_defaults(func=_run)


def _run(args) -> int:
    reporter = Reporter(args.progress)

    count = send(args.folders, args.host, args.port, args.aet, args.calling_aet,
                 lambda path, index, count: reporter("send", index + 1, count))
    reporter.emit({"event": "done", "sent": count, "to": f"{args.aet}@{args.host}:{args.port}"})
    if args.progress == "text":
        print(f"sent {count} DICOM files to {args.aet}@{args.host}:{args.port}", file=sys.stderr)
    return 0
