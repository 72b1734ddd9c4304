import dataclasses

import torch

from trimdm.model.flops import param_counts
from trimdm.model.transformer import Transformer, TransformerArgs

ARGS = TransformerArgs(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
                       vocab_segments=(("text", 30), ("image", 12), ("audio", 0), ("special", 8)))


def model():
    m = Transformer(ARGS)
    m.init_weights(torch.Generator().manual_seed(0))
    return m


def test_param_counts_match_the_module():
    m = model()
    counts = param_counts(ARGS)
    assert counts["total"] == sum(p.numel() for p in m.parameters())
    assert counts["embedding"] == sum(p.numel() for p in [*m.embed.values(), *m.unembed.values()])


def test_padding_keys_do_not_change_other_positions():
    m = model()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[:, 8:] = True
    h1 = m(ids, pad)
    ids2 = ids.clone()
    ids2[:, 8:] = 7  # different content in padded positions
    h2 = m(ids2, pad)
    torch.testing.assert_close(h1[:, :8], h2[:, :8])
    assert not torch.allclose(m(ids2)[:, :8], h1[:, :8])  # without the mask they would matter


def test_attention_is_bidirectional():
    m = model()
    ids = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(2))
    ids2 = ids.clone()
    ids2[0, -1] = (ids[0, -1] + 1) % 50
    assert not torch.allclose(m(ids)[0, 0], m(ids2)[0, 0])  # the first position sees the last


def test_head_slice_equals_full_logits_slice():
    m = model()
    h = torch.randn(5, 32)
    full = torch.nn.functional.linear(m.norm(h), torch.cat([m.unembed[name] for name, _, _ in m.segments]))
    part = m.head(h, 10, 20, extra_id=42)
    torch.testing.assert_close(part[:, :10], full[:, 10:20])
    torch.testing.assert_close(part[:, 10], full[:, 42])


def test_logit_scale_multiplies_every_head():
    m = model()
    scaled = Transformer(dataclasses.replace(ARGS, logit_scale=0.25))
    scaled.load_state_dict(m.state_dict())
    h = torch.randn(5, 32)
    torch.testing.assert_close(scaled.head(h, 10, 20, extra_id=42), 0.25 * m.head(h, 10, 20, extra_id=42))


def test_heads_in_forward_equal_head_on_hidden_and_respect_segments():
    m = model()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    sel = torch.zeros(2, 6, dtype=torch.bool)
    sel[0, 1] = sel[1, 4] = True
    (logits,) = m(ids, heads=[(sel, 30, 42, 45)])
    torch.testing.assert_close(logits, m.head(m(ids)[sel], 30, 42, 45))
    import pytest

    with pytest.raises(ValueError, match="crosses a vocabulary segment"):
        m.head(torch.randn(1, 32), 25, 35)


def test_rope_rotates_each_pair_by_its_position_angle():
    from trimdm.model.transformer import apply_rope, rope_tables
    L, H, D = 7, 2, 8
    cos, sin = rope_tables(L, D, 10000.0)
    x = torch.randn(3, L, H, D, generator=torch.Generator().manual_seed(4))
    y = apply_rope(x, cos, sin)
    angle = torch.arange(L)[:, None] / 10000.0 ** (torch.arange(0, D, 2) / D)  # (L, D/2)
    c, s = angle.cos()[None, :, None], angle.sin()[None, :, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    torch.testing.assert_close(y[..., 0::2], x1 * c - x2 * s)
    torch.testing.assert_close(y[..., 1::2], x1 * s + x2 * c)
    # q·k after rotation depends on the positions' difference only
    q, k = torch.randn(D, generator=torch.Generator().manual_seed(5)), torch.randn(D, generator=torch.Generator().manual_seed(6))
    rq, rk = apply_rope(q.expand(1, L, 1, D), cos, sin)[0, :, 0], apply_rope(k.expand(1, L, 1, D), cos, sin)[0, :, 0]
    torch.testing.assert_close(rq[3] @ rk[1], rq[5] @ rk[3])


def test_cpu_bf16_attention_is_as_exact_as_sdpa_on_kept_positions():
    """The explicit CPU bf16 path, like SDPA in bf16, stays within four bf16 roundings (unit roundoff
    2^-8, at the scale of each tensor) of the exact attention of the same bf16 inputs in float64, in value
    and gradient wherever a key is kept; an all-padding row stays finite (no NaN reaches its values or
    anyone's gradient)."""
    from trimdm.model.transformer import attend
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(3, 2, 9, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    keep = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    keep[0, ..., 6:] = False
    keep[2] = False  # every key of this row is padding
    sdpa = lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, attn_mask=keep)  # noqa: E731

    def run(fn, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (q, k, v)]  # fresh leaves per run
        y = fn(*leaves)
        assert y.dtype == dtype and torch.isfinite(y.double()).all()
        (y[:2, :, :6].double() * torch.linspace(-1, 1, 16, dtype=torch.float64)).sum().backward()  # kept queries
        assert all(torch.isfinite(t.grad.double()).all() for t in leaves)
        return [y[:2, :, :6].detach().double(), *(t.grad[:2].double() for t in leaves)]

    exact = run(sdpa, torch.float64)
    for name, fn in (("sdpa", sdpa), ("attend", lambda a, b, c: attend(a, b, c, keep))):
        for got, ref in zip(run(fn, torch.bfloat16), exact):
            bound = 4 * 2.0 ** -8 * float(ref.abs().max())
            assert float((got - ref).abs().max()) <= bound, name


def test_trunk_at_over_unchanged_rows_equals_the_full_pass():
    """With the rows as the cache's pass saw them, recomputing a set of positions per row (padded rows,
    a repeated position) gives the full pass's hidden states there: the cache is exact before the rows
    change."""
    from trimdm.model.transformer import KVCache

    m = model()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(4))
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, 9:] = True
    cache = KVCache()
    full = m.trunk(ids, pad, cache=cache)
    assert len(cache.k) == ARGS.n_layers and cache.k[0].shape == (2, ARGS.n_heads, 12, ARGS.head_dim)
    positions = torch.tensor([[3, 4, 5, 11], [0, 2, 8, 8]])
    part = m.trunk_at(ids.gather(1, positions), positions, pad, cache)
    torch.testing.assert_close(part, full.gather(1, positions[..., None].expand(-1, -1, ARGS.d_model)))
    # a changed token at a recomputed position changes the outputs (the new keys replace the cached ones)
    ids2 = ids.clone()
    ids2[0, 4] = (ids[0, 4] + 1) % 50
    assert not torch.allclose(m.trunk_at(ids2.gather(1, positions), positions, pad, cache)[0], part[0])


def test_rmsnorm_equals_torch_rms_norm_in_value_and_gradient():
    """The hand-written RMSNorm: outputs bit-identical to F.rms_norm (fp32 and, under bf16 autocast, a
    bf16 input such as the QK-norms get), input gradients equal to F.rms_norm's within fp32 rounding, and
    both gradients exact in float64 (gradcheck)."""
    from trimdm.model.transformer import RMSNorm, RMSNormFunction
    g = torch.Generator().manual_seed(3)
    weight = 1 + 0.1 * torch.randn(16, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        x0 = torch.randn(4, 5, 16, generator=g).to(dtype)
        grad_y = torch.randn(4, 5, 16, generator=g).to(dtype)
        outs = []
        for fn in (lambda x, w: torch.nn.functional.rms_norm(x, w.shape, w.to(x.dtype), 1e-6),
                   lambda x, w: RMSNormFunction.apply(x, w, 1e-6)):
            x, w = x0.clone().requires_grad_(), weight.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fn(x, w)
            y.backward(grad_y)
            outs.append((y.detach(), x.grad))
        assert outs[1][0].dtype == dtype and torch.equal(outs[0][0], outs[1][0])
        ref, got = outs[0][1].float(), outs[1][1].float()
        roundoff = 2.0 ** -23 if dtype == torch.float32 else 2.0 ** -8  # of the gradient's own dtype
        assert float((got - ref).abs().max()) <= 8 * roundoff * float(ref.abs().max())
    x = torch.randn(3, 2, 8, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: RMSNormFunction.apply(a, b, 1e-6), (x, w))
    norm = RMSNorm(8, 1e-6).double()
    assert torch.equal(norm(x), torch.nn.functional.rms_norm(x, (8,), norm.weight, 1e-6))
