"""Smoke tier for the judges stage of tinyworld prepare: on the miniature data set of `tiny_tri` the
judges train in seconds, reach the accuracy measured for them, reload from disk with the same numbers,
and the stage is keyed to the tokenizers and the judge defaults only.

Thresholds (measured 2026-11-27, one thread, default settings; docs/judges.md): the stage's image judge
has attribute accuracy 0.78 on the 24 clean val scenes and the speech judge CER 0.70 on the 12 val
utterances. Judges that learned nothing score attributes 0.20-0.46 (untrained, three seeds) or
0.20-0.25 (trained on shuffled scenes) and CER 0.91-0.98. The thresholds sit between the two with a
margin of 0.13-0.15 for another machine's floating point.
"""
import json
import shutil

import numpy as np
import pytest

from trimdm.data.prepare import prepare
from trimdm.data.tinyworld import dataset
from trimdm.data.tinyworld import scenes as sc
from trimdm.data.tinyworld.judges import image as ij
from trimdm.data.tinyworld.judges import speech as sj
from trimdm.data.tinyworld.questions import write_tinyworld_mc
from trimdm.data.tinyworld.scenes import read_image_folder
from trimdm.data.tinyworld.speech import read_speech_folder
from trimdm.recipes import tiny_tri
from trimdm.train.trainer import train

IMAGE_ATTRIBUTES_MIN = 0.65
SPEECH_CER_MAX = 0.85


@pytest.fixture(scope="module")
def tiny(data_root):
    return prepare(tiny_tri().override([f"data.root={data_root}"]).derive().data, log=lambda *a: None)


def test_judges_reach_their_measured_accuracy(tiny):
    report = json.loads((tiny.directory / "prepare_report.json").read_text())["judges"]
    assert report["image"]["val"]["attributes"] >= IMAGE_ATTRIBUTES_MIN
    assert report["speech"]["val"]["cer"] <= SPEECH_CER_MAX
    assert set(report["image"]["reconstructed_val"]) >= {"attributes", "all_correct"}
    assert 0 <= report["speech"]["reconstructed_val"]["cer"]
    assert "| speech: character error rate |" in (tiny.directory / "prepare_report.md").read_text()


def test_loaded_judges_reproduce_the_stage_numbers(tiny):
    judges = tiny.judges()
    stage = tiny.judge_report()
    items, _ = read_image_folder(tiny.directory / "raw" / "images_val")
    images, scenes = np.stack([i for i, _, _ in items]), [s for _, _, s in items]
    assert ij.attribute_accuracy(judges["image"], images, scenes) == pytest.approx(stage["image"]["val"])
    speech, _ = read_speech_folder(tiny.directory / "raw" / "speech_val", max_seconds=3.0)
    heard = judges["speech"].transcribe([w for w, _ in speech])
    assert sj.cer(heard, [t for _, t in speech]) == pytest.approx(stage["speech"]["val"]["cer"])
    assert judges["image"].features(images).shape == (len(images), judges["image"].cfg.feature_dim)


def test_the_stage_is_keyed_to_tokenizers_and_judge_defaults(tiny, monkeypatch):
    manifest = json.loads((tiny.directory / "judges" / "manifest.json").read_text())
    assert manifest["upstream"] == dataset._judges_upstream(tiny.directory)
    from trimdm.data.tinyworld import judges

    real = judges.settings()
    changed = json.loads(json.dumps(real))
    changed["speech"]["training"]["lr"] *= 2
    monkeypatch.setattr(dataset, "settings", lambda: changed)
    assert dataset._judges_upstream(tiny.directory) != manifest["upstream"]  # a changed default rebuilds it
    # the data directory's name hashes the data spec only: judge settings never move a data set
    assert "judge" not in (tiny.directory / "spec.json").read_text()


def _without_judges(tiny, tmp_path):
    """A copy of the prepared data set whose judges stage is gone, and a tiny_tri config on it."""
    copy = tmp_path / "data"
    shutil.copytree(tiny.directory, copy / tiny.directory.name)
    shutil.rmtree(copy / tiny.directory.name / "judges")
    return copy / tiny.directory.name, tiny_tri().override([f"data.root={copy}", "train.tokens=6144"]).derive()


def test_training_prepares_no_judges_and_the_next_prepare_builds_the_same(tiny, tmp_path):
    directory, cfg = _without_judges(tiny, tmp_path)
    train(cfg, tmp_path / "run", log=lambda *a: None, progress=False)
    assert (tmp_path / "run" / "checkpoints").is_dir() and not (directory / "judges").exists()
    prepare(cfg.data, log=lambda *a: None)  # what eval does first
    built = json.loads((directory / "judges" / "manifest.json").read_text())
    inline = json.loads((tiny.directory / "judges" / "manifest.json").read_text())
    assert built["upstream"] == inline["upstream"]
    for kind in ("image", "speech"):  # single-thread workers: the same numbers as the first build
        assert built[kind]["val"] == inline[kind]["val"]
        assert built[kind]["reconstructed_val"] == inline[kind]["reconstructed_val"]
    assert "| speech: character error rate |" in (directory / "prepare_report.md").read_text()


def test_a_failing_shards_stage_stops_the_judges_beside_it_and_leaves_no_stage(tiny, tmp_path, monkeypatch):
    directory, cfg = _without_judges(tiny, tmp_path)
    (directory / "shards" / "manifest.json").unlink()  # the shards rebuild while the judges train
    started = []
    start = dataset._start_worker
    monkeypatch.setattr(dataset, "_start_worker", lambda *a, **k: started.append(start(*a, **k)) or started[-1])

    def broken(*args, **kwargs):
        raise RuntimeError("shards broke")

    monkeypatch.setattr(dataset, "_build_shards", broken)
    with pytest.raises(RuntimeError, match="shards broke"):
        prepare(cfg.data, log=lambda *a: None)
    assert len(started) == 2 and all(proc.returncode is not None for proc in started)
    assert not (directory / "judges").exists() and not list(directory.glob("judges.tmp-*"))
    monkeypatch.undo()
    prepare(cfg.data, log=lambda *a: None)  # the next prepare builds both stages as usual
    assert (directory / "judges" / "manifest.json").exists() and (directory / "shards" / "manifest.json").exists()


def test_a_smaller_world_at_another_size_prepares_in_bf16(data_root, tmp_path):
    """The demo's kind of data set: a smaller scene vocabulary, 24-pixel images (the judge is built at
    the data set's size) and tokenizers and judges trained under bf16 autocast; multiple-choice
    distractors stay inside its world; the image tokenizer also trains on its own unlabeled scenes of every
    composition, which no split holds."""
    cfg = tiny_tri().override([f"data.root={data_root}", "data.tinyworld.image_size=24",
                               "data.tinyworld.prepare_dtype=bf16", "data.tinyworld.sizes=large",
                               "data.tinyworld.backgrounds=white", "data.tinyworld.colors=red,green,blue",
                               "data.tinyworld.tokenizer_scenes=40"])
    data = prepare(cfg.derive().data, log=lambda *a: None)
    items, _ = read_image_folder(data.directory / "raw" / "images_val")
    images, scenes = np.stack([i for i, _, _ in items]), [s for _, _, s in items]
    assert images.shape[1:] == (24, 24, 3)
    assert {s.background for s in scenes} == {"white"}
    assert {o.size for s in scenes for o in s.objects} == {"large"}
    assert {o.color for s in scenes for o in s.objects} <= {"red", "green", "blue"}
    tokenizer = json.loads((data.directory / "prepare_report.json").read_text())["tokenizers"]["image"]
    n_train = len(read_image_folder(data.directory / "raw" / "images_train")[0])
    assert tokenizer["tokenizer_scenes"] == 40 and tokenizer["train_images"] == n_train + 40
    extra = dataset.tokenizer_scenes(cfg.data.tinyworld)
    assert any(sc.has_heldout_pair(s) for s in extra) and not set(extra) & set(scenes)
    assert {o.color for s in extra for o in s.objects} <= {"red", "green", "blue"}
    judges = data.judges()
    assert judges["image"].cfg.image_size == 24
    report = data.judge_report()["image"]["val"]
    assert ij.attribute_accuracy(judges["image"], images, scenes) == pytest.approx(report)
    path = write_tinyworld_mc(data.directory, tmp_path / "mc.jsonl", n_image=12, n_audio=0, seed=0)
    words = {w for line in path.read_text().splitlines() for o in json.loads(line)["options"] for w in o.split()}
    assert not words & {"small", "yellow", "purple", "cyan"} and {"red", "green", "blue"} & words
