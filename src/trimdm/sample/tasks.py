"""Generation tasks: build the canvas for a task, decode it, and turn ids back into outputs (SPEC §8).

This version has unconditional and prompted text: `TASK_text BOS_text prompt MASK_text × gen_len`,
cut at the first generated EOS_text. Later tasks (t2i, t2s, i2t, s2t, infill) live here too.
"""
from __future__ import annotations

import torch

from trimdm.diffusion.schedules import parse_schedule
from trimdm.sample.sampler import decode


def text_canvas(vocab, prompt_ids: list[int], gen_len: int, seq_len: int, n: int) -> torch.Tensor:
    length = 2 + len(prompt_ids) + gen_len
    if length > seq_len:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens + {gen_len} generated tokens + 2 specials "
                         f"exceeds data.seq_len={seq_len}; shorten the prompt or sample.gen_len")
    row = [vocab.TASK_text, vocab.BOS_text, *prompt_ids] + [vocab.MASK_text] * gen_len
    return torch.tensor([row] * n, dtype=torch.long)


def generate_text(model, vocab, tokenizer, prompt: str, n: int, sample_cfg, seq_len: int,
                  device: torch.device, seed: int | None = None, autocast_dtype=None) -> list[str]:
    prompt_ids = tokenizer.encode(prompt).tolist() if prompt else []
    canvas = text_canvas(vocab, prompt_ids, sample_cfg.gen_len, seq_len, n).to(device)
    gen = torch.Generator(device=device).manual_seed(sample_cfg.seed if seed is None else seed)
    out = decode(model, vocab, canvas, steps=sample_cfg.steps, schedule=parse_schedule(sample_cfg.schedule),
                 temperature=sample_cfg.temperature, top_k=sample_cfg.top_k, top_p=sample_cfg.top_p,
                 confidence_noise=sample_cfg.confidence_noise, generator=gen, autocast_dtype=autocast_dtype)
    texts = []
    for row in out[:, 2 + len(prompt_ids):].tolist():
        if vocab.EOS_text in row:
            row = row[:row.index(vocab.EOS_text)]
        texts.append(prompt + tokenizer.decode([t for t in row if t < vocab.n_text]))
    return texts
