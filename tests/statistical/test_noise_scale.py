"""Gradient noise scale (McCandlish et al. 2018): exact unbiasedness on an enumerable population, and the
online tracker recovering a known B_simple on a synthetic quadratic, with tolerances from the spread of
independent seeded runs (4 standard errors)."""
import itertools
import math
from fractions import Fraction

import pytest
import torch

from trimdm.optim.noise_scale import NoiseScaleTracker, noise_scale_estimates, sq_norm

# ---------------------------------------------------------------------------------------------------
# Exact expectation by enumeration: a finite population of per-example gradients, batches drawn
# uniformly with replacement (i.i.d.), so E|G_b|² = |G|² + tr(Σ)/b holds exactly.
POP = [(1, 0), (3, -1), (-2, 2), (0, 5)]  # integer per-example gradients in R²


def _mean(vectors):
    n = len(vectors)
    return tuple(Fraction(sum(v[j] for v in vectors), n) for j in range(2))


def _sq(v):
    return sum(x * x for x in v)


G_POP = _mean(POP)
G2_POP = _sq(G_POP)  # |G|²
TRACE_POP = Fraction(sum(_sq([g[j] - G_POP[j] for j in range(2)]) for g in POP), len(POP))  # tr(Σ)


@pytest.mark.parametrize("b_small, b_big", [(1, 2), (2, 3), (1, 4)])
def test_estimates_exactly_unbiased_nested(b_small, b_big):
    # The trainer's case: the small batch is the first b_small examples of the big batch.
    outcomes = list(itertools.product(POP, repeat=b_big))
    g2_sum, trace_sum = Fraction(0), Fraction(0)
    for batch in outcomes:
        g2, trace = noise_scale_estimates(_sq(_mean(batch[:b_small])), b_small, _sq(_mean(batch)), b_big)
        g2_sum += g2
        trace_sum += trace
    assert g2_sum / len(outcomes) == G2_POP
    assert trace_sum / len(outcomes) == TRACE_POP
    assert G2_POP != 0 and TRACE_POP != 0  # the check is not vacuous


def test_estimates_exactly_unbiased_independent():
    # Independent small and big batches (e.g. one rank's micro-batch vs another step): still unbiased.
    outcomes = list(itertools.product(POP, repeat=1 + 2))
    pairs = [noise_scale_estimates(_sq(_mean(o[:1])), 1, _sq(_mean(o[1:])), 2) for o in outcomes]
    assert sum(p[0] for p in pairs) / len(pairs) == G2_POP
    assert sum(p[1] for p in pairs) / len(pairs) == TRACE_POP


def test_tracker_average_exactly_unbiased():
    # Two tracker updates over all 16 x 16 equally likely outcomes: the bias-corrected EMAs are
    # weighted means of unbiased estimates, so their expectations are |G|² and tr(Σ) (float rounding only).
    steps = [(_sq(_mean(b[:1])), _sq(_mean(b))) for b in itertools.product(POP, repeat=2)]
    g2_sum = trace_sum = 0.0
    for (s1, g1), (s2, g2) in itertools.product(steps, repeat=2):
        t = NoiseScaleTracker(ema=0.9)
        t.update(s1, 1, g1, 2)
        t.update(s2, 1, g2, 2)
        g2_sum += t.g2
        trace_sum += t.trace
    n = len(steps) ** 2
    assert g2_sum / n == pytest.approx(float(G2_POP), rel=1e-12)
    assert trace_sum / n == pytest.approx(float(TRACE_POP), rel=1e-12)


# ---------------------------------------------------------------------------------------------------
# Synthetic quadratic: per-example loss ½‖θ − x‖² with x ~ N(μ, diag σ²). The per-example gradient is
# θ − x, so G = θ − μ, Σ = diag σ², and B_simple = Σσ² / ‖θ − μ‖² is known in closed form.
D = 32
VAR = torch.linspace(0.5, 2.0, D, dtype=torch.float64)  # σ², tr(Σ) = 40
B_TRUE = 64.0  # between the two measured batch sizes, where the estimate is informative
G_TRUE = torch.full((D,), math.sqrt(VAR.sum().item() / B_TRUE / D), dtype=torch.float64)
MU = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)
THETA = MU + G_TRUE
MICRO, K = 8, 4  # 4 micro-batches of 8: b_small = 8 (per micro-batch), b_big = 32 (accumulated)
RUNS, STEPS, EMA = 64, 400, 0.99


def _simulate_run(gen, steps, ema):
    """One training-like run: per-micro-batch gradients from per-example samples, fed to the tracker."""
    x = MU + VAR.sqrt() * torch.randn(steps, K, MICRO, D, generator=gen, dtype=torch.float64)
    g_micro = THETA - x.mean(dim=2)  # (steps, K, D): mean-reduced gradient of each micro-batch
    sq_small = g_micro.square().sum(-1).mean(1)  # mean over micro-batches of |G_8|²
    sq_big = g_micro.mean(1).square().sum(-1)  # |G_32|² of the accumulated gradient
    tracker = NoiseScaleTracker(ema=ema)
    values = [tracker.update(sq_small[i].item(), MICRO, sq_big[i].item(), MICRO * K) for i in range(steps)]
    return tracker, values


@pytest.fixture(scope="module")
def runs():
    gen = torch.Generator().manual_seed(1234)
    return [_simulate_run(gen, STEPS, EMA) for _ in range(RUNS)]


def test_tracker_components_within_standard_error(runs):
    g2 = torch.tensor([t.g2 for t, _ in runs], dtype=torch.float64)
    trace = torch.tensor([t.trace for t, _ in runs], dtype=torch.float64)
    for est, truth in ((g2, (G_TRUE**2).sum().item()), (trace, VAR.sum().item())):
        se = est.std().item() / math.sqrt(RUNS)  # SE of the mean over independent runs
        assert abs(est.mean().item() - truth) <= 4 * se, (est.mean().item(), truth, se)
        assert 4 * se < 0.05 * truth  # the tolerance is tight enough to catch a wrong estimator


def test_tracker_b_simple_within_standard_error(runs):
    g2 = torch.tensor([t.g2 for t, _ in runs], dtype=torch.float64)
    trace = torch.tensor([t.trace for t, _ in runs], dtype=torch.float64)
    # Pooled ratio over runs; its SE by the delta method from the per-run residuals trace − B̂·g2.
    b_hat = (trace.mean() / g2.mean()).item()
    se = ((trace - b_hat * g2).std() / g2.mean()).item() / math.sqrt(RUNS)
    assert abs(b_hat - B_TRUE) <= 4 * se, (b_hat, B_TRUE, se)
    assert 4 * se < 0.05 * B_TRUE
    # what each run reports is the ratio of its two averages
    for tracker, values in runs:
        assert values[-1] == pytest.approx(tracker.trace / tracker.g2, rel=1e-15)


def test_default_tracker_single_run_within_its_spread():
    # The default ema (0.95) on one long run: after burn-in, the reported value fluctuates around
    # B_true; the last value must lie within 4 SD of that fluctuation, measured on the same run.
    tracker, values = _simulate_run(torch.Generator().manual_seed(99), 2000, 0.95)
    tail = torch.tensor(values[500:], dtype=torch.float64)  # ≥ 10 EMA time constants of burn-in
    assert all(v is not None for v in values[500:])
    assert abs(values[-1] - B_TRUE) <= 4 * tail.std().item()
    assert abs(tail.mean().item() - B_TRUE) <= 4 * tail.std().item()


# ---------------------------------------------------------------------------------------------------
# Tracker mechanics and the squared-norm helper.


def test_first_update_is_the_raw_estimate():
    g2, trace = noise_scale_estimates(3.0, 8, 1.5, 32)
    t = NoiseScaleTracker(ema=0.95)
    assert t.value is None and t.g2 is None
    value = t.update(3.0, 8, 1.5, 32)
    assert t.g2 == pytest.approx(g2, rel=1e-15) and t.trace == pytest.approx(trace, rel=1e-15)
    assert value == pytest.approx(trace / g2, rel=1e-15)


def test_none_until_positive():
    t = NoiseScaleTracker(ema=0.5)
    # |G_small|² < |G_big|²: negative trace estimate, B_simple undefined
    assert t.update(1.0, 8, 2.0, 32) is None
    # noise only (|G|² estimate negative): still undefined
    t2 = NoiseScaleTracker(ema=0.5)
    assert t2.update(4.0, 8, 0.0, 32) is None
    # after enough informative steps the averages become positive
    for _ in range(10):
        value = t.update(3.0, 8, 1.5, 32)
    assert value is not None and value > 0


def test_state_dict_resume_is_identical():
    gen = torch.Generator().manual_seed(5)
    data = [(float(a), float(b)) for a, b in (torch.rand(50, 2, generator=gen, dtype=torch.float64) + 0.1)]
    full = NoiseScaleTracker()
    head = NoiseScaleTracker()
    for s, g in data[:20]:
        full.update(s + g, 8, g, 32)
        head.update(s + g, 8, g, 32)
    state = head.state_dict()
    assert all(type(v) in (float, int) for v in state.values())
    resumed = NoiseScaleTracker()
    resumed.load_state_dict(state)
    for s, g in data[20:]:
        a = full.update(s + g, 8, g, 32)
        b = resumed.update(s + g, 8, g, 32)
        assert a == b  # bit-identical
    assert resumed.state_dict() == full.state_dict()


def test_load_state_dict_rejects_mismatch():
    with pytest.raises(ValueError, match="ema"):
        NoiseScaleTracker(ema=0.9).load_state_dict(NoiseScaleTracker(ema=0.95).state_dict())
    with pytest.raises(ValueError, match="count"):
        NoiseScaleTracker().load_state_dict({"ema": 0.95, "g2": 0.0, "trace": 0.0})


@pytest.mark.parametrize(
    "args, name",
    [
        ((1.0, 8, 0.5, 8), "b_small"),
        ((1.0, 32, 0.5, 8), "b_small"),
        ((1.0, 0, 0.5, 8), "b_small"),
        ((1.0, 8, 0.5, -1), "b_big"),
        ((-1.0, 8, 0.5, 32), "sq_small"),
        ((float("nan"), 8, 0.5, 32), "sq_small"),
        ((1.0, 8, float("inf"), 32), "sq_big"),
    ],
)
def test_bad_inputs_raise(args, name):
    with pytest.raises(ValueError, match=name):
        noise_scale_estimates(*args)


@pytest.mark.parametrize("ema", [-0.1, 1.0, 1.5])
def test_bad_ema_raises(ema):
    with pytest.raises(ValueError, match="ema"):
        NoiseScaleTracker(ema=ema)


def test_sq_norm_matches_autograd_on_the_quadratic():
    gen = torch.Generator().manual_seed(0)
    theta = THETA.clone().requires_grad_(True)
    other = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    x = MU + VAR.sqrt() * torch.randn(16, D, generator=gen, dtype=torch.float64)
    loss = 0.5 * (theta - x).square().sum(-1).mean() + (other**2).sum()
    loss.backward()
    expected = (THETA - x.mean(0)).square().sum().item() + (2 * other.detach()).square().sum().item()
    assert sq_norm([theta.grad, None, other.grad]) == pytest.approx(expected, rel=1e-12)
    assert sq_norm([]) == 0.0


def test_sq_norm_accumulates_in_float64():
    g = torch.full((4096,), 1.1, dtype=torch.bfloat16)
    exact = 4096 * float(g[0]) ** 2
    assert sq_norm([g]) == pytest.approx(exact, rel=1e-12)
    # a bf16 accumulation would be off by far more than that tolerance
    assert abs(float(torch.linalg.vector_norm(g).square()) - exact) > 1e-6 * exact


# ---------------------------------------------------------------------------------------------------
# The trainer's micro-batches: τ is drawn for the whole step (diffusion.masking.draw_noise) and each
# micro-batch takes a contiguous slice of the rows. Synthetic per-row gradients with a τ-dependent mean:
#     g_i = G + c·(τ_i − ½)·e + ε_i,   ε_i ~ N(0, σ²·I_d),
# with the τ part 9% of the per-row noise, so B_simple = (d·σ² + c²/12)/|G|² for i.i.d. τ.
# The step's τ are the stratified levels {w + k/B} (w ~ U[0, 1/B)) in a random order, so a micro-batch
# of b rows is a sample without replacement of them, and the whole step's mean of τ is nearly exact.
# Then, exactly,  E|m̄_b|² = c²/(12B²)·(1 + (B+1)(B−b)/b)  and  E|m̄_B|² = c²/(12B²),  so the
# two-batch-size estimates have the expectations
#     E[tr(Σ) estimate] = d·σ² + c²(B+1)/(12B),   E[|G|² estimate] = |G|² − c²/(12B),
# whose ratio is the known target: 1.8% above the i.i.d. B_simple here (stratification removes most of
# the τ noise from the big batch), where τ bands sliced in sorted order more than double it.
TAU_DIM, TAU_SIGMA, C_TAU, G_NORM = 40, 1.0, math.sqrt(12 * 0.09 * 40), math.sqrt(40 / 12.0)
B_IID = (TAU_DIM * TAU_SIGMA**2 + C_TAU**2 / 12) / G_NORM**2
TAU_ROWS, TAU_MICRO, TAU_STEPS = 64, 16, 4000
B_TARGET = ((TAU_DIM * TAU_SIGMA**2 + C_TAU**2 * (TAU_ROWS + 1) / (12 * TAU_ROWS))
            / (G_NORM**2 - C_TAU**2 / (12 * TAU_ROWS)))


def _measured_b_simple(contiguous_tau: bool, seed: int) -> tuple[float, float]:
    """(B_simple from the two-batch-size estimates averaged over TAU_STEPS, its standard error)."""
    from trimdm.diffusion.masking import draw_noise, stratified_tau

    gen = torch.Generator().manual_seed(seed)
    G = torch.zeros(TAU_DIM, dtype=torch.float64)
    G[0] = G_NORM
    e = torch.zeros(TAU_DIM, dtype=torch.float64)
    e[1] = 1.0
    g2s, traces = [], []
    for _ in range(TAU_STEPS):
        tau = stratified_tau(TAU_ROWS, gen, 0.0, 1.0) if contiguous_tau else draw_noise(TAU_ROWS, 1, gen, 0.0, 1.0)[0]
        noise = TAU_SIGMA * torch.randn(TAU_ROWS, TAU_DIM, generator=gen, dtype=torch.float64)
        g = G + C_TAU * (tau[:, None] - 0.5) * e + noise
        micro = g.view(TAU_ROWS // TAU_MICRO, TAU_MICRO, TAU_DIM).mean(1)  # contiguous slices, as the trainer
        g2, trace = noise_scale_estimates(float(micro.square().sum(1).mean()), TAU_MICRO,
                                          float(g.mean(0).square().sum()), TAU_ROWS)
        g2s.append(g2)
        traces.append(trace)
    g2s, traces = torch.tensor(g2s), torch.tensor(traces)
    ratio = float(traces.mean() / g2s.mean())
    # delta method for a ratio of means over independent steps
    se = float((traces - ratio * g2s).std() / math.sqrt(TAU_STEPS) / g2s.mean())
    return ratio, se


def test_noise_scale_of_the_trainers_micro_batches_is_unbiased():
    measured, se = _measured_b_simple(contiguous_tau=False, seed=11)
    assert abs(measured - B_TARGET) < 4 * se, (measured, B_TARGET, se)
    assert abs(B_TARGET / B_IID - 1) < 0.02


def test_contiguous_tau_bands_would_bias_it():
    """The power of the check above: micro-batches cut from τ in sorted order hold one τ band each."""
    measured, se = _measured_b_simple(contiguous_tau=True, seed=11)
    assert measured - B_TARGET > 4 * se and measured > 2 * B_IID, (measured, B_TARGET, se)
