"""Noise schedules of the masking process (method §4): β(τ), β'(τ), β⁻¹ and the ELBO weight β'/β.

Owns: the four schedule families, their reverses (`reverse-<spec>`) and the parser of their config
strings. One schedule object serves training (mask ratio and ELBO weight) and sampling (how many tokens
stay masked after each step), so the two cannot drift apart. Does not own: how masks are drawn
(masking.py) or the loss (loss.py).

Every token is masked independently with probability β(τ), τ ~ U[0, 1], β increasing, β(0) = 0.
The continuous-time negative ELBO (MDLM, Sahoo et al. 2024; MD4, Shi et al. 2024) weights the
cross-entropy of masked tokens by w(τ) = β'(τ)/β(τ). Substituting r = β(τ) shows that the NELBO does not
depend on the schedule; the schedule only decides which mask ratios training sees.

`complement_weight(τ) = β'(τ)/(1 − β(τ))` is the importance weight of a mask drawn at ratio 1 − β(τ)
(anti-masking): substituting r = 1 − β(τ), dr = −β'(τ)dτ, turns its expectation into the NELBO integral.

Sampling (docs/sampling.md, "Inference schedules"): after a fraction r of the decoding steps a fraction
β(r) of the span is revealed, so 1 − β(r) stays masked (`masked_after`). With cosine this is MaskGIT's
cos(πr/2) (Chang et al. 2022: few tokens first), with polynomial:k its 1 − r^k (square, cubic). The
reverse of a schedule, β̃(τ) = 1 − β(1 − τ), reveals in the opposite order: `reverse-cosine` keeps
β(1 − r) masked, which is stepping τ uniformly down through the training cosine (the ancestral sampler
of MDLM and LLaDA: many tokens first).

All methods accept floats or tensors and compute in the input's dtype (use float64 in tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensorish = float | torch.Tensor


def _t(x: Tensorish) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64)


@dataclass(frozen=True)
class Schedule:
    """Base: subclasses define `beta`, `dbeta`, `inverse`; `weight` defaults to dbeta/beta."""

    def beta(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def dbeta(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, b: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: Tensorish) -> torch.Tensor:
        """ELBO weight β'(τ)/β(τ) of a token masked at ratio β(τ)."""
        return self.dbeta(t) / self.beta(t)

    def complement_weight(self, t: Tensorish) -> torch.Tensor:
        """Unbiased weight β'(τ)/(1 − β(τ)) of a token masked at the complementary ratio 1 − β(τ)."""
        return self.dbeta(t) / (1 - self.beta(t))

    def masked_after(self, r: Tensorish) -> torch.Tensor:
        """Fraction of a span still masked after a fraction r of the decoding steps: 1 − β(r)."""
        return 1 - self.beta(r)

    @property
    def beta_max(self) -> float:
        return float(self.beta(1.0))


@dataclass(frozen=True)
class Linear(Schedule):
    def beta(self, t):
        return _t(t).clone()

    def dbeta(self, t):
        return torch.ones_like(_t(t))

    def inverse(self, b):
        return _t(b).clone()

    def weight(self, t):
        return 1 / _t(t)


@dataclass(frozen=True)
class Polynomial(Schedule):
    k: float = 2.0

    def __post_init__(self):
        if self.k <= 0:
            raise ValueError(f"polynomial schedule needs k > 0, got k={self.k}")

    def beta(self, t):
        return _t(t) ** self.k

    def dbeta(self, t):
        return self.k * _t(t) ** (self.k - 1)

    def inverse(self, b):
        return _t(b) ** (1 / self.k)

    def weight(self, t):
        return self.k / _t(t)


@dataclass(frozen=True)
class Cosine(Schedule):
    def beta(self, t):
        return 1 - torch.cos(math.pi / 2 * _t(t))

    def dbeta(self, t):
        return math.pi / 2 * torch.sin(math.pi / 2 * _t(t))

    def inverse(self, b):
        return 2 / math.pi * torch.arccos((1 - _t(b)).clamp(-1, 1))

    def masked_after(self, r):
        # MaskGIT's cos(πr/2) itself: 1 − (1 − cos) rounds, and a floor of N·(it) then differs by one
        # for some N and T
        return torch.cos(math.pi / 2 * _t(r))


@dataclass(frozen=True)
class LogLinear(Schedule):
    """β = 1 − exp(−σ(τ)), σ(τ) = −log(1 − (1−ε)τ) (MDLM). Algebraically β = (1−ε)τ, so β(1) = 1 − ε:
    a fraction ε of tokens is never masked, which the NELBO ignores (an O(ε) prior term)."""

    eps: float = 1e-3

    def __post_init__(self):
        if not 0 <= self.eps < 1:
            raise ValueError(f"loglinear schedule needs 0 <= eps < 1, got eps={self.eps}")

    def sigma(self, t):
        return -torch.log1p(-(1 - self.eps) * _t(t))

    def beta(self, t):
        return -torch.expm1(-self.sigma(t))

    def dbeta(self, t):
        # σ'(τ) e^{−σ} = (1−ε)/(1−(1−ε)τ) · (1−(1−ε)τ) = 1−ε
        return torch.full_like(_t(t), 1 - self.eps)

    def inverse(self, b):
        return _t(b) / (1 - self.eps)


@dataclass(frozen=True)
class Reversed(Schedule):
    """β̃(τ) = 1 − β(1 − τ): the point reflection of `base`, which reveals in the opposite order at
    sampling (config spec `reverse-<base spec>`). A training schedule too; from a base with β(1) < 1
    (loglinear) it starts at β̃(0) = 1 − β(1) > 0, an O(ε) term the NELBO ignores, as loglinear's own."""

    base: Schedule

    def beta(self, t):
        return 1 - self.base.beta(1 - _t(t))

    def dbeta(self, t):
        return self.base.dbeta(1 - _t(t))

    def inverse(self, b):
        return 1 - self.base.inverse(1 - _t(b))

    def masked_after(self, r):
        # β(1 − r) as written, not 1 − β̃(r): the exact counts of the sampler before the naming fix
        # (docs/sampling.md), which old configs' `reverse-` schedules must reproduce bit for bit
        return self.base.beta(1 - _t(r))


REVERSE = "reverse-"  # spec prefix of a reversed schedule

_FAMILIES: dict[str, type[Schedule]] = {
    "linear": Linear,
    "polynomial": Polynomial,
    "cosine": Cosine,
    "loglinear": LogLinear,
}


def make_schedule(name: str, **params: float) -> Schedule:
    """`make_schedule("polynomial", k=2)`; names: linear, polynomial (k), cosine, loglinear (eps)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(_FAMILIES)}")
    try:
        return _FAMILIES[name](**{k: float(v) for k, v in params.items()})
    except TypeError:
        raise ValueError(f"schedule {name!r} does not take parameters {sorted(params)}") from None


def parse_schedule(spec: str) -> Schedule:
    """Config strings: "linear", "cosine", "polynomial:2", "polynomial:k=3", "loglinear:eps=1e-3", and
    any of them reversed: "reverse-cosine", "reverse-polynomial:2"."""
    if spec.startswith(REVERSE):
        base = spec[len(REVERSE):]
        if base.startswith(REVERSE):
            raise ValueError(f"schedule spec {spec!r}: the reverse of a reverse is the schedule itself, "
                             f"{base[len(REVERSE):]!r}")
        return Reversed(parse_schedule(base))
    name, _, arg = spec.partition(":")
    params: dict[str, float] = {}
    if arg:
        first = {"polynomial": "k", "loglinear": "eps"}.get(name)
        for part in arg.split(","):
            key, eq, value = part.partition("=")
            if not eq:
                if first is None:
                    raise ValueError(f"schedule spec {spec!r}: {name} takes no positional parameter")
                key, value = first, key
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"schedule spec {spec!r}: {value!r} is not a number") from None
    return make_schedule(name, **params)
