"""Offline judges of the embedded data set tinyworld: its stand-ins for CLIP (image.py: reads an image
back into its scene) and Whisper (speech.py: a CTC character recogniser), SPEC §9.

Owns: `settings()`, every default that shapes a trained judge (the prepare stage hashes it, so changing
a default retrains only the judges), and `load_judges`, the judges a prepared data set holds under
judges/{image,speech}/. Does not own where they are trained (data/tinyworld/dataset.py, stage
`judges`) or the generation metrics that use them (eval/generation.py).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trimdm.optim.lr import lr_factor


def settings() -> dict:
    """The default architecture and training settings of both judges, as plain JSON."""
    from trimdm.eval.judges import image, speech

    out = {"image": {"config": dataclasses.asdict(image.ImageJudgeConfig()),
                     "training": dataclasses.asdict(image.ImageJudgeTraining())},
           "speech": {"config": dataclasses.asdict(speech.SpeechJudgeConfig()),
                      "training": dataclasses.asdict(speech.SpeechJudgeTraining())}}
    return json.loads(json.dumps(out))  # tuples become lists, as in a stored manifest


def fit(net, training, steps: int, loss_at: Callable, say: Callable[[str], None], what: str, t0: float,
        label: str = "loss", bf16: bool = False) -> list[float]:
    """The judges' training loop; returns the loss of every step. AdamW (no weight decay on vectors),
    warm-up over 5% of the steps, cosine decay to 1% of `training.lr`, gradient clip 1. `loss_at(step)`
    draws that step's batch and returns its loss; progress goes to `say` ten times, timed from t0. With
    `bf16` the forward pass runs under bf16 autocast (fp32 weights; the losses cast logits to fp32)."""
    decay = [p for p in net.parameters() if p.ndim >= 2]
    rest = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": training.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=training.lr)
    warmup = max(1, steps // 20)
    net.train()
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = training.lr * lr_factor(step, steps, warmup, "cosine", 0.01)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            say(f"{what} step {step + 1}/{steps} {label} {np.mean(losses[-50:]):.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    return losses


def load_judges(data_dir: str | Path) -> dict:
    """{"image": ImageJudge, "speech": SpeechJudge} of a prepared tinyworld directory."""
    from trimdm.eval.judges.image import ImageJudge
    from trimdm.eval.judges.speech import SpeechJudge

    root = Path(data_dir) / "judges"
    if not root.is_dir():
        raise ValueError(f"{root} not found: prepare the tinyworld data set first (its judges stage)")
    return {"image": ImageJudge.load(root / "image"), "speech": SpeechJudge.load(root / "speech")}
