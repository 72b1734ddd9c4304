import re

import pytest

from trimdm.config import Config, PerMedium, PerModality
from trimdm.recipes import demo, tiny


def test_json_roundtrip(tmp_path):
    cfg = demo().override(["diffusion.schedule.image=cosine", "optim.base.betas=0.9,0.99"]).derive()
    cfg.to_json(tmp_path / "c.json")
    back = Config.from_json(tmp_path / "c.json")
    assert back == cfg
    assert back.diffusion.schedule.image == "cosine" and back.optim.base.betas == (0.9, 0.99)


def test_overrides_are_type_checked():
    cfg = tiny().override(["train.tokens=2e6", "model.d_model=128", "diffusion.schedule=polynomial:2",
                           "diffusion.antimask=complement", "train.seed=5", "data.seq_len=32",
                           "model.n_layers=3", "model.n_heads=4", "train.batch_size=8"])
    assert cfg.train.tokens == 2_000_000 and isinstance(cfg.train.tokens, int)
    assert cfg.diffusion.schedule == PerModality("polynomial:2", "polynomial:2", "polynomial:2")
    cfg = tiny().override(["diffusion.text_given_media=0.7", "diffusion.text_given_media.audio=0.1"])
    assert cfg.diffusion.text_given_media == PerMedium(image=0.7, audio=0.1)
    with pytest.raises(ValueError, match="train.batch_size: expected an integer"):
        tiny().override(["train.batch_size=eight"])
    with pytest.raises(ValueError, match="train.tokens: expected an integer"):
        tiny().override(["train.tokens=1.5"])


def test_unknown_key_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown config key 'train.batchsize'.*train.batch_size"):
        tiny().override(["train.batchsize=4"])
    with pytest.raises(ValueError, match="derived"):
        tiny().override(["derived.steps=4"])


@pytest.mark.parametrize("override,msg", [
    ("train.batch_size=0", "train.batch_size=0 must be positive"),
    ("train.batch_size=-3", "must be positive"),
    ("model.n_heads=3", "not divisible"),
    ("diffusion.antimask=half", "diffusion.antimask"),
    ("diffusion.schedule.text=quadratic", "unknown schedule"),
    ("train.tokens=10", "shorter than one optimizer step"),
    ("train.micro_batch_size=3", "must divide"),
    ("sample.refine=-1", "sample.refine=-1 must be >= 0"),
    ("diffusion.text_given_media.audio=1.5", "diffusion.text_given_media.audio=1.5 must lie in"),
    ("sample.refine_tasks=i2t,t2i", "choose among i2t, s2t"),
    ("sample.text.block=-1", "sample.text.block=-1: must be >= 0"),
    ("sample.image.block=8", "sample.image.block=8: semi-autoregressive blocks are a text setting"),
    ("sample.audio.block=4", "sample.audio.block=4: semi-autoregressive blocks are a text setting"),
    ("eval.gen_texts=-1", "eval.gen_texts=-1 must be >= 0"),
])
def test_bad_values_are_clear_errors(override, msg):
    with pytest.raises(ValueError, match=msg):
        tiny().override([override]).derive()


def test_derive_fills_steps_and_caps_warmup():
    cfg = tiny().override(["optim.base.warmup_tokens=1e9"]).derive()
    assert cfg.derived.tokens_per_step == cfg.train.batch_size * cfg.data.seq_len
    assert cfg.derived.steps == cfg.train.tokens // cfg.derived.tokens_per_step
    assert cfg.derived.warmup_steps == cfg.derived.steps // 4


def test_configs_of_earlier_versions_still_load():
    from trimdm.config import Config
    from trimdm.recipes import get_recipe

    d = get_recipe("tiny").to_dict()
    d["sample"] = {"steps": 12, "schedule": "linear", "temperature": 0.9, "top_k": 0, "top_p": 1.0,
                   "confidence_noise": 1.0, "gen_len": 24, "seed": 0}
    cfg = Config.from_dict(d)
    assert (cfg.sample.text.steps, cfg.sample.text.schedule, cfg.sample.text.temperature) == (12, "linear", 0.9)
    d = get_recipe("tiny").to_dict()
    d["sample"]["remasking"] = "random"
    for m in ("text", "image", "audio"):
        d["sample"][m].pop("remasking")
    assert Config.from_dict(d).sample.image.remasking == "random"
    d["diffusion"]["text_given_media"] = 0.3  # one share for both media, before it was per medium
    assert Config.from_dict(d).diffusion.text_given_media == PerMedium(0.3, 0.3)
    d["sample"]["bogus"] = 1
    import pytest

    with pytest.raises(ValueError, match="bogus"):
        Config.from_dict(d)


def test_variable_length_tuples(tmp_path):
    """tuple[int, ...] fields take any non-empty comma list and survive the JSON round trip."""
    cfg = demo().override(["data.tinyworld.image_fsq_levels=4,4,4"])
    assert cfg.data.tinyworld.image_fsq_levels == (4, 4, 4)
    cfg.derive().to_json(tmp_path / "c.json")
    assert Config.from_json(tmp_path / "c.json").data.tinyworld.image_fsq_levels == (4, 4, 4)
    with pytest.raises(ValueError, match="image_fsq_levels: expected one or more"):
        demo().override(["data.tinyworld.image_fsq_levels=[]"])
    with pytest.raises(ValueError, match="image_fsq_levels: expected an integer"):
        demo().override(["data.tinyworld.image_fsq_levels=4,four"])


def test_image_fsq_levels_reach_the_tokenizer_and_name_a_new_data_directory():
    from trimdm.data.tinyworld.dataset import _hash, data_spec

    base, coarse = demo().data, demo().override(["data.tinyworld.image_fsq_levels=4,4,4"]).data
    assert data_spec(coarse)["image_tokenizer"]["fsq_levels"] == (4, 4, 4)
    assert "image_fsq_levels" not in data_spec(base)["tinyworld"]  # hashed once, under image_tokenizer
    assert data_spec(base)["image_tokenizer"]["fsq_levels"] == base.tinyworld.image_fsq_levels
    assert _hash(data_spec(base)) != _hash(data_spec(coarse))


@pytest.mark.parametrize("key, value", [("prepare_dtype", "bf16"), ("sizes", "large"),
                                        ("backgrounds", "white,light grey"), ("colors", "red,blue"),
                                        ("tokenizer_scenes", "100"), ("voices", "en-us+m3"),
                                        ("voice_jitter", "0")])
def test_later_tinyworld_knobs_name_a_new_data_directory_only_when_not_their_defaults(key, value):
    from trimdm.data.tinyworld.dataset import _hash, data_spec
    from trimdm.recipes import tiny_tri

    base, changed = tiny_tri().data, tiny_tri().override([f"data.tinyworld.{key}={value}"]).data
    assert key not in data_spec(base)["tinyworld"]  # directories prepared before keep their names
    assert key in data_spec(changed)["tinyworld"]
    assert _hash(data_spec(base)) != _hash(data_spec(changed))


def test_prepare_dtype_is_checked(tmp_path):
    from trimdm.data.prepare import prepare
    from trimdm.recipes import tiny_tri

    cfg = tiny_tri().override(["data.tinyworld.prepare_dtype=fp16"])
    with pytest.raises(ValueError, match="data.tinyworld.prepare_dtype='fp16'"):
        cfg.validate()
    for bad in ("sizes=huge", "backgrounds=white,white", "colors=red,pink"):
        with pytest.raises(ValueError, match=f"data.tinyworld.{bad}: expected distinct values among"):
            tiny_tri().override([f"data.tinyworld.{bad}"]).validate()
    # that a smaller world keeps a held-out pair is the data set's to say: prepare refuses it before writing
    cfg = tiny_tri().override(["data.tinyworld.colors=purple,cyan", f"data.root={tmp_path}"]).derive()
    with pytest.raises(ValueError, match="data.tinyworld.colors=purple,cyan keep none of the held-out pairs"):
        prepare(cfg.data)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="data.tinyworld.tokenizer_scenes=-1 must be >= 0"):
        tiny_tri().override(["data.tinyworld.tokenizer_scenes=-1"]).validate()
    for bad in ("voices=en-us+m1,en-us+m1", "voices=en-us+m2"):
        with pytest.raises(ValueError, match=re.escape(f"data.tinyworld.{bad}: expected distinct names among")):
            tiny_tri().override([f"data.tinyworld.{bad}"]).validate()
    with pytest.raises(ValueError, match=r"data.tinyworld.voice_jitter=1.5 must lie in \[0, 1\]"):
        tiny_tri().override(["data.tinyworld.voice_jitter=1.5"]).validate()


def test_the_default_world_is_the_whole_scene_vocabulary():
    from trimdm.config import TinyworldConfig
    from trimdm.data.tinyworld.scenes import BACKGROUNDS, COLORS, SIZES
    from trimdm.data.tinyworld.speech import VOICE_NAMES

    tw = TinyworldConfig()
    assert (tw.sizes, tw.backgrounds, tw.colors) == (SIZES, tuple(BACKGROUNDS), tuple(COLORS))
    assert (tw.voices, tw.voice_jitter) == (VOICE_NAMES, 1.0)


def test_configs_without_a_version_keep_their_decoding():
    """Before config versions an inference schedule X counted backwards: it reads as reverse-X (linear is
    its own reverse); a config of this version reads as written."""
    from trimdm.config import CONFIG_VERSION

    d = tiny().to_dict()
    assert d["version"] == CONFIG_VERSION
    del d["version"]
    for m, spec in (("text", "polynomial:2"), ("image", "cosine"), ("audio", "linear")):
        d["sample"][m]["schedule"] = spec
    del d["sample"]["audio"]["schedule"]  # a row without the key: the default of its time, cosine
    cfg = Config.from_dict(d)
    assert cfg.version == CONFIG_VERSION
    assert [cfg.sample[m].schedule for m in ("text", "image", "audio")] == [
        "reverse-polynomial:2", "reverse-cosine", "reverse-cosine"]
    assert Config.from_dict(cfg.to_dict()) == cfg  # converted once, not again
    legacy = {**tiny().to_dict(), "sample": {"steps": 12, "schedule": "cosine", "temperature": 0.9}}
    del legacy["version"]
    assert Config.from_dict(legacy).sample.text.schedule == "reverse-cosine"
    d["sample"]["audio"]["schedule"] = "linear"
    assert Config.from_dict(d).sample.audio.schedule == "linear"
    with pytest.raises(ValueError, match=f"version {CONFIG_VERSION + 1} is not one this trimdm reads"):
        Config.from_dict({**d, "version": CONFIG_VERSION + 1})
    with pytest.raises(ValueError, match="version is the config format's"):
        tiny().override(["version=0"])


def test_sidecar_settings_without_a_version_are_read_in_their_terms():
    import copy
    import dataclasses

    from trimdm.config import SampleConfig, section_from_dict, upgrade_sample

    new = dataclasses.asdict(tiny().sample)
    old = copy.deepcopy(new)
    for m in ("text", "image", "audio"):
        assert new[m]["schedule"] == "reverse-cosine"
        old[m]["schedule"] = "cosine"  # what a sidecar of an earlier version holds for the same decoding
    assert section_from_dict(SampleConfig, upgrade_sample(old, 0), "sample.") == tiny().sample
    assert upgrade_sample(new, 1) == new


def test_text_blocks_need_a_step_each_and_old_rows_decode_the_whole_span(monkeypatch):
    """sample.text.block splits sample.gen_len into blocks that each need a step; a sample row written
    before blocks existed reads as block 0 (the whole span), whatever today's default."""
    import dataclasses

    from trimdm.config import SAMPLING_DEFAULTS, SampleConfig, section_from_dict, upgrade_sample

    cfg = tiny().override(["sample.gen_len=64", "sample.text.steps=16", "sample.text.block=4"]).derive()
    assert cfg.sample.text.block == 4  # 16 blocks, 16 steps: one each
    with pytest.raises(ValueError, match="sample.text.steps=8 is fewer than the 16 blocks of sample.text.block=4"):
        tiny().override(["sample.gen_len=64", "sample.text.steps=8", "sample.text.block=4"]).derive()
    monkeypatch.setitem(SAMPLING_DEFAULTS, "text", {**SAMPLING_DEFAULTS["text"], "block": 16})
    legacy = {"steps": 12, "schedule": "cosine", "temperature": 0.9}  # version 0: no rows, no blocks
    assert section_from_dict(SampleConfig, upgrade_sample(legacy, 0), "sample.").text.block == 0
    row = dataclasses.asdict(tiny().sample)
    del row["text"]["block"]
    assert section_from_dict(SampleConfig, upgrade_sample(row, 1), "sample.").text.block == 0
    row["text"]["block"] = 8
    assert upgrade_sample(row, 1)["text"]["block"] == 8
