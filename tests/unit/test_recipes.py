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
