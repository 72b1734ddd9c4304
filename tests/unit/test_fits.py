"""The study curve fits (study/scaling.py, study/fits.py) on synthetic numbers with known parameters:
exact recovery from noise-free points (to 1e-3 relative), the closed forms built on them, seeded
determinism and input validation. Interval coverage under noise is in tests/statistical/test_fits_coverage.py."""
import numpy as np
import pytest

from trimdm.study.fits import (fit_mixing_law, fit_power_law, fit_steps_tokens, percentile_interval,
                               steps_to_target)
from trimdm.study.scaling import ScalingFit, fit_scaling_law

# Chinchilla-like truth (Hoffmann et al. 2022 report E=1.69, A=406.4, B=410.7, α=0.34, β=0.28)
CHINCHILLA = dict(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28)


def chinchilla_grid(points: int = 5):
    N, D = np.meshgrid(np.logspace(6, 9, points), np.logspace(8, 11, points))
    N, D = N.ravel(), D.ravel()
    p = CHINCHILLA
    return N, D, p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def mixtures(n: int = 10, domains: int = 3, seed: int = 12345) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(domains), size=n)


def rel_err(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


# ---------------------------------------------------------------------------------------------------
# Scaling law


def test_scaling_law_recovers_chinchilla_from_noise_free_grid():
    N, D, L = chinchilla_grid()
    fit = fit_scaling_law(N, D, L, bootstrap=0)
    for name, want in CHINCHILLA.items():
        assert rel_err(getattr(fit, name), want) < 1e-3, (name, getattr(fit, name), want)
    assert fit.loss < 1e-12
    assert np.allclose(fit.predict(N, D), L, rtol=1e-6)
    assert all(np.isnan(lo) and np.isnan(hi) for lo, hi in fit.intervals.values())  # no bootstrap


def test_scaling_law_bootstrap_on_exact_points_collapses_onto_the_truth():
    # every resample of noise-free points has the same optimum, so each interval is a point at the truth
    N, D, L = chinchilla_grid()
    fit = fit_scaling_law(N, D, L, bootstrap=10, seed=3)
    assert fit.samples.shape == (10, 5)
    assert set(fit.intervals) == {"E", "A", "B", "alpha", "beta"}
    for name, want in CHINCHILLA.items():
        lo, hi = fit.intervals[name]
        assert isinstance(lo, float) and isinstance(hi, float)
        assert rel_err(lo, want) < 1e-3 and rel_err(hi, want) < 1e-3, (name, lo, hi)


def test_scaling_law_is_seeded():
    N, D, L = chinchilla_grid()
    L = L * np.exp(0.01 * np.random.default_rng(0).standard_normal(L.size))
    a, b = (fit_scaling_law(N, D, L, bootstrap=8, seed=s) for s in (1, 1))
    c = fit_scaling_law(N, D, L, bootstrap=8, seed=2)
    assert a.intervals == b.intervals
    assert a.intervals != c.intervals
    assert (a.E, a.alpha) == (c.E, c.alpha)  # the point fit does not depend on the bootstrap seed


def test_compute_optimal_closed_form_matches_a_search_along_the_isoflop_curve():
    fit = ScalingFit(**CHINCHILLA, intervals={}, loss=0.0, samples=np.empty((0, 5)))
    C = 1e21
    N_opt, D_opt = fit.compute_optimal(C)
    assert 6 * N_opt * D_opt == pytest.approx(C, rel=1e-12)
    N = np.logspace(7, 12, 200_001)  # ~2.5e-5 in log10 N between neighbours
    best = N[np.argmin(fit.predict(N, C / (6 * N)))]
    assert rel_err(N_opt, best) < 1e-4
    assert fit.n_exponent == pytest.approx(0.28 / 0.62) and fit.d_exponent == pytest.approx(0.34 / 0.62)
    N2, _ = fit.compute_optimal(1e3 * C)
    assert np.log(N2 / N_opt) / np.log(1e3) == pytest.approx(fit.n_exponent, rel=1e-12)
    N12, _ = fit.compute_optimal(C, flops_per_token=12)  # C = 12·N·D is C/2 under the 6·N·D rule
    assert N12 == pytest.approx(fit.compute_optimal(C / 2)[0], rel=1e-12)


@pytest.mark.parametrize("change, message", [
    (dict(N=[1e6] * 4, D=[1e8] * 4, L=[3.0] * 4), "at least 5 points"),
    (dict(L=[3.0] * 24), "equal lengths"),
    (dict(L=np.r_[[-1.0], np.full(24, 3.0)]), "must be > 0"),
    (dict(D=np.r_[[np.nan], np.full(24, 1e9)]), "must be finite"),
    (dict(N=np.full(25, 1e6)), "3 distinct N"),
    (dict(huber_delta=0.0), "huber_delta"),
    (dict(bootstrap=-1), "bootstrap"),
    (dict(level=1.0), "level"),
    (dict(N=np.ones((5, 5))), "one-dimensional"),
])
def test_scaling_law_rejects_bad_input(change, message):
    N, D, L = chinchilla_grid()
    kwargs = dict(N=N, D=D, L=L, bootstrap=0) | change
    with pytest.raises(ValueError, match=message):
        fit_scaling_law(**kwargs)


def test_compute_optimal_rejects_bad_input():
    fit = ScalingFit(**CHINCHILLA, intervals={}, loss=0.0, samples=np.empty((0, 5)))
    with pytest.raises(ValueError, match="C must be"):
        fit.compute_optimal(-1.0)
    with pytest.raises(ValueError, match="flops_per_token"):
        fit.compute_optimal(1e20, flops_per_token=0)
    flat = ScalingFit(**(CHINCHILLA | dict(beta=0.0)), intervals={}, loss=0.0, samples=np.empty((0, 5)))
    with pytest.raises(ValueError, match="alpha, beta > 0"):
        flat.compute_optimal(1e20)


# ---------------------------------------------------------------------------------------------------
# Power law


def test_power_law_recovers_exponent_and_constant():
    x = np.logspace(15, 21, 7)
    fit = fit_power_law(x, 0.3 * x ** 0.45, bootstrap=20, seed=0)
    assert rel_err(fit.k, 0.45) < 1e-3 and rel_err(fit.c, 0.3) < 1e-3
    assert np.allclose(fit.predict(x), 0.3 * x ** 0.45, rtol=1e-6)
    for name, want in (("c", 0.3), ("k", 0.45)):
        lo, hi = fit.intervals[name]
        assert rel_err(lo, want) < 1e-3 and rel_err(hi, want) < 1e-3


def test_power_law_redraws_resamples_with_one_distinct_x():
    # 3 points, two with equal x: a resample of only those two cannot give a slope, so it is redrawn
    x, y = np.array([1.0, 1.0, 10.0]), np.array([1.0, 1.2, 3.0])
    fit = fit_power_law(x, y, bootstrap=200, seed=0)
    assert np.all(np.isfinite(fit.samples))


@pytest.mark.parametrize("x, y, message", [
    ([1, 2], [1, 2], "at least 3 points"),
    ([1, 2, 3, 4], [1, 2, 3], "equal lengths"),
    ([1, 0, 3], [1, 2, 3], "must be > 0"),
    ([2, 2, 2], [1, 2, 3], "2 distinct values"),
])
def test_power_law_rejects_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(x, y, bootstrap=0)


# ---------------------------------------------------------------------------------------------------
# Data-mixing law


def mixing_truth(R, c=1.2, k=0.8, t=(-2.0, 0.5, 1.5)):
    return c + k * np.exp(R @ np.asarray(t))


def test_mixing_law_recovers_parameters_from_noise_free_mixtures():
    R = mixtures(10)
    fit = fit_mixing_law(R, mixing_truth(R), bootstrap=10, seed=0)
    assert rel_err(fit.c, 1.2) < 1e-3 and rel_err(fit.k, 0.8) < 1e-3
    assert np.allclose(fit.t, [-2.0, 0.5, 1.5], rtol=1e-3, atol=0)
    assert np.allclose(fit.predict(R), mixing_truth(R), rtol=1e-8)
    assert fit.predict(R[0]).shape == ()
    assert set(fit.intervals) == {"c", "k", "t_0", "t_1", "t_2"} and fit.samples.shape == (10, 5)
    for name, want in (("c", 1.2), ("k", 0.8), ("t_0", -2.0), ("t_2", 1.5)):
        lo, hi = fit.intervals[name]
        assert rel_err(lo, want) < 1e-3 and rel_err(hi, want) < 1e-3


def test_mixing_law_reports_the_centred_t():
    # adding μ to every t_j only rescales k by e^μ on the simplex: the fit must return the same law with
    # Σ t_j = 0 and k the reducible loss at the uniform mixture
    R = mixtures(10)
    L = mixing_truth(R, c=2.0, k=0.3, t=(3.0, 4.0, 6.5))
    fit = fit_mixing_law(R, L, bootstrap=0)
    assert fit.t.sum() == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(fit.t, [-1.5, -0.5, 2.0], rtol=1e-3)
    assert rel_err(fit.k, 0.3 * np.exp(4.5)) < 1e-3 and rel_err(fit.c, 2.0) < 1e-3
    assert fit.predict(np.full(3, 1 / 3)) == pytest.approx(fit.c + fit.k)


def test_mixing_law_with_four_domains():
    R = mixtures(14, domains=4, seed=7)
    t = np.array([-1.0, 0.5, 2.0, -1.5])
    fit = fit_mixing_law(R, 0.9 + 0.5 * np.exp(R @ t), bootstrap=0)
    assert np.allclose(fit.t, t, rtol=1e-3)


@pytest.mark.parametrize("R, L, message", [
    (mixtures(4), np.ones(4), "at least 5 mixtures"),
    (mixtures(8), np.ones(7), "8 rows but L has 7"),
    (mixtures(8) * 2, np.ones(8), "sum to 1"),
    (np.c_[mixtures(8)[:, :2], -mixtures(8)[:, :1]], np.ones(8), "non-negative"),
    (np.ones((8, 1)), np.ones(8), "n_domains ≥ 2"),
    # every mixture on one line of the simplex: the direction across it is not identified
    (np.c_[np.linspace(0, 1, 8), np.linspace(1, 0, 8), np.zeros(8)], np.ones(8), "span the simplex"),
    (mixtures(8), np.r_[np.nan, np.ones(7)], "finite"),
])
def test_mixing_law_rejects_bad_input(R, L, message):
    with pytest.raises(ValueError, match=message):
        fit_mixing_law(R, L, bootstrap=0)


def test_mixing_predict_rejects_wrong_width():
    R = mixtures(10)
    fit = fit_mixing_law(R, mixing_truth(R), bootstrap=0)
    with pytest.raises(ValueError, match="shape"):
        fit.predict(np.ones((2, 4)) / 4)


# ---------------------------------------------------------------------------------------------------
# Steps–examples hyperbola


def hyperbola(batches, S_min=1000.0, E_min=5e5):
    S = S_min + E_min / np.asarray(batches)
    return S, S * np.asarray(batches)


def test_steps_tokens_recovers_hyperbola():
    S, E = hyperbola(np.logspace(1, 4, 8))
    fit = fit_steps_tokens(S, E, bootstrap=10, seed=0)
    assert rel_err(fit.S_min, 1000) < 1e-3 and rel_err(fit.E_min, 5e5) < 1e-3 and rel_err(fit.B_crit, 500) < 1e-3
    assert np.allclose((S / fit.S_min - 1) * (E / fit.E_min - 1), 1.0, rtol=1e-6)
    steps, examples = fit.predict(500.0)  # at B_crit: twice the minimum of each
    assert steps == pytest.approx(2 * fit.S_min) and examples == pytest.approx(2 * fit.E_min)
    assert set(fit.intervals) == {"S_min", "E_min", "B_crit"}
    lo, hi = fit.intervals["B_crit"]
    assert rel_err(lo, 500) < 1e-3 and rel_err(hi, 500) < 1e-3


@pytest.mark.parametrize("S, E, message", [
    ([1, 2], [3, 4], "at least 3 points"),
    ([1, 2, 3, 4], [3, 4, 5], "equal lengths"),
    ([1, 2, 3], [10, 20, 30], "same batch size"),
    ([1, 2, np.inf], [3, 4, 5], "finite"),
])
def test_steps_tokens_rejects_bad_input(S, E, message):
    with pytest.raises(ValueError, match=message):
        fit_steps_tokens(S, E, bootstrap=0)


def test_steps_to_target_interpolates_in_log_tokens():
    tokens, loss = [10.0, 1000.0, 1e5], [2.0, 1.0, 0.5]
    assert steps_to_target(tokens, loss, 1.5) == pytest.approx(100.0)  # halfway in log tokens
    assert steps_to_target(tokens, loss, 1.0) == pytest.approx(1000.0)
    assert steps_to_target(tokens, loss, 3.0) == 10.0  # already there at the first point
    assert steps_to_target(tokens, loss, 0.1) is None


def test_steps_to_target_takes_the_first_crossing_of_the_smoothed_curve():
    tokens = np.arange(1.0, 9.0)
    loss = np.array([3.0, 3.0, 0.9, 3.0, 3.0, 0.5, 0.5, 0.5])  # one spike below 1 at x = 3
    assert steps_to_target(tokens, loss, 1.0) == pytest.approx(np.exp(np.log(2) + 2 / 2.1 * np.log(1.5)))
    # smoothed (ema ← 0.5·ema + 0.5·loss) the spike only reaches 1.95; the curve crosses 1 at x ∈ (7, 8)
    smoothed = steps_to_target(tokens, loss, 1.0, smoothing=0.5)
    assert 7 < smoothed < 8


@pytest.mark.parametrize("tokens, loss, kwargs, message", [
    ([1, 2, 2], [3, 2, 1], {}, "strictly increasing"),
    ([0, 1, 2], [3, 2, 1], {}, "must be > 0"),
    ([1, 2, 3], [3, 2], {}, "shape"),
    ([1, 2, 3], [3, np.nan, 1], {}, "finite"),
    ([1, 2, 3], [3, 2, 1], {"smoothing": 1.0}, "smoothing"),
])
def test_steps_to_target_rejects_bad_input(tokens, loss, kwargs, message):
    with pytest.raises(ValueError, match=message):
        steps_to_target(tokens, loss, 1.5, **kwargs)


def test_percentile_interval():
    assert percentile_interval(np.arange(1001.0), 0.95) == pytest.approx((25.0, 975.0))
    assert all(np.isnan(percentile_interval(np.array([]))))
