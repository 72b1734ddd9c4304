"""`trimdm demo` / `make demo`: the main job on the embedded data, end to end on a CPU.

Prepares tinyworld (cached after the first run), trains the `demo` recipe on text, image-text and
audio-text (resuming if the run directory holds a checkpoint), evaluates held-out NELBO per modality
(and the conditional NELBOs) next to the text's unigram entropy, writes tokenizer reconstructions of
held-out images and utterances into the run directory, prints a few generated text samples and says
where everything is.
"""
from __future__ import annotations

import time
from pathlib import Path

from trimdm.eval.run import evaluate_run
from trimdm.recipes import get_recipe
from trimdm.sample.run import generate_from_run
from trimdm.train.trainer import train


def run_demo(out: Path, overrides: list[str], recipe: str = "demo") -> None:
    t0 = time.time()
    cfg = get_recipe(recipe).override(list(overrides)).derive()
    print(f"== trimdm demo: preparing {cfg.data.dataset} and training recipe '{recipe}' into {out}")
    train(cfg, out)
    print(f"== evaluating ({time.time() - t0:.0f}s so far)")
    result = evaluate_run(out)
    print(f"{'held-out NELBO':<22}{'bits/token':>12}{'perplexity bound':>18}")
    for m, v in result["nelbo"].items():
        print(f"{m:<22}{v['bits_per_token']:>12.3f}{v['perplexity_bound']:>18.1f}")
    for name, v in result.get("conditional_nelbo", {}).items():
        print(f"{name:<22}{v['bits_per_token']:>12.3f}{v['perplexity_bound']:>18.1f}")
    unigram = result["baselines"]["text_unigram_bits"]
    text = result["nelbo"]["text"]["bits_per_token"]
    print(f"text unigram entropy: {unigram:.3f} bits/token; the model is {unigram - text:.3f} bits/token below it")
    rec = result.get("reconstructions")
    if rec:
        im, au = rec["image_metrics"], rec["audio_metrics"]
        print(f"tokenizer reconstructions in {rec['directory']}: image grid {rec['image_grid']} "
              f"(PSNR {im['psnr']:.1f} dB, SSIM {im['ssim']:.3f}), {len(rec['utterances'])} WAV pairs "
              f"(STOI {au.get('stoi_codes', float('nan')):.3f})")
    print("== text samples (prompted with 'And God said')")
    for i, sample in enumerate(generate_from_run(str(out), "And God said", 3, [])):
        print(f"[{i}] {sample}")
    print(f"== done in {time.time() - t0:.0f}s. Run directory: {out.resolve()} "
          "(config.json, metrics.jsonl, eval.json, samples/, checkpoints/)")
