"""The training-loss estimator is unbiased for the objective it claims (method §4), on toys small enough
to enumerate, and each check has power: a deliberately wrong weight in the same case must fail it.

Toys: text-only rows of 3 text tokens over 4 maskable positions, and paired rows
`TASK BOS_text t.. EOS_text BOS_m media.. EOS_m PAD..` (2 text tokens, 2 image codes, 2 audio levels of
2 codes, 1–2 text tokens, 1–2 image tokens or one audio frame, right-padded with PAD_text to 9): up to
6 maskable positions per row (EOS included, PAD never), every head predicting 3 classes. The stand-in
model's logits are a random table keyed by the whole noisy row, so CE_i depends on which other
positions are masked, as in a real network.

Exact target. The loss of a batch holding every toy row once is Σ_rows Σ_{i∈M} w_i(τ)·CE_i(x_M) / n_tok
with n_tok the maskable non-pad tokens the process noises (the denominator diffusion_loss uses). Each
row's τ is uniform on [0, 1) (stratification only correlates rows), then clamped to [lo, hi]
(`tau_bounds`), and given τ position i is masked independently with probability p_i(τ). So

    E[loss] = (1/n_tok) Σ_rows ∫ f(τ) dμ(τ),
    f(τ) = Σ_M Π_i p_i^{m_i}(1−p_i)^{1−m_i} Σ_{i∈M} w_i(τ)·CE_i(x_M),

with μ the clamped law: Lebesgue on [lo, hi] plus atoms of mass lo at lo and 1−hi at hi. It is computed
by Gauss–Legendre on [lo, hi] and enumeration of every mask pattern, with p_i and w_i derived here from
β and β' (not from the schedule's `weight`, which the power checks replace): p = β_m, w = β_m'/β_m on the
plain ratio, p = 1 − β_m, w = β_m'/(1 − β_m) on the complementary one. With lo = 0, hi = 1 and one
schedule for all noised positions it equals the schedule-free NELBO Σ_M B(|M|, n−|M|+1)·Σ_{i∈M} CE_i
(substitute r = β(τ)), which the one-schedule cases check to validate the enumeration; the clamp moves
the target O(t_min) away from that NELBO. Complement pairs average the two copies. The Monte-Carlo mean
must lie within 4 standard errors of the target (400 batches, fixed seed); each wrong weight outside.
"""
import itertools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trimdm.diffusion.loss import diffusion_loss
from trimdm.diffusion.masking import conditional_modes, draw_noise, mask_batch, tau_bounds, text_shares
from trimdm.diffusion.schedules import Cosine, Linear, LogLinear, Polynomial, make_schedule
from trimdm.sequence.layout import RowTables, paired_row
from trimdm.tokenizers.vocab import AUDIO, MODALITIES, TEXT, JointVocab

T_MIN, N_BATCHES, SEED = 1e-3, 400, 7
TEXT_VOCAB = JointVocab(n_text=3, n_reserved=0)
# every output slice holds 2 ids plus its EOS (audio: per level), so every head has 3 classes
PAIRED_VOCAB = JointVocab(n_text=2, n_image=2, audio_levels=2, audio_codebook=2, n_reserved=0)
PAIRED_LEN = 9


def text_rows():
    """Every text-only row `TASK_text BOS_text x1..x4` (no EOS): 81 rows."""
    v = TEXT_VOCAB
    return torch.tensor([[v.TASK_text, v.BOS_text, *x] for x in itertools.product(range(v.n_text), repeat=4)])


def paired_rows():
    """Every image row with 1–2 text and 1–2 image tokens, every audio row with 1–2 text tokens and one
    frame: 60 rows with 0–2 PAD each."""
    vocab = PAIRED_VOCAB
    texts = [np.array(t) for n in (1, 2) for t in itertools.product(range(vocab.n_text), repeat=n)]
    images = [vocab.image_ids(np.array(c)) for n in (1, 2) for c in itertools.product(range(vocab.n_image), repeat=n)]
    frames = [vocab.audio_ids(np.array([c]))
              for c in itertools.product(range(vocab.audio_codebook), repeat=vocab.audio_levels)]
    rows = [paired_row(vocab, "image", t, m, PAIRED_LEN) for t in texts for m in images]
    rows += [paired_row(vocab, "audio", t, m, PAIRED_LEN) for t in texts for m in frames]
    return torch.tensor(np.stack(rows))


def patterns(tables, ids_L, noised_L):
    """Every mask pattern over the noised positions of one clean row: (masked_PL, noisy_PL)."""
    pos_N = noised_L.nonzero().squeeze(1)
    bits_PN = torch.tensor(list(itertools.product([False, True], repeat=len(pos_N))), dtype=torch.bool)
    masked_PL = torch.zeros(len(bits_PN), len(ids_L), dtype=torch.bool)
    masked_PL[:, pos_N] = bits_PN.reshape(len(bits_PN), len(pos_N))
    return masked_PL, torch.where(masked_PL, tables.mask_id_M[tables.modality(ids_L)], ids_L)


class TableModel:
    """Stand-in network: a random (L, C) logit table per noisy row the masks can produce; the logits of
    a head are the table's rows at its selected positions (every head of a toy has C classes)."""

    def __init__(self, vocab, rows_RL, n_classes, seed=0):
        self.vocab, self.tables = vocab, RowTables.from_vocab(vocab)
        noisy = torch.cat([patterns(self.tables, x, self.tables.maskable(x))[1] for x in rows_RL])
        self.keys_K = torch.unique(self.key(noisy))  # sorted
        g = torch.Generator().manual_seed(seed)
        self.logits_KLC = torch.randn(len(self.keys_K), rows_RL.shape[1], n_classes, generator=g,
                                      dtype=torch.float64) * 1.5

    def key(self, ids_BL):
        return (ids_BL * self.vocab.size ** torch.arange(ids_BL.shape[1])).sum(-1)

    def __call__(self, noisy_BL, pad_BL=None, heads=None):
        key_B = self.key(noisy_BL)
        k_B = torch.searchsorted(self.keys_K, key_B)
        assert torch.equal(self.keys_K[k_B], key_B), "a noisy row the toy's masks cannot produce"
        h_BLC = self.logits_KLC[k_B]
        if heads is None:
            return h_BLC
        assert all(hi - lo + 1 == h_BLC.shape[-1] for _, lo, hi, _ in heads)
        return [h_BLC[sel] for sel, *_ in heads]


def target_class(vocab, ids_L, noised_L):
    """The class of each noised clean id in its head (0 elsewhere), derived from the vocabulary rather
    than taken from RowTables.output_heads: its offset in its content slice (audio: within its level's
    codes), EOS after the slice."""
    modality = RowTables.from_vocab(vocab).modality(ids_L)
    lo_L = torch.tensor([vocab.content_range(m)[0] for m in MODALITIES])[modality]
    width_L = torch.tensor([vocab.n_text, vocab.n_image, vocab.audio_codebook])[modality]
    eos_L = torch.tensor([vocab.eos(m) for m in MODALITIES])[modality]
    local = torch.where(ids_L == eos_L, width_L, (ids_L - lo_L).remainder(width_L.clamp(min=1)))
    return torch.where(noised_L, local, 0)


def pattern_ce(model, ids_L, noised_L):
    """(bits_PN, ce_PN): every pattern over the N noised positions and the CE of each masked one."""
    masked_PL, noisy_PL = patterns(model.tables, ids_L, noised_L)
    logp_PLC = model(noisy_PL).log_softmax(-1)
    class_PL = target_class(model.vocab, ids_L, noised_L).expand(len(noisy_PL), -1)
    ce_PL = -logp_PLC.gather(2, class_PL[..., None])[..., 0]
    return masked_PL[:, noised_L], torch.where(masked_PL, ce_PL, 0.0)[:, noised_L]


def noised_positions(rows_RL, tables, text_clean_R):
    """The positions a conditional process noises: the maskable ones outside the clean modality
    (text_clean_R: media|text rows; the others are text|media)."""
    modality = tables.modality(rows_RL)
    clean = torch.where(text_clean_R[:, None], modality == TEXT, modality != TEXT)
    return tables.maskable(rows_RL) & ~clean


# complementary-ratio flag per modality of each physical copy of a clean row
PROCESSES = {"none": [(False, False, False)], "complement": [(False, False, False), (True, True, True)],
             "crossmodal": [(False, True, True)]}


def exact_target(model, rows_RL, schedules, antimask, lo, hi, noised_RL=None, nodes=200):
    """E[loss] by quadrature over the clamped τ law and enumeration of mask patterns (module docstring).
    Complement pairs: the mean over the two copies (each copy counts n_tok in the denominator)."""
    noised_RL = model.tables.maskable(rows_RL) if noised_RL is None else noised_RL
    x_, g_ = np.polynomial.legendre.leggauss(nodes)
    atoms = [(t, mass) for t, mass in ((lo, lo), (hi, 1 - hi)) if mass > 0]
    tau_T = torch.tensor([*((x_ + 1) / 2 * (hi - lo) + lo), *(t for t, _ in atoms)], dtype=torch.float64)
    g_T = torch.tensor([*(g_ / 2 * (hi - lo)), *(m for _, m in atoms)], dtype=torch.float64)
    beta_MT = torch.stack([s.beta(tau_T) for s in schedules])
    dbeta_MT = torch.stack([s.dbeta(tau_T) for s in schedules])
    modality_RL = model.tables.modality(rows_RL)
    total = 0.0
    for flags in PROCESSES[antimask]:
        comp_M1 = torch.tensor(flags)[:, None]
        p_MT = torch.where(comp_M1, 1 - beta_MT, beta_MT)
        w_MT = dbeta_MT / p_MT  # β'/β on the plain ratio, β'/(1 − β) on the complementary one
        for x_L, noised_L, m_L in zip(rows_RL, noised_RL, modality_RL):
            bits_PN, ce_PN = pattern_ce(model, x_L, noised_L)
            p_TN, w_TN = p_MT[m_L[noised_L]].T, w_MT[m_L[noised_L]].T
            prob_TP = torch.where(bits_PN, p_TN[:, None], 1 - p_TN[:, None]).prod(-1)
            total += float(g_T @ torch.einsum("tp,tn,pn->t", prob_TP, w_TN, ce_PN))
    return total / (len(PROCESSES[antimask]) * float(noised_RL.sum()))


def schedule_free_nelbo(model, rows_RL, noised_RL=None):
    """Σ_M B(|M|, n−|M|+1)·Σ_{i∈M} CE_i / n_tok: the NELBO (conditional on the clean positions) after
    the substitution r = β(τ), the same for every schedule shared by the noised positions."""
    noised_RL = model.tables.maskable(rows_RL) if noised_RL is None else noised_RL
    total = 0.0
    for x_L, noised_L in zip(rows_RL, noised_RL):
        bits_PN, ce_PN = pattern_ce(model, x_L, noised_L)
        k_P, n = bits_PN.sum(1), int(noised_L.sum())
        beta_P = torch.tensor([math.gamma(k) * math.gamma(n - k + 1) / math.gamma(n + 1) if k else 0.0
                               for k in k_P.tolist()], dtype=torch.float64)
        total += float(beta_P @ ce_PN.sum(1))
    return total / float(noised_RL.sum())


def mc_losses(model, rows_RL, schedules, antimask, shares=None, corrupt=None, n_batches=N_BATCHES, seed=SEED):
    """Training losses of n_batches batches, each holding every toy row once, through draw_noise,
    mask_batch and diffusion_loss. `shares` = (image, audio) text|media shares: every paired row is
    conditional (diffusion.conditional = 1) with its mode from conditional_modes and text_shares.
    `corrupt(nb) -> (nb, denominator)` injects a deliberate error between masking and the loss."""
    lo, hi = tau_bounds(schedules, antimask, T_MIN)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        tau_B, u_BL, c_B = draw_noise(len(rows_RL), rows_RL.shape[1], gen, lo, hi)
        mode_B = None
        if shares is not None:
            share_B = text_shares(rows_RL, model.tables, SimpleNamespace(image=shares[0], audio=shares[1]))
            mode_B = conditional_modes(c_B, 1.0, share_B)
        nb = mask_batch(rows_RL, model.tables, schedules, antimask, tau_B, u_BL, mode_B=mode_B)
        assert not bool((nb.masked_BL & nb.pad_BL).any())  # PAD is never masked
        nb, denominator = corrupt(nb) if corrupt else (nb, None)
        loss, _ = diffusion_loss(model, model.vocab, nb, denominator)
        losses.append(float(loss))
    return np.array(losses)


def z_score(losses, target):
    """(Monte-Carlo mean − target) in standard errors of the mean."""
    return float((losses.mean() - target) / (losses.std(ddof=1) / math.sqrt(len(losses))))


def assert_unbiased(losses, target):
    z = z_score(losses, target)
    assert abs(z) < 4, f"MC mean {losses.mean():.6f} vs exact {target:.6f}: {z:+.2f} SE"


def assert_detected(losses, target):
    z = z_score(losses, target)
    assert abs(z) > 4, f"not told apart: MC mean {losses.mean():.6f} vs exact {target:.6f}: {z:+.2f} SE"


@pytest.fixture(scope="module")
def text_toy():
    rows = text_rows()
    model = TableModel(TEXT_VOCAB, rows, TEXT_VOCAB.n_text + 1)
    return model, rows


@pytest.fixture(scope="module")
def paired_toy():
    rows = paired_rows()
    model = TableModel(PAIRED_VOCAB, rows, 3)
    return model, rows


def clamped_target(model, rows, schedules, antimask, noised=None):
    lo, hi = tau_bounds(schedules, antimask, T_MIN)
    return exact_target(model, rows, schedules, antimask, lo, hi, noised)


# -- text-only rows: one schedule, plain and complement pairs ------------------------------------------

@pytest.mark.parametrize("name,params", [("linear", {}), ("polynomial", {"k": 2}), ("cosine", {})])
@pytest.mark.parametrize("antimask", ["none", "complement"])
def test_estimator_is_unbiased(text_toy, name, params, antimask):
    model, rows = text_toy
    schedules = [make_schedule(name, **params)] * 3
    nelbo = schedule_free_nelbo(model, rows)
    assert exact_target(model, rows, schedules, antimask, 0.0, 1.0) == pytest.approx(nelbo, rel=1e-9)
    target = clamped_target(model, rows, schedules, antimask)
    assert target == pytest.approx(nelbo, rel=2 * T_MIN)  # the clamp moves the target by O(t_min)
    assert_unbiased(mc_losses(model, rows, schedules, antimask), target)


@dataclass(frozen=True)
class WrongComplement(Polynomial):
    """The tempting but biased complement weight w(β⁻¹(1−β(τ))) (method §4)."""

    def complement_weight(self, t):
        return self.weight(self.inverse(1 - self.beta(t)))


def test_biased_complement_weight_is_detected(text_toy):
    model, rows = text_toy
    schedules = [WrongComplement(k=2.0)] * 3
    target = clamped_target(model, rows, schedules, "complement")
    assert_detected(mc_losses(model, rows, schedules, "complement"), target)


# -- paired rows with padding and EOS --------------------------------------------------------------------

def test_paired_rows_with_padding_and_eos(paired_toy):
    """Joint process over paired rows of three lengths: PAD is never masked and not counted, every EOS
    is maskable and counted. Wrong: EOS weighted 0 (dropped from the loss, kept in the denominator), or
    PAD counted in the denominator (every weight scaled by n_tok/(n_tok + n_pad)); both lower the mean."""
    model, rows = paired_toy
    schedules = [Cosine()] * 3
    assert exact_target(model, rows, schedules, "none", 0.0, 1.0) == pytest.approx(
        schedule_free_nelbo(model, rows), rel=1e-9)
    target = clamped_target(model, rows, schedules, "none")
    assert_unbiased(mc_losses(model, rows, schedules, "none"), target)

    eos_ids = torch.tensor([PAIRED_VOCAB.eos(m) for m in MODALITIES])

    def eos_weight_zero(nb):
        nb.weight_BL = torch.where(torch.isin(nb.clean_BL, eos_ids), 0.0, nb.weight_BL)
        return nb, None

    def pad_counted(nb):
        return nb, float((nb.maskable_BL | nb.pad_BL).sum())

    assert_detected(mc_losses(model, rows, schedules, "none", corrupt=eos_weight_zero), target)
    assert_detected(mc_losses(model, rows, schedules, "none", corrupt=pad_counted), target)


# -- conditional rows --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shares", [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0)],
                         ids=["media|text", "text|media", "image|text+text|audio"])
def test_conditional_rows(paired_toy, shares):
    """Every paired row conditional: the clean modality is neither masked nor counted, so the target is
    the conditional NELBO of the noised modality given the clean one per noised token (schedule-free:
    one schedule per modality). Wrong: the clean modality's tokens counted in the denominator."""
    model, rows = paired_toy
    schedules = [Cosine(), Polynomial(k=2.0), Linear()]
    has_audio = (model.tables.modality(rows) == AUDIO).any(1)
    text_given_media = torch.where(has_audio, shares[1], shares[0]) == 1.0
    noised = noised_positions(rows, model.tables, ~text_given_media)
    assert exact_target(model, rows, schedules, "none", 0.0, 1.0, noised) == pytest.approx(
        schedule_free_nelbo(model, rows, noised), rel=1e-9)
    target = clamped_target(model, rows, schedules, "none", noised)
    assert_unbiased(mc_losses(model, rows, schedules, "none", shares=shares), target)

    def clean_counted(nb):
        return nb, float(model.tables.maskable(nb.clean_BL).sum())

    assert_detected(mc_losses(model, rows, schedules, "none", shares=shares, corrupt=clean_counted), target)


# -- per-modality schedules in one row ---------------------------------------------------------------------

@dataclass(frozen=True)
class CosineWithLinearWeight(Cosine):
    """Cosine masks weighted by the text schedule's 1/τ: one weight for the row, whatever the modality."""

    def weight(self, t):
        return Linear().weight(t)


@pytest.mark.parametrize("antimask", ["none", "complement"])
def test_per_modality_schedules(paired_toy, antimask):
    """Text linear, image cosine, audio polynomial:2 in the same row. Each position takes its own
    β_m'/β_m (the per-token-schedule NELBO, MD4's GenMD4 form), whose value now depends on the schedules
    (the masks of the other modalities follow other ratios), so only the enumeration is exact. Wrong:
    image positions weighted by the text schedule's 1/τ: weight × mask probability is β_image(τ)/τ in
    place of β_image'(τ), and ∫ (β_image/τ − β_image') dτ ≠ 0."""
    model, rows = paired_toy
    schedules = [Linear(), Cosine(), Polynomial(k=2.0)]
    target = clamped_target(model, rows, schedules, antimask)
    assert_unbiased(mc_losses(model, rows, schedules, antimask), target)
    wrong = [Linear(), CosineWithLinearWeight(), Polynomial(k=2.0)]
    assert_detected(mc_losses(model, rows, wrong, antimask), target)


# -- crossmodal anti-masking --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CosinePlainWeightOnComplement(Cosine):
    """β'/β where the complementary ratio 1 − β needs β'/(1 − β)."""

    def complement_weight(self, t):
        return self.weight(t)


@pytest.mark.parametrize("mixed", [False, True], ids=["cosine", "linear+cosine+cosine"])
def test_crossmodal(paired_toy, mixed):
    """Text at β_text(τ) with β'/β, media at 1 − β_m(τ) with β_m'/(1 − β_m). Per position the weight is
    the NELBO's (r = β_text or r = 1 − β_m turns each term into ∫_0^1 E[CE_i | i masked, r] dr), but the
    rest of the row is masked at the anti-correlated ratio, so the objective is not the joint NELBO: the
    target is the enumeration of the crossmodal process itself (here about 3% above the joint NELBO,
    under 2 SE: too close for the Monte-Carlo check to tell apart, so only the exact values are compared).
    Wrong: media weighted β'/β, which multiplies each media term by (1 − β)/β."""
    model, rows = paired_toy
    schedules = [Linear() if mixed else Cosine(), Cosine(), Cosine()]
    target = clamped_target(model, rows, schedules, "crossmodal")
    assert target != pytest.approx(exact_target(model, rows, schedules, "none", 0.0, 1.0), rel=1e-2)
    assert_unbiased(mc_losses(model, rows, schedules, "crossmodal"), target)
    wrong = [schedules[0], CosinePlainWeightOnComplement(), CosinePlainWeightOnComplement()]
    assert_detected(mc_losses(model, rows, wrong, "crossmodal"), target)


# -- log-linear ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogLinearSigmaRate(LogLinear):
    """σ'(τ) = β'/(1 − β) as the weight: MDLM's noise rate without the factor e^{−σ}/(1 − e^{−σ})."""

    def weight(self, t):
        return self.dbeta(t) / (1 - self.beta(t))


@pytest.mark.parametrize("eps,truncation_visible", [(1e-3, False), (0.1, True)])
@pytest.mark.parametrize("antimask", ["none", "complement"])
def test_loglinear(paired_toy, eps, truncation_visible, antimask):
    """β = (1−ε)τ never reaches 1: r = β(τ) covers [t_min, 1−ε] (the complement copy [ε, 1−t_min]), and
    the process's NELBO adds a prior term for the ε of tokens left clean at τ = 1 that the estimator
    omits. So the estimator is unbiased for the schedule's own weight integrated over the clamped τ, not
    for the schedule-free NELBO; at ε = 0.1 the missing ratios put the latter more than 4 SE away (the
    clamp, hi = min(β⁻¹(1 − t_min), 1) = 1, cuts nothing more). Wrong: σ'(τ) = β'/(1 − β) as the weight."""
    model, rows = paired_toy
    schedules = [LogLinear(eps=eps)] * 3
    target = clamped_target(model, rows, schedules, antimask)
    assert tau_bounds(schedules, antimask, T_MIN)[1] == 1.0
    losses = mc_losses(model, rows, schedules, antimask)
    assert_unbiased(losses, target)
    if truncation_visible:
        assert_detected(losses, schedule_free_nelbo(model, rows))
    assert_detected(mc_losses(model, rows, [LogLinearSigmaRate(eps=eps)] * 3, antimask), target)
