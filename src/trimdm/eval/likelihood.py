"""Held-out likelihood (SPEC §9): the NELBO per modality on a fixed τ grid with a fixed seed.

Evaluation always uses the plain masking process with the linear schedule: after the substitution
r = β(τ) every schedule gives the same NELBO, ∫₀¹ (1/r)·E_{M~Bern(r)}[Σ_{i∈M} −log p(x_i | x_M)] dr, and a
fixed quadrature makes runs with different training schedules or anti-masking comparable. The integral
is taken with Gauss–Legendre nodes on [0, 1] (`eval.tau_points`); at each node every row gets one mask
draw from a generator seeded with `eval.seed`, so the same checkpoint always gives the same numbers.
Reported per modality: bits per token and the per-token perplexity bound exp(NELBO in nats).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from trimdm.diffusion.loss import LossStats, diffusion_loss
from trimdm.diffusion.masking import mask_batch
from trimdm.diffusion.schedules import Linear
from trimdm.sequence.layout import row_tables
from trimdm.tokenizers.vocab import MODALITIES, JointVocab


def gauss_legendre_01(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor((x + 1) / 2, dtype=torch.float64), torch.tensor(w / 2, dtype=torch.float64)


@torch.no_grad()
def nelbo_sums(model, vocab: JointVocab, rows: torch.Tensor, tau_points: int, seed: int, batch_size: int,
               device: torch.device, dtype: str = "bf16", only_modality: int | None = None) -> LossStats:
    """Quadrature of the NELBO over τ: Σ_nodes g_j · LossStats at τ_j (tokens counted once)."""
    tables = row_tables(vocab)
    linear = [Linear()] * 3
    nodes, weights = gauss_legendre_01(tau_points)
    gen = torch.Generator().manual_seed(seed)
    total = None
    for start in range(0, len(rows), batch_size):
        clean = rows[start:start + batch_size]
        B, L = clean.shape
        for tau, g in zip(nodes, weights):
            u = torch.rand((B, L), generator=gen, dtype=torch.float64)
            nb = mask_batch(clean, tables, linear, "none", tau.expand(B).clone(), u, only_modality).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                _, s = diffusion_loss(model, vocab, nb)
            s = LossStats(s.wce_M * float(g), s.tokens_M * float(g), s.masked_M * float(g))
            total = s if total is None else total + s
    return total


def summarize(stats: LossStats) -> dict:
    out = {}
    for i, m in enumerate(MODALITIES):
        if stats.tokens_M[i] > 0:
            nats = float(stats.wce_M[i] / stats.tokens_M[i])
            out[m] = {"bits_per_token": nats / math.log(2), "perplexity_bound": math.exp(nats),
                      "tokens": int(round(float(stats.tokens_M[i])))}
    return out


def heldout_nelbo(model, vocab: JointVocab, sources: dict, cfg, device: torch.device,
                  conditional: bool = False) -> dict:
    """NELBO per modality over the first `eval.max_rows` rows of every task of the held-out split.

    With `conditional`, also the conditional NELBOs of paired rows, one modality masked and the other
    clean: image|text and text|image on image-text rows, audio|text and text|audio on audio-text rows."""
    total, rows_used, cond = None, {}, {}
    for task, source in sources.items():
        n = len(source) if not cfg.eval.max_rows else min(cfg.eval.max_rows, len(source))
        rows = torch.from_numpy(source.rows(np.arange(n)))
        args = (model, vocab, rows, cfg.eval.tau_points, cfg.eval.seed, cfg.eval.batch_size, device, cfg.train.dtype)
        stats = nelbo_sums(*args)
        total = stats if total is None else total + stats
        rows_used[task] = n
        if conditional and task != "text":
            media = task.split("_")[0]
            for target, given in ((media, "text"), ("text", media)):
                s = nelbo_sums(*args, only_modality=MODALITIES.index(target))
                cond[f"{target}|{given}"] = summarize(s)[target]
    out = {"nelbo": summarize(total), "rows": rows_used, "tau_points": cfg.eval.tau_points, "seed": cfg.eval.seed}
    if conditional:
        out["conditional_nelbo"] = cond
    return out
