"""Training throughput on this machine: tokens/s and achieved FLOP/s of the real training step,
next to the bf16 matmul peak measured in the same run. Prints one JSON object.

    python benchmarks/train_throughput.py [--configs demo,demo_text,d512] [--steps 6]
    python benchmarks/train_throughput.py --nproc 2 --parallel ddp|fsdp [--configs d512]

Configs: demo, demo_text, tinyworld, d512, and tiny (the `tiny` recipe: seconds, for the smoke test).

With --nproc N the script relaunches itself under torchrun; each rank then gets cores/N threads, and
the peak is the single-process matmul peak measured first (so MFU compares the whole machine).

FLOPs counted are the model's useful work (model/flops.py: 6·matmul weights + attention + logits of
the masked positions over their modality slice); recomputation or wasted work is not credited.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from trimdm.recipes import get_recipe
from trimdm.train.metrics import matmul_peak_flops
from trimdm.train.trainer import Trainer


CONFIGS = {  # name -> (recipe, overrides)
    "demo": ("demo", []),  # tri-modal tinyworld (prepares it on first use)
    "demo_text": ("demo_text", []),
    "tinyworld": ("tinyworld", []),
    "tiny": ("tiny", []),  # the smoke test's: a run of the script in seconds, not a measurement
    "d512": ("demo_text", ["model.d_model=512", "model.n_layers=8", "model.n_heads=8", "data.seq_len=512",
                           "train.batch_size=8"]),
}


def measure(name: str, extra: list[str], steps: int, warmup: int = 2) -> dict:
    recipe, overrides = CONFIGS[name]
    cfg = get_recipe(recipe).override(overrides + extra)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None)
        for _ in range(warmup):
            tr.train_step()
        flops, t0 = 0.0, time.perf_counter()
        for _ in range(steps):
            out = tr.train_step()
            flops += tr.step_flops(out["stats"], out["positions"])
        dt = (time.perf_counter() - t0) / steps
    tps = cfg.derived.tokens_per_step / dt
    return {"config": name, "recipe": recipe, "overrides": overrides + extra, "params": tr.params,
            "tokens_per_step": cfg.derived.tokens_per_step, "seconds_per_step": dt, "tokens_per_s": tps,
            "flops_per_token": flops / steps / cfg.derived.tokens_per_step, "achieved_gflops": flops / steps / dt / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="demo,d512")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--peak-gflops", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        peak = matmul_peak_flops(device, torch.bfloat16, seconds=2.0)
        threads = max(1, (os.cpu_count() or 1) // args.nproc)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               __file__, "--configs", args.configs, "--steps", str(args.steps), "--parallel", args.parallel,
               "--peak-gflops", str(peak / 1e9), *args.overrides, f"train.threads={threads}"]
        sys.exit(subprocess.run(cmd).returncode)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    peak = args.peak_gflops * 1e9 or matmul_peak_flops(device, torch.bfloat16, seconds=2.0)
    extra = [*args.overrides, f"train.parallel={args.parallel}"]
    results = []
    for name in args.configs.split(","):
        r = measure(name, extra, args.steps)
        # step FLOPs count the global batch (loss statistics are all-reduced): the job's rate, not a rank's
        r["fraction_of_bf16_peak"] = r["achieved_gflops"] * 1e9 / peak
        results.append(r)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "device": str(device),
                          "nproc": world, "parallel": args.parallel if world > 1 else None,
                          "threads_per_process": torch.get_num_threads(), "bf16_matmul_peak_gflops": peak / 1e9,
                          "results": results}, indent=2))
    if world > 1:
        from trimdm.distributed.env import finish

        finish()


if __name__ == "__main__":
    main()
