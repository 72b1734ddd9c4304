"""Mask rates follow β(τ) per modality schedule: at fixed τ the fraction of maskable tokens masked is a
binomial proportion with standard error sqrt(β(1−β)/n); it must lie within 4 of them."""
import math

import numpy as np
import pytest
import torch

from trimdm.diffusion.masking import mask_batch
from trimdm.diffusion.schedules import make_schedule
from trimdm.sequence.layout import RowTables, paired_row
from trimdm.tokenizers.vocab import JointVocab

V = JointVocab(n_text=50, n_image=16)


@pytest.mark.parametrize("tau", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_mask_rate_follows_each_modality_schedule(tau):
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(np.stack([
        paired_row(V, "image", rng.integers(0, 50, 20), V.image_ids(rng.integers(0, 16, 30)), 64)
        for _ in range(400)]))
    schedules = [make_schedule("cosine"), make_schedule("polynomial", k=2), make_schedule("linear")]
    tables = RowTables.from_vocab(V)
    u = torch.rand(clean.shape, generator=torch.Generator().manual_seed(int(tau * 100)), dtype=torch.float64)
    nb = mask_batch(clean, tables, schedules, "none", torch.full((400,), tau, dtype=torch.float64), u)
    for m, s in enumerate(schedules[:2]):
        sel = nb.maskable_BL & (nb.modality_BL == m)
        n, beta = int(sel.sum()), float(s.beta(tau))
        rate = float(nb.masked_BL[sel].double().mean())
        assert abs(rate - beta) < 4 * math.sqrt(beta * (1 - beta) / n), (m, rate, beta)
