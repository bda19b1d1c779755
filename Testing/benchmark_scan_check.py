"""Benchmark: the time of the scan check (:func:`MedSynLib.io.scan.check_chest_ct`, the part every command runs
before the model is loaded) on a clinical-size CT, and of the check with the model's box
(:func:`MedSynLib.pipelines.scan_check.check_scan`, the demo model). Prints measured seconds (wall and process CPU).

    PYTHONPATH=$PWD nice -n 10 python Testing/benchmark_scan_check.py [--variant tall] [--repeat 3]

The CT is a variant of the phantom of ``Testing/ct_variants.py`` at full size (``tall``: 512 x 512 x 600 slices
of 0.7 x 0.7 x 1.25 mm, int16), built from a 2 mm phantom and written to memory only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from ct_variants import VARIANTS, base_phantom, make_variant


def _timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tall", choices=VARIANTS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=None, help="model for the check with its box (default: the demo)")
    args = parser.parse_args()
    from MedSynLib.io.scan import check_chest_ct
    from MedSynLib.modelstore.bundle import ModelSpace
    from MedSynLib.modelstore.registry import resolve_model
    from MedSynLib.pipelines.scan_check import check_scan

    ct = make_variant(base_phantom(0, 2.0), args.variant, 1.0).ct
    space = ModelSpace.of(resolve_model(args.model))
    print(f"CT {args.variant}: {ct.GetSize()} voxels of {tuple(round(s, 2) for s in ct.GetSpacing())} mm")
    for name, fn in (("scan check (CT only)", lambda: check_chest_ct(ct)),
                     ("scan check + model box", lambda: check_scan(ct, space))):
        runs = [_timed(fn) for _ in range(args.repeat)]
        check = runs[-1][2]
        print(f"{name}: wall median {statistics.median(r[0] for r in runs):.2f} s "
              f"(min {min(r[0] for r in runs):.2f}), CPU median {statistics.median(r[1] for r in runs):.2f} s; "
              f"passed={check.passed} lung {check.figures.get('lung_ml')} mL", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
