"""``medsyn phantoms`` (write a SYNTHETIC phantom data set) and ``medsyn preview`` (PNG montage of any CT)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import arguments


def _phantoms(args) -> int:
    from .dataset import DatasetSpec, write_dataset

    spec = DatasetSpec(size=args.size, spacing=args.spacing, seed=args.seed, measure=not args.no_measure,
                       wording=args.wording, report_variants=args.report_variants)
    path = write_dataset(args.out, args.n, spec, workers=args.workers)
    print(f"manifest: {path}")
    return 0


def _preview(args) -> int:
    from ..io.files import check_output_file
    from ..io.images import Provenance, read_image
    from .preview import is_preview, preview_files

    inputs = [args.ct, args.lobes, args.airway, args.vessels]
    check_output_file(args.out, is_preview, args.overwrite, inputs, what="preview", suffix=".png")
    mark = Provenance.of(read_image(args.ct, "CT"))
    description = ", ".join(["SYNTHETIC"] * mark.synthetic + ["EDITED"] * mark.edited + ["MedSyn preview"])
    rgb = preview_files(args.ct, args.out, lobes=args.lobes, airway=args.airway, vessels=args.vessels,
                        panel=args.panel, description=f"{description} of {Path(args.ct).name}")
    print(f"wrote {args.out} ({rgb.shape[1]}x{rgb.shape[0]})")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "phantoms", help="write synthetic chest CT phantoms (CT, lobes, airway, vessels, report, truth)",
        description="Procedural chest CT phantoms with lobes, airways, vessels, findings and matching reports. "
                    "Every file is SYNTHETIC. Resumable: complete cases are kept.")
    p.add_argument("--n", type=arguments.count(1), required=True, help="number of cases")
    p.add_argument("--out", required=True, help="output folder (manifest.csv + case_NNNNNN/)")
    p.add_argument("--size", type=arguments.count(16, 512), default=256, help="voxels per axis (default 256)")
    p.add_argument("--spacing", type=arguments.number(0.05, 50.0), default=1.0,
                   help="mm per voxel, 0.05 to 50 (default 1.0; e.g. 64 at 4.0)")
    p.add_argument("--seed", type=arguments.seed, default=0, help="master seed (case i uses a seed derived from it)")
    p.add_argument("--workers", type=arguments.count(1, 256), default=1, help="worker processes")
    p.add_argument("--no-measure", action="store_true", help="skip the measurements in truth.json")
    p.add_argument("--wording", choices=("all", "train", "heldout"), default="all",
                   help="report templates: all, or the train / held-out halves (train a model on 'train' reports "
                        "and test it on 'heldout' prompts it never saw)")
    p.add_argument("--report-variants", type=arguments.count(1, 100), default=1, metavar="K",
                   help="reports per case: report.txt and K-1 paraphrases in other templates of the same wording "
                        "(training draws one per step; added to cases already written)")
    p.set_defaults(func=_phantoms)

    q = subparsers.add_parser(
        "preview", help="PNG of a CT's axial, coronal and sagittal planes through the lungs, then the same planes "
             "with the masks given",
        description="Two rows: the CT's axial, coronal and sagittal planes (lung window W1500/L-600), then the "
                    "same planes with coloured overlays for lobes, airway and vessels. The planes go through the "
                    "lungs of --lobes (the sagittal through the right lung); without lobes through the volume's "
                    "centre, the sagittal at 30 % of its width from the patient's right.")
    q.add_argument("--ct", required=True, help="CT image (NIfTI, NRRD, ...)")
    q.add_argument("--lobes", help="lobe label map (1..5)")
    q.add_argument("--airway", help="binary airway mask")
    q.add_argument("--vessels", help="binary vessel mask")
    q.add_argument("--out", required=True, help="output PNG (new, or an earlier preview with --overwrite)")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier MedSyn preview at --out")
    q.add_argument("--panel", type=arguments.count(16, 4096), default=256, help="pixels per panel (default 256)")
    q.set_defaults(func=_preview)


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(prog="medsyn")
    add_parser(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args()
    raise SystemExit(a.func(a))
