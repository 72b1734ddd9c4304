"""The sweep runner's cost: its overhead over the runs it runs, and what `--jobs 2` buys on 2 cores.
Prints one JSON object.

    python benchmarks/sweep_overhead.py [--runs 4] [--tokens 51200] [--cores 2] [key=value ...]

Runs `--runs` tiny-recipe runs (seeds 0..N-1, `--tokens` each) twice through run_sweep, each time into a
fresh folder: with jobs=1, then with jobs=2 (cores // jobs threads a run). The data set is prepared
first, so neither sweep builds it.
    overhead = sweep wall time - the sum of the runs' own train + eval subprocess times (jobs=1)
Targets: overhead ≤ 2% of the summed run time; jobs=2 wall time ≤ 60% of jobs=1 on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from trimdm.data.prepare import prepare
from trimdm.recipes import get_recipe
from trimdm.study.sweep import RunSpec, run_sweep


def timed_sweep(out: Path, runs: list[RunSpec], jobs: int, cores: int) -> dict:
    t0 = time.perf_counter()
    result = run_sweep(out, runs, jobs=jobs, cores=cores, log=lambda *a: None)
    wall = time.perf_counter() - t0
    result.check()
    run_s = sum(r["train_seconds"] + r["eval_seconds"] for r in result.runs)
    row = {"jobs": jobs, "threads_per_run": max(1, cores // jobs), "wall_s": round(wall, 3),
           "sum_of_run_s": round(run_s, 3), "run_s": [round(r["train_seconds"] + r["eval_seconds"], 3)
                                                     for r in result.runs]}
    if jobs == 1:  # with runs side by side, wall time and summed run time measure different things
        row.update(overhead_s=round(wall - run_s, 3), overhead_fraction=round((wall - run_s) / run_s, 5))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--tokens", type=int, default=51200, help="train.tokens of each run (tiny: 512 a step)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--keep", default=None, help="folder for the sweeps (default: a temporary one, removed)")
    args, overrides = p.parse_known_args()
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews both figures
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        overrides = [f"data.root={root / 'data'}", *overrides]
        tokens = [f"train.tokens={args.tokens}", f"optim.base.tokens={args.tokens}", "train.log_every=10"]
        prepare(get_recipe("tiny").override(overrides).derive().data, log=lambda *a: None)
        runs = [RunSpec(f"tiny_s{s}", "tiny", (*overrides, *tokens, f"train.seed={s}")) for s in range(args.runs)]
        sequential = timed_sweep(root / "jobs1", runs, 1, args.cores)
        parallel = timed_sweep(root / "jobs2", runs, 2, args.cores)
    print(json.dumps({"runs": args.runs, "tokens_per_run": args.tokens, "cores": args.cores,
                      "load_average_1min_before": load_before, "load_average_1min_after": round(os.getloadavg()[0], 2),
                      "sequential": sequential,
                      "parallel": parallel,
                      "parallel_over_sequential": round(parallel["wall_s"] / sequential["wall_s"], 4),
                      "targets": {"overhead_fraction": 0.02, "parallel_over_sequential": 0.6}}, indent=2))


if __name__ == "__main__":
    main()
