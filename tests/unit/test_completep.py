"""CompleteP's coordinate check (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep
transformers", the depth coordinate check of their Fig. 7; μP's width check, Yang et al. 2021).

Models at widths 64, 128, 256 (depth 2) and depths 2, 4, 8 (width 64), base shape 64 × 2, train STEPS
AdamW steps on one fixed random batch with cross-entropy on random targets, through the project's own
model and optimizer construction (train/run.py, optim/param_groups.py, so every lr/ε/wd rule takes
part). Then the RMS of each block's output (the hidden state after it) and of the logits is compared
across the three sizes: its spread is max/min over the three. Across depths each block of the
shallowest model is compared with the block at the same relative depth of the deeper ones.

The bound, from seeds 0-9 of this very setup (`spreads(p, seed)`; docs/LOG.md, 2026-12-05):

    spread over seeds 0-9       completep (max)   standard (min)
    width, block outputs        1.35              96
    width, logits               1.59              2.38
    depth, block outputs        1.66              3.15
    depth, logits               1.27              1.09 (max 1.96)

SPREAD_BOUND = 2 separates the two with about the same factor on either side (1.66 → 2 → 2.38). The
logits across depth are not expected to drift under `standard`: the final RMSNorm fixes the scale of
the unembedding's input whatever the depth, so only `completep` is held to the bound there. The check
fails when CompleteP's residual multiplier, its hidden lr or (for most seeds) its logit multiplier or
hidden init scale is removed; ε and weight decay are too small to move a few steps, and GPT-2's
1/√(2·n_layers) on top of 1/m_L mostly washes out, so tests/unit/test_param_groups.py checks those
rules exactly.
"""
import functools

import torch

from trimdm.optim.param_groups import build_optimizer
from trimdm.recipes import tiny
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.run import build_model
from trimdm.train.trainer import optimizer_settings

VOCAB = JointVocab(n_text=256, n_image=16, audio_levels=2, audio_codebook=8)
WIDTHS, DEPTHS = (64, 128, 256), (2, 4, 8)
STEPS, LR, BATCH, LENGTH = 10, 1e-2, 8, 32
SPREAD_BOUND = 2.0


@functools.cache  # the base shape serves both sweeps
def coordinates(parameterization: str, d_model: int, n_layers: int, seed: int) -> tuple[list[float], float]:
    """RMS of every block's output and of the logits after STEPS AdamW steps on one fixed batch."""
    cfg = tiny().override([f"model.parameterization={parameterization}", "model.base_width=64",
                           "model.base_depth=2", f"model.d_model={d_model}", f"model.n_layers={n_layers}",
                           f"model.n_heads={d_model // 32}", f"optim.base.lr={LR}", f"train.seed={seed}"]).derive()
    model = build_model(cfg, VOCAB)
    optimizer = build_optimizer(model, optimizer_settings(cfg))
    g = torch.Generator().manual_seed(1000 + seed)
    ids_BL = torch.randint(0, VOCAB.n_text, (BATCH, LENGTH), generator=g)
    targets_N = torch.randint(0, VOCAB.n_text, (BATCH * LENGTH,), generator=g)
    heads = [(torch.ones(BATCH, LENGTH, dtype=torch.bool), 0, VOCAB.n_text, None)]
    for _ in range(STEPS):
        (logits_NV,) = model(ids_BL, heads=heads)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits_NV, targets_N).backward()
        optimizer.step()
    rms: list[float] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: rms.append(float(out.pow(2).mean().sqrt())))
             for b in model.blocks]
    with torch.no_grad():
        (logits_NV,) = model(ids_BL, heads=heads)
    for hook in hooks:
        hook.remove()
    return rms, float(logits_NV.pow(2).mean().sqrt())


@functools.cache
def spreads(parameterization: str, seed: int = 0) -> dict[str, float]:
    """max/min over the three sizes of each coordinate's RMS."""
    spread = lambda xs: max(xs) / min(xs)  # noqa: E731
    wide = [coordinates(parameterization, d, DEPTHS[0], seed) for d in WIDTHS]
    deep = [coordinates(parameterization, WIDTHS[0], n, seed) for n in DEPTHS]
    out = {f"width: block {i}": spread([blocks[i] for blocks, _ in wide]) for i in range(DEPTHS[0])}
    out["width: logits"] = spread([logits for _, logits in wide])
    for i in range(DEPTHS[0]):  # block i of the shallowest model, at relative depth (i+1)/DEPTHS[0]
        out[f"depth: block {i + 1}/{DEPTHS[0]}"] = spread(
            [blocks[(i + 1) * n // DEPTHS[0] - 1] for (blocks, _), n in zip(deep, DEPTHS)])
    out["depth: logits"] = spread([logits for _, logits in deep])
    return out


def test_completep_keeps_every_coordinate_within_a_constant_factor():
    s = spreads("completep")
    assert max(s.values()) < SPREAD_BOUND, s


def test_standard_coordinates_drift_with_width_and_depth():
    s = spreads("standard")
    drifting = {k: v for k, v in s.items() if k != "depth: logits"}
    assert min(drifting.values()) > SPREAD_BOUND, s
