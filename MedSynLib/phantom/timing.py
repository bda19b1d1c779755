"""Phantom generation speed on one core: ``python -m MedSynLib.phantom.timing [--repeat N]``.

Prints seconds to generate one 256³ case at 1 mm and one 64³ case at 4 mm (arrays only), with every finding
switched on (the slowest path) and with random findings, plus the time to measure and write a 256³ case.
Threads are pinned to 1 (OMP/MKL/OpenBLAS and SimpleITK) before numpy is imported.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import SimpleITK as sitk  # noqa: E402

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

from .. import arguments  # noqa: E402
from .dataset import write_case  # noqa: E402
from .compose import make_phantom  # noqa: E402
from .grid import Grid  # noqa: E402
from .measure import measure_all  # noqa: E402
from .report import render_report  # noqa: E402

ALL_FINDINGS = dict(effusion=("bilateral", "moderate"), cardiomegaly=True, emphysema="moderate", consolidation=1,
                    ggo=2, nodules=3)


def _time(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, result)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best, best_cpu, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=arguments.count(1, 1000), default=2, help="runs per measurement; the best is reported")
    ap.add_argument("--seed", type=arguments.seed, default=7)
    a = ap.parse_args(argv)
    make_phantom(0, Grid.cube(32, 8.0))  # warm-up (imports, first-call overheads)
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes inflate wall time; CPU time is ours)")
    rows = []
    for size, sp in ((64, 4.0), (256, 1.0)):
        g = Grid.cube(size, sp)
        t_all, c_all, ph = _time(lambda: make_phantom(a.seed, g, **ALL_FINDINGS), a.repeat)
        t_rand, c_rand, _ = _time(lambda: make_phantom(a.seed + 1, g), a.repeat)
        rows.append((size, sp, c_all, c_rand, ph))
        print(f"generate {size}³ @ {sp:g} mm: all findings {t_all:.2f} s wall / {c_all:.2f} s CPU; "
              f"random findings {t_rand:.2f} s wall / {c_rand:.2f} s CPU", flush=True)
    size, sp, _, _, ph = rows[-1]
    t_m, c_m, _ = _time(lambda: measure_all(ph.ct, ph.grid.spacing_zyx, ph.lobes, ph.airway, ph.effusion), 1)
    print(f"measure  {size}³: {t_m:.2f} s wall / {c_m:.2f} s CPU", flush=True)
    with tempfile.TemporaryDirectory() as d:
        rep = render_report(ph.truth, 0)
        t_w, c_w, _ = _time(lambda: write_case(ph, Path(d) / "c", rep), 1)
    print(f"write    {size}³ (4 NIfTI .gz + report + truth): {t_w:.2f} s wall / {c_w:.2f} s CPU", flush=True)
    ok = max(rows[0][2:4]) <= 1.0 and max(rows[1][2:4]) <= 10.0
    print("targets (CPU: 64³ <= 1 s, 256³ <= 10 s):", "met" if ok else "NOT met")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
