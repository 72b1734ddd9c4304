"""Per-module AdamW parameter groups (method §6).

Owns: which group every parameter belongs to, and each AdamW param group's lr, weight decay and ε:

    lr  = derived lr  × group lr multiplier  × depth_ratio^(l/(n−1))  × CompleteP lr factor
    eps = derived eps × group eps multiplier                          × CompleteP ε factor
    wd  = derived wd  × group wd multiplier                           × CompleteP wd factor
                                                                      (norm gains: always 0)

CompleteP (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep transformers",
Table 1 at α = 1; ε split between block and other parameters as in the authors' reference code, after
their Eq. 40), width multiplier m_N, depth multiplier m_L:

    group                                 lr       ε                wd
    hidden matrices (the four below)      1/m_N    1/(m_N·m_L)      m_N
    norm gains inside blocks              1        1/(m_N·m_L)      (0)
    embeddings, unembeddings, final norm  1        1/m_N            1

Hidden lr carries m_L^(α−1) = 1 at α = 1. Every gradient inside a block is scaled by its branch's
1/m_L, hence ε's depth factor; under μP every gradient shrinks as 1/m_N, hence ε's width factor
everywhere. Weight decay × m_N keeps torch AdamW's per-step decay lr·wd of hidden matrices
width-independent. With m_N = m_L = 1 (the standard parameterization) every factor is exactly 1.

Groups: embed_/unembed_ per vocabulary segment (text, image, audio, special), attn_qkv, attn_out,
mlp_in, mlp_out, norms. Hidden groups are the four block matrices. The depth factor applies to every
parameter of block l (n blocks; l = 0 … n−1). One AdamW param group per (group, block), tagged with
`group`, `block` and `base_lr` (the lr before the schedule's factor). Takes the run's values as an
`OptimizerSettings`; does not own how they are derived (config.derive / reparam.py) or the schedule
(lr.py). The model's side of CompleteP (residual and logit multipliers, init) is model/transformer.py's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch

HIDDEN = ("attn_qkv", "attn_out", "mlp_in", "mlp_out")
SEGMENTS = ("text", "image", "audio", "special")
_BLOCK = {r"attn\.qkv\.weight$": "attn_qkv", r"attn\.out\.weight$": "attn_out",
          r"mlp\.w_in\.weight$": "mlp_in", r"mlp\.w_out\.weight$": "mlp_out", r"norm\.weight$": "norms"}


def classify(name: str) -> tuple[str, int | None]:
    """Parameter name -> (group, block index or None)."""
    m = re.fullmatch(r"(embed|unembed)\.(\w+)", name)
    if m and m.group(2) in SEGMENTS:
        return f"{m.group(1)}_{m.group(2)}", None
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m:
        for pattern, group in _BLOCK.items():
            if re.search(pattern, m.group(2)):
                return group, int(m.group(1))
    if name == "norm.weight":
        return "norms", None
    raise ValueError(f"parameter {name!r} belongs to no optimizer group; extend optim/param_groups.py")


@dataclass(frozen=True)
class OptimizerSettings:
    """The AdamW values of a run and its per-module multipliers."""
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    multipliers: Mapping[str, Any]  # group name -> an object with .lr, .wd and .eps multipliers
    n_layers: int
    depth_ratio: float = 1.0
    width_mult: float = 1.0  # CompleteP's m_N (1: standard)
    depth_mult: float = 1.0  # CompleteP's m_L (1: standard)


def completep_factors(group: str, block: int | None, s: OptimizerSettings) -> tuple[float, float, float]:
    """(lr, ε, wd) factors of CompleteP for one (group, block); see the table above."""
    m_n, m_l = s.width_mult, s.depth_mult
    if group in HIDDEN:
        return 1.0 / m_n, 1.0 / (m_n * m_l), m_n
    if block is not None:  # norm gains inside a block
        return 1.0, 1.0 / (m_n * m_l), 1.0
    return 1.0, 1.0 / m_n, 1.0


def param_groups(model: torch.nn.Module, s: OptimizerSettings) -> list[dict]:
    n = s.n_layers
    buckets: dict[tuple[str, int | None], list] = {}
    for name, p in model.named_parameters():
        name = name.replace("_orig_mod.", "").replace("module.", "")
        if p.numel() == 0:
            continue
        buckets.setdefault(classify(name), []).append(p)
    groups = []
    for (group, block), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        mult = s.multipliers[group]
        depth = s.depth_ratio ** (block / (n - 1)) if block is not None and n > 1 else 1.0
        lr_f, eps_f, wd_f = completep_factors(group, block, s)
        groups.append({
            "params": params, "group": group, "block": block,
            "base_lr": s.lr * mult.lr * depth * lr_f, "lr": s.lr * mult.lr * depth * lr_f,
            "eps": s.eps * mult.eps * eps_f,
            "weight_decay": 0.0 if group == "norms" else s.weight_decay * mult.wd * wd_f,
        })
    return groups


def build_optimizer(model: torch.nn.Module, s: OptimizerSettings) -> torch.optim.AdamW:
    # the fused kernel: one pass per tensor instead of foreach's dozen whole-group ops (on this CPU the
    # d512 config's AdamW step takes a third of foreach's time, docs/LOG.md 2026-12-06); its updates
    # differ from foreach's by fp32 rounding only
    return torch.optim.AdamW(param_groups(model, s), lr=s.lr, betas=s.betas, eps=s.eps, fused=True)


def group_table(optimizer: torch.optim.Optimizer) -> str:
    """One line per module group: parameters, lr range over blocks, ε, weight decay."""
    rows: dict[str, list[dict]] = {}
    for g in optimizer.param_groups:
        rows.setdefault(g["group"], []).append(g)
    lines = [f"{'group':<16}{'params':>12}{'lr':>22}{'eps':>11}{'wd':>9}"]
    for name, gs in rows.items():
        count = sum(p.numel() for g in gs for p in g["params"])
        lrs = [g["base_lr"] for g in gs]
        lr = f"{min(lrs):.3g}" if max(lrs) == min(lrs) else f"{lrs[0]:.3g} … {lrs[-1]:.3g}"
        lines.append(f"{name:<16}{count:>12,}{lr:>22}{gs[0]['eps']:>11.3g}{gs[0]['weight_decay']:>9.3g}")
    return "\n".join(lines)
