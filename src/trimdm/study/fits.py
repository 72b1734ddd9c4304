"""Curve fits for the studies: pure functions on anyone's numbers, each with a percentile bootstrap.

Owns
  - the shared bootstrap machinery (resampling points with replacement, percentile intervals);
  - `fit_power_law`: y = c·x^k by least squares on logs (B_opt(D) ∝ D^γ, N_opt(C) ∝ C^a);
  - `fit_mixing_law`: the multi-domain data-mixing law of Ye et al. 2024 ("Data Mixing Laws: Optimizing
    Data Mixtures by Predicting Language Modeling Performance"), L(r) = c + k·exp(Σ_j t_j r_j) for one
    target, r a mixture on the simplex;
  - `fit_steps_tokens`: the steps–examples trade-off of McCandlish et al. 2018 ("An Empirical Model of
    Large-Batch Training", eq. 2.11), (S/S_min − 1)(E/E_min − 1) = 1, and B_crit = E_min/S_min;
  - `steps_to_target`: where a (smoothed) loss curve first reaches a target loss.
Does not own the Chinchilla scaling-law fit (study/scaling.py, which reuses the bootstrap here), running
sweeps, reading run directories, or plotting. Imports only numpy and scipy.

Intervals are percentile-bootstrap intervals; with few points they under-cover (measured figures in
tests/statistical/test_fits_coverage.py). Result objects are frozen and compare by identity (eq=False),
as they hold numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize

# ---------------------------------------------------------------------------------------------------
# Shared: input checks and the percentile bootstrap


def as_positive_1d(name: str, values, min_points: int = 1) -> np.ndarray:
    """`values` as a float 1-D array; ValueError unless finite, > 0 and at least `min_points` long."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size < min_points:
        raise ValueError(f"{name} needs at least {min_points} points, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {arr[arr <= 0][:3].tolist()}")
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")


def check_bootstrap(bootstrap: int, level: float) -> None:
    if not isinstance(bootstrap, (int, np.integer)) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (low, high) percentile interval of 1-D bootstrap `samples` at coverage `level`; (nan, nan)
    when there are no samples (bootstrap=0)."""
    if samples.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_fits(n_points: int, bootstrap: int, seed: int, fit: Callable[[np.ndarray], np.ndarray],
                   identifiable: Callable[[np.ndarray], bool], n_params: int) -> np.ndarray:
    """(bootstrap, n_params) parameters of `fit` refitted on points resampled with replacement.

    `fit` takes the resampled point indices. A resample on which `identifiable(idx)` is false (e.g. all
    x equal) cannot determine the model, so it is redrawn: the bootstrap is conditioned on identifiable
    resamples, which changes anything only for very few points. The full data set must be identifiable
    (the callers check it), so a redraw always terminates."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n_points, n_points)
        while not identifiable(idx):
            idx = rng.integers(0, n_points, n_points)
        out.append(fit(idx))
    return np.asarray(out, dtype=float).reshape(bootstrap, n_params)


def intervals_of(names: list[str], samples: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    return {name: percentile_interval(samples[:, j], level) for j, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------------
# Power law y = c·x^k


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """y = c·x^k. `intervals` maps "c" and "k" to percentile-bootstrap (low, high); `samples` holds the
    bootstrap draws, shape (bootstrap, 2) in the order (c, k); `loss` is Σ (log y − log ŷ)²."""
    c: float
    k: float
    intervals: dict[str, tuple[float, float]]
    loss: float
    samples: np.ndarray = field(repr=False)

    def predict(self, x) -> np.ndarray:
        return self.c * np.asarray(x, dtype=float) ** self.k


def _power_law_lstsq(logx: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    """(log c, k) minimising Σ (log y − log c − k log x)²."""
    design = np.stack([np.ones_like(logx), logx], axis=1)
    (logc, k), *_ = np.linalg.lstsq(design, logy, rcond=None)
    return float(logc), float(k)


def fit_power_law(x, y, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95) -> PowerLawFit:
    """Fit y = c·x^k by ordinary least squares of log y on log x (multiplicative noise on y), with
    percentile-bootstrap intervals over `bootstrap` resamples of the (x, y) pairs (numpy Generator
    seeded with `seed`). Needs at least 3 points, all positive, with at least 2 distinct x."""
    x, y = as_positive_1d("x", x, 3), as_positive_1d("y", y, 3)
    check_same_length(x=x, y=y)
    check_bootstrap(bootstrap, level)
    if np.unique(x).size < 2:
        raise ValueError("x needs at least 2 distinct values to fit a power law")
    logx, logy = np.log(x), np.log(y)
    logc, k = _power_law_lstsq(logx, logy)
    loss = float(np.sum((logy - logc - k * logx) ** 2))

    def refit(idx):
        lc, kk = _power_law_lstsq(logx[idx], logy[idx])
        return np.array([np.exp(lc), kk])

    samples = bootstrap_fits(len(x), bootstrap, seed, refit, lambda idx: np.unique(x[idx]).size >= 2, 2)
    return PowerLawFit(c=float(np.exp(logc)), k=k, intervals=intervals_of(["c", "k"], samples, level),
                       loss=loss, samples=samples)


# ---------------------------------------------------------------------------------------------------
# Data-mixing law (Ye et al. 2024): L(r) = c + k·exp(Σ_j t_j r_j), r on the simplex
#
# Identifiability: Σ_j r_j = 1, so adding μ to every t_j multiplies exp(Σ t_j r_j) by e^μ, which k
# absorbs. We report the centred t (Σ_j t_j = 0), so every domain is treated alike and c + k is the
# predicted loss at the uniform mixture. Internally t_last = 0 leaves n − 1 free t's.
#
# The law is linear in (c, k) for fixed t, so we fit by variable projection: for any t, (c, k) is the
# closed-form least-squares line of L on g = exp(R t), and L-BFGS minimises that profile over t alone
# (its gradient is the partial in t at the optimal (c, k), by the envelope theorem). k is not
# sign-constrained. |t_j − t_last| ≤ T_BOUND: beyond it exp(Σ t r) would span over 13 decades across
# the simplex, which no loss does; a fit on the bound says the law does not describe the data.
T_BOUND = 30.0
MIXING_GRID = (-4.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0)  # per free t_j; 8^(n−1) starts
MAX_GRID = 4096  # beyond it (n ≥ 6 domains) a seeded random subset of the grid is scored


@dataclass(frozen=True, eq=False)
class MixingFit:
    """L(r) = c + k·exp(Σ_j t_j r_j) with Σ_j t_j = 0 (centred t). `intervals` maps "c", "k" and
    "t_0".."t_{n-1}" to percentile-bootstrap (low, high); `samples` holds the bootstrap draws, shape
    (bootstrap, 2 + n) in the order (c, k, t_0..t_{n-1}); `loss` is Σ (L − L̂)²."""
    c: float
    k: float
    t: np.ndarray
    intervals: dict[str, tuple[float, float]]
    loss: float
    samples: np.ndarray = field(repr=False)

    def predict(self, R) -> np.ndarray:
        """Predicted loss at mixtures R, shape (n_domains,) or (m, n_domains)."""
        R = np.asarray(R, dtype=float)
        if R.shape[-1:] != self.t.shape or R.ndim > 2:
            raise ValueError(f"R must have shape ({self.t.size},) or (m, {self.t.size}), got {R.shape}")
        return self.c + self.k * np.exp(R @ self.t)


def _profile_cols(S_GP: np.ndarray, L_P: np.ndarray):
    """For each row of exponents S (G candidate t's × P points): the least-squares (c, k) of L on
    g = exp(S − max S), the residuals, and g. Shifting by the row max only rescales k."""
    g = np.exp(S_GP - S_GP.max(axis=1, keepdims=True))
    gc = g - g.mean(axis=1, keepdims=True)
    var = np.sum(gc * gc, axis=1)
    # a constant g (all exponents equal) leaves k undetermined: take k = 0, the flat fit
    k = np.divide(gc @ (L_P - L_P.mean()), var, out=np.zeros_like(var), where=var > 1e-300)
    c = L_P.mean() - k * g.mean(axis=1)
    resid = L_P[None, :] - c[:, None] - k[:, None] * g
    return c, k, resid, g


def _mixing_objective(u, Rf, L, scale):
    """Profiled ½Σρ²/scale over the free t's u (t_last = 0) and its gradient: `_profile_cols` for one
    candidate, written out because L-BFGS calls it thousands of times per bootstrap."""
    s = Rf @ u
    g = np.exp(s - s.max())
    gc = g - g.mean()
    Lc = L - L.mean()
    var = gc @ gc
    k = (gc @ Lc) / var if var > 1e-300 else 0.0
    resid = Lc - k * gc  # = L − c − k g with c = mean L − k mean g
    return 0.5 * (resid @ resid) / scale, -((resid * g) @ Rf) * (k / scale)


def _mixing_starts(Rf: np.ndarray, L: np.ndarray, n_starts: int, seed: int) -> np.ndarray:
    """The `n_starts` points of the start grid with the lowest profiled loss."""
    free = Rf.shape[1]
    if len(MIXING_GRID) ** free <= MAX_GRID:
        grid = np.array(np.meshgrid(*[MIXING_GRID] * free, indexing="ij")).reshape(free, -1).T
    else:
        grid = np.random.default_rng(seed).choice(MIXING_GRID, size=(MAX_GRID, free))
    _, _, resid, _ = _profile_cols(grid @ Rf.T, L)
    return grid[np.argsort(np.sum(resid ** 2, axis=1))[:n_starts]]


def _fit_mixing_once(Rf: np.ndarray, L: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(c, k, centred t_0..t_{n−1}) of the best L-BFGS run over `starts` (rows of free t's)."""
    scale = max(float(np.sum((L - L.mean()) ** 2)), 1e-300)
    bounds = [(-T_BOUND, T_BOUND)] * Rf.shape[1]
    best = None
    for u0 in starts:
        res = minimize(_mixing_objective, u0, args=(Rf, L, scale), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    u = best.x
    c, k, _, _ = _profile_cols((Rf @ u)[None, :], L)
    t = np.append(u, 0.0)
    k_true = k[0] * np.exp(-np.max(Rf @ u))  # undo the max shift of _profile_cols
    return np.concatenate([[c[0], k_true * np.exp(t.mean())], t - t.mean()])


def _check_mixtures(R: np.ndarray, n_points_L: int) -> None:
    if R.ndim != 2 or R.shape[1] < 2:
        raise ValueError(f"R must have shape (n_points, n_domains ≥ 2), got {R.shape}")
    n, d = R.shape
    if n != n_points_L:
        raise ValueError(f"R has {n} rows but L has {n_points_L} values")
    if n < d + 2:
        raise ValueError(f"{d} domains need at least {d + 2} mixtures (d + 1 parameters, one to spare), got {n}")
    if not np.all(np.isfinite(R)) or np.any(R < 0):
        raise ValueError("R must hold finite, non-negative proportions")
    if np.max(np.abs(R.sum(axis=1) - 1)) > 1e-6:
        raise ValueError(f"each row of R must sum to 1, got sums {R.sum(axis=1)[:5].tolist()}")
    if not _mixtures_identifiable(R):
        raise ValueError(f"the mixtures must span the simplex (affine rank {d - 1}): every t_j must be identifiable")


def _mixtures_identifiable(R: np.ndarray) -> bool:
    """The rows span the (d−1)-dim simplex, so every t_j is identified, and there are d + 1 distinct
    rows for the d + 1 parameters."""
    d = R.shape[1]
    return (np.linalg.matrix_rank(R - R.mean(axis=0), tol=1e-9) == d - 1
            and np.unique(R, axis=0).shape[0] >= d + 1)


def fit_mixing_law(R, L, *, bootstrap: int = 200, seed: int = 0, n_starts: int = 8,
                   level: float = 0.95) -> MixingFit:
    """Fit one target's data-mixing law L(r) = c + k·exp(Σ_j t_j r_j) (Ye et al. 2024) by least squares
    on L: R has shape (n_points, n_domains), rows are mixture proportions summing to 1; L (n_points,)
    the target loss at each. L-BFGS-B runs from the `n_starts` best points of an 8^(n−1) grid of t's;
    each of the `bootstrap` resamples (seeded numpy Generator) restarts from the full-data optimum and
    the best grid point of that resample. Returns the centred t (see above)."""
    R = np.asarray(R, dtype=float)
    L = np.asarray(L, dtype=float)
    if L.ndim != 1 or not np.all(np.isfinite(L)):
        raise ValueError(f"L must be a finite 1-D array, got shape {L.shape}")
    _check_mixtures(R, L.size)
    check_bootstrap(bootstrap, level)
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    Rf = R[:, :-1]  # t_last = 0, so the last domain's column drops out of Σ t_j r_j
    params = _fit_mixing_once(Rf, L, _mixing_starts(Rf, L, n_starts, seed))
    u_opt = params[2:-1] - params[-1]  # back to t_last = 0

    def refit(idx):
        starts = np.vstack([u_opt, _mixing_starts(Rf[idx], L[idx], 1, seed)])
        return _fit_mixing_once(Rf[idx], L[idx], starts)

    samples = bootstrap_fits(L.size, bootstrap, seed, refit, lambda idx: _mixtures_identifiable(R[idx]),
                             R.shape[1] + 2)
    names = ["c", "k"] + [f"t_{j}" for j in range(R.shape[1])]
    c, k, t = params[0], params[1], params[2:]
    loss = float(np.sum((L - c - k * np.exp(R @ t)) ** 2))
    return MixingFit(c=float(c), k=float(k), t=t, intervals=intervals_of(names, samples, level),
                     loss=loss, samples=samples)


# ---------------------------------------------------------------------------------------------------
# Steps–examples trade-off (McCandlish et al. 2018, eq. 2.11): (S/S_min − 1)(E/E_min − 1) = 1
#
# With E = B·S the hyperbola is S = S_min + E_min/B (and E = E_min + S_min·B). Each run fixes its batch
# B exactly and measures S with noise, so we fit log S = log(S_min + E_min/B) by least squares. Since
# B = E/S, the residual is ρ = log(S_min/S + E_min/E), the maximum-likelihood fit under multiplicative
# lognormal noise on S (E moves with S at fixed B). Parameters are log S_min and log E_min.


@dataclass(frozen=True, eq=False)
class StepsTokensFit:
    """The steps–examples hyperbola. `intervals` maps "S_min", "E_min", "B_crit" to percentile-bootstrap
    (low, high); `samples` holds the draws, shape (bootstrap, 3) in that order; `loss` is Σ ρ²."""
    S_min: float
    E_min: float
    B_crit: float
    intervals: dict[str, tuple[float, float]]
    loss: float
    samples: np.ndarray = field(repr=False)

    def predict(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """(steps, examples) to reach the target at batch size `batch`: S_min + E_min/B, E_min + S_min·B."""
        B = np.asarray(batch, dtype=float)
        return self.S_min + self.E_min / B, self.E_min + self.S_min * B


def _steps_objective(theta, inv_S, inv_E):
    a, b = np.exp(theta[0]) * inv_S, np.exp(theta[1]) * inv_E
    rho = np.log(a + b)
    w = a / (a + b)  # ∂ρ/∂log S_min; ∂ρ/∂log E_min = 1 − w
    return float(np.sum(rho ** 2)), np.array([2 * rho @ w, 2 * rho @ (1 - w)])


def _fit_steps_once(S: np.ndarray, E: np.ndarray, extra_start: np.ndarray | None = None) -> np.ndarray:
    """(S_min, E_min, B_crit) of the best L-BFGS run from the linear solution of 1 = S_min/S + E_min/E
    (when positive), from half the smallest S and E, and from `extra_start` (log S_min, log E_min).
    ρ is a log-sum-exp of affine functions of the log-parameters, so few starts suffice."""
    inv_S, inv_E = 1 / S, 1 / E
    lin, *_ = np.linalg.lstsq(np.stack([inv_S, inv_E], axis=1), np.ones_like(S), rcond=None)
    starts = [np.log([0.5 * S.min(), 0.5 * E.min()])]
    if np.all(lin > 0):
        starts.append(np.log(lin))
    if extra_start is not None:
        starts.append(extra_start)
    best = None
    for theta0 in starts:
        res = minimize(_steps_objective, theta0, args=(inv_S, inv_E), jac=True, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    s_min, e_min = np.exp(best.x)
    return np.array([s_min, e_min, e_min / s_min])


def _batches_vary(S: np.ndarray, E: np.ndarray) -> bool:
    log_b = np.log(E) - np.log(S)
    return float(np.ptp(log_b)) > 1e-9


def fit_steps_tokens(S, E, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95) -> StepsTokensFit:
    """Fit McCandlish et al.'s (S/S_min − 1)(E/E_min − 1) = 1 to runs that reached one target loss in S
    steps and E examples (or tokens; E = batch·S, so E_min and B_crit come in E's unit). Needs at least 3
    runs with at least 2 distinct batch sizes E/S. Intervals: percentile bootstrap over `bootstrap`
    resamples of the runs (seeded numpy Generator). B_crit = E_min/S_min."""
    S, E = as_positive_1d("S", S, 3), as_positive_1d("E", E, 3)
    check_same_length(S=S, E=E)
    check_bootstrap(bootstrap, level)
    if not _batches_vary(S, E):
        raise ValueError("all runs have the same batch size E/S; S_min and E_min cannot be told apart")
    params = _fit_steps_once(S, E)
    warm = np.log(params[:2])  # each resample also restarts from the full-data optimum
    samples = bootstrap_fits(S.size, bootstrap, seed, lambda idx: _fit_steps_once(S[idx], E[idx], warm),
                             lambda idx: _batches_vary(S[idx], E[idx]), 3)
    loss, _ = _steps_objective(np.log(params[:2]), 1 / S, 1 / E)
    return StepsTokensFit(S_min=float(params[0]), E_min=float(params[1]), B_crit=float(params[2]),
                          intervals=intervals_of(["S_min", "E_min", "B_crit"], samples, level),
                          loss=loss, samples=samples)


def steps_to_target(tokens_curve, loss_curve, target: float, *, smoothing: float = 0.0) -> float | None:
    """The tokens (or steps: any positive, increasing x) at which a loss curve first reaches `target`,
    or None if it never does.

    The loss is first smoothed by an exponential moving average, ema ← smoothing·ema + (1 − smoothing)·loss
    started at the first value (smoothing = 0: raw; study/batch.py plots 0.9). Between the last point
    above the target and the first at or below it, the crossing is interpolated linearly in log x, as
    loss curves are near-linear in log tokens over a short span. A curve that starts at or below the
    target returns its first x."""
    x = as_positive_1d("tokens_curve", tokens_curve, 1)
    loss = np.asarray(loss_curve, dtype=float)
    if loss.shape != x.shape:
        raise ValueError(f"loss_curve has shape {loss.shape}, tokens_curve {x.shape}")
    if not np.all(np.isfinite(loss)):
        raise ValueError("loss_curve must be finite")
    if np.any(np.diff(x) <= 0):
        raise ValueError("tokens_curve must be strictly increasing")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    smooth = loss.copy()
    for i in range(1, smooth.size):
        smooth[i] = smoothing * smooth[i - 1] + (1 - smoothing) * loss[i]
    hit = np.flatnonzero(smooth <= target)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    frac = (smooth[i - 1] - target) / (smooth[i - 1] - smooth[i])
    return float(np.exp(np.log(x[i - 1]) + frac * (np.log(x[i]) - np.log(x[i - 1]))))
