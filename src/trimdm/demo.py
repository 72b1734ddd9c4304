"""`trimdm demo` / `make demo`: the main job on the embedded data, end to end on a CPU.

Prepares tinyworld (cached after the first run: raw data, tokenizers, shards, judges), trains the
`demo` recipe on text, image-text and audio-text (resuming if the run directory holds a checkpoint),
then evaluates: held-out NELBO per modality and the conditional NELBOs next to the text's unigram
entropy, tokenizer reconstructions, and generation scored by the data set's judges (T2I, I2T, T2S,
S2T, each next to its chance level). Writes RUN/eval.json, RUN/report.md and a self-contained
RUN/report.html, prints a few generated texts and says where to open the report.
"""
from __future__ import annotations

import time
from pathlib import Path

from trimdm.data.prepare import prepare
from trimdm.eval.run import evaluate_run
from trimdm.eval.summary import print_summary
from trimdm.recipes import get_recipe
from trimdm.sample.run import generate_from_run
from trimdm.train.trainer import train


def run_demo(out: Path, overrides: list[str], recipe: str = "demo") -> None:
    t0 = time.time()
    cfg = get_recipe(recipe).override(list(overrides)).derive()
    print(f"== trimdm demo: preparing {cfg.data.dataset} and training recipe '{recipe}' into {out}")
    prepare(cfg.data)  # every stage first (the judges train beside the shards): training gets both cores
    train(cfg, out)
    print(f"== evaluating ({time.time() - t0:.0f}s so far)")
    result = evaluate_run(out)
    print_summary(result)
    gen = result.get("generation")
    if gen:
        for s in gen["i2t"]["samples"][:3]:
            print(f"I2T: {s['caption']!r} (reference {s['reference']!r})")
        for s in gen["s2t"]["samples"][:2]:
            print(f"S2T: {s['transcript']!r} (reference {s['reference']!r})")
    prompt = "And God said"
    print(f"== text samples (prompted with {prompt!r})")
    for i, sample in enumerate(generate_from_run(str(out), prompt, 3, [])):
        print(f"[{i}] {sample}")
    report = result.get("report", {}).get("html")
    print(f"== done in {time.time() - t0:.0f}s. Run directory: {out.resolve()} (config.json, metrics.jsonl, "
          f"eval.json, samples/, checkpoints/)")
    if report:
        print(f"== open the report: {Path(report).resolve()}")
