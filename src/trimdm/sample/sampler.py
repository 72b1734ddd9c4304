"""Confidence-based parallel decoding (MaskGIT, Chang et al. 2022; LLaDA, Nie et al. 2025), method §8.

Owns: the reverse process at inference. Starting from a canvas whose target positions hold `MASK_m`,
each of T steps predicts every masked position over its modality's sub-vocabulary (content + EOS),
samples with temperature / top-k / top-p, scores confidence as the model's log-probability of the
sampled token plus Gumbel noise annealed linearly to zero, and reveals the most confident positions so
that the number still masked after step k is ⌊N·(1 − β(k/T))⌋ for the inference schedule β (the same
schedule objects as training; MaskGIT's convention, docs/sampling.md). `remasking="random"` reveals a
uniformly random subset instead (the unbiased ancestral baseline). Revealed tokens never change.
Classifier-free guidance combines a conditional and an unconditional canvas: logits = u + w·(c − u) at
every w (w = 1: the conditional model, w = 0: the unconditional one, w > 1 guides). Positions predict
their output slice (RowTables.output_heads: a modality's content + EOS; audio one level's codes + EOS);
a row whose canvas already holds a clean EOS of a modality cannot draw another one (fixed-length
spans). Decoding can run in stages (audio: residual level by level, `level_stages`), each on its own
schedule. With `eos_truncate`, positions of a span after a revealed EOS become padding (method §8,
EOS-truncation). An optional `on_step` callback sees the canvas after every step (a live view, e.g. the
web page's; it draws no random numbers, so outputs are the same with or without it, and it stops the
decoding by raising). Fewer passes: a confidence threshold reveals every position the model is sure of
beyond the schedule's count (Fast-dLLM, Wu et al. 2025), and the condition cache recomputes only the
positions masked at the start between full passes (model.KVCache; an approximation). Draws are Gumbel-max
in float64 (32-bit noise lowers the effective temperature; Zheng et al. 2024). Does not own prompts or
canvases (tasks.py) or the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from trimdm.diffusion.schedules import Schedule
from trimdm.model.transformer import KVCache
from trimdm.sequence.layout import RowTables, row_tables
from trimdm.tokenizers.vocab import MODALITIES, JointVocab


def filter_logits(logits_NV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits_NV.shape[-1]:
        kth = logits_NV.topk(top_k, dim=-1).values[..., -1:]
        logits_NV = logits_NV.masked_fill(logits_NV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits_NV.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits_NV = logits_NV.masked_fill(drop, float("-inf"))
    return logits_NV


def truncate_after_eos(x_BL: torch.Tensor, tables: RowTables, vocab: JointVocab) -> torch.Tensor:
    """Padding for every position that follows an EOS_m in an unbroken run of modality-m positions."""
    modality = tables.modality(x_BL)
    pos = torch.arange(x_BL.shape[1], device=x_BL.device).expand_as(x_BL)
    pad = torch.zeros_like(x_BL, dtype=torch.bool)
    for i, m in enumerate(MODALITIES):
        if not vocab.has(m):
            continue
        same, eos = modality == i, x_BL == vocab.eos(m)
        boundary = torch.where(~same | eos, pos, -1).cummax(dim=1).values
        prev = torch.cat([torch.full_like(boundary[:, :1], -1), boundary[:, :-1]], dim=1)  # last break before j
        after_eos = (prev >= 0) & (x_BL.gather(1, prev.clamp_min(0)) == vocab.eos(m))
        pad |= same & after_eos
    return torch.where(pad, tables.pad_id, x_BL)


def masked_counts(n_masked_B: torch.Tensor, schedule: Schedule, steps: int) -> torch.Tensor:
    """(steps + 1, B): positions still masked after each step k = 0..T, ⌊N·(1 − β(k/T))⌋ (k = 0: all
    of them, k = T: none). The inference convention (docs/sampling.md): after a fraction r of the steps
    a fraction β(r) of the span is revealed, so `cosine` is MaskGIT's (few tokens first) and
    `reverse-cosine` steps τ uniformly through the training cosine (many first)."""
    k = torch.arange(steps + 1, dtype=torch.float64)
    frac = schedule.masked_after(k / steps).clamp(0, 1)
    counts = torch.floor(frac[:, None] * n_masked_B[None, :].double()).long()
    counts[0] = n_masked_B
    counts[-1] = 0  # β(1) < 1 (loglinear) would leave a fraction masked
    return torch.minimum(counts, n_masked_B[None, :])


@dataclass(frozen=True)
class Decoding:
    """How one span is decoded (method §8): its modality's row of the sampling table (config
    `sample.<modality>`) plus the filters every modality shares."""

    steps: int  # decoding steps T
    schedule: Schedule  # inference unmasking schedule
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    confidence_noise: float = 1.0  # scale of the Gumbel noise added to confidences, annealed to 0
    remasking: str = "confidence"  # confidence | random
    guidance: float = 1.0  # classifier-free guidance weight w, logits = u + w·(c − u) (see `decode`)
    # confidence-threshold parallel decoding (Fast-dLLM, Wu et al. 2025): besides the schedule's count,
    # every masked position whose sampled token has probability > threshold is revealed, at least one per
    # row and step, so a span may finish in fewer than `steps` passes; 0: the schedule alone
    threshold: float = 0.0
    # the condition cache: a full pass every `cache_refresh` passes stores every layer's keys and values;
    # the passes between recompute only the positions that were masked when decoding began (the clean
    # condition's keys and values are reused: an approximation, measured in docs/sampling.md); 0 or 1: off
    cache_refresh: int = 0

    def __post_init__(self):
        if self.remasking not in ("confidence", "random"):
            raise ValueError(f"remasking={self.remasking!r}: expected confidence | random")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold={self.threshold} must lie in [0, 1) (0: off)")
        if self.cache_refresh < 0:
            raise ValueError(f"cache_refresh={self.cache_refresh} must be >= 0 (0: no cache)")


@dataclass(frozen=True)
class Step:
    """What `decode`'s `on_step` callback receives after each step that revealed tokens."""

    canvas_BL: torch.Tensor  # the canvas now: revealed tokens fixed, MASK_* where still hidden (do not modify)
    step: int  # 1-based step within its stage
    steps: int  # steps of this stage
    stage: int  # 0-based stage (audio level by level: one per residual level)
    stages: int
    first_row: int = 0  # Tasks.run: the batch's first row in the task's canvas
    rows: int = 0  # Tasks.run: rows of the task's canvas (0: the batch is the canvas)
    target: str = ""  # Tasks.run: the modality being generated


@torch.no_grad()
def decode(model, vocab: JointVocab, canvas_BL: torch.Tensor, how: Decoding, *,
           uncond_BL: torch.Tensor | None = None, generator: torch.Generator | None = None,
           eos_truncate: bool = False, autocast_dtype: torch.dtype | None = None,
           stages: tuple[torch.Tensor, list[int]] | None = None,
           on_step: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Fill every MASK_* position of `canvas_BL`. `uncond_BL` (same shape, condition span masked)
    enables guidance with weight w = `how.guidance`: logits = u + w·(c − u). A pass whose weight is zero
    is not run: w = 1 is the conditional pass alone, w = 0 the unconditional canvas alone (the condition
    stays in the returned canvas, unseen), w > 1 guides. Without `uncond_BL` (a canvas with no condition
    to drop: unconditional text, infill) there is no u and every w decodes the conditional pass.

    Stages: with `stages` = (a stage index per position, steps per stage), the masked positions of
    stage 0 are decoded first in its steps, those of stage 1 next, and so on; positions of later stages
    stay MASK meanwhile (audio level by level: the coarse codes first, each finer level given the
    coarser ones). Without it, one stage of `how.steps` steps holds every masked position.

    `on_step(Step)` is called after every step that revealed tokens; an exception it raises ends the
    decoding (a cancelled request). It sees the canvas only, so it changes no output."""
    device = canvas_BL.device
    stage_BL, stage_steps = stages if stages is not None else (torch.zeros_like(canvas_BL), [how.steps])
    if min(stage_steps) < 1:
        raise ValueError(f"steps={stage_steps} must be >= 1")
    stage_BL = stage_BL.to(device)
    tables = row_tables(vocab, device)
    mask_ids = tables.mask_id_M.to(device)
    state = _State(canvas_BL.clone(), uncond_BL.clone() if uncond_BL is not None and how.guidance != 1
                   else None)  # w = 1 is the conditional pass: no unconditional canvas needed
    passes = _Passes(model, tables, _masked(canvas_BL, mask_ids), how.cache_refresh)
    # a modality whose EOS is already in the canvas (clean) has a fixed-length span: no second EOS
    has_eos = {m: (canvas_BL == vocab.eos(m)).any(1) for m in MODALITIES if vocab.has(m)}
    for stage, n_steps in enumerate(stage_steps):
        in_stage = stage_BL == stage
        counts = masked_counts((_masked(state.x, mask_ids) & in_stage).sum(1).cpu(), how.schedule,
                               n_steps).to(device)
        for k in range(1, n_steps + 1):
            is_mask = _masked(state.x, mask_ids) & in_stage
            if not bool(is_mask.any()):
                break
            if how.threshold > 0:
                # at most counts[k] left masked after step k (the span still ends within `steps`), and
                # at least one revealed per row; the threshold may reveal more
                left = is_mask.sum(1)
                n_reveal = torch.where(left > 0, (left - counts[k]).clamp_min(1), 0)
            else:
                n_reveal = counts[k - 1] - counts[k]  # (B,)
            if not bool((n_reveal > 0).any()):
                continue  # a step that reveals nothing in any row: no pass (short spans, many steps)
            proposal, confidence, prob = _propose(passes, state, is_mask, tables, has_eos, how,
                                                  how.confidence_noise * (1 - k / n_steps), generator,
                                                  autocast_dtype)
            rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
            reveal = is_mask & (rank < n_reveal[:, None])
            if how.threshold > 0:
                reveal |= is_mask & (prob > how.threshold)
            state.reveal(reveal, proposal, tables, vocab, eos_truncate)
            if on_step is not None:
                on_step(Step(state.x, k, n_steps, stage, len(stage_steps)))
    return state.x


def level_stages(canvas_BL: torch.Tensor, vocab: JointVocab, steps: int) -> tuple[torch.Tensor, list[int]]:
    """Stages for decoding audio level by level (SoundStorm's order): residual level k of an audio
    position is its stage (other positions: 0); level 0 gets `steps` steps, each finer level steps // 8
    (at least 1); docs/sampling.md has the measurement that made it audio's default."""
    tables = row_tables(vocab, canvas_BL.device)
    audio = tables.modality(canvas_BL) == MODALITIES.index("audio")
    stage = torch.where(audio, tables.audio_level(canvas_BL), 0)
    return stage, [steps] + [max(1, steps // 8)] * (vocab.audio_levels - 1)


def block_stages(canvas_BL: torch.Tensor, vocab: JointVocab, block: int, steps: int) -> tuple[torch.Tensor, list[int]]:
    """Stages for semi-autoregressive decoding (LLaDA, Nie et al. 2025, semi-autoregressive remasking):
    the masked positions of each row, counted from the left, form blocks of `block` positions (the last
    one may be shorter), and block j is stage j, so the blocks are decoded left to right and the
    positions inside a block in parallel by confidence. The `steps` are split over the blocks as evenly
    as whole steps allow (the first `steps % blocks` blocks get one more), so the whole span still takes
    at most `steps` passes; `block` = 0 is one stage, the whole span. Other positions: stage 0 (they are
    not masked, so no stage decodes them). docs/sampling.md has the measurement behind text's default."""
    if block < 0:
        raise ValueError(f"block={block} must be >= 0 (tokens per block; 0: the whole span at once)")
    if block == 0:
        return torch.zeros_like(canvas_BL), [steps]
    masked = _masked(canvas_BL, row_tables(vocab, canvas_BL.device).mask_id_M.to(canvas_BL.device))
    stage = torch.where(masked, (masked.long().cumsum(1) - 1) // block, 0)
    blocks = max(1, -(-int(masked.sum(1).max()) // block))
    if steps < blocks:
        raise ValueError(f"steps={steps} is fewer than the {blocks} blocks of {block} tokens in a span of "
                         f"{int(masked.sum(1).max())}: each block needs at least one step")
    per, extra = divmod(steps, blocks)
    return stage, [per + (j < extra) for j in range(blocks)]


def _masked(x_BL: torch.Tensor, mask_ids: torch.Tensor) -> torch.Tensor:
    return (x_BL[..., None] == mask_ids).any(-1)


class _State:
    """The canvas being decoded and, with guidance, its unconditional twin (same reveals)."""

    def __init__(self, x_BL: torch.Tensor, u_BL: torch.Tensor | None):
        self.x, self.u = x_BL, u_BL

    def reveal(self, where_BL, proposal_BL, tables: RowTables, vocab: JointVocab, eos_truncate: bool) -> None:
        self.x = torch.where(where_BL, proposal_BL, self.x)
        if eos_truncate:
            self.x = truncate_after_eos(self.x, tables, vocab)
        if self.u is not None:
            self.u = torch.where(where_BL, proposal_BL, self.u)
            self.u = torch.where(self.x == tables.pad_id, tables.pad_id, self.u)


def sample_categorical(logits_NV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from softmax(logits) by the Gumbel-max trick in float64: float32 Gumbel noise
    is bounded (u ≤ 1 − 2⁻²⁴ caps it near 16.6) and coarse in its tail, which under-samples unlikely
    tokens and so lowers the effective temperature (Zheng et al. 2024)."""
    u = torch.rand(logits_NV.shape, generator=generator, device=logits_NV.device, dtype=torch.float64)
    return (logits_NV.double() + gumbel(u)).argmax(-1)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniforms u in [0, 1)."""
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))


class _Passes:
    """The network passes of one decoding: full passes, or with the condition cache (`cache_refresh`
    = r > 1) one full pass that stores keys and values, then r − 1 passes over the positions that were
    masked when decoding began (`positions_BA`, per row; rows with fewer repeat their first), and so
    on. One cache per canvas (conditional, unconditional)."""

    def __init__(self, model, tables: RowTables, masked_BL: torch.Tensor, refresh: int):
        self.model, self.tables, self.refresh = model, tables, refresh
        self.count: dict[str, int] = {}
        self.caches: dict = {}
        if refresh > 1:
            self.caches = {"c": KVCache(), "u": KVCache()}
            n = masked_BL.sum(1)
            A = int(n.max())
            order = masked_BL.long().argsort(dim=1, descending=True, stable=True)[:, :A]  # masked first
            first = order[:, :1].expand(-1, A)
            self.positions_BA = torch.where(torch.arange(A, device=n.device)[None] < n[:, None], order, first)

    def hidden(self, x_BL: torch.Tensor, which: str) -> torch.Tensor:
        """Hidden states (B, L, D) of canvas `which` (c | u); with the cache, valid at the positions
        masked when decoding began (the only ones the sampler reads)."""
        pad = self.tables.pad(x_BL)
        if not self.caches:
            return self.model(x_BL, pad)
        k = self.count.get(which, 0)
        self.count[which] = k + 1
        cache = self.caches[which]
        if k % self.refresh == 0:
            return self.model.trunk(x_BL, pad, cache=cache)
        h_BAD = self.model.trunk_at(x_BL.gather(1, self.positions_BA), self.positions_BA, pad, cache)
        h = h_BAD.new_zeros(*x_BL.shape, h_BAD.shape[-1])
        return h.scatter(1, self.positions_BA[..., None].expand_as(h_BAD), h_BAD)


def _propose(passes: _Passes, state: _State, is_mask, tables: RowTables, has_eos: dict, how: Decoding,
             anneal: float, generator, autocast_dtype):
    """One step's forward passes: a sampled token, its confidence (-inf where not masked) and, when the
    threshold or confidence remasking needs it, its probability under the (guided) model at every masked
    position (0 otherwise). Logits u + w·(c − u); at w = 0 that
    is u, so the conditional pass is not run."""
    x, u, w = state.x, state.u, how.guidance
    device = x.device
    model = passes.model
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        h = passes.hidden(x, "c") if u is None or w != 0 else None
        hu = passes.hidden(u, "u") if u is not None else None
    proposal = x.clone()
    confidence = torch.full(x.shape, float("-inf"), device=device, dtype=torch.float64)
    prob = torch.zeros(x.shape, device=device)
    for sel, lo, hi, eos, m in tables.output_heads(x, is_mask):
        logits = model.head(h[sel], lo, hi, eos).float() if h is not None else None
        if hu is not None:
            uncond = model.head(hu[sel], lo, hi, eos).float()
            logits = uncond if logits is None else uncond + w * (logits - uncond)
        rows = sel.nonzero()[:, 0]
        logits[:, -1] = logits[:, -1].masked_fill(has_eos[m][rows], float("-inf"))
        scaled = filter_logits(logits / max(how.temperature, 1e-6), how.top_k, how.top_p)
        if how.temperature > 0:
            choice = sample_categorical(scaled, generator)
        else:
            choice = scaled.argmax(-1)
        proposal[sel] = torch.where(choice == hi - lo, eos, choice + lo)
        # the sampled token's log-probability: the confidence, and what the threshold compares (a
        # softmax over the slice, skipped when neither needs it: random remasking without a threshold)
        if how.remasking == "confidence" or how.threshold > 0:
            logp = logits.log_softmax(-1).gather(-1, choice[:, None]).squeeze(-1)
            prob[sel] = logp.exp()
        if how.remasking == "confidence":
            u01 = torch.rand(choice.shape, generator=generator, device=device, dtype=torch.float64)
            confidence[sel] = logp.double() + anneal * gumbel(u01)
        else:
            confidence[sel] = torch.rand(choice.shape, generator=generator, device=device, dtype=torch.float64)
    return proposal, confidence, prob
