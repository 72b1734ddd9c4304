"""The peer trimdm's training step is compared with: the masked diffusion step a researcher would write
on Hugging Face `transformers` (the `bench` extra), ModernBertForMaskedLM built from a config (random
init, nothing downloaded), at trimdm's shapes. Used by `train_throughput.py --peer`; not part of trimdm.

The model: ModernBERT with global attention in every layer (`global_attn_every_n_layers=1`: every layer
`full_attention`, so `local_attention` is unused), PyTorch SDPA, no dropout, GeGLU MLP of trimdm's
hidden size, RoPE θ 10,000, vocabulary of trimdm's joint vocabulary. Two variants:
- dense:  logits over the whole vocabulary at every position (the model called without labels), the
          cross-entropy taken at the masked positions (ignore_index −100);
- sparse: `sparse_prediction=True`: ModernBERT keeps the positions whose label is not
          `sparse_pred_ignore_index` (−100), i.e. the masked ones, before its prediction head and decoder.
          Its own (unweighted, mean) loss is replaced by a no-op so the peer pays only for the loss used.

The objective is trimdm's at the linear schedule without anti-masking (diffusion/loss.py): per row
t ~ U(0, 1) (clamped below at t_min, as trimdm clamps τ), every token masked with probability t,
cross-entropy on masked positions weighted 1/t, summed and divided by the batch's tokens. bf16 autocast
over fp32 weights, torch.optim.AdamW at its defaults for the CPU (no foreach, no fused), gradient norm
clipped like trimdm's. Differences kept as ModernBERT has them: LayerNorm (no bias) for RMSNorm, GELU for
SiLU, no QK-norm, a prediction head (dense d×d, GELU, LayerNorm) before the tied decoder, a decoder bias,
an embedding LayerNorm, rotary products in fp32; trimdm excludes BOS/TASK ids from the maskable tokens,
the peer masks any position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # labels of unmasked positions (ModernBERT's sparse_pred_ignore_index)


@dataclass(frozen=True)
class PeerShape:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int  # the GLU's hidden size (ModernBERT's intermediate_size)
    seq_len: int
    batch: int


def build_peer(shape: PeerShape, sparse: bool, pad_id: int, seed: int = 0):
    """ModernBertForMaskedLM of `shape`, randomly initialised from `seed`, SDPA attention."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads, intermediate_size=shape.mlp_hidden,
        max_position_embeddings=shape.seq_len, global_attn_every_n_layers=1, local_attention=shape.seq_len,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        attention_dropout=0.0, embedding_dropout=0.0, mlp_dropout=0.0, sparse_prediction=sparse,
        sparse_pred_ignore_index=IGNORE, pad_token_id=pad_id, bos_token_id=pad_id, eos_token_id=pad_id,
        cls_token_id=pad_id, sep_token_id=pad_id)
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")
    if set(model.config.layer_types) != {"full_attention"} or model.config._attn_implementation != "sdpa":
        raise ValueError(f"peer: expected global SDPA attention in every layer, got {model.config.layer_types} "
                         f"with {model.config._attn_implementation}")
    if sparse:
        model.loss_function = lambda *args, **kwargs: None  # the weighted MDM loss below replaces it
    return model.train()


def peer_flops_per_step(shape: PeerShape, predicted: int) -> float:
    """Training FLOPs of a peer step (6 per weight per token, as model/flops.py counts trimdm's): the trunk
    at every position, the prediction head and decoder at the `predicted` positions (all of them for the
    dense variant, the masked ones for the sparse one)."""
    d, h, layers = shape.d_model, shape.mlp_hidden, shape.n_layers
    tokens = shape.batch * shape.seq_len
    trunk = layers * (4 * d * d + 3 * d * h + 2 * shape.seq_len * d)
    return 6.0 * (tokens * trunk + predicted * (d * d + d * shape.vocab_size))


class PeerMDM:
    """One variant's training state: model, AdamW, and its own random stream for t and the masks."""

    def __init__(self, shape: PeerShape, sparse: bool, mask_id: int, pad_id: int, lr: float = 1e-3,
                 betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.1, grad_clip: float = 1.0,
                 t_min: float = 1e-3, seed: int = 0):
        self.shape, self.sparse, self.mask_id = shape, sparse, mask_id
        self.grad_clip, self.t_min = grad_clip, t_min
        self.model = build_peer(shape, sparse, pad_id, seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def step(self, ids_BL: torch.Tensor) -> dict:
        """One optimizer step on clean rows ids_BL; returns the loss (nats per token) and the number of
        positions whose logits were computed."""
        B, L = ids_BL.shape
        t_B = torch.rand(B, generator=self.gen).clamp_min(self.t_min)
        masked_BL = torch.rand(B, L, generator=self.gen) < t_B[:, None]
        noisy_BL = torch.where(masked_BL, self.mask_id, ids_BL)
        labels_BL = torch.where(masked_BL, ids_BL, IGNORE)
        weight_BL = (1.0 / t_B)[:, None].expand(B, L)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if self.sparse:  # logits of the masked positions, in the row-major order of labels != -100
                logits_NV = self.model(input_ids=noisy_BL, labels=labels_BL).logits
                ce_N = F.cross_entropy(logits_NV.float(), ids_BL[masked_BL], reduction="none")
                wce = (ce_N * weight_BL[masked_BL]).sum()
            else:
                logits_BLV = self.model(input_ids=noisy_BL).logits
                ce_BL = F.cross_entropy(logits_BLV.flatten(0, 1).float(), labels_BL.flatten(),
                                        ignore_index=IGNORE, reduction="none").view(B, L)
                wce = (ce_BL * weight_BL).sum()
            loss = wce / (B * L)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        predicted = int(masked_BL.sum()) if self.sparse else B * L
        return {"loss": float(loss.detach()), "predicted": predicted}
