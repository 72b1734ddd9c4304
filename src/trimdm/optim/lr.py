"""Learning-rate schedules in tokens (SPEC §7): linear warmup, then cosine decay or constant.

Expressed per optimizer step because a step is a fixed number of tokens (`derived.tokens_per_step`);
the warmup length is converted from tokens and capped at 25% of the steps by `Config.derive`.
"""
from __future__ import annotations

import math


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for the update made at `step` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown lr schedule {schedule!r}")
