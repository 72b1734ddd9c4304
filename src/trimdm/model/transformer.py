"""The network: a bidirectional pre-norm transformer over the joint vocabulary (method §5).

Owns: token embedding, blocks (RMSNorm, multi-head attention with RoPE and QK-norm through
`scaled_dot_product_attention` with a key-padding mask, SwiGLU MLP), final norm, unembedding.
Does not own: the vocabulary layout, masking, loss, dtype policy or parallelism (those are applied
from outside). It imports only torch.

There is no time input: an absorbing-mask model can read the noise level off the input (MDLM, LLaDA).
`forward` returns pre-norm hidden states at every position, or, given `heads`, the logits of the
selected positions over the contiguous id range (plus one extra id, e.g. the modality's EOS) that each
head names: the loss pays for logits of masked positions over one modality's slice, not the whole
vocabulary at every position. Heads are computed inside `forward` so that wrappers applied from
outside (FSDP) see one call. Embedding and unembedding are stored per vocabulary segment.

The width/depth parameterization (standard, or CompleteP: Dey et al. 2025, "Don't be lazy", Table 1)
arrives as plain numbers in `TransformerArgs` (residual branch multiplier, init scales, logit
multiplier); the model does not know the base shape they were derived from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerArgs:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int = 0  # 0: 8/3·d_model rounded up to a multiple of 64
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # Width and depth parameterization, as numbers (train/run.py derives them; CompleteP, Dey et al. 2025,
    # Table 1 with α = 1 and multipliers m_N, m_L; every default is the standard parameterization)
    residual_scale: float = 1.0  # multiplies every residual branch (CompleteP: 1/m_L)
    hidden_init_scale: float = 1.0  # multiplies the init std of block matrices (CompleteP: 1/√m_N)
    # GPT-2's depth rule: output projections of residual branches start at init std ÷ √(2·n_layers).
    # CompleteP turns it off: residual_scale carries depth, and both would count it twice.
    depth_scaled_init: bool = True
    logit_scale: float = 1.0  # multiplies the logits (μP's output multiplier; CompleteP: 1/m_N)
    # (name, size) of contiguous id ranges, in id order, with their own embedding and unembedding
    # parameters (so an optimizer can treat each modality's tables separately). Empty ranges get no
    # parameters. () means one range "tokens" of vocab_size.
    vocab_segments: tuple[tuple[str, int], ...] = ()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.d_model / 3 / 64)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of each position's angles, (L, head_dim): every angle twice, once per member
    of its pair, the sin negative on the pair's first member (the layout `apply_rope` multiplies by)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles_LH = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    cos_LD = angles_LH.cos().repeat_interleave(2, dim=-1)
    sin_LD = torch.stack((-angles_LH.sin(), angles_LH.sin()), dim=-1).flatten(-2)
    return cos_LD.float(), sin_LD.float()


def apply_rope(x_BLHD: torch.Tensor, cos_LD: torch.Tensor, sin_LD: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) by position-dependent angles (RoFormer, Su et al. 2021):
    x·cos + swap(x)·sin with swap exchanging each pair's members, in whole-tensor products (strided
    half-width products were the slowest elementwise work of a CPU training step).
    The tables are (L, head_dim) for rows of consecutive positions, or (B, L, head_dim) for a set of
    positions per row (`Transformer.trunk_at`)."""
    swapped = x_BLHD.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    cos, sin = cos_LD[..., None, :].to(x_BLHD.dtype), sin_LD[..., None, :].to(x_BLHD.dtype)
    return x_BLHD * cos + swapped * sin


EXPLICIT_MAX_LEN = 256  # longest row `attend` forms explicitly (bf16 on a CPU)


def attend(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor,
           keep_B11L: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention in which only keys with keep_B11L True take part (None: every key).

    `scaled_dot_product_attention`, except in bf16 on a CPU for rows of at most EXPLICIT_MAX_LEN: there
    its flash kernel is slower, forward and backward, than the explicit product (2-4x up to 128 tokens,
    about even from 160 to 256 alone and 4% slower in a training step at 256; at 384 SDPA is the faster,
    1.2x; `benchmarks/attention.py`, docs/LOG.md 2026-11-29), so the scores are formed explicitly, with
    the softmax in fp32. A query whose keys are all padding (a padded position
    of an all-padding row) then attends uniformly instead of returning zeros; no kept position reads
    it, so the other outputs are those of SDPA."""
    if q_BHLD.device.type != "cpu" or q_BHLD.dtype != torch.bfloat16 or q_BHLD.shape[-2] > EXPLICIT_MAX_LEN:
        return F.scaled_dot_product_attention(q_BHLD, k_BHLD, v_BHLD, attn_mask=keep_B11L)
    return explicit_attention(q_BHLD, k_BHLD, v_BHLD, keep_B11L)


def explicit_attention(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor,
                       keep_B11L: torch.Tensor | None) -> torch.Tensor:
    """`attend`'s path in bf16 on a CPU: the scores as one product, the softmax in fp32."""
    scores = (q_BHLD @ k_BHLD.transpose(-1, -2)).float() * q_BHLD.shape[-1] ** -0.5
    if keep_B11L is not None:
        scores = scores.masked_fill(~keep_B11L, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1).to(v_BHLD.dtype) @ v_BHLD


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward. Forward: the operations of `F.rms_norm` in their order
    (x in fp32, rstd = rsqrt(mean(x²) + eps), x·rstd·w, cast back to x's dtype), so outputs are
    bit-identical to it. On a CPU `F.rms_norm` has no fused kernel under autograd: it decomposes into
    six elementwise ops whose backward makes a dozen passes; this backward makes seven (forward +
    backward of d512's norms 32% faster in fp32, 16% for the bf16 QK-norms, docs/LOG.md 2026-12-06),
    with input gradients equal to its within fp32 rounding. The weight's gradient is formed in fp32
    (F.rms_norm's passes through the weight cast to x's dtype: bf16 for the QK-norms)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        compute = torch.promote_types(x.dtype, torch.float32)  # fp32 for bf16, fp64 stays fp64
        xf = x.to(compute)
        rstd = xf.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        w = weight.to(x.dtype).to(compute)  # the gain at the input's precision, as F.rms_norm(x, w.to(x.dtype))
        ctx.save_for_backward(x, rstd, w)
        ctx.weight_dtype = weight.dtype
        return (xf * rstd).mul_(w).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        x, rstd, w = ctx.saved_tensors
        # y = x̂·w with x̂ = x·rstd: dx = rstd·(g·w − x̂·mean(g·w·x̂)), dw = Σ g·x̂ over every row
        x_hat = x.to(rstd.dtype) * rstd
        g = grad_y.to(rstd.dtype)
        g_hat = g * w
        grad_w = (g * x_hat).flatten(0, -2).sum(0)
        dot = torch.linalg.vecdot(g_hat, x_hat).unsqueeze(-1).div_(x.shape[-1])
        grad_x = torch.addcmul(g_hat, x_hat, dot, value=-1).mul_(rstd)
        return grad_x.to(x.dtype), grad_w.to(ctx.weight_dtype), None


class RMSNorm(nn.Module):
    """RMSNorm whose gain follows the input's dtype (bf16 activations are normalised in fp32 and returned
    in bf16, as F.rms_norm does under autocast)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RMSNormFunction.apply(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, a: TransformerArgs):
        super().__init__()
        self.n_heads, self.head_dim = a.n_heads, a.head_dim
        self.qkv = nn.Linear(a.d_model, 3 * a.d_model, bias=False)
        self.out = nn.Linear(a.d_model, a.d_model, bias=False)
        self.q_norm = RMSNorm(a.head_dim, eps=a.norm_eps)
        self.k_norm = RMSNorm(a.head_dim, eps=a.norm_eps)

    def forward(self, x_BLD, cos_LD, sin_LD, attn_mask_B11L, kv=None):
        """`kv(k_BHLD, v_BHLD) -> (k, v)`, when given, sees this layer's keys and values and returns
        those the queries attend to (KVCache: store them, or merge them into the cached ones)."""
        B, L, D = x_BLD.shape
        q, k, v = self.qkv(x_BLD).view(B, L, 3, self.n_heads, self.head_dim).unbind(2)
        q = apply_rope(self.q_norm(q), cos_LD, sin_LD).transpose(1, 2)
        k = apply_rope(self.k_norm(k), cos_LD, sin_LD).transpose(1, 2)
        v = v.transpose(1, 2)
        if kv is not None:
            k, v = kv(k, v)
        y = attend(q, k, v, attn_mask_B11L)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class SwiGLU(nn.Module):
    def __init__(self, a: TransformerArgs):
        super().__init__()
        self.hidden = a.hidden
        self.w_in = nn.Linear(a.d_model, 2 * a.hidden, bias=False)  # gate and up, fused
        self.w_out = nn.Linear(a.hidden, a.d_model, bias=False)

    def forward(self, x_BLD):
        gate, up = self.w_in(x_BLD).split(self.hidden, dim=-1)
        return self.w_out(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, a: TransformerArgs):
        super().__init__()
        self.attn_norm = RMSNorm(a.d_model, eps=a.norm_eps)
        self.attn = Attention(a)
        self.mlp_norm = RMSNorm(a.d_model, eps=a.norm_eps)
        self.mlp = SwiGLU(a)
        self.residual_scale = a.residual_scale

    def forward(self, x_BLD, cos_LD, sin_LD, attn_mask_B11L, kv=None):
        x_BLD = x_BLD + self._scaled(self.attn(self.attn_norm(x_BLD), cos_LD, sin_LD, attn_mask_B11L, kv))
        return x_BLD + self._scaled(self.mlp(self.mlp_norm(x_BLD)))

    def _scaled(self, branch_BLD: torch.Tensor) -> torch.Tensor:
        return branch_BLD if self.residual_scale == 1.0 else self.residual_scale * branch_BLD


def _keep(pad_BL: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA's boolean key mask, True where a key takes part; None (the fast path) when nothing is padded."""
    return None if pad_BL is None or not bool(pad_BL.any()) else ~pad_BL[:, None, None, :]


class KVCache:
    """Every layer's keys and values, (B, H, L, head_dim) after QK-norm and RoPE, as the last
    `Transformer.trunk(..., cache=)` pass over a batch of rows left them; `trunk_at` attends to them
    with the positions it recomputes put in their place (the sampler's condition cache)."""

    def __init__(self):
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def clear(self) -> None:
        self.k.clear()
        self.v.clear()

    def store(self, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k.append(k_BHLD)
        self.v.append(v_BHLD)
        return k_BHLD, v_BHLD

    def merge(self, layer: int, positions_BA: torch.Tensor, k_BHAD: torch.Tensor,
              v_BHAD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's cached keys and values with those of `positions_BA` replaced by the new ones."""
        B, H, A, D = k_BHAD.shape
        index = positions_BA[:, None, :, None].expand(B, H, A, D)
        return (self.k[layer].scatter(2, index, k_BHAD.to(self.k[layer].dtype)),
                self.v[layer].scatter(2, index, v_BHAD.to(self.v[layer].dtype)))


class Transformer(nn.Module):
    def __init__(self, a: TransformerArgs):
        super().__init__()
        if a.d_model % a.n_heads or a.head_dim % 2:
            raise ValueError(f"d_model={a.d_model} must split into {a.n_heads} heads of even size")
        self.args = a
        segments = a.vocab_segments or (("tokens", a.vocab_size),)
        sizes = [n for _, n in segments]
        if sum(sizes) != a.vocab_size or min(sizes) < 0:
            raise ValueError(f"vocab_segments {segments} must be non-negative and sum to {a.vocab_size}")
        # (name, start, end) of each non-empty segment, in id order
        self.segments = [(name, sum(sizes[:i]), sum(sizes[:i + 1])) for i, (name, n) in enumerate(segments) if n]
        self.embed = nn.ParameterDict({name: nn.Parameter(torch.empty(e - s, a.d_model)) for name, s, e in self.segments})
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.d_model, eps=a.norm_eps)
        self.unembed = nn.ParameterDict({name: nn.Parameter(torch.empty(e - s, a.d_model)) for name, s, e in self.segments})
        cos, sin = rope_tables(a.max_seq_len, a.head_dim, a.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std); block matrices × hidden_init_scale, and output projections of residual
        branches × 1/√(2·n_layers) when `depth_scaled_init`."""
        std = self.args.init_std
        hidden_std = std * self.args.hidden_init_scale
        out_std = hidden_std / math.sqrt(2 * self.args.n_layers) if self.args.depth_scaled_init else hidden_std
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.ones_(p)  # norm gains
            elif name.endswith(("attn.out.weight", "mlp.w_out.weight")):
                nn.init.normal_(p, 0.0, out_std, generator=generator)
            elif name.startswith("blocks."):
                nn.init.normal_(p, 0.0, hidden_std, generator=generator)
            else:
                nn.init.normal_(p, 0.0, std, generator=generator)

    def forward(self, ids_BL: torch.Tensor, pad_BL: torch.Tensor | None = None,
                heads: list[tuple[torch.Tensor, int, int, int | None]] | None = None):
        """Hidden states before the final norm, (B, L, D); padded positions take no part as keys.

        With `heads` = [(select_BL, lo, hi, extra_id), ...] returns instead one logits tensor per head,
        (select_BL.sum(), hi − lo + (extra_id is not None)), for the selected positions."""
        h = self.trunk(ids_BL, pad_BL)
        if heads is None:
            return h
        return [self.head(h[select], lo, hi, extra) for select, lo, hi, extra in heads]

    def _rows(self, tables: nn.ParameterDict, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of a segmented table; the range must lie inside one segment."""
        for name, start, end in self.segments:
            if start <= lo and hi <= end:
                return tables[name][lo - start:hi - start]
        raise ValueError(f"id range [{lo}, {hi}) crosses a vocabulary segment boundary {self.segments}")

    def trunk(self, ids_BL: torch.Tensor, pad_BL: torch.Tensor | None = None,
              cache: "KVCache | None" = None) -> torch.Tensor:
        """Hidden states before the final norm, (B, L, D). With `cache`, every layer's keys and values
        are stored in it (for `trunk_at`)."""
        L = ids_BL.shape[1]
        if L > self.args.max_seq_len:
            raise ValueError(f"sequence of length {L} exceeds max_seq_len={self.args.max_seq_len}")
        x = self._embed(ids_BL)
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        if cache is not None:
            cache.clear()
        for block in self.blocks:
            x = block(x, cos, sin, _keep(pad_BL), cache.store if cache is not None else None)
        return x

    def trunk_at(self, ids_BA: torch.Tensor, positions_BA: torch.Tensor, pad_BL: torch.Tensor | None,
                 cache: "KVCache") -> torch.Tensor:
        """Hidden states (B, A, D) of the tokens `ids_BA` at `positions_BA` of rows of length L, every
        other position represented by the keys and values `cache` holds from an earlier `trunk` pass
        over those rows (a position may repeat within a row: give it the same token). Exact when the
        rows have not changed since that pass; otherwise an approximation: the cached positions are not
        recomputed although what they attended to has changed (Fast-dLLM's prefix cache, Wu et al. 2025).
        `pad_BL` is the rows' padding now. Costs A/L of a full pass in the projections and MLPs."""
        if len(cache.k) != len(self.blocks):
            raise ValueError("trunk_at needs a cache filled by a trunk(..., cache=) pass")
        x = self._embed(ids_BA)
        cos, sin = self.rope_cos[positions_BA], self.rope_sin[positions_BA]
        keep = _keep(pad_BL)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, keep, lambda k, v, layer=layer: cache.merge(layer, positions_BA, k, v))
        return x

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        tables = [self.embed[name] for name, _, _ in self.segments]
        return F.embedding(ids, tables[0] if len(tables) == 1 else torch.cat(tables))

    def head(self, h_ND: torch.Tensor, lo: int, hi: int, extra_id: int | None = None) -> torch.Tensor:
        """Logits of the final norm of h over ids [lo, hi) (then `extra_id`, e.g. the modality's EOS),
        × logit_scale."""
        w = self._rows(self.unembed, lo, hi)
        if extra_id is not None:
            w = torch.cat([w, self._rows(self.unembed, extra_id, extra_id + 1)])
        x_ND = self.norm(h_ND)
        # the same product with the scale on the (N, D) side, usually smaller than the (N, V) one
        return F.linear(x_ND if self.args.logit_scale == 1.0 else self.args.logit_scale * x_ND, w)
