"""The training objective: the exact continuous-time NELBO estimator of method §4.

    loss = Σ_rows Σ_{masked i} w_i · CE_i  /  Σ_rows #(maskable, non-pad tokens)

with w_i the ELBO weight set by masking.py. Per modality m the same ratio restricted to positions of
modality m estimates the NELBO per token of m (nats; reported in bits). Owns the reduction and the
call into the model's `head` per output slice (a modality's content + EOS; audio: one level's codes +
EOS, see RowTables.output_heads). Does not own the masks (masking.py) or the network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trimdm.diffusion.masking import NoisyBatch
from trimdm.sequence.layout import row_tables
from trimdm.tokenizers.vocab import MODALITIES, JointVocab


@dataclass
class LossStats:
    """Sums (not means) so that micro-batches and ranks combine exactly; all float64, detached."""

    wce_M: torch.Tensor  # Σ w·CE over masked positions, per modality (nats)
    tokens_M: torch.Tensor  # maskable non-pad tokens, per modality
    masked_M: torch.Tensor  # masked tokens, per modality

    def __add__(self, other: "LossStats") -> "LossStats":
        return LossStats(self.wce_M + other.wce_M, self.tokens_M + other.tokens_M,
                         self.masked_M + other.masked_M)

    def nelbo_bits(self) -> dict[str, float]:
        """NELBO per token of each modality present, in bits."""
        return {m: float(self.wce_M[i] / self.tokens_M[i]) / math.log(2)
                for i, m in enumerate(MODALITIES) if self.tokens_M[i] > 0}

    def loss_nats(self) -> float:
        return float(self.wce_M.sum() / self.tokens_M.sum().clamp(min=1))


def diffusion_loss(model, vocab: JointVocab, nb: NoisyBatch, denominator: float | None = None):
    """Returns (differentiable loss, LossStats). `denominator` overrides Σ maskable tokens of this
    batch, so that micro-batches and ranks divide by the count of the whole global batch."""
    # every head, empty ones too: each unembedding slice gets a gradient (zero where nothing of it is
    # masked), so every rank of a distributed step reduces the same set of gradients whatever it drew
    # (the trainer then leaves out of the update the tables no rank used: Trainer.drop_unused_outputs)
    heads = row_tables(vocab, nb.noisy_BL.device).output_heads(nb.noisy_BL, nb.masked_BL, every=True)
    logits = model(nb.noisy_BL, nb.pad_BL, heads=[h[:4] for h in heads])
    tokens = torch.stack([(nb.maskable_BL & (nb.modality_BL == i)).sum() for i in range(3)]).double()
    masked = torch.stack([(nb.masked_BL & (nb.modality_BL == i)).sum() for i in range(3)]).double()
    wce = torch.zeros(3, dtype=torch.float64, device=tokens.device)
    total = 0.0
    for (sel, lo, hi, eos, m), lg in zip(heads, logits):
        clean = nb.clean_BL[sel]
        target = torch.where(clean == eos, hi - lo, clean - lo)
        ce = F.cross_entropy(lg.to(torch.promote_types(lg.dtype, torch.float32)), target, reduction="none")
        weighted = (ce * nb.weight_BL[sel].to(ce.dtype)).sum()
        total = total + weighted
        wce[MODALITIES.index(m)] += weighted.detach().double()
    denom = float(tokens.sum()) if denominator is None else denominator
    # the statistics go to the CPU in one transfer (they are summed across micro-batches and tasks there)
    wce, tokens, masked = torch.stack([wce, tokens, masked]).cpu()
    return total / max(denom, 1.0), LossStats(wce, tokens, masked)
