"""The sampler's float64 Gumbel-max draws follow softmax(logits): a chi-square goodness-of-fit test with a
fixed seed, on a distribution with a tail of unlikely tokens (where float32 noise falls short)."""
import numpy as np
import torch
from scipy.stats import chisquare

from trimdm.sample.sampler import gumbel, sample_categorical


def test_gumbel_max_draws_follow_the_softmax():
    logits = torch.tensor([4.0, 3.0, 2.0, 0.0, -1.0, -2.0, -3.0, -4.0])
    n = 200_000
    draws = sample_categorical(logits.expand(n, -1), torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=len(logits))
    expected = torch.softmax(logits.double(), -1).numpy() * n
    assert expected.min() > 5  # the chi-square approximation holds in every cell
    assert chisquare(observed, expected).pvalue > 1e-3


def test_float64_gumbel_reaches_beyond_the_float32_cap():
    """float32 uniforms below 1 stop at 1 − 2⁻²⁴, capping Gumbel noise near 16.6; float64 ones do not."""
    u32 = torch.tensor([1 - 2 ** -24], dtype=torch.float32)
    u64 = torch.tensor([1 - 2 ** -40], dtype=torch.float64)
    assert float(gumbel(u32)) < 16.7 < float(gumbel(u64))
    assert torch.isfinite(gumbel(torch.zeros(1, dtype=torch.float64))).all()
