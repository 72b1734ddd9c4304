"""The bootstrap 95% intervals of the study fits (study/scaling.py, study/fits.py) contain the true
parameter at about the nominal rate, over many seeded synthetic data sets with multiplicative lognormal
noise of a stated σ.

Bound. If an interval covered with probability 0.95, the number of covering seeds out of S would be
Binomial(S, 0.95); each test fails below 0.95 − 4·√(0.95·0.05/S) (4 binomial standard errors:
S = 40 → 0.812, S = 400 → 0.906), for every parameter.

The percentile bootstrap (resampling points) is known to under-cover with few points: it uses the
spread of n-point resamples, about (n − p)/n too small, with normal rather than t tails. Measured
coverage of the 95% intervals (seeds × bootstrap draws; binomial SE ≈ 0.011 at 400 seeds, 0.015 at 200,
0.022 at 100), all with this file's designs unless stated:
  power law, σ = 0.05, x over 3 decades     k: n=10 .885, n=20 .89, n=40 .93, n=100 .945 (c alike)
                                            (400 × 200); the classical t-interval on the same data: .94 at n=10
  steps–examples, σ = 0.05 on S,            n=10: S_min .86, E_min .87, B_crit .88 (400 × 200)
  B over 3 decades                          n=20: .88–.91 (600 seeds); n=40: .90–.93 (600 × 200);
                                            n=80: .89–.95 (600 × 100–200)
  mixing law, 3 domains, σ = 0.005          16 mixtures: .93–.955 (200 × 200), .92–.94 (200 × 100);
                                            32 mixtures: .91–.925 (200 × 200)
  scaling law, 5×5 grid (Huber δ = 1e-3)    σ = 0.001: E .95, A .92, B .97, α .93, β .97 (100 × 100);
                                            σ = 0.01: E .96, A/B/α/β .98–.99 (100 × 100 and 100 × 200),
                                            conservative, as δ ≪ σ makes the fit a median regression
So intervals from a handful of points are too narrow by a few points of coverage; the power-law test
uses enough points for the nominal rate to hold, and the small-n shortfall is reported here rather than
hidden behind a looser bound. The scaling test uses σ = 0.001, where the bootstrap is nearly calibrated
and the bound can bite (at σ = 0.01 any interval bug that widened intervals would still pass).
Runtime: ~1 min on one thread, most of it the 40 scaling-law fits with 100 draws each.
"""
import math

import numpy as np

from trimdm.study.fits import fit_mixing_law, fit_power_law, fit_steps_tokens
from trimdm.study.scaling import fit_scaling_law

NOMINAL = 0.95


def lower_bound(seeds: int) -> float:
    return NOMINAL - 4 * math.sqrt(NOMINAL * (1 - NOMINAL) / seeds)


def coverage(fit_one, truth: dict[str, float], seeds: int) -> dict[str, float]:
    """Fraction of seeds whose interval for each parameter contains the truth; `fit_one(seed, rng)`
    draws a noisy data set from `rng` and fits it with bootstrap seed `seed`."""
    hits = {name: 0 for name in truth}
    for seed in range(seeds):
        fit = fit_one(seed, np.random.default_rng(1000 + seed))
        for name, value in truth.items():
            low, high = fit.intervals[name]
            hits[name] += low <= value <= high
    return {name: h / seeds for name, h in hits.items()}


def assert_covers(measured: dict[str, float], seeds: int) -> None:
    bound = lower_bound(seeds)
    low = {name: c for name, c in measured.items() if c < bound}
    assert not low, f"coverage below {bound:.3f} over {seeds} seeds: {low} (all: {measured})"


def test_power_law_intervals_cover():
    seeds, n = 400, 100
    x = np.logspace(0, 3, n)

    def fit_one(seed, rng):
        return fit_power_law(x, 2 * x ** 0.5 * np.exp(0.05 * rng.standard_normal(n)), bootstrap=200, seed=seed)

    assert_covers(coverage(fit_one, {"c": 2.0, "k": 0.5}, seeds), seeds)


def test_steps_tokens_intervals_cover():
    seeds, n = 40, 40
    batches = np.logspace(1, 4, n)

    def fit_one(seed, rng):
        S = (1000 + 5e5 / batches) * np.exp(0.05 * rng.standard_normal(n))
        return fit_steps_tokens(S, batches * S, bootstrap=100, seed=seed)

    assert_covers(coverage(fit_one, {"S_min": 1000.0, "E_min": 5e5, "B_crit": 500.0}, seeds), seeds)


def test_mixing_law_intervals_cover():
    seeds, n = 40, 16
    R = np.random.default_rng(12345).dirichlet(np.ones(3), size=n)
    t = np.array([-2.0, 0.5, 1.5])

    def fit_one(seed, rng):
        L = (1.2 + 0.8 * np.exp(R @ t)) * np.exp(0.005 * rng.standard_normal(n))
        return fit_mixing_law(R, L, bootstrap=100, seed=seed)

    truth = {"c": 1.2, "k": 0.8, "t_0": -2.0, "t_1": 0.5, "t_2": 1.5}  # t is centred: Σ t_j = 0
    assert_covers(coverage(fit_one, truth, seeds), seeds)


def test_scaling_law_intervals_cover():
    seeds = 40
    N, D = np.meshgrid(np.logspace(6, 9, 5), np.logspace(8, 11, 5))
    N, D = N.ravel(), D.ravel()
    truth = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
    L = truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]

    def fit_one(seed, rng):
        return fit_scaling_law(N, D, L * np.exp(0.001 * rng.standard_normal(L.size)), bootstrap=100, seed=seed)

    assert_covers(coverage(fit_one, truth, seeds), seeds)
