"""Generation from a run directory or checkpoint (the `trimdm generate` entry point)."""
from __future__ import annotations

from trimdm.sample.tasks import generate_text
from trimdm.train.trainer import load_run


def generate_from_run(run: str, prompt: str, n: int, overrides: list[str], seed: int | None = None) -> list[str]:
    if n < 1:
        raise ValueError(f"--n={n} must be at least 1")
    loaded = load_run(run)
    loaded.cfg.override(overrides, only="sample").validate()
    return generate_text(loaded.model, loaded.vocab, loaded.tokenizer, prompt, n, loaded.cfg.sample,
                         loaded.cfg.data.seq_len, loaded.device, seed=seed, autocast_dtype=loaded.autocast_dtype)
