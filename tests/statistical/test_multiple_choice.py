"""The multiple-choice estimator (method §9, LLaDA Eq. 6) on toys small enough to enumerate.

The estimator is unbiased for the bound E_l E_M[(ℓ/l) Σ_{i∈M} log p(a_i | c, a_∖M)], which the tests
compute exactly by enumerating every non-empty mask subset of the answer (at most 2^6 − 1 forward
passes). Models: `BagModel`, a stand-in whose logits at a position are a fixed per-position table plus
a sum over the visible tokens of the row (a simple, known, smooth dependence on the context), and a
small random `Transformer` in float64. A context-free stand-in also checks the bound against the exact
log-likelihood (for a factorised model the bound is tight). Tolerances are 4 standard errors of the
Monte-Carlo estimate (`stratified_stderr`: the levels are stratified), with fixed seeds.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from trimdm.diffusion.likelihood import answer_masks, draw_uniforms, mc_answer_loglik
from trimdm.eval.multiple_choice import question_rows
from trimdm.eval.stats import stratified_stderr
from trimdm.model.transformer import Transformer, TransformerArgs
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import JointVocab

VOCAB = JointVocab(n_text=6, n_image=4, n_reserved=0)
OUT = VOCAB.n_text + 1  # text slice + EOS_text
SEQ_LEN = 24
CONTEXT = np.array([1, 2])
# answer lengths ℓ (option + EOS): 4, 4, 5, 6; options 0 and 1 differ in one token, 2 extends 0
OPTIONS = [np.array([3, 4, 0]), np.array([3, 5, 0]), np.array([3, 4, 0, 1]), np.array([5, 5, 4, 3, 2])]
IMAGE = VOCAB.image_ids(np.array([0, 1, 2, 3]))


class BagModel:
    """logits at position j = pos_j + Σ_{visible t} emb_t; visible = maskable and not masked."""

    def __init__(self, seed=0, coupling=0.5, context_free=False):
        g = torch.Generator().manual_seed(seed)
        self.pos = torch.randn(SEQ_LEN, OUT, generator=g, dtype=torch.float64)
        self.emb = torch.randn(VOCAB.size, OUT, generator=g, dtype=torch.float64) * coupling
        self.visible = RowTables.from_vocab(VOCAB).maskable_V
        self.context_free = context_free

    def __call__(self, ids_BL, pad_BL=None, heads=None):
        h = self.pos[:ids_BL.shape[1]].expand(ids_BL.shape[0], -1, -1)
        if not self.context_free:
            h = h + (self.emb[ids_BL] * self.visible[ids_BL, None]).sum(1, keepdim=True)
        return h if heads is None else [self.head(h[sel], lo, hi, extra) for sel, lo, hi, extra in heads]

    def head(self, h_ND, lo, hi, extra_id=None):
        assert (lo, hi, extra_id) == (0, VOCAB.n_text, VOCAB.EOS_text)
        return h_ND


def tiny_transformer(seed=0):
    args = TransformerArgs(vocab_size=VOCAB.size, d_model=16, n_layers=2, n_heads=2, max_seq_len=SEQ_LEN,
                           init_std=1.0, vocab_segments=VOCAB.segments())
    model = Transformer(args)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.double().eval()


MODELS = {"bag": BagModel, "transformer": tiny_transformer}


def candidates(kind):
    return question_rows(VOCAB, CONTEXT, OPTIONS, kind, IMAGE if kind == "image" else None, SEQ_LEN, "toy")


@torch.no_grad()
def exact_bound(model, row_L, answer_L):
    """Σ_{l=1..ℓ} (1/ℓ)(ℓ/l) C(ℓ,l)⁻¹ Σ_{|M|=l} Σ_{i∈M} log p(a_i | row, M masked), by enumeration."""
    pos = answer_L.nonzero().squeeze(1).tolist()
    ell, total = len(pos), 0.0
    pad = RowTables.from_vocab(VOCAB).pad(row_L)[None]
    for l in range(1, ell + 1):
        for subset in itertools.combinations(pos, l):
            idx = list(subset)
            noisy = row_L.clone()
            noisy[idx] = VOCAB.MASK_text
            logp = model.head(model(noisy[None], pad)[0, idx], 0, VOCAB.n_text, VOCAB.EOS_text).log_softmax(-1)
            target = VOCAB.to_local("text", row_L[idx])
            total += float(logp.gather(1, target[:, None]).sum()) / l / math.comb(ell, l)
    return total


def estimates(model, rows, answers, n, seed, shared=True):
    """(K, n) per-sample estimates; shared draws come with their levels, for `stratified_stderr`."""
    width = int(answers.sum(1).max())
    if shared:
        level_u, order_u = draw_uniforms(n, width, np.random.default_rng(seed))
        return mc_answer_loglik(model, VOCAB, rows, answers, level_u, order_u, batch_size=4096).numpy(), level_u
    return np.stack([mc_answer_loglik(model, VOCAB, rows[k:k + 1], answers[k:k + 1],
                                      *draw_uniforms(n, width, np.random.default_rng([seed, k])),
                                      batch_size=4096).numpy()[0] for k in range(len(rows))])


def test_answer_masks_draw_l_uniformly_and_subsets_uniformly():
    n, ell = 60_000, 3
    masked, l_N = answer_masks(*draw_uniforms(n, 5, np.random.default_rng(0)), ell)
    assert (masked.sum(1) == l_N).all()
    # P(M) = (1/ℓ)·C(ℓ,|M|)⁻¹ for every non-empty subset M
    codes = (masked * (1 << np.arange(ell))).sum(1)
    freq = np.bincount(codes, minlength=2**ell) / n
    for code in range(1, 2**ell):
        size = bin(code).count("1")
        p = 1 / ell / math.comb(ell, size)
        assert abs(freq[code] - p) < 4 * math.sqrt(p * (1 - p) / n), (code, freq[code], p)
    assert freq[0] == 0


def test_levels_are_stratified_in_random_order():
    for n in (1, 7, 64):
        level_u, _ = draw_uniforms(n, 3, np.random.default_rng(n))
        assert (np.sort(np.floor(level_u * n)) == np.arange(n)).all()  # one sample in each slice of [0, 1)
    assert not (np.diff(level_u) > 0).all()


def test_stratified_levels_reduce_the_variance_of_the_mean_and_their_stderr_sees_it():
    """Option 3 (ℓ = 6) under a bag model with a strong context: the mean of n = 6 samples varies less
    across repetitions with stratified levels than with i.i.d. ones; `stratified_stderr`, which reads
    the within-stratum variance from neighbouring strata, does not understate the stratified variance
    and reports less than the i.i.d. one."""
    model = BagModel(coupling=2.0)
    rows, answers = candidates("text")
    rows, answers = rows[3:], answers[3:]
    reps, n = 1600, 6
    rng = np.random.default_rng(0)
    strat, iid, se2 = [], [], []
    for _ in range(reps):
        level_u, order_u = draw_uniforms(n, 6, rng)
        est = mc_answer_loglik(model, VOCAB, rows, answers, level_u, order_u, batch_size=4096).numpy()[0]
        strat.append(est.mean())
        se2.append(stratified_stderr(est, level_u) ** 2)
        iid.append(mc_answer_loglik(model, VOCAB, rows, answers, rng.random(n), order_u, batch_size=4096).numpy()[0].mean())
    v_strat, se_strat = _variance_and_se(np.array(strat))
    v_iid, se_iid = _variance_and_se(np.array(iid))
    assert v_iid - v_strat > 4 * math.hypot(se_strat, se_iid), (v_strat, v_iid)
    reported, se_reported = float(np.mean(se2)), float(np.std(se2, ddof=1)) / math.sqrt(reps)
    assert reported > v_strat - 4 * math.hypot(se_strat, se_reported), (reported, v_strat)
    assert reported < v_iid - 4 * math.hypot(se_iid, se_reported), (reported, v_iid)


def test_options_of_equal_length_get_identical_masks():
    level_u, order_u = draw_uniforms(50, 6, np.random.default_rng(1))
    a, _ = answer_masks(level_u, order_u, 4)
    b, _ = answer_masks(level_u, order_u.copy(), 4)
    assert (a == b).all()


@pytest.mark.parametrize("model_name", ["bag", "transformer"])
@pytest.mark.parametrize("kind", ["text", "image"])
def test_estimator_is_unbiased_and_ranks_like_the_exact_bound(model_name, kind):
    model = MODELS[model_name]()
    rows, answers = candidates(kind)
    exact = np.array([exact_bound(model, rows[k], answers[k]) for k in range(len(rows))])
    n = 4000
    est, level_u = estimates(model, rows, answers, n, seed=7)
    mean, se = est.mean(1), np.array([stratified_stderr(e, level_u) for e in est])
    assert (np.abs(mean - exact) < 4 * se).all(), (mean, exact, se)
    # ranking: every pair whose exact gap is resolvable (> 4 SE of the estimated difference) is ordered
    # as the exact bound orders it; most pairs of the toy are resolvable, so this has power
    resolvable = 0
    for a, b in itertools.combinations(range(len(rows)), 2):
        se_diff = stratified_stderr(est[a] - est[b], level_u)
        if abs(exact[a] - exact[b]) > 4 * se_diff:
            resolvable += 1
            assert np.sign(mean[a] - mean[b]) == np.sign(exact[a] - exact[b]), (a, b, mean, exact)
    assert resolvable >= 5, resolvable


def test_bound_is_the_exact_likelihood_for_a_factorised_model():
    model = BagModel(seed=3, context_free=True)
    rows, answers = candidates("text")
    logq = model.pos.log_softmax(-1)
    n = 4000
    est, level_u = estimates(model, rows, answers, n, seed=11)
    for k in range(len(rows)):
        pos = answers[k].nonzero().squeeze(1)
        exact = float(logq[pos, VOCAB.to_local("text", rows[k, pos])].sum())  # log p(a | c), exactly
        assert exact_bound(model, rows[k], answers[k]) == pytest.approx(exact, abs=1e-12)
        se = stratified_stderr(est[k], level_u)
        assert se > 0 and abs(est[k].mean() - exact) < 4 * se


def _variance_and_se(d):
    """Sample variance and its standard error from the fourth central moment: Var(s²) ≈ (m4 − s⁴)/n."""
    c = d - d.mean()
    var = (c ** 2).mean()
    return var, math.sqrt(max((c ** 4).mean() - var ** 2, 0.0) / len(d))


@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (0, 3)])
def test_shared_draws_reduce_the_variance_of_option_differences(pair):
    """Options 0/1 (same length, one token apart), 0/2 (2 extends 0 by one token) and 0/3 (other
    tokens, other length: only l/ℓ, the first token and the EOS are coupled): the differences that
    decide the ranking are less noisy with shared draws. (The gain shrinks to nothing, or reverses,
    for options with nothing in common: see docs/multiple_choice.md.)"""
    model = BagModel()
    rows, answers = candidates("text")
    n = 8000
    a, b = pair
    shared, independent = estimates(model, rows, answers, n, 5)[0], estimates(model, rows, answers, n, 6, shared=False)
    v_shared, se_shared = _variance_and_se(shared[a] - shared[b])
    v_indep, se_indep = _variance_and_se(independent[a] - independent[b])
    assert v_indep - v_shared > 4 * math.hypot(se_shared, se_indep), (v_shared, v_indep)


def test_estimates_do_not_depend_on_batching():
    model = BagModel()
    rows, answers = candidates("image")
    uniforms = draw_uniforms(64, 6, np.random.default_rng(2))
    one = mc_answer_loglik(model, VOCAB, rows, answers, *uniforms, batch_size=1000)
    many = mc_answer_loglik(model, VOCAB, rows, answers, *uniforms, batch_size=7)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-12)


def test_answer_positions_must_be_maskable():
    rows, answers = candidates("text")
    bad = answers.clone()
    bad[:, 0] = True  # TASK_text
    with pytest.raises(ValueError, match="maskable"):
        mc_answer_loglik(BagModel(), VOCAB, rows, bad, *draw_uniforms(4, 8, np.random.default_rng(0)))
