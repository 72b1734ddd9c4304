"""`trimdm demo` / `make demo`: the main job on the embedded data, end to end on a CPU.

Prepares the text data, trains the `demo` recipe (resuming if the run directory holds a checkpoint),
evaluates held-out NELBO against the unigram baseline, prints a few generated samples and says
where everything is.
"""
from __future__ import annotations

import time
from pathlib import Path

from trimdm.eval.report import evaluate_run
from trimdm.recipes import demo
from trimdm.sample.run import generate_from_run
from trimdm.train.trainer import train


def run_demo(out: Path, overrides: list[str]) -> None:
    t0 = time.time()
    cfg = demo().override(list(overrides)).derive()
    print(f"== trimdm demo: training recipe 'demo' into {out}")
    train(cfg, out)
    print("== evaluating held-out NELBO")
    result = evaluate_run(out)
    text = result["nelbo"]["text"]
    unigram = result["baselines"]["text_unigram_bits"]
    print(f"held-out text NELBO: {text['bits_per_token']:.3f} bits/token "
          f"(perplexity bound {text['perplexity_bound']:.1f}); unigram entropy of the text: {unigram:.3f} "
          f"bits/token; the model is {unigram - text['bits_per_token']:.3f} bits/token better")
    print("== samples (prompted with 'And God said')")
    for i, sample in enumerate(generate_from_run(str(out), "And God said", 3, [])):
        print(f"[{i}] {sample}")
    print("== unconditional samples")
    for i, sample in enumerate(generate_from_run(str(out), "", 2, [])):
        print(f"[{i}] {sample}")
    print(f"== done in {time.time() - t0:.0f}s. Run directory: {out.resolve()} "
          "(config.json, metrics.jsonl, eval.json, checkpoints/)")
