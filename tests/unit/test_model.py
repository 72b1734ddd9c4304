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
