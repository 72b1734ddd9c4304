"""Peak memory of a training step on this machine, with and without activation checkpointing, next to
the estimate the trainer's memory check uses (model/memory.py). Prints one JSON object.

    python benchmarks/train_memory.py [--configs d512,d1024] [--steps 2] [overrides ...]
    python benchmarks/train_memory.py --quick          # the tiny recipe, one step: seconds

Configs: d512 (train_throughput.py's: d_model 512, 8 layers, rows of 512, batch 8; 30M parameters),
d1024 (d_model 1024, 24 layers, 16 heads, rows of 512, batch 4: 312M parameters), tiny (the smoke test).

Each configuration runs in a fresh process, so that one's peak does not hide another's: it opens the
data (prepared beforehand by this script), builds the trainer, resets the kernel's high-water mark of
its resident set (/proc/self/clear_refs) and takes `--steps` optimizer steps (AdamW's moments exist
from the first); the figure is VmHWM from /proc/self/status, which then counts the steps and the
model, optimizer and process they run in, not the set-up. `ru_maxrss` (whole process) is reported too.
On a CPU the resident set is the training memory; the machine's other jobs change time, not memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {  # name -> (recipe, overrides)
    "tiny": ("tiny", []),
    "d512": ("demo_text", ["model.d_model=512", "model.n_layers=8", "model.n_heads=8", "data.seq_len=512",
                           "train.batch_size=8"]),
    "d1024": ("demo_text", ["model.d_model=1024", "model.n_layers=24", "model.n_heads=16", "data.seq_len=512",
                            "train.batch_size=4"]),
}
GiB = 2**30


def status_bytes(field: str) -> float:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) * 1024
    raise KeyError(field)


def child(name: str, checkpointing: bool, steps: int, overrides: list[str]) -> dict:
    """One configuration in this process: the row of the JSON output."""
    import tempfile

    import torch

    from trimdm.recipes import get_recipe
    from trimdm.train.memory import estimate
    from trimdm.train.trainer import Trainer

    recipe, base = CONFIGS[name]
    cfg = get_recipe(recipe).override(base + overrides + [f"train.activation_checkpointing={str(checkpointing).lower()}"])
    runtime = status_bytes("VmRSS")  # Python, torch and trimdm imported, nothing built
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None, progress=False)
        built = status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        seconds = (time.perf_counter() - t0) / steps
    measured = status_bytes("VmHWM")
    est = estimate(tr.cfg, tr.vocab, 1, tr.device)
    return {"config": name, "recipe": recipe, "overrides": base + overrides, "activation_checkpointing": checkpointing,
            "params": tr.params, "tokens_per_step": tr.cfg.derived.tokens_per_step, "micro_batch": tr.micro,
            "dtype": tr.cfg.train.dtype, "threads": torch.get_num_threads(), "steps": steps,
            "seconds_per_step": seconds, "rss_runtime_gib": runtime / GiB, "rss_built_gib": built / GiB,
            "peak_rss_gib": measured / GiB,
            "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB,
            "estimate_gib": {k: v / GiB for k, v in est.items()},
            "estimate_over_measured": est["peak"] / measured}


def prepare_data(names: list[str], overrides: list[str]) -> None:
    """Prepare each configuration's data once, here, so that no child spends its peak on it."""
    from trimdm.data.prepare import prepare
    from trimdm.recipes import get_recipe

    for name in names:
        recipe, base = CONFIGS[name]
        prepare(get_recipe(recipe).override(base + overrides).data, log=lambda *a: None, evaluation=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="d512,d1024")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="the tiny recipe, one step (the smoke test)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", default="false", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.checkpointing == "true", args.steps, args.overrides)))
        return
    names = ["tiny"] if args.quick else args.configs.split(",")
    steps = 1 if args.quick else args.steps
    prepare_data(names, args.overrides)
    results = []
    for name in names:
        for ac in ("false", "true"):
            done = subprocess.run([sys.executable, __file__, "--child", name, "--checkpointing", ac, "--steps",
                                   str(steps), *args.overrides], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} (activation_checkpointing={ac}) exited {done.returncode}:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.splitlines()[-1]))
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_average_1min": load,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
