"""The small training loop of the tokenizers and the judges (not of the diffusion model: train/ owns that).

Owns: AdamW with weight decay on matrices only (norm gains, biases and other vectors never decay), a
learning rate set every step from `lr_at(step)`, optional gradient clipping by global norm, and the
per-step record of a value the caller chooses. Does not own the batches, the loss or the autocast
policy: `loss_at(step)` draws its batch and returns (loss to minimise, value to record), so a caller
keeps its own random generators and its own precision. Deterministic when the caller's draws are.
"""
from __future__ import annotations

from typing import Callable

import torch


def fit(net: torch.nn.Module, steps: int, loss_at: Callable[[int], tuple[torch.Tensor, torch.Tensor | float]],
        lr_at: Callable[[int], float], *, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float = 1.0, log_every: int = 0,
        on_log: Callable[[int, list[float]], None] | None = None) -> list[float]:
    """Train `net` for `steps` AdamW steps; returns the recorded value of every step. Every
    `log_every` steps (and at the last) `on_log(steps done, values so far)` is called."""
    decay = [p for p in net.parameters() if p.ndim >= 2]
    rest = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr_at(0), betas=betas)
    net.train()
    values: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss, value = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        values.append(float(value))
        if on_log is not None and ((step + 1) % max(1, log_every) == 0 or step + 1 == steps):
            on_log(step + 1, values)
    return values
