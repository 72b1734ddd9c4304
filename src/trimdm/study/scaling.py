"""The Chinchilla scaling-law fit: L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", Approach 3, eq. 2 and the fit of their appendix D.2), with a
percentile bootstrap, and the compute-optimal allocation it implies under C = 6·N·D (their eq. 4).

Owns the fit and its result object. Does not own the sweep that produces (N, D, L), reading runs, or
plots (the study code calls this on anyone's numbers); the bootstrap and input checks are shared with
the other curve fits in study/fits.py. Imports only numpy, scipy and study/fits.py.

The fit, as in Hoffmann et al.: with e = log E, a = log A, b = log B, minimise
    Σ_i Huber_δ( log L_i − LSE(e, a − α log N_i, b − β log D_i) )
(LSE = log-sum-exp, so L̂ is computed stably in log space) by L-BFGS from a grid of starting points,
keeping the best. Differences, all stated:
  - the grid α, β ∈ {0, .5, 1, 1.5, 2}, e ∈ {−1, −.5, 0, .5, 1}, a, b ∈ {0, 5, …, 25} (4500 points) is
    scored in one vectorised pass and L-BFGS runs only from its `n_starts` best points (default 16):
    running all 4500 takes 40–60 s per fit on one CPU thread, and on noisy 5×5 Chinchilla-like grids
    both reach the same optimum (equal loss to 10 digits);
  - α, β ≥ 0 (a bound): a loss that grows with N or D is not a scaling law;
  - internally a − α log N is written a_c − α (log N − mean log N) (likewise b, β with D), which only
    reparameterises the same function but removes most of the a–α correlation L-BFGS would crawl along;
  - the objective is divided by n·δ² inside the optimiser and its tolerances are tight, because with
    δ = 1e-3 the raw objective is ~1e-6 and L-BFGS-B's default ftol would stop long before convergence
    (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", trace the original fit's
    problems partly to this: its optimizer stopped early because of the loss scale). `loss` is the raw Σ;
  - bootstrap resamples restart from the full-data optimum and the resample's best grid point (not 16:
    in 100 noisy resamples the grid start never beat the warm start, and it costs twice as much).

Result objects are frozen and compare by identity (eq=False), as they hold numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from trimdm.study.fits import (as_positive_1d, bootstrap_fits, check_bootstrap, check_same_length,
                               intervals_of)

PARAMS = ["E", "A", "B", "alpha", "beta"]
GRID_ALPHA = GRID_BETA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = GRID_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
BOOTSTRAP_GRID_STARTS = 1  # each resample restarts from the full-data optimum and its best grid point


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """L(N, D) = E + A/N^alpha + B/D^beta. `intervals` maps each of "E", "A", "B", "alpha", "beta" to its
    percentile-bootstrap (low, high); `samples` holds the bootstrap draws, shape (bootstrap, 5) in that
    order; `loss` is the Huber objective Σ Huber_δ(log L − log L̂) at the optimum."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    intervals: dict[str, tuple[float, float]]
    loss: float
    samples: np.ndarray = field(repr=False)

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def n_exponent(self) -> float:
        """a in N_opt ∝ C^a: β/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def d_exponent(self) -> float:
        """b in D_opt ∝ C^b: α/(α+β)."""
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, C, flops_per_token: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising L̂ subject to C = flops_per_token·N·D (Hoffmann et al. eq. 4):
        N_opt = G·(C/k)^(β/(α+β)) with G = (αA/(βB))^(1/(α+β)), and D_opt = (C/k)/N_opt."""
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"the compute-optimal allocation needs alpha, beta > 0, got {self.alpha}, {self.beta}")
        if not flops_per_token > 0:
            raise ValueError(f"flops_per_token must be > 0, got {flops_per_token}")
        C = np.asarray(C, dtype=float)
        if np.any(~np.isfinite(C)) or np.any(C <= 0):
            raise ValueError("C must be finite and > 0")
        tokens_params = C / flops_per_token  # N·D
        s = self.alpha + self.beta
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
        N_opt = G * tokens_params ** (self.beta / s)
        return N_opt, tokens_params / N_opt


def _log_terms(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The three log-terms (e, a_c − α x, b_c − β y), shape (3, ..., P), for parameters theta (..., 5)
    and x, y the centred log N and log D (P,)."""
    e, ac, bc, al, be = (v[..., None] for v in np.moveaxis(theta, -1, 0))
    n_term, d_term = ac - al * x, bc - be * y
    return np.stack([np.broadcast_to(e, n_term.shape), n_term, d_term])


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber_δ(r): r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond; both are a·(|r| − a/2) with a = min(|r|, δ)."""
    absr = np.abs(r)
    a = np.minimum(absr, delta)
    return a * (absr - 0.5 * a)


def _objective(theta, x, y, logL, delta):
    """Σ Huber_δ(r)/(n δ²) with r = log L − LSE(terms), and its gradient in (e, a_c, b_c, α, β).
    The log-sum-exp is written out (max-shifted): L-BFGS calls this ~10⁴ times per bootstrap."""
    e, ac, bc, al, be = theta
    n_term, d_term = ac - al * x, bc - be * y
    top = np.maximum(np.maximum(n_term, d_term), e)
    w0, w1, w2 = np.exp(e - top), np.exp(n_term - top), np.exp(d_term - top)
    total = w0 + w1 + w2
    r = logL - top - np.log(total)
    scale = r.size * delta * delta
    # ∂ objective / ∂ log L̂ = −ψ(r)/scale, ψ the clipped residual; the softmax w/total is ∂ log L̂ / ∂ term
    psi = np.clip(r, -delta, delta) / (-scale * total)
    grad = np.array([psi @ w0, psi @ w1, psi @ w2, -(psi * w1) @ x, -(psi * w2) @ y])
    return float(np.sum(_huber(r, delta)) / scale), grad


def _start_grid(x, y, mean_logs: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The start grid in centred coordinates (G, 5) and its log L̂ at every point (G, P). The grid is in
    Hoffmann's (a, b), and a_c = a − α·mean log N when x = log N − mean log N (likewise b_c). log L̂ at a
    point does not depend on the other points, so a bootstrap resample reuses its columns."""
    e, a, b, al, be = (g.ravel() for g in np.meshgrid(GRID_E, GRID_A, GRID_B, GRID_ALPHA, GRID_BETA,
                                                       indexing="ij"))
    grid = np.stack([e, a - al * mean_logs[0], b - be * mean_logs[1], al, be], axis=1)
    return grid, logsumexp(_log_terms(grid, x, y), axis=0)


def _best_starts(grid, log_pred_GP, logL, delta, n_starts: int) -> np.ndarray:
    """The `n_starts` grid points with the lowest Huber objective."""
    scores = np.sum(_huber(logL - log_pred_GP, delta), axis=1)
    return grid[np.argsort(scores, kind="stable")[:n_starts]]


def _fit_once(x, y, logL, delta, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """The best L-BFGS-B optimum over `starts` (centred coordinates) and its raw Huber sum."""
    bounds = [(None, None)] * 3 + [(0.0, None)] * 2
    best = None
    for theta0 in starts:
        res = minimize(_objective, theta0, args=(x, y, logL, delta), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x, float(best.fun * x.size * delta * delta)


def _natural(theta: np.ndarray, mean_logs: tuple[float, float]) -> np.ndarray:
    """(E, A, B, α, β) from centred (e, a_c, b_c, α, β)."""
    e, ac, bc, al, be = theta
    return np.array([np.exp(e), np.exp(ac + al * mean_logs[0]), np.exp(bc + be * mean_logs[1]), al, be])


def _identifiable(N: np.ndarray, D: np.ndarray) -> bool:
    """Each power law plus the shared E needs 3 distinct sizes (with 2, any offset between E and the
    term fits equally well), and the 5 parameters need 5 distinct (N, D) points."""
    return (np.unique(N).size >= 3 and np.unique(D).size >= 3
            and np.unique(np.stack([N, D], axis=1), axis=0).shape[0] >= 5)


def fit_scaling_law(N, D, L, *, bootstrap: int = 200, seed: int = 0, huber_delta: float = 1e-3,
                    n_starts: int = 16, level: float = 0.95) -> ScalingFit:
    """Fit L(N, D) = E + A/N^α + B/D^β to runs of N parameters trained on D tokens reaching loss L, as in
    Hoffmann et al.'s Approach 3 (see the module docstring for the method and its stated differences).

    N, D, L: equal-length arrays, at least 5 points, all finite and > 0, with at least 3 distinct N and
    3 distinct D. L-BFGS-B runs from the `n_starts` best points of the 4500-point start grid. Intervals:
    percentile bootstrap at `level` over `bootstrap` resamples of the points (numpy Generator seeded
    with `seed`), each refitted from the full-data optimum and its own best grid point."""
    N, D, L = (as_positive_1d(name, v, 5) for name, v in (("N", N), ("D", D), ("L", L)))
    check_same_length(N=N, D=D, L=L)
    check_bootstrap(bootstrap, level)
    if not (np.isfinite(huber_delta) and huber_delta > 0):
        raise ValueError(f"huber_delta must be finite and > 0, got {huber_delta}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    if not _identifiable(N, D):
        raise ValueError("the fit needs at least 3 distinct N, 3 distinct D and 5 distinct (N, D) points, got "
                         f"{np.unique(N).size} N, {np.unique(D).size} D")
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    mean_logs = (float(logN.mean()), float(logD.mean()))
    x, y = logN - mean_logs[0], logD - mean_logs[1]
    grid, log_pred_GP = _start_grid(x, y, mean_logs)
    theta, loss = _fit_once(x, y, logL, huber_delta, _best_starts(grid, log_pred_GP, logL, huber_delta, n_starts))

    def refit(idx):
        starts = np.vstack([theta, _best_starts(grid, log_pred_GP[:, idx], logL[idx], huber_delta,
                                                BOOTSTRAP_GRID_STARTS)])
        return _natural(_fit_once(x[idx], y[idx], logL[idx], huber_delta, starts)[0], mean_logs)

    samples = bootstrap_fits(N.size, bootstrap, seed, refit, lambda idx: _identifiable(N[idx], D[idx]), 5)
    E, A, B, alpha, beta = (float(v) for v in _natural(theta, mean_logs))
    return ScalingFit(E=E, A=A, B=B, alpha=alpha, beta=beta, intervals=intervals_of(PARAMS, samples, level),
                      loss=loss, samples=samples)
