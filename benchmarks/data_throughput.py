"""Loader throughput next to what training consumes, at the demo config, in one run. Prints JSON.

    python benchmarks/data_throughput.py [--recipe demo] [--steps 200] [key=value ...]

The loader is timed alone (mixture apportionment, permutation, row assembly from memory-mapped
shards, for the rank's whole batch); the trainer is timed on full optimizer steps of the same recipe.
Target (issue 3): loader rows/s ≥ 20 × the rows/s training consumes.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from trimdm.recipes import get_recipe
from trimdm.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = get_recipe(args.recipe).override(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None)
        loader = tr.loader
        t0 = time.perf_counter()
        rows = tokens = 0
        for _ in range(args.steps):
            batch = loader.next()
            rows += batch.shape[0]
            tokens += int((batch != tr.vocab.PAD_text).sum())
        load_s = time.perf_counter() - t0
        tr.train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            tr.train_step()
        step_s = (time.perf_counter() - t0) / args.train_steps
    loader_rows = rows / load_s
    train_rows = tr.clean_global / step_s
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "recipe": args.recipe, "overrides": args.overrides,
        "loader": {"rows_per_s": loader_rows, "tokens_per_s": tokens / load_s, "steps": args.steps},
        "training": {"rows_per_s": train_rows, "tokens_per_s": cfg.derived.tokens_per_step / step_s,
                     "seconds_per_step": step_s},
        "loader_over_training": loader_rows / train_rows}, indent=2))


if __name__ == "__main__":
    main()
