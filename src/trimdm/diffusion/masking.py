"""The forward (masking) process (method §4): τ per row, masks per modality schedule, anti-masking.

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

Conditional rows (`diffusion.conditional` = c): a paired row is, with probability c, noised in one
modality only while the other stays clean (media|text or text|media, the split per medium set by
`diffusion.text_given_media`), so its loss is the exact
NELBO estimator of the conditional likelihood that generation uses (T2I/T2S start from a clean caption
and a fully masked medium, a state the joint process with one τ per row almost never visits); the rest
of the rows keep the joint estimator. The objective is a fixed mixture of exact (conditional) ELBOs.
Text-only rows are never affected.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trimdm.diffusion.schedules import Schedule
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import AUDIO, TEXT

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
    """The randomness of one batch, independent of its content: stratified τ per row, one uniform per
    position and one per row (which rows are conditional, see `conditional_modes`). Drawn for a whole
    global batch and sliced per micro-batch or rank, so the masks do not depend on how it is split.

    The stratified levels go to the rows in a random order: sliced in their sorted order, each
    micro-batch (or rank) would hold one band of τ, its gradient would not be a random sample of the
    batch's, and the gradient noise scale measured from micro-batch gradients (optim/noise_scale.py)
    would count the difference between τ bands as noise."""
    tau_B = stratified_tau(n_rows, generator, lo, hi)[torch.randperm(n_rows, generator=generator)]
    u_BL = torch.rand((n_rows, seq_len), generator=generator, dtype=torch.float64)
    return tau_B, u_BL, torch.rand(n_rows, generator=generator, dtype=torch.float64)


JOINT, MEDIA_GIVEN_TEXT, TEXT_GIVEN_MEDIA = 0, 1, 2


def conditional_modes(c_B: torch.Tensor, fraction: float, text_share: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Per-row mode from one uniform: [0, f·(1−s)) media|text, [f·(1−s), f) text|media, else joint
    (f = diffusion.conditional, s = diffusion.text_given_media: one share, or one per row from
    `text_shares`)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"diffusion.conditional={fraction} must lie in [0, 1]")
    share = torch.as_tensor(text_share, dtype=torch.float64)
    if bool((share < 0).any()) or bool((share > 1).any()):
        raise ValueError(f"diffusion.text_given_media={text_share} must lie in [0, 1]")
    mode = torch.full(c_B.shape, JOINT, dtype=torch.long)
    mode[c_B < fraction] = TEXT_GIVEN_MEDIA
    mode[c_B < fraction * (1.0 - share)] = MEDIA_GIVEN_TEXT
    return mode


def text_shares(clean_BL: torch.Tensor, tables: RowTables, shares) -> torch.Tensor:
    """The text|media share of every row's conditional draw by the medium it holds (`shares`: the
    config's PerMedium): audio rows take shares.audio, every other row shares.image (rows without
    media ignore their mode)."""
    has_audio = (tables.modality(clean_BL) == AUDIO).any(1)
    return torch.tensor([shares.image, shares.audio], dtype=torch.float64)[has_audio.long()]


def mask_batch(clean_BL: torch.Tensor, tables: RowTables, schedules: list[Schedule], antimask: str,
               tau_B: torch.Tensor, u_BL: torch.Tensor, only_modality: int | None = None,
               mode_B: torch.Tensor | None = None) -> NoisyBatch:
    """Noise clean rows: position i is masked when maskable and u_i < its ratio at τ of its row.
    With antimask=complement the result holds 2× the rows (pairs adjacent: row 2j is masked with M,
    row 2j+1 with its complement). `only_modality` restricts masking (and the token count) to one
    modality, the rest staying clean: the conditional NELBO of that modality given the others.
    `mode_B` (from `conditional_modes`) does the same per paired row: MEDIA_GIVEN_TEXT keeps the text
    clean, TEXT_GIVEN_MEDIA the medium; rows without media are unaffected."""
    if antimask not in ANTIMASK:
        raise ValueError(f"antimask={antimask!r}: expected one of {ANTIMASK}")
    modality = tables.modality(clean_BL)
    maskable = tables.maskable(clean_BL)
    if only_modality is not None:
        maskable = maskable & (modality == only_modality)
    if mode_B is not None:
        paired = (modality != TEXT).any(1, keepdim=True)
        keep_text = paired & (mode_B == MEDIA_GIVEN_TEXT)[:, None]
        keep_media = paired & (mode_B == TEXT_GIVEN_MEDIA)[:, None]
        maskable = maskable & ~(keep_text & (modality == TEXT)) & ~(keep_media & (modality != TEXT))
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


def compact(nb: NoisyBatch, by_task: bool) -> list[NoisyBatch]:
    """The same rows without wasted compute: trailing columns that are padding in every row are cut
    (exact: padded keys take no part in attention and RoPE counts from the row start), and with
    `by_task` the rows are first split by their TASK id so that short paired rows are not padded to
    the length of packed text rows. Losses of the parts add up to the loss of the whole."""
    groups = [torch.arange(len(nb.clean_BL))]
    if by_task:
        task = nb.clean_BL[:, 0]
        groups = [torch.nonzero(task == t).squeeze(1) for t in torch.unique(task)]
    parts = []
    for rows in groups:
        used = ~nb.pad_BL[rows]
        length = int(used.any(0).nonzero().max()) + 1 if bool(used.any()) else 1
        parts.append(NoisyBatch(*(x[rows][:, :length] if x.dim() == 2 else x[rows]
                                  for x in (getattr(nb, f) for f in nb.__dataclass_fields__))))
    return parts
