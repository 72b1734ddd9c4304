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


def test_completep_scales_hidden_lr_eps_and_residuals_with_width_and_depth():
    base = ["model.parameterization=completep", "model.base_width=64", "model.base_depth=2"]
    cfg1, m1, o1 = optimizer_for(*base, "model.d_model=64", "model.n_layers=2")
    cfg2, m2, o2 = optimizer_for(*base, "model.d_model=128", "model.n_layers=4", "model.n_heads=4")
    g1 = {(g["group"], g["block"]): g for g in o1.param_groups}
    g2 = {(g["group"], g["block"]): g for g in o2.param_groups}
    for group in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):
        assert g2[(group, 0)]["lr"] == pytest.approx(g1[(group, 0)]["lr"] / 2)
        assert g2[(group, 0)]["eps"] == pytest.approx(g1[(group, 0)]["eps"] / 2)
    assert g2[("embed_text", None)]["lr"] == pytest.approx(g1[("embed_text", None)]["lr"])
    assert m1.blocks[0].residual_scale == 1.0 and m2.blocks[0].residual_scale == 0.5
    std = lambda m: float(m.blocks[0].mlp.w_in.weight.detach().std())  # noqa: E731
    assert std(m2) / std(m1) == pytest.approx(1 / math.sqrt(2), rel=0.05)


def test_unknown_parameter_is_an_error():
    with pytest.raises(ValueError, match="belongs to no optimizer group"):
        classify("blocks.0.attn.bias")
