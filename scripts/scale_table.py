"""The expected memory and throughput per GPU of the paper-scale recipes (docs/scale.md): memory from the
trainer's estimator (model/memory.py, as its memory check computes it on a GPU), tokens/s from the FLOP
counter (model/flops.py) at an assumed model FLOP utilization. Estimates, not measurements: no GPU run of
these recipes exists yet. Prints a Markdown table, or JSON with --json.

    python scripts/scale_table.py [--mfu 0.4] [--peak-tflops 989] [--json]

Assumptions: an H100 SXM's 989 TFLOP/s dense bf16; the recipe's corpus has the joint vocabulary its
embedding count assumes (recipes.PAPER_VOCAB); a third of the tokens in each modality (the recipes' mix),
half of them masked, so a masked position's logits span the mean output slice width; with activation
checkpointing the recomputed forward pass costs FLOPs at the same utilization and is not counted as
useful (tokens/s falls by that share).
"""
from __future__ import annotations

import argparse
import json

import torch

from trimdm.model.flops import param_counts, train_flops_per_token
from trimdm.recipes import PAPER_VOCAB, get_recipe
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.memory import estimate
from trimdm.train.run import model_args

SETTINGS = [  # recipe, GPUs (FSDP ranks), micro-batch rows per GPU, activation checkpointing
    ("paper_320m", 1, 16, False), ("paper_320m", 8, 16, False), ("paper_320m", 8, 32, False),
    ("paper_320m", 8, 32, True),
    ("paper_3b", 8, 4, False), ("paper_3b", 8, 8, True), ("paper_3b", 64, 4, False), ("paper_3b", 64, 16, True),
]


def row(name: str, gpus: int, micro: int, ac: bool, vocab: JointVocab, mfu: float, peak: float) -> dict:
    cfg = get_recipe(name).derive()
    a = model_args(cfg, vocab)
    widths = [vocab.n_text + 1, vocab.n_image + 1, vocab.audio_codebook + 1]
    useful = train_flops_per_token(a, cfg.data.seq_len, sum(widths) / 3, 0.5)
    recompute = 2.0 * a.n_layers * (4 * a.d_model**2 + 3 * a.d_model * a.hidden + 2 * cfg.data.seq_len * a.d_model)
    tokens_per_s = mfu * peak / (useful + (recompute if ac else 0.0))
    mem = estimate(cfg, vocab, gpus, torch.device("cuda"), micro=micro, checkpointing=ac, parallel="fsdp")
    gpu_hours = cfg.train.tokens / tokens_per_s / 3600
    return {"recipe": name, "params": param_counts(a), "gpus": gpus, "micro_batch": micro,
            "activation_checkpointing": ac, "memory_gib": mem["peak"] / 2**30,
            "useful_flops_per_token": useful, "tokens_per_s_per_gpu": tokens_per_s, "horizon_tokens": cfg.train.tokens,
            "gpu_hours_for_horizon": gpu_hours, "wall_days_for_horizon": gpu_hours / gpus / 24}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    vocab = JointVocab(n_text=PAPER_VOCAB["text"], n_image=PAPER_VOCAB["image"],
                       audio_levels=PAPER_VOCAB["audio_levels"], audio_codebook=PAPER_VOCAB["audio_codebook"])
    rows = [row(*s, vocab, args.mfu, args.peak_tflops * 1e12) for s in SETTINGS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| recipe | GPUs | micro-batch (rows of 1,024) | act. ckpt | memory per GPU | GFLOP per token | "
          "tokens/s per GPU | GPU-hours for the horizon | days on these GPUs |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['recipe']} | {r['gpus']} | {r['micro_batch']} | {'yes' if r['activation_checkpointing'] else 'no'} | "
              f"{r['memory_gib']:.1f} GiB | {r['useful_flops_per_token'] / 1e9:.2f} | {r['tokens_per_s_per_gpu']:,.0f} | "
              f"{r['gpu_hours_for_horizon']:,.0f} | {r['wall_days_for_horizon']:,.2f} |")


if __name__ == "__main__":
    main()
