"""Learning-rate schedules in tokens (method §7): linear warmup, then cosine decay, constant, or
warmup–stable–decay (WSD).

Expressed per optimizer step because a step is a fixed number of tokens (`derived.tokens_per_step`);
the warmup length is converted from tokens and capped at 25% of the steps, and WSD's decay length from
its fraction of the horizon, by `Config.derive`.

- cosine: from the peak down to `min_ratio` of it over the steps after warmup (half a cosine).
- constant: the peak after warmup.
- wsd: the peak until the last `decay_steps` steps, then a straight line down to `min_ratio`
  (Hu et al. 2024, MiniCPM; Hägele et al. 2024): the stable phase does not depend on the horizon, so a
  run can be continued, or branched into decays at several horizons, from one checkpoint of it.
"""
from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant", "wsd")


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str, min_ratio: float,
              decay_steps: int = 0) -> float:
    """Multiplier of the peak lr for the update made at `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    progress = (step - (steps - decay_steps)) / max(1, decay_steps)
    return 1.0 - (1 - min_ratio) * min(max(progress, 0.0), 1.0)
