"""The training-loss estimator is unbiased for the exact NELBO (SPEC §4), on a toy small enough to
enumerate: 3 text tokens, rows with 4 maskable positions, and a deterministic stand-in model whose
logits are a random table keyed by the whole noisy row. The exact NELBO is computed twice — by
quadrature over τ with the schedule's own weight and enumeration of all 16 mask patterns, and by the
schedule-free Beta-integral closed form — and the Monte-Carlo mean of the training loss (stratified τ,
clamping, anti-masking pairs, through mask_batch and diffusion_loss) must lie within 4 standard
errors of it. A deliberately biased complement weight must fail the same check (the test has power).
"""
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from trimdm.diffusion.loss import diffusion_loss
from trimdm.diffusion.masking import draw_noise, mask_batch, tau_bounds
from trimdm.diffusion.schedules import Polynomial, make_schedule
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import JointVocab

N_TEXT, N_POS = 3, 4
VOCAB = JointVocab(n_text=N_TEXT, n_reserved=0)
OUT = N_TEXT + 1  # text slice + EOS


class TableModel:
    """Stand-in network: logits at position i are a fixed random function of the whole noisy row."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn((N_TEXT + 1) ** N_POS, N_POS, OUT, generator=g, dtype=torch.float64) * 1.5

    def key(self, noisy_BL):
        content = noisy_BL[:, 2:]
        digits = torch.where(content == VOCAB.MASK_text, N_TEXT, content)
        return (digits * (N_TEXT + 1) ** torch.arange(N_POS)).sum(-1)

    def __call__(self, noisy_BL, pad_BL=None, heads=None):
        h = torch.zeros(*noisy_BL.shape, OUT, dtype=torch.float64)
        h[:, 2:] = self.table[self.key(noisy_BL)]
        return h if heads is None else [self.head(h[sel], lo, hi, extra) for sel, lo, hi, extra in heads]

    def head(self, h_ND, lo, hi, extra_id=None):
        assert (lo, hi, extra_id) == (0, N_TEXT, VOCAB.EOS_text)
        return h_ND


def all_rows():
    rows = [[VOCAB.TASK_text, VOCAB.BOS_text, *x] for x in itertools.product(range(N_TEXT), repeat=N_POS)]
    return torch.tensor(rows)


def pattern_losses(model, x):
    """For each mask pattern M (bitmask over the 4 content positions): (|M|, Σ_{i∈M} CE_i(x_M))."""
    out = []
    for bits in range(2**N_POS):
        masked = torch.tensor([[False, False] + [bool(bits >> i & 1) for i in range(N_POS)]])
        noisy = torch.where(masked, VOCAB.MASK_text, x[None])
        logp = model(noisy)[0, 2:].log_softmax(-1)
        ce = sum(-float(logp[i, x[2 + i]]) for i in range(N_POS) if bits >> i & 1)
        out.append((bin(bits).count("1"), ce))
    return out


def exact_nelbo_closed_form(model, rows):
    """Σ_M B(|M|, n−|M|+1)·Σ_{i∈M} CE_i: the NELBO after the substitution r = β(τ)."""
    total = 0.0
    for x in rows:
        for k, ce in pattern_losses(model, x):
            if k:
                total += ce * math.gamma(k) * math.gamma(N_POS - k + 1) / math.gamma(N_POS + 1)
    return total / (len(rows) * N_POS)


def exact_nelbo_quadrature(model, rows, schedule, nodes=400):
    """∫ w(τ) Σ_M β^|M|(1−β)^(n−|M|) Σ_{i∈M} CE_i dτ with Gauss–Legendre nodes on [0, 1]."""
    x_, w_ = np.polynomial.legendre.leggauss(nodes)
    tau = torch.tensor((x_ + 1) / 2, dtype=torch.float64)
    g = torch.tensor(w_ / 2, dtype=torch.float64)
    beta, weight = schedule.beta(tau), schedule.weight(tau)
    total = 0.0
    for x in rows:
        for k, ce in pattern_losses(model, x):
            if k:
                total += ce * float((g * weight * beta**k * (1 - beta) ** (N_POS - k)).sum())
    return total / (len(rows) * N_POS)


def mc_losses(model, rows, schedule, antimask, n_batches, seed):
    tables = RowTables.from_vocab(VOCAB)
    schedules = [schedule] * 3
    lo, hi = tau_bounds(schedules, antimask, 1e-3)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        tau, u, _ = draw_noise(len(rows), rows.shape[1], gen, lo, hi)
        nb = mask_batch(rows, tables, schedules, antimask, tau, u)
        loss, _ = diffusion_loss(model, VOCAB, nb)
        losses.append(float(loss))
    return np.array(losses)


@pytest.fixture(scope="module")
def setup():
    model, rows = TableModel(), all_rows()
    return model, rows, exact_nelbo_closed_form(model, rows)


@pytest.mark.parametrize("name,params", [("linear", {}), ("polynomial", {"k": 2}), ("cosine", {})])
@pytest.mark.parametrize("antimask", ["none", "complement"])
def test_estimator_is_unbiased(setup, name, params, antimask):
    model, rows, exact = setup
    schedule = make_schedule(name, **params)
    assert exact_nelbo_quadrature(model, rows, schedule) == pytest.approx(exact, rel=1e-6)
    losses = mc_losses(model, rows, schedule, antimask, n_batches=400, seed=7)
    se = losses.std(ddof=1) / math.sqrt(len(losses))
    assert abs(losses.mean() - exact) < 4 * se, (losses.mean(), exact, se)


@dataclass(frozen=True)
class WrongComplement(Polynomial):
    """The tempting but biased complement weight w(β⁻¹(1−β(τ))) (SPEC §4)."""

    def complement_weight(self, t):
        return self.weight(self.inverse(1 - self.beta(t)))


def test_biased_complement_weight_is_detected(setup):
    model, rows, exact = setup
    losses = mc_losses(model, rows, WrongComplement(k=2.0), "complement", n_batches=400, seed=7)
    se = losses.std(ddof=1) / math.sqrt(len(losses))
    assert abs(losses.mean() - exact) > 4 * se, (losses.mean(), exact, se)
