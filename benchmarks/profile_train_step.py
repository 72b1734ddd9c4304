"""Where trimdm's training step goes: torch.profiler (CPU, record_shapes) over a few steps of one
benchmark config. Prints one JSON object: the top ops by self CPU time per step (by input shapes, and
summed over shapes), and the step split into data and masks, forward (model and loss), backward,
gradient clipping and optimizer.

    python benchmarks/profile_train_step.py [--config d512] [--steps 3] [--top 25] [overrides ...]

The top-ops table profiles `Trainer.train_step` itself. The split profiles the same work spelled out
here with a `record_function` around each part (one process, no micro-batches: the trainer's step
without its statistics, noise-scale and skip bookkeeping), so the trainer stays free of profiling code.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from train_throughput import CONFIGS
from trimdm.diffusion.loss import diffusion_loss
from trimdm.diffusion.masking import compact
from trimdm.recipes import get_recipe
from trimdm.train.run import autocast
from trimdm.train.trainer import Trainer

PARTS = ("data_and_masks", "forward", "backward", "clip", "optimizer")


def labelled_step(tr: Trainer) -> None:
    """Trainer.train_step's work for one process and one micro-batch, each part labelled."""
    with record_function("data_and_masks"):
        batches, _, denominator = tr.noisy_batches()
    tr.optimizer.zero_grad(set_to_none=True)
    for nb in batches:
        for part in compact(nb, by_task=True):
            with record_function("forward"), autocast(tr.cfg.train.dtype, tr.device):
                loss, _ = diffusion_loss(tr.net, tr.vocab, part.to(tr.device), denominator)
            with record_function("backward"):
                loss.backward()
    with record_function("clip"):
        torch.nn.utils.clip_grad_norm_([p for p in tr.net.parameters() if p.grad is not None], 1.0, foreach=True)
    with record_function("optimizer"):
        tr.optimizer.step()


def top_ops(prof, n: int, steps: int, by_shape: bool) -> list[dict]:
    """The n ops (with their input shapes, or summed over shapes) of most self CPU time, per step."""
    rows = sorted(prof.key_averages(group_by_input_shape=by_shape), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, **({"shapes": str(e.input_shapes)[:120]} if by_shape else {}), "calls": e.count // steps,
             "self_cpu_ms": e.self_cpu_time_total / 1e3 / steps, "self_share": e.self_cpu_time_total / total}
            for e in rows[:n]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="d512")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    recipe, overrides = CONFIGS[args.config]
    cfg = get_recipe(recipe).override(overrides + args.overrides)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None)
        for _ in range(2):
            tr.train_step()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.steps):
                tr.train_step()
        step_s = (time.perf_counter() - t0) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as split_prof:
            for _ in range(args.steps):
                labelled_step(tr)
    spans = {e.key: e.cpu_time_total / 1e3 / args.steps for e in split_prof.key_averages() if e.key in PARTS}
    whole = sum(spans.values())
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "config": args.config, "overrides": overrides + args.overrides,
                      "threads": torch.get_num_threads(), "load_average_before": load,
                      "load_average_after": os.getloadavg(), "steps": args.steps,
                      "profiled_seconds_per_step": step_s,
                      "split_ms_per_step": spans, "split_share": {k: v / whole for k, v in spans.items()},
                      "top_ops": top_ops(prof, args.top, args.steps, True),
                      "top_ops_by_name": top_ops(prof, args.top, args.steps, False)}, indent=2))


if __name__ == "__main__":
    main()
