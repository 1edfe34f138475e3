"""Benchmark: eight quick-profile points of the `data` notebook as a Dask sweep, on 1 worker and on 2 workers.

Each sweep starts its own LocalCluster (single-threaded worker processes) and reruns every point (`force=True`), so
the wall times include the cluster's start. Printed per sweep: the wall time, the speed-up over 1 worker (target:
>= 1.6x on 2 cores), the mean seconds per point, and the mean per-point overhead, i.e. the seconds a point takes
beyond the notebook's own clock (kernel start, papermill, the imports before the notebook's `Run` starts). Printed
as well: the time papermill needs for a notebook of one empty cell (a kernel start and stop), and the machine's load.

    python benchmarks/sweep.py [--points 8] [--workers 1 2] [--notebook data] [--out DIR]
"""
import argparse, os, statistics, tempfile, time
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm

from manifold_nb.sweep import sweep


def empty_notebook_seconds(repeats=3):
    "Median seconds of papermill running a notebook of one empty cell: the cost of starting and stopping a kernel."
    with tempfile.TemporaryDirectory() as d:
        nb = nbformat.v4.new_notebook(); nb.cells = [nbformat.v4.new_code_cell('pass')]
        nbformat.write(nb, f'{d}/empty.ipynb'); times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pm.execute_notebook(f'{d}/empty.ipynb', f'{d}/out.ipynb', kernel_name='python3', progress_bar=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--points', type=int, default=8, help='points (seeds 0..points-1)')
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='worker counts to compare')
    p.add_argument('--notebook', default='data', help='notebook to sweep')
    p.add_argument('--out', default=None, help='output root (default: a temporary folder)')
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix='sweep-bench-'))
    load0 = os.getloadavg()
    print(f'{os.cpu_count()} cores; load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}')
    kernel = empty_notebook_seconds()
    rows = []
    for w in args.workers:
        t0 = time.perf_counter()
        t = sweep(args.notebook, dict(seed=list(range(args.points))), name=f'bench-{w}w', out=out, workers=w, force=True,
                  progress=False)
        wall = time.perf_counter() - t0
        assert (t.status == 'ok').all(), t[t.status != 'ok'][['point', 'error']]
        rows.append(dict(workers=w, points=len(t), wall_s=wall, mean_point_s=t.seconds.mean(),
                         mean_overhead_s=(t.seconds - t.notebook_seconds).mean()))
        print(f'{w} worker(s): {wall:.1f} s')
    table = pd.DataFrame(rows)
    table['speed_up'] = table.wall_s.iloc[0] / table.wall_s
    load1 = os.getloadavg()
    print(table.to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    print(f'empty notebook through papermill (kernel start and stop), median of 3: {kernel:.2f} s')
    print(f'load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; results in {out}')


if __name__ == '__main__':
    main()
