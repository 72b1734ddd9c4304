"""Every recipe builds, derives and validates, and its config survives a JSON round trip."""
import pytest

from trimdm.config import Config
from trimdm.recipes import RECIPES, get_recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_derives_and_round_trips(name):
    cfg = get_recipe(name).derive()
    assert cfg.recipe == name
    d = cfg.derived
    assert d.steps >= 1 and d.tokens_per_step == d.batch * cfg.data.seq_len
    assert d.warmup_steps <= 0.25 * d.steps and d.accum_steps * d.micro_batch_size == d.batch
    again = Config.from_dict(cfg.to_dict()).derive()
    assert again.to_dict() == cfg.to_dict()


def test_unknown_recipe_names_the_available_ones():
    with pytest.raises(ValueError, match="available: .*tiny"):
        get_recipe("tinny")


def _paper_params(name: str) -> tuple[dict, object]:
    """Parameter counts of a paper-scale recipe on the joint vocabulary its corpus is prepared with,
    from the counter beside the model (nothing allocated)."""
    from trimdm.model.flops import param_counts
    from trimdm.recipes import PAPER_VOCAB
    from trimdm.tokenizers.vocab import JointVocab
    from trimdm.train.run import model_args

    vocab = JointVocab(n_text=PAPER_VOCAB["text"], n_image=PAPER_VOCAB["image"],
                       audio_levels=PAPER_VOCAB["audio_levels"], audio_codebook=PAPER_VOCAB["audio_codebook"])
    args = model_args(get_recipe(name).derive(), vocab)
    return param_counts(args), args


def test_paper_320m_is_the_papers_pilot():
    """320M parameters of which about 240M embeddings (within 5%), aspect ratio d_model/n_layers 128, at
    the paper's base point B_base = 256, D_base = 13B tokens."""
    counts, args = _paper_params("paper_320m")
    assert counts["total"] == pytest.approx(320e6, rel=0.05)
    assert counts["embedding"] == pytest.approx(240e6, rel=0.05)
    assert args.d_model / args.n_layers == 128
    cfg = get_recipe("paper_320m").derive()
    assert (cfg.optim.base.batch, cfg.optim.base.tokens, cfg.data.dataset) == (256, 13_000_000_000, "corpus")
    assert cfg.derived.kappa == 1.0  # trained at the base point itself


def test_paper_3b_follows_the_pilots_rule():
    counts, args = _paper_params("paper_3b")
    small = _paper_params("paper_320m")[1]
    assert counts["total"] == pytest.approx(3e9, rel=0.05)
    assert args.d_model / args.n_layers == 128
    assert args.hidden / args.d_model == small.hidden / small.d_model and args.head_dim == small.head_dim
    assert get_recipe("paper_3b").data.dataset == "corpus"
