"""The forward (masking) process (SPEC §4): τ per row, masks per modality schedule, anti-masking.

Owns: drawing τ (one per row, stratified across the batch, clamped), drawing which maskable tokens
become `MASK_m` of their own modality, and the ELBO weight of every masked position. Does not own: the
schedules' formulas (schedules.py), the model, or the loss reduction (loss.py).

antimask (the paper's anti-masking; our reconstruction, kept configurable):
- none:       each row masked at ratio β_m(τ), weight β_m'/β_m.
- complement: each clean row appears twice: once masked with set M at β_m(τ), once with the
              complement of M (the other maskable tokens), weight β_m'/(1−β_m): every token is
              supervised exactly once per pair; the complement's weight is the importance weight that
              keeps the estimator unbiased for any schedule (see schedules.complement_weight).
- crossmodal: text positions at β_text(τ) (weight β'/β), image/audio positions at 1 − β_m(τ) (weight
              β'/(1−β)). A training objective variant; evaluation always uses the plain process.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trimdm.diffusion.schedules import Schedule
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import TEXT

ANTIMASK = ("none", "complement", "crossmodal")


@dataclass
class NoisyBatch:
    clean_BL: torch.Tensor  # long
    noisy_BL: torch.Tensor  # long, masked positions hold MASK_m
    masked_BL: torch.Tensor  # bool
    weight_BL: torch.Tensor  # float64 ELBO weight (0 where not masked)
    modality_BL: torch.Tensor  # long
    maskable_BL: torch.Tensor  # bool (never true on PAD/TASK/BOS)
    pad_BL: torch.Tensor  # bool
    tau_B: torch.Tensor  # float64

    def to(self, device) -> "NoisyBatch":
        return NoisyBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def clean_rows_per_batch(antimask: str, batch_size: int) -> int:
    """Distinct clean rows in a physical batch: complement pairs duplicate every row."""
    return batch_size // 2 if antimask == "complement" else batch_size


def tau_bounds(schedules: list[Schedule], antimask: str, t_min: float) -> tuple[float, float]:
    """τ clamp: β ≥ t_min; with complementary ratios also 1 − β ≥ t_min, for every modality."""
    lo = max(float(s.inverse(t_min)) for s in schedules)
    hi = 1.0
    if antimask != "none":
        hi = min(min(float(s.inverse(1 - t_min)) for s in schedules), 1.0)
    return lo, hi


def stratified_tau(n: int, generator: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    """τ_b = (u + b/n) mod 1 with one u ~ U[0,1) per batch, clamped to [lo, hi] (float64)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return ((u + torch.arange(n, dtype=torch.float64) / n) % 1.0).clamp(lo, hi)


def _ratio_and_weight(schedules: list[Schedule], tau_B, modality_BL, complement_BL):
    """Per-position mask probability and ELBO weight for plain or complementary ratios."""
    beta_MB = torch.stack([s.beta(tau_B) for s in schedules])
    w_MB = torch.stack([s.weight(tau_B) for s in schedules])
    wc_MB = torch.stack([s.complement_weight(tau_B) for s in schedules])
    rows = torch.arange(tau_B.numel())[:, None].expand_as(modality_BL)
    beta_BL = beta_MB[modality_BL, rows]
    prob_BL = torch.where(complement_BL, 1 - beta_BL, beta_BL)
    weight_BL = torch.where(complement_BL, wc_MB[modality_BL, rows], w_MB[modality_BL, rows])
    return prob_BL, weight_BL


def apply_masks(clean_BL, masked_BL, weight_BL, maskable_BL, tables: RowTables, tau_B) -> NoisyBatch:
    modality = tables.modality(clean_BL)
    noisy = torch.where(masked_BL, tables.mask_id_M[modality], clean_BL)
    return NoisyBatch(clean_BL, noisy, masked_BL, torch.where(masked_BL, weight_BL, 0.0), modality,
                      maskable_BL, tables.pad(clean_BL), tau_B)


def draw_noise(n_rows: int, seq_len: int, generator: torch.Generator, lo: float, hi: float):
    """The randomness of one batch, independent of its content: stratified τ per row and one uniform
    per position. Drawn for a whole global batch and sliced per micro-batch or rank, so the masks do
    not depend on how the batch is split."""
    tau_B = stratified_tau(n_rows, generator, lo, hi)
    return tau_B, torch.rand((n_rows, seq_len), generator=generator, dtype=torch.float64)


def mask_batch(clean_BL: torch.Tensor, tables: RowTables, schedules: list[Schedule], antimask: str,
               tau_B: torch.Tensor, u_BL: torch.Tensor, only_modality: int | None = None) -> NoisyBatch:
    """Noise clean rows: position i is masked when maskable and u_i < its ratio at τ of its row.
    With antimask=complement the result holds 2× the rows (pairs adjacent: row 2j is masked with M,
    row 2j+1 with its complement). `only_modality` restricts masking (and the token count) to one
    modality, the rest staying clean: the conditional NELBO of that modality given the others."""
    if antimask not in ANTIMASK:
        raise ValueError(f"antimask={antimask!r}: expected one of {ANTIMASK}")
    modality = tables.modality(clean_BL)
    maskable = tables.maskable(clean_BL)
    if only_modality is not None:
        maskable = maskable & (modality == only_modality)
    complement = (modality != TEXT) if antimask == "crossmodal" else torch.zeros_like(maskable)
    prob, weight = _ratio_and_weight(schedules, tau_B, modality, complement)
    masked = maskable & (u_BL < prob)
    if antimask != "complement":
        return apply_masks(clean_BL, masked, weight, maskable, tables, tau_B)
    # complement pairs: second copy masks exactly the maskable tokens the first left visible
    masked_c = maskable & ~masked
    _, weight_c = _ratio_and_weight(schedules, tau_B, modality, torch.ones_like(maskable))
    pair = lambda a, b: torch.stack([a, b], dim=1).flatten(0, 1)  # noqa: E731  interleave rows
    return apply_masks(pair(clean_BL, clean_BL), pair(masked, masked_c), pair(weight, weight_c),
                       pair(maskable, maskable), tables, pair(tau_B, tau_B))
