"""``medsyn generate``, ``medsyn segment``, ``medsyn edit`` and ``medsyn batch``: argument parsing, progress,
cancellation, errors.

Exit codes (:mod:`MedSynLib.errors`): 0 done; 2 bad input or setting (a message says what to fix; batch: some case
failed); 3 out of memory (a message says what to change); 4 the CT failed the scan check (before the model is
loaded) or the segmentation is not trusted (it does not fit the CT's own lungs or trachea; nothing written unless
``--force``); 130 cancelled (SIGTERM / Ctrl-C). Nothing half-written is
left behind in any case. Warnings (e.g. lung outside the model's box) go to stderr and, with ``--progress json``,
as ``warning`` events.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import arguments
from ..environment import distributed
from ..errors import MedSynError, run_guarded
from ..progress import Reporter
from ..run_settings import RunSettings, add_arguments
from ..runtime import precision_warning, resolve_device, reuse_freed_memory

if TYPE_CHECKING:  # the commands import the pipeline (torch) when they run; the parsers need none of it
    from .batch import Shard

CONDITIONS = ("lobes", "airway", "vessels")


def _common(p) -> None:
    p.add_argument("--model", default=None, help="registry name or model folder (default: the packaged demo model)")
    add_arguments(p)
    p.add_argument("--preview", action="store_true",
                   help="also write preview.png (axial, coronal and sagittal planes through the lungs, then the same "
                        "with the masks)")
    p.add_argument("--progress", choices=("text", "json"), default="text")
    p.add_argument("--format", choices=("files", "dicom"), default="files",
                   help="dicom: also write DICOM (CT series + Segmentation, marked SYNTHETIC or EDITED; needs the "
                        "'dicom' extra) beside the NIfTI/NRRD files")
    p.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")


def _condition_args(p) -> None:
    for name in CONDITIONS:
        p.add_argument(f"--{name}", type=Path, help=f"{name} label map to hold fixed (NIfTI/NRRD, any geometry)")
    p.add_argument("--reference-ct", type=Path, default=None,
                   help="atlas-space models: the patient CT the condition masks were drawn on (they are aligned "
                        "with it); without it masks are taken to lie in model space (e.g. drawn on a generated CT)")


def _one_result(p, func, mode: str) -> None:
    """The options of a command that writes one result folder (``--out``), and what runs it."""
    _common(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier MedSyn result in --out (any other existing folder is refused)")
    p.add_argument("--server", default=None, metavar="URL",
                   help="run on a MedSyn server (`medsyn serve`, docs/server.md); the token comes from "
                        "$MEDSYN_SERVER_TOKEN or ~/.medsyn/server-token")
    p.set_defaults(func=func, mode=mode, command_parser=p)


def _series_arg(p) -> None:
    p.add_argument("--series", default=None, metavar="UID",
                   help="the Series Instance UID to read when the --ct folder holds several DICOM series (they are "
                        "listed otherwise)")


def _dicom_source(args):
    """With ``--format dicom``: the DICOM extra is installed, and a segment/edit ``--ct`` is a DICOM series that the
    result can reference (checked before any sampling)."""
    if args.format != "dicom":
        return
    from ..io.dicom_series import require, source_series

    require()
    if args.mode in ("segment", "edit"):
        source_series(args.ct, args.series)


def _report_args(p, what: str) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--report", help=what)
    src.add_argument("--report-file", type=Path, help="file holding the report text")


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="report (+ optional anatomy) -> SYNTHETIC CT with lobe/airway/vessel masks")
    _report_args(g, "report text (Findings / Impression)")
    _condition_args(g)
    g.add_argument("--force", action="store_true",
                   help="run even when the reference CT fails the scan check or the model's box would drop more than "
                        "1 %% of the lobes (exit code 4 / 2 otherwise); the problems are recorded as warnings")
    _one_result(g, _run, "generate")
    s = sub.add_parser("segment", help="segment a real CT by holding the CT channel fixed")
    s.add_argument("--ct", required=True, type=Path,
                   help="CT in HU (NIfTI/NRRD file, or a DICOM folder)")
    _series_arg(s)
    s.add_argument("--report", default=None, help="optional report text to condition on")
    s.add_argument("--force", action="store_true",
                   help="run even when the CT fails the scan check, and write the segmentation even when it fails "
                        "the quality check (exit code 4 otherwise); the problems are recorded as warnings")
    _one_result(s, _run, "segment")
    e = sub.add_parser("edit", help="replace a region of a CT by what the model generates for a report (marked EDITED)")
    e.add_argument("--ct", required=True, type=Path, help="CT in HU (NIfTI/NRRD, any geometry, or a DICOM folder)")
    _series_arg(e)
    e.add_argument("--region", required=True, type=Path,
                   help="label map of the region to replace (nonzero voxels; any geometry, e.g. a Slicer segment "
                        "exported as a label map)")
    e.add_argument("--region-label", type=arguments.count(1), default=None,
                   help="use only the voxels with this label")
    _report_args(e, "report text describing the edited scan")
    for name in CONDITIONS:
        e.add_argument(f"--{name}", type=Path, help=f"{name} label map of this CT to keep outside the region")
    e.add_argument("--resamples", type=arguments.count(0, 100), default=0, metavar="R",
                   help="RePaint resampling: repeat each step R times from its own noise level (R + 1 times the "
                        "network evaluations)")
    e.add_argument("--blend-mm", type=arguments.blend_mm, default=None,
                   help="blend width inside the region's border (default: one voxel of the model grid)")
    e.add_argument("--force", action="store_true",
                   help="run even when the CT fails the scan check (exit code 4 otherwise); the problems are "
                        "recorded as warnings")
    _one_result(e, _run, "edit")
    b = sub.add_parser("batch", help="K SYNTHETIC CTs for each report of a CSV file (resumable, with a manifest)")
    b.add_argument("--prompts", required=True, type=Path,
                   help="CSV with a 'report' column, optional 'id' and 'seed' columns")
    b.add_argument("--per-prompt", type=arguments.count(1, 1000), default=1, metavar="K", help="samples per report")
    b.add_argument("--shard", type=arguments.shard, default=None, metavar="I/N",
                   help="make only shard I (from 0) of N: cases I, I+N, I+2N, ... (job arrays, e.g. "
                        "--shard $SLURM_ARRAY_TASK_ID/8 with --array=0-7); under torchrun the shard is "
                        "RANK/WORLD_SIZE and each process uses GPU LOCAL_RANK")
    b.add_argument("--redo-changed", action="store_true",
                   help="make again the finished cases whose report, seed, sampler settings, held channels or "
                        "model changed since they were made (default: refuse)")
    _condition_args(b)
    _common(b)
    b.set_defaults(func=_run_batch, mode="batch")


def _conditions(args) -> dict:
    from ..io.images import read_image

    conditions = {n: read_image(getattr(args, n), n) for n in CONDITIONS if getattr(args, n) is not None}
    if args.reference_ct is not None:
        conditions["reference_ct"] = read_image(args.reference_ct, "reference CT")
    return conditions


def _load(args, settings: RunSettings, reporter: Reporter, reports: dict[str, str] | None = None):
    """The model of ``--model`` on the settings' device; warns (before any sampling) of a slow precision and of the
    batch ``reports`` (case id -> text) the model will read only in part. A single run's warnings come with its
    result."""
    from ..modelstore.bundle import load_model
    from ..modelstore.registry import resolve_model

    device = resolve_device(settings.device)
    reuse_freed_memory()  # this process runs the sampling loops and ends
    slow = precision_warning(settings.precision, device)
    if slow:
        reporter.warn(slow)
    model = load_model(resolve_model(args.model), device, load_superres=not settings.lowres_only)
    for label, report in (reports or {}).items():
        for warning in model.text_encoder.report_warnings(report):
            reporter.warn(f"{label}: {warning}")
    return model


def _scan_first(args, reporter: Reporter, ct, what: str = "CT"):
    """The scan check of ``ct`` for ``--model``, before the model is loaded: a ``scan_check`` event, then
    :class:`.scan_check.ScanRefused` (exit code 4) unless ``--force``."""
    from ..modelstore.bundle import ModelSpace
    from ..modelstore.registry import resolve_model
    from .scan_check import check_scan, require_scan

    space = ModelSpace.of(resolve_model(args.model))
    check = check_scan(ct, space)
    reporter.emit(check.event())
    return require_scan(ct, space, args.force, what, check=check)


def _remote(args) -> int:
    from ..remote import run_command

    return run_command(args, args.command_parser)


def _run(args) -> int:
    """``generate``, ``segment`` and ``edit``: one result folder from one model run (or on a server)."""
    if args.server:
        return _remote(args)
    from .outputs import result_folder

    reporter = Reporter(args.progress)

    def work() -> int:
        settings = RunSettings.from_args(args)
        inputs = [getattr(args, n, None) for n in ("report_file", "ct", "region", "reference_ct", *CONDITIONS)]
        with result_folder(args.out, args.overwrite, inputs) as output:
            _dicom_source(args)
            result, info, write = COMMANDS[args.mode](args, settings, reporter)
            for warning in result.metadata["warnings"]:
                reporter.warn(warning)
            sidecar = write(output)
        reporter.emit({"event": "done", "out": str(args.out), "sidecar": str(sidecar), **_statement(info)})
        if args.progress == "text":
            print(f"wrote {args.out}{_marked(args.mode, result)}", file=sys.stderr)
            _print_statement(info)
        return 0

    return run_guarded(work, reporter.emit, writes_result=True)


def _marked(mode: str, result) -> str:
    """How the last line marks a result: SYNTHETIC, or EDITED with the volume replaced."""
    if mode == "edit":
        return f" (EDITED: {result.metadata['region']['volume_ml']:.1f} mL replaced)"
    return " (SYNTHETIC)" if mode == "generate" else ""


def _generate(args, settings: RunSettings, reporter: Reporter):
    from .generation import generate
    from .outputs import model_info, write_result

    report = args.report if args.report is not None else _read_report(args.report_file)
    conditions = _conditions(args)
    reference = conditions.pop("reference_ct", None)
    scan = _scan_first(args, reporter, reference, "reference CT") if reference and conditions else None
    model = _load(args, settings, reporter)
    result = generate(report, model, conditions, settings, reference_ct=reference, progress=reporter,
                      force=args.force, scan=scan)
    info = model_info(model)
    return result, info, lambda output: write_result(result, output, info, preview=args.preview,
                                                     dicom=args.format == "dicom")


def _segment(args, settings: RunSettings, reporter: Reporter):
    from ..io.images import read_image
    from .generation import segment
    from .outputs import model_info, write_result

    ct = read_image(args.ct, "CT", args.series)
    scan = _scan_first(args, reporter, ct)
    model = _load(args, settings, reporter)
    result = segment(ct, model, args.report, settings, progress=reporter, force=args.force, scan=scan)
    info = model_info(model)
    return result, info, lambda output: write_result(result, output, info, preview=args.preview,
                                                     source_ct=args.ct, dicom=args.format == "dicom",
                                                     series=args.series)


def _edit(args, settings: RunSettings, reporter: Reporter):
    from ..io.images import read_image
    from .edit import EditOptions, edit
    from .outputs import model_info, write_edit_result

    report = args.report if args.report is not None else _read_report(args.report_file)
    ct = read_image(args.ct, "CT", args.series)
    region = read_image(args.region, "region")
    keep = {n: read_image(getattr(args, n), n) for n in CONDITIONS if getattr(args, n) is not None}
    options = EditOptions(keep=keep, region_label=args.region_label, resamples=args.resamples,
                          blend_mm=args.blend_mm, force=args.force)
    scan = _scan_first(args, reporter, ct)
    model = _load(args, settings, reporter)
    result = edit(ct, region, report, model, settings, options=options, progress=reporter, scan=scan)
    info = model_info(model)
    return result, info, lambda output: write_edit_result(result, output, info, source_ct=args.ct,
                                                          preview=args.preview, dicom=args.format == "dicom",
                                                          series=args.series)


COMMANDS = {"generate": _generate, "segment": _segment, "edit": _edit}
"""Mode -> (args, settings, reporter) -> (result, model_info, write(output folder) -> sidecar path)."""


def _batch_shard(args, settings: RunSettings) -> tuple[Shard, RunSettings]:
    """The shard this process makes: ``--shard``, else torchrun's RANK / WORLD_SIZE (which also picks the GPU,
    returned in the settings)."""
    import torch

    from .batch import Shard

    layout = distributed()
    if args.shard is not None and layout.active:
        raise MedSynError("--shard and torchrun both split the cases", "use one of them")
    if layout.active and settings.device in ("auto", "cuda") and torch.cuda.is_available():
        settings = settings.replace(device=f"cuda:{layout.local_rank}")
    return (Shard.parse(args.shard) if args.shard is not None else Shard.from_environment()), settings


def _run_batch(args) -> int:
    from .batch import MANIFEST, claim_batch_folder, read_prompts, run_batch
    from .generation import CONDITION_CHANNELS, generate
    from .outputs import model_info, write_result

    reporter = Reporter(args.progress)

    def work() -> int:
        shard, settings = _batch_shard(args, RunSettings.from_args(args))
        claim_batch_folder(args.out, [args.prompts, args.reference_ct, *(getattr(args, n) for n in CONDITIONS)])
        cases = read_prompts(args.prompts, args.per_prompt, settings.seed)
        _dicom_source(args)
        conditions = _conditions(args)
        reference = conditions.pop("reference_ct", None)
        model = _load(args, settings, reporter, {case.id: case.report for case in shard.select(cases)})
        request = {"settings": settings.resolved(model).sampling(), "lowres_only": settings.lowres_only,
                   "held_channels": sorted(CONDITION_CHANNELS[k] for k in conditions),
                   "model_sha256": dict(model.sha256), "dicom": args.format == "dicom"}
        label = f"shard {shard} " if shard.count > 1 else ""

        statuses = {}

        def on_case(index, count, case, status, error):
            statuses[case.folder] = status
            reporter.context = {"case": case.folder, "case_index": index, "cases": count}
            event = {"event": "case", "status": status, "id": case.id, "k": case.k, "seed": case.seed,
                     "folder": case.folder, "index": index, "total": count, "shard": str(shard)}
            reporter.emit({**event, "error": error} if error else event)
            if args.progress == "text" and status != "running":
                print(f"{label}[{index + 1}/{count}] {case.folder}: {status} {error}".rstrip(), file=sys.stderr)

        def make(case):
            return generate(case.report, model, conditions, settings.replace(seed=case.seed), reference_ct=reference,
                            progress=reporter)

        def write(result, folder: Path, overwrite: bool) -> Path:
            return write_result(result, folder, info, preview=args.preview, overwrite=overwrite,
                                dicom=args.format == "dicom")

        info = model_info(model)
        rows = run_batch(cases, args.out, make, write, lambda c: {"report": c.report, "seed": c.seed, **request},
                         shard=shard, redo_changed=args.redo_changed, on_case=on_case)
        failed = [r for r in rows if r["status"] == "failed"]
        manifest = str(Path(args.out) / MANIFEST)
        if failed:
            message = f"{len(failed)} of {len(rows)} cases failed (see {manifest}); first: {failed[0]['error']}"
            raise MedSynError(f"{label}{message}", "correct those rows and run again: finished cases are kept")
        written = sum(status == "done" for status in statuses.values())
        reporter.emit({"event": "done", "out": str(args.out), "manifest": manifest, "cases": len(rows),
                       "written": written, "skipped": len(rows) - written, "shard": str(shard),
                       **_statement(model_info(model))})
        if args.progress == "text":
            print(f"{label}wrote {written} SYNTHETIC case{'s' * (written != 1)} to {args.out}"
                  + (f"; {len(rows) - written} finished earlier, kept as they are" if written < len(rows) else ""),
                  file=sys.stderr)
            _print_statement(model_info(model))
        return 0

    return run_guarded(work, reporter.emit, writes_result=True)


def _statement(info: dict) -> dict:
    """The model's statement for a ``done`` event (nothing for a model without one)."""
    return {"statement": info["statement"]} if info.get("statement") else {}


def _print_statement(info: dict) -> None:
    """The model's statement as a command's last line (a model without one prints nothing)."""
    from .outputs import statement_line

    if statement_line(info):
        print(statement_line(info), file=sys.stderr)


def _read_report(path: Path) -> str:
    from ..io.text import read_text

    return read_text(path, "report file")
