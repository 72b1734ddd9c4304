"""SDE batch reparameterization formulas (method §6, Bethune et al. 2026)."""
import dataclasses
import math

import pytest

from trimdm.optim.reparam import BaseHParams, Hyperparams, critical_batch, describe, sde_hparams

# The paper's base point: B_base = 256 sequences, D_base = 13B tokens.
BASE = BaseHParams(
    batch=256, tokens=13e9, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, warmup_tokens=1000 * 256 * 2048,
    grad_clip=1.0,
)
L = 2048
GAMMA = 0.44


def test_base_point_is_identity():
    h = sde_hparams(BASE, physical_batch=256, tokens=13e9, seq_len=L)
    assert isinstance(h, Hyperparams)
    assert h.kappa == pytest.approx(1.0, rel=1e-15)
    assert h.logical_batch == pytest.approx(256.0, rel=1e-15)
    assert h.lr == pytest.approx(BASE.lr, rel=1e-15)
    assert h.betas == pytest.approx(BASE.betas, rel=1e-15)
    assert h.eps == pytest.approx(BASE.eps, rel=1e-15)
    assert h.weight_decay == pytest.approx(BASE.weight_decay, rel=1e-15)
    assert h.accum_steps == 1 and h.mode == "sde" and h.batch == 256
    assert h.tokens_per_step == 256 * L
    assert h.steps == int(13e9 // (256 * L))
    assert h.warmup_steps == 1000  # warmup tokens of exactly 1000 base steps


@pytest.mark.parametrize("batch", [16, 64, 256, 1024, 4096])
@pytest.mark.parametrize("tokens", [1e9, 13e9, 100e9, 6.4e12])
def test_sde_scaling_rules(batch, tokens):
    h = sde_hparams(BASE, physical_batch=batch, tokens=tokens, seq_len=L, gamma=GAMMA)
    kappa = (batch / BASE.batch) * (BASE.tokens / tokens) ** GAMMA
    b_log = BASE.batch * (tokens / BASE.tokens) ** GAMMA
    assert h.kappa == pytest.approx(kappa, rel=1e-12)
    assert h.logical_batch == pytest.approx(b_log, rel=1e-12)
    assert h.kappa == pytest.approx(batch / h.logical_batch, rel=1e-12)
    assert h.lr == pytest.approx(BASE.lr * math.sqrt(kappa), rel=1e-12)
    assert h.betas[0] == pytest.approx(BASE.betas[0] ** kappa, rel=1e-12)
    assert h.betas[1] == pytest.approx(BASE.betas[1] ** kappa, rel=1e-12)
    assert all(0 < b < 1 for b in h.betas)
    assert h.eps == pytest.approx(BASE.eps / math.sqrt(kappa), rel=1e-12)
    assert h.weight_decay == pytest.approx(BASE.weight_decay * math.sqrt(kappa), rel=1e-12)
    # torch AdamW applies lr·wd per step: per-step decay scales linearly with κ
    assert h.lr * h.weight_decay == pytest.approx(BASE.lr * BASE.weight_decay * kappa, rel=1e-12)
    # the clipping threshold follows ε: the typical gradient norm scales as 1/√κ in the noise-dominated regime
    assert h.grad_clip == pytest.approx(BASE.grad_clip / math.sqrt(kappa), rel=1e-12)
    assert h.steps == int(tokens // (batch * L))


def test_ratios_between_two_runs():
    # Proportionalities independent of the base values: quadrupling B at fixed D doubles lr and halves eps.
    a = sde_hparams(BASE, 128, 50e9, L)
    b = sde_hparams(BASE, 512, 50e9, L)
    assert b.kappa / a.kappa == pytest.approx(4.0, rel=1e-12)
    assert b.lr / a.lr == pytest.approx(2.0, rel=1e-12)
    assert b.eps / a.eps == pytest.approx(0.5, rel=1e-12)
    assert b.weight_decay / a.weight_decay == pytest.approx(2.0, rel=1e-12)
    assert b.betas[1] == pytest.approx(a.betas[1] ** 4, rel=1e-12)
    # Longer horizon at fixed B: the logical batch grows as D^γ, so κ shrinks.
    c = sde_hparams(BASE, 128, 50e9 * 10, L)
    assert c.logical_batch / a.logical_batch == pytest.approx(10**GAMMA, rel=1e-12)
    assert c.kappa / a.kappa == pytest.approx(10**-GAMMA, rel=1e-12)


def test_gamma_zero_is_plain_batch_rule():
    h = sde_hparams(BASE, 1024, 1e12, L, gamma=0.0)
    assert h.logical_batch == BASE.batch
    assert h.kappa == pytest.approx(4.0)


def test_none_keeps_base_values():
    h = sde_hparams(BASE, physical_batch=1024, tokens=100e9, seq_len=L, mode="none")
    assert h.mode == "none" and h.kappa == 1.0 and h.accum_steps == 1
    assert (h.lr, h.betas, h.eps, h.weight_decay, h.grad_clip) == (BASE.lr, BASE.betas, BASE.eps, BASE.weight_decay,
                                                                  BASE.grad_clip)
    assert h.logical_batch == pytest.approx(256 * (100e9 / 13e9) ** GAMMA, rel=1e-12)
    assert h.tokens_per_step == 1024 * L
    assert h.steps == int(100e9 // (1024 * L))


@pytest.mark.parametrize("batch", [1, 7, 32, 100, 256, 1000])
@pytest.mark.parametrize("tokens", [13e9, 100e9, 6.4e12])
def test_accumulate_reaches_logical_batch(batch, tokens):
    h = sde_hparams(BASE, physical_batch=batch, tokens=tokens, seq_len=L, mode="accumulate")
    b_log = h.logical_batch
    assert h.accum_steps == max(1, math.floor(b_log / batch + 0.5))
    assert h.batch == batch * h.accum_steps
    if batch <= b_log:
        # rounding leaves the effective batch within half a micro-batch of B_log
        assert abs(h.batch - b_log) <= batch / 2
    else:
        assert h.accum_steps == 1  # accumulation cannot shrink a batch
    assert h.kappa == pytest.approx(h.batch / b_log, rel=1e-12)
    assert (h.lr, h.betas, h.eps, h.weight_decay, h.grad_clip) == (BASE.lr, BASE.betas, BASE.eps, BASE.weight_decay,
                                                                  BASE.grad_clip)
    assert h.tokens_per_step == h.batch * L
    assert h.steps == int(tokens // (h.batch * L))


def test_accumulate_example():
    # B_log = 256·(100/13)^0.44 ≈ 628.2; micro-batch 64 → 10 micro-batches = 640 sequences per step
    h = sde_hparams(BASE, 64, 100e9, L, mode="accumulate")
    assert h.logical_batch == pytest.approx(628.2, abs=0.1)
    assert h.accum_steps == 10 and h.batch == 640


def test_warmup_in_tokens_and_capped():
    # 1000 base steps of warmup tokens; at batch 512 that is 500 steps (ceil of an exact division)
    h = sde_hparams(BASE, 512, 13e9, L)
    assert h.warmup_steps == 500
    # a non-integral ratio rounds up
    h = sde_hparams(BASE, 300, 13e9, L)
    assert h.warmup_steps == math.ceil(BASE.warmup_tokens / (300 * L))
    # a short horizon: warmup would be 2000 of 4000 steps, capped at 25%
    short = 4000 * 256 * L
    h = sde_hparams(dataclasses.replace(BASE, warmup_tokens=short // 2), 256, short, L)
    assert h.steps == 4000 and h.warmup_steps == 1000
    h = sde_hparams(BASE, 256, 10 * 256 * L + 5, L)
    assert h.steps == 10 and h.warmup_steps == 2  # floor(0.25 · 10)
    assert sde_hparams(dataclasses.replace(BASE, warmup_tokens=0), 256, 13e9, L).warmup_steps == 0


def test_critical_batch():
    assert critical_batch(tokens=1e12, seq_len=2048, s_crit=1000) == pytest.approx(1e12 / 2048 / 1000)
    with pytest.raises(ValueError, match="s_crit"):
        critical_batch(1e12, 2048, 0)
    with pytest.raises(ValueError, match="seq_len"):
        critical_batch(1e12, 0, 10)
    with pytest.raises(ValueError, match="tokens"):
        critical_batch(-1.0, 2048, 10)


def test_describe_mentions_the_numbers():
    for mode in ("sde", "none", "accumulate"):
        h = sde_hparams(BASE, 64, 100e9, L, mode=mode)
        text = describe(h)
        assert f"reparam={mode}" in text
        assert f"{h.steps:,}" in text and f"{h.logical_batch:.1f}" in text and "\n" not in text


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(gamma=-0.1), "gamma"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(physical_batch=0), "physical_batch"),
        (dict(physical_batch=-4), "physical_batch"),
        (dict(physical_batch=2.5), "physical_batch"),
        (dict(tokens=0), "tokens"),
        (dict(tokens=-1e9), "tokens"),
        (dict(seq_len=0), "seq_len"),
        (dict(mode="linear"), "mode"),
        (dict(tokens=256 * L - 1), "tokens"),  # horizon shorter than one optimizer step
        # one micro-batch of 4 fits in 13e9 tokens, the 64 accumulated to reach B_log = 256 do not
        (dict(mode="accumulate", physical_batch=4, seq_len=130_000_000), "tokens"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    args = dict(base=BASE, physical_batch=256, tokens=13e9, seq_len=L)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        sde_hparams(**args)
    assert name in str(err.value)


def test_horizon_message_is_precise():
    with pytest.raises(ValueError, match=r"shorter than one optimizer step of 524288 tokens"):
        sde_hparams(BASE, 256, 1000, L)


@pytest.mark.parametrize(
    "field, value, name",
    [
        ("batch", 0, "BaseHParams.batch"),
        ("tokens", 0.0, "BaseHParams.tokens"),
        ("lr", 0.0, "BaseHParams.lr"),
        ("lr", -1e-3, "BaseHParams.lr"),
        ("eps", 0.0, "BaseHParams.eps"),
        ("weight_decay", -0.1, "BaseHParams.weight_decay"),
        ("warmup_tokens", -1, "BaseHParams.warmup_tokens"),
        ("betas", (0.9, 1.0), "BaseHParams.betas[1]"),
        ("betas", (0.0, 0.95), "BaseHParams.betas[0]"),
        ("betas", (1.5, 0.95), "BaseHParams.betas[0]"),
        ("betas", (0.9,), "BaseHParams.betas"),
    ],
)
def test_bad_base_values_raise(field, value, name):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(BASE, **{field: value})
    assert name in str(err.value)


def test_base_betas_list_becomes_tuple():
    assert dataclasses.replace(BASE, betas=[0.9, 0.99]).betas == (0.9, 0.99)


def test_bad_base_type_raises():
    with pytest.raises(ValueError, match="base"):
        sde_hparams({"batch": 256}, 256, 13e9, L)
