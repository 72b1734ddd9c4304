"""The statistics of evaluation: standard errors, chance levels, and the tests that say whether a result
beats chance or depends on its input.

Owns: the SE of a mean over items (`mean_se`), of a ratio of sums such as a character error rate
(`ratio_se`), of a binomial proportion (`binomial_se`) and of a mean over stratified Monte-Carlo draws
(`stratified_stderr`); exact chance levels over derangements with their U-statistic SE
(`chance_level`); the permutation test of a pairing (`pairing_test`); the exact binomial tail
(`binomial_tail`) and the one-sided verdict against chance (`vs_chance`, `difference_se`). Pure: numpy and
the standard library. Does not own what is measured (generation.py, multiple_choice.py) or how results
are shown (report.py, summary.py).
"""
from __future__ import annotations

import math

import numpy as np


def mean_se(values) -> float:
    """Standard error of a mean over items (nan for fewer than two)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def chance_level(score_NN: np.ndarray, lengths=None) -> tuple[float, float]:
    """A chance level and its standard error from score_NN[i, j], output i scored against reference j
    (0/1 or a partial credit; or edit counts, with `lengths` the references' lengths, for a CER).

    The level is the metric's mean over the pairings π that give no output its own reference: each
    off-diagonal entry is equally likely under a uniform derangement, so for an accuracy it is the mean
    of the off-diagonal scores, for a CER their sum over (n − 1) times the total reference length (a
    derangement permutes the references, so the denominator is the same under every one). The SE treats
    the n items as a sample: the level is a ratio of two U-statistics, A the off-diagonal mean and B the
    mean length, whose first-order (Hoeffding) terms are a_k = row_k + col_k − 2A, the off-diagonal means
    of item k's row and column, and b_k = c_k − B; SE = sd(a_k − level·b_k) / (B √n). (nan, nan) for
    fewer than two items, which cannot be paired."""
    s = np.asarray(score_NN, dtype=np.float64)
    n = len(s)
    if n < 2:
        return float("nan"), float("nan")
    c = np.ones(n) if lengths is None else np.asarray(lengths, dtype=np.float64)
    off = s.sum() - np.trace(s)
    a_mean, b_mean = off / (n * (n - 1)), c.mean()
    level = a_mean / b_mean
    row = (s.sum(axis=1) - np.diag(s)) / (n - 1)
    col = (s.sum(axis=0) - np.diag(s)) / (n - 1)
    influence = (row + col - 2 * a_mean) - level * (c - b_mean)
    return float(level), float(influence.std(ddof=1) / (b_mean * np.sqrt(n)))


def pairing_test(score_NN: np.ndarray, denom: float, higher_is_better: bool, seed: int,
                 rounds: int = 999) -> dict:
    """Permutation test of a conditional task. score_NN[i, j] scores output i against reference j so
    that a pairing π has the metric sum_i score_NN[i, π(i)] / denom (an accuracy: 0/1 scores and
    denom n; a CER: edit counts and the total reference length, which no pairing changes). Returns
    `shuffled`, the metric's mean over pairings that give no output its own reference, and
    `shuffled_p`, (1 + b) / (1 + rounds) with b the random pairings at least as good as the true one
    (Phipson & Smyth 2010: an exact test's p-value, never 0). nan for fewer than two items."""
    n = len(score_NN)
    if n < 2:
        return {"shuffled": float("nan"), "shuffled_p": float("nan")}
    observed = float(np.trace(score_NN)) / denom
    shuffled = float(score_NN.sum() - np.trace(score_NN)) / (n - 1) / denom
    perms = np.argsort(np.random.default_rng(seed).random((rounds, n)), axis=1)
    stats = score_NN[np.arange(n), perms].sum(axis=1) / denom
    as_good = stats >= observed - 1e-12 if higher_is_better else stats <= observed + 1e-12
    return {"shuffled": shuffled, "shuffled_p": float((1 + as_good.sum()) / (1 + rounds))}


def ratio_se(num_N: np.ndarray, den_N: np.ndarray) -> float:
    """SE of Σnum/Σden over n items (the delta method: residuals num_i − ratio·den_i); nan for fewer than two."""
    num_N, den_N = np.asarray(num_N, np.float64), np.asarray(den_N, np.float64)
    n = len(num_N)
    if n < 2:
        return float("nan")
    resid = num_N - float(num_N.sum() / den_N.sum()) * den_N
    return float(np.sqrt((resid ** 2).sum() * n / (n - 1)) / den_N.sum())


def binomial_se(p: float, n: int) -> float:
    """SE of a proportion p observed over n independent trials."""
    return math.sqrt(p * (1 - p) / n)


def stratified_stderr(est_N: np.ndarray, level_u_N: np.ndarray) -> float:
    """Standard error of the mean of per-sample estimates drawn on stratified levels (`draw_uniforms`).

    With one sample per stratum the within-stratum variance is read from neighbours: the samples are
    sorted by level and paired, and Var(mean) ≈ Σ_pairs (y_a − y_b)² / (2·pairs·N). A difference also
    holds the two strata's difference in mean, so the estimate errs high, a little (neighbouring strata
    mostly map to the same l). std/√N, the i.i.d. formula, would ignore the stratification's gain."""
    n = len(est_N)
    if n < 2:
        return math.nan
    y = np.asarray(est_N, np.float64)[np.argsort(level_u_N, kind="stable")]
    d = y[1:2 * (n // 2):2] - y[0:2 * (n // 2):2]
    return math.sqrt(float((d ** 2).sum()) / (2 * (n // 2) * n))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X ≥ k] for X ~ Binomial(n, p), summed in log space (exact, no overflow for large n)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def vs_chance(value, chance, n=None, higher_is_better: bool = True, se=None) -> str:
    """Whether a result beats chance, in words, with a one-sided test at p < 0.05. With `se` (the
    standard error of value − chance, both estimated over items: CER, attribute match) a z-test; else,
    for an accuracy over n independent trials, the exact binomial test against chance (H0: accuracy =
    chance). Without either, a bare comparison, marked as untested."""
    if not isinstance(value, (int, float)) or not isinstance(chance, (int, float)) or math.isnan(chance):
        return "—"  # nan: a single item has no other to pair with
    if not (value > chance if higher_is_better else value < chance):
        return "no"
    if isinstance(se, (int, float)) and math.isfinite(se) and se > 0:
        z = abs(value - chance) / se
        p = 0.5 * math.erfc(z / math.sqrt(2))
        side = "above" if higher_is_better else "below"
        return f"yes (z={z:.1f}, p={p:.2g})" if p < 0.05 else f"{side} chance, not significant (z={z:.1f}, p={p:.2g})"
    if higher_is_better and isinstance(n, int) and n > 0:
        p = binomial_tail(round(value * n), n, chance)
        return f"yes (p={p:.2g})" if p < 0.05 else f"above chance, not significant (p={p:.2g})"
    return "yes (untested)"


def difference_se(r: dict, metric: str) -> float | None:
    """SE of a result minus its chance level from the two SEs eval records beside them (`cer_se` and
    `chance_se`, or `attribute_match_se` and `attribute_match_chance_se`); None when absent."""
    a, b = r.get(f"{metric}_se"), r.get("chance_se" if metric == "cer" else f"{metric}_chance_se")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return math.sqrt(a * a + b * b)
