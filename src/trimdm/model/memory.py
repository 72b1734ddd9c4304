"""Memory of a training step, estimated from the model's shape beside its FLOP count (flops.py); nothing
is allocated. Bytes per process; the trainer compares them with the device's free memory
(train/memory.py) and `benchmarks/train_memory.py` with the measured peak.

    states       parameters 4N + gradients 4N + AdamW's two moments 8N (fp32 master weights; ÷ shards
                 under FSDP2), + 4N for an EMA of the weights, + 4N for the one-process noise-scale
                 measurement's copy of the gradient
    activations  what autograd keeps for the backward pass, per block per position (below), × blocks ×
                 positions of a micro-batch; with activation checkpointing only each block's input (the
                 fp32 residual stream, 4·d) and one block's intermediates while it is recomputed
    weights      under bf16 autocast the bf16 copy of each block's matrices (2 bytes per parameter) that
                 autograd keeps for the backward pass; with checkpointing one block's at a time
    backward     the gradients of a block's intermediates while its backward pass runs: about one more
                 block's worth of activations (fitted: without it the estimate fell 4-15% short of the
                 measured peak, benchmarks/train_memory.py, docs/LOG.md)
    head         logits of the masked positions over their output slice (fp32 log-softmax kept, its
                 gradient, the bf16 product: ~14 bytes per logit in bf16, 12 in fp32) and the copies of the
                 unembedding slices the heads read (6 bytes per output parameter in bf16, 4 in fp32)
    optimizer    nothing beyond the states: the fused AdamW step (optim/param_groups.py) updates each
                 tensor in place (foreach held one more fp32 tensor per parameter, its √v; docs/LOG.md
                 2026-12-06), so the forward/backward pass is the peak

Bytes kept per position by one block (d = d_model, h = SwiGLU width, H heads, L row length), counted from
the tensors autograd saves (`torch.autograd.graph.saved_tensors_hooks`, tests/unit/test_memory.py):
    fp32:                           40·d + 16·h + 12·H + 8
    bf16 autocast, SDPA:            24·d +  8·h + 12·H + 8
    bf16 autocast, explicit scores: 26·d +  8·h +  8·H + 8 + 6·H·L   (CPU rows ≤ 256: transformer.attend)
Every RMSNorm (transformer.RMSNormFunction) keeps its input and one fp32 rstd per row, not its output.
In bf16 with SDPA: the two block norms' inputs (the fp32 residual stream, 2 × 4d) and rstd (2 × 4); the
bf16 casts of their outputs that qkv and w_in read (2 × 2d); the qkv product (6d: the QK-norms' input,
and SDPA's v) and the QK-norms' rstd (2 × 4H); SDPA's rotated q and k (2 × 2d), its output (2d, the out
projection's input) and log-sum-exp (4H); the SwiGLU product (4h), silu(gate) (2h) and w_out's input
(2h). In fp32 every bf16 tensor doubles and the casts are the norms' outputs themselves. With explicit
scores q, k and v are kept as contiguous copies (3 × 2d) with the fp32 softmax (4HL) and its bf16 cast
(2HL), and no log-sum-exp. Fixed per block, outside the per-position figure: the `weights` and the RoPE
tables' bf16 copies, and the QK-norms' gains in fp32 under autocast (8 bytes per head dimension).
Not counted: the key-padding mask (1-4 bytes per position), the allocator's fragmentation, transient
buffers inside a kernel, the data loader, and the process itself (`runtime`, which the caller measures:
Python, torch and its libraries on a CPU; the CUDA context is outside free GPU memory).
"""
from __future__ import annotations

from dataclasses import dataclass

from trimdm.model.flops import param_counts
from trimdm.model.transformer import TransformerArgs

GiB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """How a model is trained, as far as memory goes."""

    micro_tokens: int  # positions in one forward/backward pass (micro-batch rows × row length)
    seq_len: int  # row length L
    logit_width: int  # widest output slice (a modality's ids + EOS): logits per masked position
    bf16: bool = True  # bf16 autocast (fp32 master weights) or fp32
    checkpointing: bool = False  # activation checkpointing per block
    shards: int = 1  # ways parameters, gradients and optimizer states are split (FSDP2 ranks)
    ema: bool = False  # an fp32 EMA of the weights
    grad_copy: bool = False  # the one-process noise-scale measurement's fp32 copy of the gradient
    logit_fraction: float = 0.5  # masked share of positions (E[τ] = 1/2 under a linear schedule)
    explicit_attention: bool = False  # scores formed explicitly (CPU, bf16, rows ≤ EXPLICIT_MAX_LEN)
    runtime: float = 0.0  # bytes of the process before the model exists


def block_bytes_per_token(a: TransformerArgs, p: MemoryPlan) -> float:
    """Bytes one block keeps for its backward pass per position (module docstring)."""
    d, h, heads = a.d_model, a.hidden, a.n_heads
    if not p.bf16:
        return 40 * d + 16 * h + 12 * heads + 8
    if p.explicit_attention:
        return 26 * d + 8 * h + 8 * heads + 8 + 6 * heads * p.seq_len
    return 24 * d + 8 * h + 12 * heads + 8


def training_memory(a: TransformerArgs, p: MemoryPlan) -> dict[str, float]:
    """Bytes per process by component, and `peak`: the states with everything the forward/backward pass
    adds (the fused optimizer step adds nothing)."""
    counts = param_counts(a)
    n, d = counts["total"], a.d_model
    block = counts["non_embedding"] / a.n_layers  # one block's parameters (the final norm is noise)
    per_token = block_bytes_per_token(a, p)
    out = {"params": 4.0 * n / p.shards, "grads": 4.0 * n / p.shards, "adamw": 8.0 * n / p.shards,
           "ema": 4.0 * n / p.shards if p.ema else 0.0, "grad_copy": 4.0 * n / p.shards if p.grad_copy else 0.0}
    # FSDP2 gathers the root's tables for the whole pass and a block (plus the next, prefetched) at a
    # time, with their unsharded gradients until the reduce-scatter
    out["fsdp_gathered"] = 8.0 * (counts["embedding"] + 2 * block) if p.shards > 1 else 0.0
    if p.checkpointing:
        out["activations"] = p.micro_tokens * (a.n_layers * 4.0 * d + per_token)
        out["weight_copies"] = 2.0 * block if p.bf16 else 0.0
    else:
        out["activations"] = p.micro_tokens * a.n_layers * per_token
        out["weight_copies"] = 2.0 * block * a.n_layers if p.bf16 else 0.0
    logit_bytes = 14.0 if p.bf16 else 12.0
    out["backward"] = p.micro_tokens * per_token
    out["head"] = (p.micro_tokens * (p.logit_fraction * p.logit_width * logit_bytes + 12.0 * d)
                   + (6.0 if p.bf16 else 4.0) * counts["embedding"] / 2)
    out["runtime"] = p.runtime
    states = sum(out[k] for k in ("params", "grads", "adamw", "ema", "runtime"))
    out["peak"] = states + sum(out[k] for k in ("grad_copy", "fsdp_gathered", "activations", "weight_copies",
                                                "backward", "head"))
    return out


def describe(mem: dict[str, float]) -> str:
    """`training_memory`'s components in GiB, largest first, for messages and logs (those under 0.01 GiB
    left out)."""
    parts = sorted(((k, v) for k, v in mem.items() if k != "peak" and v >= 0.005 * GiB), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / GiB:.2f}" for k, v in parts)
