import math

import pytest

from trimdm.optim.param_groups import build_optimizer, classify
from trimdm.recipes import tiny
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.run import build_model
from trimdm.train.trainer import optimizer_settings

VOCAB = JointVocab(n_text=40, n_image=16, audio_levels=2, audio_codebook=8)


def optimizer_for(*overrides):
    cfg = tiny().override(["model.n_layers=3", *overrides]).derive()
    model = build_model(cfg, VOCAB)
    return cfg, model, build_optimizer(model, optimizer_settings(cfg))


def test_every_parameter_in_exactly_one_group():
    cfg, model, opt = optimizer_for()
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters() if p.numel()}
    names = {g["group"] for g in opt.param_groups}
    assert {"embed_text", "embed_image", "embed_audio", "unembed_audio", "attn_qkv", "attn_out", "mlp_in",
            "mlp_out", "norms"} <= names


def test_multipliers_and_depth_factor_reach_the_optimizer():
    cfg, model, opt = optimizer_for("optim.groups.mlp_out.lr=0.5", "optim.groups.attn_qkv.eps=10",
                                    "optim.groups.embed_image.wd=0", "optim.depth_ratio=0.25")
    d = cfg.derived
    by = {(g["group"], g["block"]): g for g in opt.param_groups}
    for block in range(3):
        depth = 0.25 ** (block / 2)
        assert by[("mlp_out", block)]["lr"] == pytest.approx(d.lr * 0.5 * depth)
        assert by[("attn_out", block)]["lr"] == pytest.approx(d.lr * depth)
        assert by[("attn_qkv", block)]["eps"] == pytest.approx(d.eps * 10)
        assert by[("norms", block)]["weight_decay"] == 0.0
    assert by[("embed_image", None)]["weight_decay"] == 0.0
    assert by[("embed_text", None)]["weight_decay"] == pytest.approx(d.weight_decay)
    assert by[("norms", None)]["weight_decay"] == 0.0


def test_completep_follows_the_published_table():
    """Dey et al. 2025, Table 1 at α = 1 (ε as in their Eq. 40): m_N = 2, m_L = 2 against the base."""
    base = ["model.parameterization=completep", "model.base_width=64", "model.base_depth=2"]
    cfg1, m1, o1 = optimizer_for(*base, "model.d_model=64", "model.n_layers=2")
    cfg2, m2, o2 = optimizer_for(*base, "model.d_model=128", "model.n_layers=4", "model.n_heads=4")
    g1 = {(g["group"], g["block"]): g for g in o1.param_groups}
    g2 = {(g["group"], g["block"]): g for g in o2.param_groups}
    ratio = lambda key, field: g2[key][field] / g1[key][field]  # noqa: E731
    for group in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):  # lr 1/m_N, ε 1/(m_N·m_L), wd m_N
        assert (ratio((group, 0), "lr"), ratio((group, 0), "eps"), ratio((group, 0), "weight_decay")) == \
            pytest.approx((1 / 2, 1 / 4, 2))
    for key in (("embed_text", None), ("unembed_image", None), ("norms", None)):  # lr 1, ε 1/m_N
        assert (ratio(key, "lr"), ratio(key, "eps")) == pytest.approx((1, 1 / 2))
    assert ratio(("embed_text", None), "weight_decay") == pytest.approx(1)
    assert (ratio(("norms", 0), "lr"), ratio(("norms", 0), "eps")) == pytest.approx((1, 1 / 4))
    assert g2[("norms", 3)]["weight_decay"] == 0.0
    assert m1.args.residual_scale == 1.0 and m2.args.residual_scale == 0.5
    assert m1.args.logit_scale == 1.0 and m2.args.logit_scale == 0.5
    std = lambda w: float(w.detach().std())  # noqa: E731
    w_in = [std(m.blocks[0].mlp.w_in.weight) for m in (m1, m2)]
    assert w_in[1] / w_in[0] == pytest.approx(1 / math.sqrt(2), rel=0.05)  # init std 1/√m_N
    # depth counted once: output projections start like the other block matrices (no 1/√(2·n_layers))
    for out in (m2.blocks[0].attn.out.weight, m2.blocks[3].mlp.w_out.weight):
        assert std(out) == pytest.approx(std(m2.blocks[0].attn.qkv.weight), rel=0.05)


def test_standard_keeps_gpt2_init_and_unscaled_groups():
    cfg, model, opt = optimizer_for("model.n_layers=4", "model.base_width=32", "model.base_depth=1")
    d = cfg.derived
    assert (d.width_mult, d.depth_mult, model.args.logit_scale, model.args.residual_scale) == (1.0, 1.0, 1.0, 1.0)
    for g in opt.param_groups:
        assert g["lr"] == d.lr and g["eps"] == d.eps
        assert g["weight_decay"] == (0.0 if g["group"] == "norms" else d.weight_decay)
    std = lambda w: float(w.detach().std())  # noqa: E731
    hidden = std(model.blocks[0].attn.qkv.weight)
    assert std(model.blocks[1].mlp.w_out.weight) == pytest.approx(hidden / math.sqrt(8), rel=0.05)


def test_unknown_parameter_is_an_error():
    with pytest.raises(ValueError, match="belongs to no optimizer group"):
        classify("blocks.0.attn.bias")
