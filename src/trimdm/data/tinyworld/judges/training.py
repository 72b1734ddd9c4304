"""How both judges train: the shared small loop (optim/fit.py) with the judges' schedule and precision.

AdamW (no weight decay on vectors), warm-up over 5% of the steps, cosine decay to 1% of `training.lr`,
gradient clip 1. With `bf16` the loss is computed under bf16 autocast (fp32 weights; the losses cast
logits to fp32). Progress goes to `say` ten times, timed from t0.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from trimdm.optim.fit import fit
from trimdm.optim.lr import lr_factor


def fit_judge(net, training, steps: int, loss_at: Callable, say: Callable[[str], None], what: str, t0: float,
              label: str = "loss", bf16: bool = False) -> list[float]:
    """Train a judge; `loss_at(step)` draws that step's batch and returns its loss. Returns every loss."""
    def step_loss(step: int):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_at(step)
        return loss, loss.item()

    def on_log(done: int, losses: list[float]) -> None:
        say(f"{what} step {done}/{steps} {label} {np.mean(losses[-50:]):.4f} ({time.perf_counter() - t0:.0f}s)")

    warmup = max(1, steps // 20)
    return fit(net, steps, step_loss, lambda step: training.lr * lr_factor(step, steps, warmup, "cosine", 0.01),
               weight_decay=training.weight_decay, grad_clip=1.0, log_every=max(1, steps // 10), on_log=on_log)
