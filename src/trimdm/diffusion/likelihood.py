"""Likelihoods of a masked diffusion model (method §9): the held-out NELBO and the Monte-Carlo
log-likelihood of an answer given the rest of its row.

Owns two estimators, used by training (the periodic held-out NELBO), evaluation (NELBO, multiple
choice, the lm-evaluation-harness adapter) and sampling (best-of-R and local search score candidates
with the second), and `greedy_match`, the one-step greedy check of an answer (lm-eval's is_greedy).
Does not own the question files, the rows' layout (sequence/layout.py) or the network.

Held-out NELBO per modality on a fixed τ grid with a fixed seed. Evaluation always uses the plain
masking process with the linear schedule: after the substitution r = β(τ) every schedule gives the same
NELBO, ∫₀¹ (1/r)·E_{M~Bern(r)}[Σ_{i∈M} −log p(x_i | x_M)] dr, and a fixed quadrature makes runs with
different training schedules or anti-masking comparable. The integral is taken with Gauss–Legendre
nodes on [0, 1] (`tau_points`); at each node every row gets one mask draw from a generator seeded with
`seed`, so the same checkpoint always gives the same numbers. Reported per modality: bits per token
and the per-token perplexity bound exp(NELBO in nats).

Answer log-likelihood (LLaDA, Nie et al. 2025, Eq. 6). For a context c and an answer a of ℓ tokens:

    log p(a | c) ≥ E_{l ~ U{1..ℓ}} E_{M ⊂ answer, |M|=l, uniform} [(ℓ/l) Σ_{i∈M} log p_θ(a_i | c, a_∖M)]

(the MDM ELBO of the answer with the context clean, written with the number of masked tokens in place
of the continuous time). One sample draws l, masks l answer positions chosen uniformly without
replacement by their own modality's MASK token, and scores the masked ones; the mean of n samples is
an unbiased estimate of the bound. The n levels are stratified (one per slice of [0, 1), so the
mask ratios are covered evenly); eval/stats.py:stratified_stderr reads the standard error from
neighbouring strata.

Common random numbers: the candidates of one question share their draws. Sample s has one uniform
u_s ∈ [0, 1) and one vector v_s of uniforms, and a candidate of ℓ tokens maps them to
l = ⌊u_s·ℓ⌋ + 1 (uniform on 1..ℓ) and M = the l answer positions with the smallest uniforms, where the
answer's last position (the EOS every option ends with) takes v_s[0] and its i-th position (i < ℓ−1)
takes v_s[i+1] (a uniform random l-subset). Each candidate alone thus gets exactly the distribution
above; candidates of equal length get identical masks, and candidates of different lengths still share
l/ℓ, their common prefix and their EOS, so the noise of the masking largely cancels in their
difference, the quantity that decides a ranking. Measured (docs/multiple_choice.md): giving the EOS its
own shared uniform rather than aligning all positions from the start cut the variance of differences
between unequal-length options by about a third on KJV text.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from trimdm.diffusion.loss import LossStats, diffusion_loss
from trimdm.diffusion.masking import mask_batch
from trimdm.diffusion.schedules import Linear
from trimdm.sequence.layout import RowTables, row_tables
from trimdm.tokenizers.vocab import MODALITIES, JointVocab


# -- the held-out NELBO --------------------------------------------------------------------------------
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


def heldout_nelbo(model, vocab: JointVocab, sources: dict, *, tau_points: int, seed: int, batch_size: int,
                  max_rows: int, device: torch.device, dtype: str = "bf16", conditional: bool = False) -> dict:
    """NELBO per modality over the first `max_rows` rows (0: all) of every task of a held-out split.

    With `conditional`, also the conditional NELBOs of paired rows, one modality masked and the other
    clean: image|text and text|image on image-text rows, audio|text and text|audio on audio-text rows."""
    total, rows_used, cond = None, {}, {}
    for task, source in sources.items():
        n = len(source) if not max_rows else min(max_rows, len(source))
        rows = torch.from_numpy(source.rows(np.arange(n)))
        args = (model, vocab, rows, tau_points, seed, batch_size, device, dtype)
        stats = nelbo_sums(*args)
        total = stats if total is None else total + stats
        rows_used[task] = n
        if conditional and task != "text":
            media = task.split("_")[0]
            for target, given in ((media, "text"), ("text", media)):
                s = nelbo_sums(*args, only_modality=MODALITIES.index(target))
                cond[f"{target}|{given}"] = summarize(s)[target]
    out = {"nelbo": summarize(total), "rows": rows_used, "tau_points": tau_points, "seed": seed}
    if conditional:
        out["conditional_nelbo"] = cond
    return out


# -- the answer log-likelihood --------------------------------------------------------------------------
def draw_uniforms(n_samples: int, max_answer: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The shared draws of one question: level_u_N (which l) and order_u_NA (which positions).

    The levels are stratified: sample n falls in its own slice [k/N, (k+1)/N) of [0, 1), the slices in
    random order. Each sample alone is still uniform, so the mean stays unbiased, but the N samples
    cover the mask ratios evenly instead of by chance; the ratio is most of the estimate's variance."""
    if n_samples < 1 or max_answer < 1:
        raise ValueError(f"need n_samples >= 1 and max_answer >= 1, got {n_samples}, {max_answer}")
    level_u_N = (rng.permutation(n_samples) + rng.random(n_samples)) / n_samples
    return level_u_N, rng.random((n_samples, max_answer))


def answer_masks(level_u_N: np.ndarray, order_u_NA: np.ndarray, n_answer: int) -> tuple[np.ndarray, np.ndarray]:
    """Map shared uniforms to one answer of n_answer positions: (masked_NA bool (N, n_answer), l_N).

    l = ⌊u·ℓ⌋ + 1 is uniform on 1..ℓ; the l positions with the smallest order uniforms are a uniform
    random l-subset, independent of l. The last position (the answer's EOS) takes column 0 and
    position i < ℓ−1 column i+1, so that options of different lengths share the uniform of their EOS."""
    if order_u_NA.shape[1] < n_answer:
        raise ValueError(f"order uniforms cover {order_u_NA.shape[1]} positions, the answer has {n_answer}")
    l_N = np.minimum(np.floor(level_u_N * n_answer).astype(np.int64) + 1, n_answer)
    columns = np.r_[1:n_answer, 0]
    ranks_NA = np.argsort(np.argsort(order_u_NA[:, columns], axis=1, kind="stable"), axis=1, kind="stable")
    return ranks_NA < l_N[:, None], l_N


@torch.no_grad()
def masked_logits(model, tables: RowTables, clean_RL: torch.Tensor, noisy_RL: torch.Tensor, batch_size: int,
                  device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None):
    """The model's logits at the positions where `noisy_RL` differs from `clean_RL` (masked), in batches:
    yields (start row, clean rows cut to the batch's width, heads, logits per head), the heads being
    `RowTables.output_heads` (the output slices the loss trains: audio per residual level), so what is
    read is the model's own estimate."""
    autocast = (torch.autocast(torch.device(device).type, dtype=autocast_dtype) if autocast_dtype is not None
                else nullcontext())
    for start in range(0, len(clean_RL), batch_size):
        c, x = clean_RL[start:start + batch_size], noisy_RL[start:start + batch_size]
        pad = tables.pad(c)
        width = int((~pad).any(0).nonzero().max()) + 1  # drop the trailing columns that are padding in every row
        c, x, pad = c[:, :width], x[:, :width], pad[:, :width]
        heads = tables.output_heads(x, x != c)
        with autocast:
            logits = model(x.to(device), pad.to(device), heads=[(sel.to(device), lo, hi, eos)
                                                               for sel, lo, hi, eos, _ in heads])
        yield start, c, heads, logits


def mc_answer_loglik(model, vocab: JointVocab, rows_KL: torch.Tensor, answer_KL: torch.Tensor,
                     level_u_N: np.ndarray, order_u_NA: np.ndarray, batch_size: int = 128,
                     device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-sample estimates (K, N) float64 of log p(answer_k | rest of row k) for K candidate rows.

    rows_KL: clean ids (right-padded with PAD_text); answer_KL: bool, the answer positions of each row
    (maskable positions: content or EOS). Sample n of every row uses the shared uniforms
    (level_u_N[n], order_u_NA[n]) through `answer_masks`, over the answer positions in row order.
    The mean over N estimates LLaDA's bound; see the module docstring."""
    tables = RowTables.from_vocab(vocab)
    rows_KL, answer_KL = rows_KL.cpu(), answer_KL.cpu().bool()
    if rows_KL.shape != answer_KL.shape or rows_KL.ndim != 2:
        raise ValueError(f"rows {tuple(rows_KL.shape)} and answer masks {tuple(answer_KL.shape)} must be equal 2-D")
    if bool((answer_KL & ~tables.maskable(rows_KL)).any()):
        raise ValueError("answer positions must be maskable (content tokens or EOS), never TASK/BOS/PAD")
    level_u_N, order_u_NA = np.asarray(level_u_N, np.float64), np.asarray(order_u_NA, np.float64)
    if level_u_N.ndim != 1 or order_u_NA.shape[0] != len(level_u_N):
        raise ValueError(f"uniforms must be (N,) and (N, A), got {level_u_N.shape} and {order_u_NA.shape}")
    if level_u_N.size and (level_u_N.min() < 0 or level_u_N.max() >= 1):
        raise ValueError("level uniforms must lie in [0, 1)")
    K, L = rows_KL.shape
    N = len(level_u_N)
    mask_ids = tables.mask_id_M[tables.modality(rows_KL)]  # the MASK token of each position's modality
    noisy, clean, weight = [], [], []
    for k in range(K):
        pos = answer_KL[k].nonzero().squeeze(1)
        if len(pos) == 0:
            raise ValueError(f"candidate {k} has no answer positions")
        masked_NA, l_N = answer_masks(level_u_N, order_u_NA, len(pos))
        masked_NL = torch.zeros(N, L, dtype=torch.bool)
        masked_NL[:, pos] = torch.from_numpy(masked_NA)
        noisy.append(torch.where(masked_NL, mask_ids[k], rows_KL[k]))
        clean.append(rows_KL[k].expand(N, L))
        weight.append(torch.from_numpy(len(pos) / l_N))
    noisy_RL, clean_RL, weight_R = torch.cat(noisy), torch.cat(clean), torch.cat(weight)
    scores_R = torch.zeros(K * N, dtype=torch.float64)
    for start, c, heads, logits in masked_logits(model, tables, clean_RL, noisy_RL, batch_size, device,
                                                 autocast_dtype):
        for (sel, lo, hi, eos, _), lg in zip(heads, logits):
            logp = lg.to(torch.promote_types(lg.dtype, torch.float32)).log_softmax(-1).cpu()
            clean = c[sel]
            target = torch.where(clean == eos, hi - lo, clean - lo)
            picked = logp.gather(1, target[:, None]).squeeze(1).double()
            scores_R.index_add_(0, start + sel.nonzero()[:, 0], picked)
    return (scores_R * weight_R).view(K, N)


def greedy_match(model, vocab: JointVocab, rows_KL: torch.Tensor, answer_KL: torch.Tensor, batch_size: int = 128,
                 device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K,) bool: whether the one-step greedy decode of each row's answer reproduces it, i.e. with every
    answer position masked at once, the model's argmax at each (over its output slice: content + EOS)
    is the clean token. For a one-token answer this is exactly greedy decoding; for longer answers the
    sampler reveals a few positions per step and conditions the rest on them, which this does not."""
    tables = RowTables.from_vocab(vocab)
    rows_KL, answer_KL = rows_KL.cpu(), answer_KL.cpu().bool()
    if rows_KL.shape != answer_KL.shape or bool((answer_KL & ~tables.maskable(rows_KL)).any()):
        raise ValueError("answer masks must match the rows and cover maskable positions only")
    noisy_KL = torch.where(answer_KL, tables.mask_id_M[tables.modality(rows_KL)], rows_KL)
    match_K = torch.ones(len(rows_KL), dtype=torch.bool)
    for start, c, heads, logits in masked_logits(model, tables, rows_KL, noisy_KL, batch_size, device,
                                                 autocast_dtype):
        for (sel, lo, hi, eos, _), lg in zip(heads, logits):
            clean = c[sel]
            target = torch.where(clean == eos, hi - lo, clean - lo)
            wrong = lg.argmax(-1).cpu() != target
            match_K[start + sel.nonzero()[wrong, 0]] = False
    return match_K
