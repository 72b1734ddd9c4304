"""SDE batch-size reparameterization of AdamW hyperparameters (method §6).

Owns: turning hyperparameters tuned once at a base point (B_base sequences per optimizer step, a
horizon of D_base tokens) into the hyperparameters and step counts of a run with physical batch B and
horizon D, in one of three modes (`sde | none | accumulate`), plus the critical batch formula.
Does not own: parameter groups and per-module multipliers (param_groups.py), the lr schedule shape
(lr.py), the config tree (config.py). Pure: standard library only, no torch.

Paper: Bethune et al. 2026, "The Design Space of Tri-Modal Masked Diffusion Models" (arXiv 2602.21472),
batch-size study, SDE reparameterization. The Adam rule underneath is the SDE scaling rule of Malladi
et al. 2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"); the paper adds the
horizon term (D_base/D)^γ, so that the batch that trains like the base run grows sub-linearly with D.

    κ      = (B / B_base) · (D_base / D)^γ            γ ≈ 0.44 (depends on the lr schedule)
    lr     = lr_base · √κ
    β_i    = β_i,base^κ
    ε      = ε_base / √κ
    wd     = wd_base · √κ                              (R), torch AdamW semantics
    B_log  = B_base · (D / D_base)^γ,   so  κ = B / B_log
    B_crit = D / (L · S_crit)

Why each rule, with one optimizer step at batch B standing for κ steps of the SDE at the logical batch:
- lr ∝ √κ: Adam normalizes the update by √v, so the drift per step scales with lr and the noise
  variance per step with lr²/B; matching both over κ logical steps gives lr·√κ (Malladi et al.).
- β^κ: an exponential average over one step should forget as much as it did over κ logical steps.
  Malladi et al. write 1 − κ(1 − β); β^κ agrees to first order and stays in (0, 1) for every κ.
- ε/√κ: in the noise-dominated regime the second moment v ∝ 1/B, so √v ∝ 1/√κ; ε keeps its size
  relative to √v.
- wd·√κ (our reconstruction, (R)): torch AdamW applies decoupled decay θ ← θ − lr·wd·θ per step.
  With lr ∝ √κ and wd ∝ √κ the per-step decay lr·wd ∝ κ, i.e. the same decay per unit of SDE time.
- clip/√κ (our reconstruction, (R)), for the reason ε follows: Adam divides by √v, and in the
  noise-dominated regime √v, and with it the typical gradient norm, scale as 1/√κ. A threshold that
  stays put would clip most steps of a small batch and none of a large one; divided by √κ it clips the
  same share of the normalised updates at every batch, so the physical batch stays a hardware choice.

Modes (the comparison is one flag):
- "sde": the physical batch B is the optimizer batch; hyperparameters rescaled by κ = B / B_log.
- "none": base hyperparameters at any physical batch B. `kappa` is reported as 1.0 because that is
  the κ the hyperparameters were computed with; `logical_batch` is still reported, so logs show how far
  B is from B_log (B / B_log is the κ that "sde" would have applied).
- "accumulate": B is a micro-batch accumulated `accum_steps = max(1, round(B_log / B))` times (round
  half up), so each optimizer step sees B_eff = accum_steps·B ≈ B_log sequences. Hyperparameters are
  the base ones, not rescaled. `kappa` is computed on the effective batch, κ = B_eff / B_log, and is
  informational only: it shows the residual mismatch left by rounding, or a κ > 1 when B > B_log
  (accumulation cannot shrink a batch). Steps count optimizer steps of the effective batch.

Warmup is defined in tokens (method §6): warmup_steps = ceil(warmup_tokens / tokens_per_step), capped at
floor(25% of steps).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

MODES = ("sde", "none", "accumulate")
WARMUP_CAP = 0.25  # method §6: warmup at most 25% of the optimizer steps


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_positive(name: str, x) -> None:
    if not (_is_real(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")


def _check_nonnegative(name: str, x) -> None:
    if not (_is_real(x) and x >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")


def _check_positive_int(name: str, x) -> None:
    if not (isinstance(x, numbers.Integral) and not isinstance(x, bool) and x > 0):
        raise ValueError(f"{name} must be an integer > 0, got {x!r}")


@dataclass(frozen=True)
class BaseHParams:
    """AdamW hyperparameters tuned once at the base point (paper: B_base = 256, D_base = 13B tokens)."""

    batch: int  # B_base, sequences per optimizer step
    tokens: float  # D_base, token horizon of the base run
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float  # torch AdamW decoupled decay (multiplied by lr)
    warmup_tokens: float  # warmup length in tokens (0 = no warmup)
    grad_clip: float = 0.0  # gradient-norm clipping threshold (0 = none)

    def __post_init__(self):
        _check_positive_int("BaseHParams.batch", self.batch)
        _check_positive("BaseHParams.tokens", self.tokens)
        _check_positive("BaseHParams.lr", self.lr)
        _check_positive("BaseHParams.eps", self.eps)
        _check_nonnegative("BaseHParams.weight_decay", self.weight_decay)
        _check_nonnegative("BaseHParams.warmup_tokens", self.warmup_tokens)
        _check_nonnegative("BaseHParams.grad_clip", self.grad_clip)
        try:
            betas = tuple(self.betas)
        except TypeError:
            raise ValueError(f"BaseHParams.betas must be a pair of numbers, got {self.betas!r}") from None
        if len(betas) != 2:
            raise ValueError(f"BaseHParams.betas must have 2 entries, got {len(betas)}: {self.betas!r}")
        for i, b in enumerate(betas):
            if not (_is_real(b) and 0 < b < 1):
                raise ValueError(f"BaseHParams.betas[{i}] must lie in the open interval (0, 1), got {b!r}")
        object.__setattr__(self, "betas", betas)  # a list from JSON becomes the declared tuple


@dataclass(frozen=True)
class Hyperparams:
    """The derived optimizer hyperparameters and step counts for one run (see module docstring)."""

    kappa: float  # κ the hyperparameters were computed with ("none": 1.0; "accumulate": B_eff/B_log, not applied)
    logical_batch: float  # B_log = B_base·(D/D_base)^γ, sequences
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float  # torch AdamW semantics: decay per step is lr·weight_decay
    grad_clip: float  # clipping threshold of the gradient norm (0 = none)
    steps: int  # optimizer steps = tokens // tokens_per_step
    warmup_steps: int  # ceil(warmup_tokens / tokens_per_step), at most floor(25% of steps)
    accum_steps: int  # micro-batches per optimizer step (1 unless mode "accumulate")
    tokens_per_step: int  # tokens per optimizer step = micro_batch·accum_steps·seq_len
    mode: str  # "sde" | "none" | "accumulate"
    micro_batch: int  # physical batch per forward/backward, sequences
    seq_len: int  # L, tokens per sequence
    gamma: float  # horizon exponent γ used for B_log

    @property
    def batch(self) -> int:
        """Sequences per optimizer step (micro_batch·accum_steps)."""
        return self.micro_batch * self.accum_steps


def sde_hparams(
    base: BaseHParams,
    physical_batch: int,
    tokens: float,
    seq_len: int,
    gamma: float = 0.44,
    mode: str = "sde",
) -> Hyperparams:
    """Hyperparameters for physical batch B = `physical_batch` sequences and horizon D = `tokens`.

    Bethune et al. 2026, SDE reparameterization (method §6):
        κ = (B/B_base)·(D_base/D)^γ = B/B_log,   B_log = B_base·(D/D_base)^γ
        lr = lr_base·√κ,  β_i = β_i,base^κ,  ε = ε_base/√κ,  wd = wd_base·√κ (torch AdamW),
        gradient clipping threshold = clip_base/√κ.
    `mode` selects "sde" (the rule above), "none" (base values at any B) or "accumulate" (reach B_log
    by gradient accumulation, base values); see the module docstring for the exact semantics.
    Raises ValueError on invalid inputs or a horizon shorter than one optimizer step.
    """
    if not isinstance(base, BaseHParams):
        raise ValueError(f"base must be a BaseHParams, got {type(base).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (_is_real(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    _check_positive_int("physical_batch", physical_batch)
    _check_positive("tokens", tokens)
    _check_positive_int("seq_len", seq_len)

    logical_batch = base.batch * (tokens / base.tokens) ** gamma

    if mode == "accumulate":
        accum_steps = max(1, math.floor(logical_batch / physical_batch + 0.5))
    else:
        accum_steps = 1
    batch = physical_batch * accum_steps
    tokens_per_step = batch * seq_len
    if tokens < tokens_per_step:
        raise ValueError(
            f"tokens={tokens!r} is shorter than one optimizer step of {tokens_per_step} tokens "
            f"({batch} sequences x seq_len {seq_len}); raise tokens or lower physical_batch"
        )
    steps = int(tokens // tokens_per_step)
    warmup_steps = min(math.ceil(base.warmup_tokens / tokens_per_step), math.floor(WARMUP_CAP * steps))

    if mode == "sde":
        kappa = batch / logical_batch
        root = math.sqrt(kappa)
        lr = base.lr * root
        betas = (base.betas[0] ** kappa, base.betas[1] ** kappa)
        eps = base.eps / root
        weight_decay = base.weight_decay * root
        grad_clip = base.grad_clip / root
    else:
        # "none": κ = 1 is what the hyperparameters were computed with.
        # "accumulate": κ on the effective batch, reported for the logs, deliberately not applied.
        kappa = 1.0 if mode == "none" else batch / logical_batch
        lr, betas, eps, weight_decay = base.lr, tuple(base.betas), base.eps, base.weight_decay
        grad_clip = base.grad_clip

    return Hyperparams(
        kappa=kappa,
        logical_batch=logical_batch,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        steps=steps,
        warmup_steps=warmup_steps,
        accum_steps=accum_steps,
        tokens_per_step=tokens_per_step,
        mode=mode,
        micro_batch=physical_batch,
        seq_len=seq_len,
        gamma=float(gamma),
    )


def critical_batch(tokens: float, seq_len: int, s_crit: float) -> float:
    """B_crit = D / (L·S_crit) sequences: the batch at which a horizon of D tokens leaves only S_crit
    optimizer steps. Beyond it the SDE approximation breaks and loss degrades (Bethune et al. 2026)."""
    _check_positive("tokens", tokens)
    _check_positive_int("seq_len", seq_len)
    _check_positive("s_crit", s_crit)
    return tokens / (seq_len * s_crit)


def describe(h: Hyperparams) -> str:
    """One paragraph for the start of training: batch, κ, the resulting AdamW values and step counts."""
    if h.mode == "sde":
        how = f"SDE reparameterization (Bethune et al. 2026), kappa = B/B_log = {h.kappa:.4g} applied"
    elif h.mode == "none":
        how = (
            f"no reparameterization: base hyperparameters at B = {h.micro_batch} "
            f"(B/B_log = {h.batch / h.logical_batch:.4g}; sde would rescale by it)"
        )
    else:
        how = (
            f"gradient accumulation to the logical batch with base hyperparameters "
            f"(effective B/B_log = {h.kappa:.4g}, not applied)"
        )
    b1, b2 = h.betas
    return (
        f"Batch (reparam={h.mode}): {how}. {h.micro_batch} sequences x {h.accum_steps} micro-batch(es) = {h.batch} "
        f"sequences of {h.seq_len} tokens per optimizer step ({h.tokens_per_step:,} tokens); "
        f"logical batch B_log = {h.logical_batch:.1f} (gamma = {h.gamma:g}). "
        f"AdamW: lr {h.lr:.4g}, betas ({b1:.6g}, {b2:.6g}), eps {h.eps:.3g}, weight decay {h.weight_decay:.4g}, "
        f"gradient clip {h.grad_clip:.4g}. "
        f"Schedule: {h.steps:,} optimizer steps, {h.warmup_steps:,} warmup steps."
    )
