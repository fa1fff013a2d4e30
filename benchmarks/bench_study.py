"""Study scale-out: wall time of the same tiny grid on a local Dask cluster of 1 worker, then 2.

    python benchmarks/bench_study.py                  # 4 cells x 150 iterations per run (about 6 min on 2 cores)
    python benchmarks/bench_study.py --cells 2 --iterations 40   # a quicker look
    python benchmarks/bench_study.py --json FILE      # also keep the numbers

In a throwaway workspace (tests/workspaces.py: the tiny profile, synthetic photos, the pool in
data.dvc) every run is `python -m flows study` in a fresh process with `study.task_runner: dask`,
`train.threads: 1` (each worker's cells use one core). A warm-up run of one cell first computes what
every cell shares (curation, suites, prior: DVC's run cache restores them afterwards), so both
measured runs do the same work: `--cells` cells of training and evaluation that differ only by seed
(fresh seeds per run: a finished cell would otherwise be reused). Two figures per run:

- total: the whole command (interpreter, temporary Prefect server, Dask cluster, cells, report);
- cells: first cell start to last cell end, from the cells' own timestamps (the part that scales).

Speedup = 1-worker time / 2-worker time; the goal is >= 1.8x on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.workspaces import pooled_workspace, run, tiny_dask_study  # noqa: E402  (no pytest: plain helpers)


def study_run(workspace: Path, env: dict, params: dict, workers: int, seeds: list[int], iterations: int) -> dict:
    """One `python -m flows study` on `workers` Dask workers; returns its wall times (s)."""
    name = f"study-{workers}w-{seeds[0]}.yaml"
    (workspace / name).write_text(yaml.safe_dump(tiny_dask_study(params, workers, seeds, iterations), sort_keys=False))
    started = time.perf_counter()
    run([sys.executable, "-m", "flows", "study", "--root", str(workspace), "--params", name], workspace, env, timeout=3600)
    total = time.perf_counter() - started
    results = [json.loads(p.read_text()) for p in (workspace / ".raincheck" / "study" / "results").glob("*.json")]
    mine = [r for r in results if r.get("started", 0) >= time.time() - total - 1]
    if len(mine) != len(seeds):
        raise RuntimeError(f"expected {len(seeds)} fresh cell results, found {len(mine)}")
    cells = max(r["finished"] for r in mine) - min(r["started"] for r in mine)
    return {"workers": workers, "cells": len(seeds), "total_s": round(total, 1), "cells_s": round(cells, 1),
            "per_cell_s": [round(r["finished"] - r["started"], 1) for r in mine],
            "dask_workers": sorted({r.get("worker") or "-" for r in mine})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4, help="cells per measured run (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=150, help="training iterations per cell (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        workspace, env, params = pooled_workspace(Path(tmp))
        load = os.getloadavg()
        warm = study_run(workspace, env, params, 1, [1000], args.iterations)
        one = study_run(workspace, env, params, 1, list(range(1, args.cells + 1)), args.iterations)
        two = study_run(workspace, env, params, 2, list(range(101, 101 + args.cells)), args.iterations)
        load_after = os.getloadavg()
    report = {
        "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load], "loadavg_after": [round(x, 2) for x in load_after],
        "iterations": args.iterations, "warm_up": warm, "one_worker": one, "two_workers": two,
        "speedup_total": round(one["total_s"] / two["total_s"], 2), "speedup_cells": round(one["cells_s"] / two["cells_s"], 2),
    }
    for run_ in (warm, one, two):
        print(f"{run_['workers']} worker(s), {run_['cells']} cells: total {run_['total_s']} s, cells {run_['cells_s']} s "
              f"(per cell {run_['per_cell_s']}; workers {run_['dask_workers']})")
    print(f"speedup 2 workers over 1: total {report['speedup_total']}x, cells {report['speedup_cells']}x "
          f"(goal >= 1.8x; load average before {report['loadavg_before']}, after {report['loadavg_after']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
