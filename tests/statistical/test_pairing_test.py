"""The pairing test of the generation metrics (eval/stats.py:pairing_test): its `shuffled` mean is
the exact mean over pairings that give no output its own reference, its Monte-Carlo p-value agrees with
the exact permutation p-value within the Monte-Carlo error, and under a null (outputs that ignore their
inputs) p ≤ 0.05 happens about 5% of the time, while a real dependence is found. The chance levels
(`chance_level`) are the exact mean over those pairings, and their standard error matches the spread of
the level over samples of items."""
import itertools
import math

import numpy as np

from trimdm.data.tinyworld.judges.speech import cer, pairwise_edits
from trimdm.eval.stats import chance_level, pairing_test


def exact(score, denom, higher):
    """shuffled and p over every permutation of a small n."""
    n = len(score)
    observed = np.trace(score) / denom
    stats, deranged = [], []
    for perm in itertools.permutations(range(n)):
        s = score[np.arange(n), perm].sum() / denom
        stats.append(s)
        if all(p != i for i, p in enumerate(perm)):
            deranged.append(s)
    stats = np.array(stats)
    p = np.mean(stats >= observed - 1e-12) if higher else np.mean(stats <= observed + 1e-12)
    return float(np.mean(deranged)), float(p)


def test_matches_exact_enumeration():
    rng = np.random.default_rng(0)
    for trial in range(6):
        n = 6
        score = rng.integers(0, 30, (n, n)).astype(float)
        score[np.diag_indices(n)] -= 8 * (trial % 3)  # from no dependence to a strong one (lower is better)
        denom = 100.0
        shuffled, p_exact = exact(score, denom, higher=False)
        rounds = 1999
        got = pairing_test(score, denom, False, seed=trial, rounds=rounds)
        assert math.isclose(got["shuffled"], shuffled, rel_tol=1e-12)
        # Monte-Carlo estimate (1 + b)/(1 + rounds) of p_exact: binomial SE of b/rounds, plus the +1 shift
        se = math.sqrt(p_exact * (1 - p_exact) / rounds)
        assert abs(got["shuffled_p"] - p_exact) <= 4 * se + 1 / (1 + rounds), (trial, got, p_exact)


def test_null_rejects_at_its_level_and_a_dependence_is_found():
    rng = np.random.default_rng(1)
    trials, n, false_alarms = 400, 20, 0
    for t in range(trials):
        # outputs that ignore their inputs: output i's 0/1 correctness against any reference is a coin
        # whose bias depends on the output alone
        bias = rng.uniform(0.1, 0.6, n)
        score = (rng.random((n, n)) < bias[:, None]).astype(float)
        false_alarms += pairing_test(score, n, True, seed=t, rounds=199)["shuffled_p"] <= 0.05
    # P(p <= 0.05) = floor(0.05 * 200) / 200 = 0.05 for an exact test with 199 rounds
    rate, se = false_alarms / trials, math.sqrt(0.05 * 0.95 / trials)
    assert abs(rate - 0.05) <= 4 * se, rate
    score = (rng.random((n, n)) < 0.3).astype(float)
    score[np.diag_indices(n)] = (rng.random(n) < 0.8)  # right far more often with its own reference
    assert pairing_test(score, n, True, seed=0)["shuffled_p"] < 0.01


def test_pairwise_edits_gives_the_cer_of_any_pairing():
    hyps = ["a red circle", "the blue", "", "in the top left"]
    refs = ["a red square", "the blue cross", "a cat", "in the top right"]
    edits, lengths = pairwise_edits(hyps, refs)
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]):
        assert math.isclose(edits[np.arange(4), perm].sum() / lengths.sum(), cer(hyps, [refs[p] for p in perm]))


def test_chance_level_is_the_mean_over_derangements():
    rng = np.random.default_rng(2)
    n = 6
    for lengths in (None, rng.integers(5, 40, n).astype(float)):
        score = rng.integers(0, 30, (n, n)).astype(float)
        denom = n if lengths is None else lengths.sum()
        levels = [score[np.arange(n), perm].sum() / denom for perm in itertools.permutations(range(n))
                  if all(p != i for i, p in enumerate(perm))]
        level, se = chance_level(score, lengths)
        assert math.isclose(level, np.mean(levels), rel_tol=1e-12)
        assert se > 0
    assert all(math.isnan(v) for v in chance_level(np.ones((1, 1))))


def test_chance_level_se_matches_its_spread_over_samples():
    """Items drawn from a population (a CER-like ratio: edit counts that depend on both items, and
    lengths that vary): the mean estimated SE matches the standard deviation of the level over R
    samples, within four standard errors of that standard deviation (relative SE 1/sqrt(2(R-1)))."""
    rng = np.random.default_rng(3)
    R, n = 400, 40
    levels, ses = [], []
    for _ in range(R):
        x = rng.normal(size=n)
        lengths = rng.poisson(30 + 8 * x.clip(-3, 3)).astype(float) + 1
        score = rng.poisson(np.abs(x[:, None] - x[None, :]) * 6 + 0.5 * lengths[None, :]).astype(float)
        level, se = chance_level(score, lengths)
        levels.append(level)
        ses.append(se)
    ratio = np.mean(ses) / np.std(levels, ddof=1)
    assert abs(ratio - 1) <= 4 / math.sqrt(2 * (R - 1)), ratio
