"""Online estimate of the gradient noise scale B_simple = tr(Σ)/|G|² (method §6).

Owns: the two-batch-size estimator of McCandlish et al. 2018 ("An Empirical Model of Large-Batch
Training", Appendix A.1), a tracker that smooths it over steps, and the squared-norm helper. Does not
own: where the two gradients come from (train/ decides: per-micro-batch vs accumulated, or per-rank vs
all-reduced) or logging. Pure: imports only torch and the standard library.

With G the true gradient and Σ the per-example gradient covariance, the mean gradient of b i.i.d.
examples satisfies E|G_b|² = |G|² + tr(Σ)/b. Two measurements, |G_small|² at b_small and |G_big|² at
b_big, solve this linear system for unbiased estimates:

    |G|²  ≈ (b_big·|G_big|² − b_small·|G_small|²) / (b_big − b_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/b_small − 1/b_big)

Assumptions, stated plainly: gradients are means over their batch (loss averaged, not summed), the
examples in a batch are i.i.d. draws, and "batch" counts the same unit at both sizes (sequences here).
Unbiasedness is by linearity of expectation, so it holds even when the small batch is a subset of the
big one. With k micro-batches of b sequences, pass the mean of the k per-micro-batch squared norms as
sq_small (b_small = b) and the squared norm of the accumulated gradient as sq_big (b_big = k·b).

Single-step estimates are very noisy and |G|² can come out negative, so the tracker keeps separate
bias-corrected exponential moving averages of |G|² and tr(Σ) and reports their ratio (ratio of EMAs,
as McCandlish et al. recommend), never an EMA of per-step ratios.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch


def sq_norm(grads: Iterable[torch.Tensor | None]) -> float:
    """Σ‖g‖² over the tensors, accumulated in float64. None entries (parameters without a gradient)
    are skipped, as torch.nn.utils.clip_grad_norm_ does. For sharded gradients (FSDP) this is the
    local sum; the caller all-reduces it."""
    norms = [torch.linalg.vector_norm(g.detach(), dtype=torch.float64) for g in grads if g is not None]
    if not norms:
        return 0.0
    # one host sync for the whole model, not one per parameter
    return float(torch.stack([n.to(norms[0].device) for n in norms]).square().sum())


def _check_batches(b_small, b_big) -> None:
    for name, b in (("b_small", b_small), ("b_big", b_big)):
        if not (isinstance(b, numbers.Real) and not isinstance(b, bool) and math.isfinite(b) and b > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {b!r}")
    if not b_small < b_big:
        raise ValueError(f"b_small must be < b_big, got b_small={b_small!r}, b_big={b_big!r}")


def _check_sq(name: str, x) -> None:
    if not (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite squared norm >= 0, got {x!r}")


def noise_scale_estimates(sq_small, b_small, sq_big, b_big):
    """Unbiased single-step estimates (|G|², tr(Σ)) from squared gradient norms at two batch sizes.

    McCandlish et al. 2018, Appendix A.1. Arithmetic is generic (floats, or Fractions for exact
    checks). Either estimate may be negative on a single step; only their averages are meaningful.
    """
    _check_batches(b_small, b_big)
    _check_sq("sq_small", sq_small)
    _check_sq("sq_big", sq_big)
    g2 = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    # (sq_small − sq_big) / (1/b_small − 1/b_big), written without reciprocals so Fractions stay exact
    trace = (sq_small - sq_big) * b_small * b_big / (b_big - b_small)
    return g2, trace


class NoiseScaleTracker:
    """Bias-corrected EMAs of |G|² and tr(Σ); B_simple is the ratio of the two averages.

    Bias correction (as in Adam): after n updates the raw EMA m_n = (1−a)·Σ a^(n−i)·x_i has weights
    summing to 1 − a^n, so m_n/(1 − a^n) is a weighted mean of unbiased estimates, itself unbiased.
    """

    def __init__(self, ema: float = 0.95):
        if not (isinstance(ema, numbers.Real) and not isinstance(ema, bool) and 0 <= ema < 1):
            raise ValueError(f"ema must lie in [0, 1), got {ema!r}")
        self.ema = float(ema)
        self._g2 = 0.0  # raw (uncorrected) EMAs
        self._trace = 0.0
        self._count = 0

    def update(self, sq_small, b_small, sq_big, b_big) -> float | None:
        """Add one step's measurements; return the current B_simple, or None while undefined."""
        g2, trace = noise_scale_estimates(sq_small, b_small, sq_big, b_big)
        a = self.ema
        self._g2 = a * self._g2 + (1 - a) * float(g2)
        self._trace = a * self._trace + (1 - a) * float(trace)
        self._count += 1
        return self.value

    @property
    def g2(self) -> float | None:
        """Bias-corrected EMA of |G|² (None before the first update)."""
        return None if self._count == 0 else self._g2 / (1 - self.ema**self._count)

    @property
    def trace(self) -> float | None:
        """Bias-corrected EMA of tr(Σ) (None before the first update)."""
        return None if self._count == 0 else self._trace / (1 - self.ema**self._count)

    @property
    def value(self) -> float | None:
        """B_simple = tr(Σ)/|G|², or None until both averages are positive."""
        g2, trace = self.g2, self.trace
        if g2 is None or g2 <= 0 or trace <= 0:
            return None
        return trace / g2

    def state_dict(self) -> dict:
        return {"ema": self.ema, "g2": self._g2, "trace": self._trace, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        missing = {"ema", "g2", "trace", "count"} - set(state)
        if missing:
            raise ValueError(f"NoiseScaleTracker state is missing keys {sorted(missing)}")
        if float(state["ema"]) != self.ema:
            # a different decay would silently change the resumed estimates
            raise ValueError(f"NoiseScaleTracker state has ema={state['ema']!r}, this tracker ema={self.ema!r}")
        self._g2 = float(state["g2"])
        self._trace = float(state["trace"])
        self._count = int(state["count"])
