"""Judges (data/tinyworld/judges): text normalisation and CER on known strings, the image judge's scene decoding,
metrics and caption matching, shapes, save/load round trips, deterministic training, and a speech judge
whose output does not depend on the batch it is in."""
import json

import numpy as np
import pytest
import torch

from trimdm.data.tinyworld.judges import image as ij
from trimdm.data.tinyworld.judges import load_judges, settings
from trimdm.data.tinyworld.judges import speech as sj
from trimdm.data.tinyworld.scenes import Obj, Scene, render, sample_scenes
from trimdm.eval.stats import ratio_se


# -- text ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, norm", [
    ("Cursed be he that lieth with his father's wife.", "cursed be he that lieth with his father's wife"),
    ("  And God said,  Let there be light: and there was light. ",
     "and god said let there be light and there was light"),
    ("burnt-offering; 12 loaves!", "burnt offering loaves"),
    ("Über  café", "uber cafe"),
    ("", ""),
])
def test_normalize_text(raw, norm):
    assert sj.normalize_text(raw) == norm


def test_cer_on_known_strings():
    assert sj.cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert sj.cer(["A red circle."], ["a red circle"]) == 0.0  # normalised before comparing
    # totals, not a mean of ratios: (0 + 3) / (5 + 3)
    assert sj.cer(["hello", ""], ["hello", "a b"]) == pytest.approx(3 / 8)
    assert sj.cer(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    assert sj.cer(["an extra long hypothesis"], ["an"]) > 1.0  # insertions count
    with pytest.raises(ValueError, match="as many"):
        sj.cer(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no characters"):
        sj.cer(["a"], ["!?"])


def test_cer_and_se_matches_the_spread_of_cer_over_resampled_utterances():
    """Delta-method SE of the corpus CER against the empirical SD of CER over 400 resamples of 40
    utterances from a fixed population (seeded). The SD from 400 draws has a relative SE of about
    1/sqrt(2·399) ≈ 3.5%; the tolerance is three of those."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 60, 1000)
    errors = np.minimum(lengths, rng.binomial(lengths, rng.uniform(0.1, 0.9, 1000)))
    refs = ["a" * int(c) for c in lengths]
    hyps = ["a" * int(c - e) for c, e in zip(lengths, errors)]  # e deletions: edit distance e
    cers, ses = [], []
    for _ in range(400):
        idx = rng.integers(0, 1000, 40)
        h, r = [hyps[i] for i in idx], [refs[i] for i in idx]
        e, c = sj.edits(h, r)
        rate, se = float(e.sum() / c.sum()), ratio_se(e, c)
        assert rate == sj.cer(h, r)
        cers.append(rate)
        ses.append(se)
    assert np.mean(ses) == pytest.approx(np.std(cers, ddof=1), rel=3 * 0.035)
    assert ratio_se(*sj.edits(["ab", "ab"], ["ab", "ab"])) == 0.0 and np.isnan(ratio_se(*sj.edits(["a"], ["b"])))


def test_encode_text_uses_the_alphabet():
    ids = sj.encode_text("It's a cat")
    assert "".join(sj.ALPHABET[i - 1] for i in ids) == "it's a cat"
    assert min(ids) >= 1  # 0 is the CTC blank


# -- image judge -----------------------------------------------------------------------------------
def _scenes(n=6):
    return sample_scenes(n, "val", seed=3)


def _images(scenes):
    return np.stack([render(s, 32) for s in scenes])


def _small_image_cfg():
    return ij.ImageJudgeConfig(channels=(4, 8), hidden=8, pixel_channels=4)


def test_scene_targets():
    s = Scene((Obj("cross", "cyan", "small", 2, 1), Obj("circle", "red", "large", 0, 0)), "dark grey", 0)
    t = ij.scene_targets([s])
    assert t["occupied"][0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0]
    assert t["shape"][0, 7] == 3 and t["color"][0, 0] == 0 and t["size"][0, 0] == 1
    assert t["shape"][0, 4] == -1 and t["background"][0] == 3


class _Oracle:
    """A judge stand-in whose decisions are the true scenes, optionally with one cell's colour wrong."""

    def __init__(self, scenes, wrong_color=False):
        self.d = {k: v.numpy().copy() for k, v in ij.scene_targets(scenes).items()}
        if wrong_color:
            i, c = 0, int(np.flatnonzero(self.d["occupied"][0])[0])
            self.d["color"][i, c] = (self.d["color"][i, c] + 1) % 6

    def decisions(self, images):
        return self.d


def test_attribute_accuracy_counts_right_and_wrong():
    scenes = _scenes(8)
    images = _images(scenes)
    perfect = ij.attribute_accuracy(_Oracle(scenes), images, scenes)
    assert all(perfect[k] == 1.0 for k in ("shape", "color", "size", "location", "occupancy", "background",
                                           "attributes", "all_correct"))
    one_off = ij.attribute_accuracy(_Oracle(scenes, wrong_color=True), images, scenes)
    n_obj = sum(len(s.objects) for s in scenes)
    assert one_off["color"] == pytest.approx(1 - 1 / n_obj)
    assert one_off["all_correct"] == pytest.approx(7 / 8)
    assert one_off["attributes"] == pytest.approx(1 - 1 / (4 * n_obj + 8))


def test_predict_lists_objects_in_raster_order_and_none_when_not_a_scene():
    judge = ij.ImageJudge(_small_image_cfg())
    occ = np.zeros((3, 9), np.int64)
    occ[0, [8, 1]] = 1  # two objects: bottom right and top middle
    occ[2, [0, 1, 2]] = 1  # three objects: not a tinyworld scene (row 1 holds none)
    d = {"occupied": occ, "shape": np.full((3, 9), 2), "color": np.full((3, 9), 1), "size": np.zeros((3, 9), np.int64),
         "background": np.array([0, 1, 2])}
    judge.decisions = lambda images: d
    scenes = judge.predict(np.zeros((3, 32, 32, 3), np.uint8))
    assert [(o.row, o.col) for o in scenes[0].objects] == [(0, 1), (2, 2)]
    assert scenes[0].objects[0] == Obj("triangle", "green", "small", 0, 1) and scenes[0].background == "white"
    assert scenes[1] is None and scenes[2] is None


def test_judge_caption_accepts_any_object_order():
    a, b = Obj("circle", "red", "small", 0, 0), Obj("square", "blue", "large", 2, 2)
    seen = Scene((a, b), "white", 0)  # raster order, as predict gives it
    text = "a large blue square in the bottom right and a small red circle in the top left"
    assert ij.judge_caption(text, seen) == []
    assert ij.judge_caption("a blue square below a red circle", seen) == []
    assert ij.judge_caption("a large blue square above a red circle", seen)
    assert ij.judge_caption("a small green circle in the top left", Scene((a,), "white", 0))
    assert ij.judge_caption("a red circle", None)


def test_image_judge_shapes_and_save_load_round_trip(tmp_path):
    scenes = _scenes(5)
    images = _images(scenes)
    judge, report = ij.train_image_judge(images, scenes, _small_image_cfg(),
                                         ij.ImageJudgeTraining(min_steps=2, max_steps=2))
    assert report["steps"] == 2
    feats = judge.features(images)
    assert feats.shape == (5, judge.cfg.feature_dim) and feats.dtype == torch.float32
    assert len(judge.predict(images)) == 5
    judge.save(tmp_path / "j")
    meta = json.loads((tmp_path / "j" / "config.json").read_text())
    assert meta["format"] == "trimdm.image_judge" and meta["config"]["channels"] == [4, 8]
    again = ij.ImageJudge.load(tmp_path / "j")
    assert torch.equal(again.features(images), feats)
    assert {k: v.tolist() for k, v in again.decisions(images).items()} == \
        {k: v.tolist() for k, v in judge.decisions(images).items()}
    with pytest.raises(ValueError, match="uint8"):
        judge.features(images.astype(np.float32))


@pytest.mark.parametrize("bf16", [False, True])
def test_image_judge_training_is_deterministic_and_uses_reconstructions(bf16):
    scenes = _scenes(8)
    images = _images(scenes)
    t = ij.ImageJudgeTraining(min_steps=3, max_steps=3, recon_fraction=0.5)
    calls = []

    def reconstruct(x):
        calls.append(len(x))
        return 255 - x

    a, rep = ij.train_image_judge(images, scenes, _small_image_cfg(), t, reconstruct=reconstruct, bf16=bf16)
    b, _ = ij.train_image_judge(images, scenes, _small_image_cfg(), t, reconstruct=reconstruct, bf16=bf16)
    assert calls == [4, 4] and rep["reconstructions"] == 4 and rep["train_images"] == 8
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k
        assert not va.is_floating_point() or va.dtype == torch.float32, k


def test_image_judge_rejects_bad_input(tmp_path):
    scenes = _scenes(2)
    with pytest.raises(ValueError, match="as many scenes"):
        ij.train_image_judge(_images(scenes), scenes[:1])
    with pytest.raises(ValueError, match="Scene"):
        ij.train_image_judge(_images(scenes), [None, None])
    with pytest.raises(ValueError, match="config"):
        ij.ImageJudge.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "trimdm.speech_judge", "config": {}}))
    with pytest.raises(ValueError, match="image_judge"):
        ij.ImageJudge.load(tmp_path)


def test_permuted_channels_drop_colour_targets():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    tgt = {"color": torch.tensor([[1, -1], [2, -1]]), "background": torch.tensor([0, 3])}
    y, t = ij._permute_channels(x, tgt, 1.0, torch.Generator().manual_seed(0))
    for b in range(2):
        assert sorted(y[b].flatten().tolist()) == sorted(x[b].flatten().tolist()) and not torch.equal(y[b], x[b])
    assert (t["color"] == -1).all() and (t["background"] == -1).all()
    y, t = ij._permute_channels(x, tgt, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(y, x) and torch.equal(t["color"], tgt["color"])


# -- speech judge ----------------------------------------------------------------------------------
def _waves(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(int(16000 * (0.4 + 0.3 * i))) / 16000
        out.append((0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32))
    return out


def _small_speech_cfg():
    return sj.SpeechJudgeConfig(channels=16, dilations=(1, 2))


def test_speech_judge_shapes_batching_and_save_load_round_trip(tmp_path):
    waves, texts = _waves(), ["a red circle", "go", "a cat", "amen"]
    judge, report = sj.train_speech_judge(waves, texts, _small_speech_cfg(),
                                          sj.SpeechJudgeTraining(min_steps=3, max_steps=3))
    assert report["steps"] == 3 and report["kept"] == 4
    hyps = judge.transcribe(waves)
    assert len(hyps) == 4 and all(isinstance(h, str) and h == sj.normalize_text(h) for h in hyps)
    feats = judge.features(waves)
    assert feats.shape == (4, judge.cfg.feature_dim)
    # an utterance's output does not depend on the other utterances padded into its batch
    alone = torch.cat([judge.features([w]) for w in waves])
    torch.testing.assert_close(alone, feats, rtol=1e-5, atol=1e-5)
    assert [judge.transcribe([w])[0] for w in waves] == hyps
    judge.save(tmp_path / "s")
    again = sj.SpeechJudge.load(tmp_path / "s")
    assert torch.equal(again.features(waves), feats) and again.transcribe(waves) == hyps
    assert torch.equal(again.net.mel_mean, judge.net.mel_mean)


@pytest.mark.parametrize("bf16", [False, True])
def test_speech_judge_training_is_deterministic(bf16):
    waves, texts = _waves(3), ["abc", "de", "f g"]
    t = sj.SpeechJudgeTraining(min_steps=2, max_steps=2)
    a, _ = sj.train_speech_judge(waves, texts, _small_speech_cfg(), t, bf16=bf16)
    b, _ = sj.train_speech_judge(waves, texts, _small_speech_cfg(), t, bf16=bf16)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k
        assert not va.is_floating_point() or va.dtype == torch.float32, k


def test_speech_judge_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="as many"):
        sj.train_speech_judge(_waves(2), ["a"])
    with pytest.raises(ValueError, match="no utterance"):
        sj.train_speech_judge(_waves(1), ["!!!"])
    judge = sj.SpeechJudge(_small_speech_cfg())
    with pytest.raises(ValueError, match="1-D"):
        judge.transcribe([np.zeros((2, 100), np.float32)])
    judge.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "alphabet": "abc"}))
    with pytest.raises(ValueError, match="alphabet"):
        sj.SpeechJudge.load(tmp_path)


def test_settings_are_json_and_load_judges_needs_the_stage(tmp_path):
    s = settings()
    assert json.loads(json.dumps(s)) == s and set(s) == {"image", "speech"}
    with pytest.raises(ValueError, match="judges"):
        load_judges(tmp_path)


def test_image_loss_is_finite_when_a_batch_has_no_colour_targets():
    out = {"occupied": torch.zeros(2, 9, 2), "shape": torch.zeros(2, 9, 4), "color": torch.zeros(2, 9, 6),
           "size": torch.zeros(2, 9, 2), "background": torch.zeros(2, 4)}
    tgt = ij.scene_targets(_scenes(2))
    tgt["color"][:] = -1
    tgt["background"][:] = -1
    assert torch.isfinite(ij._loss(out, tgt))
