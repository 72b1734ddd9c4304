"""Smoke tier for multiple-choice evaluation (method §9): the JSONL reader's errors, a question file from
tinyworld's val split, and `run_multiple_choice` on a tiny trained tri-modal checkpoint."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trimdm.data.tinyworld.questions import write_tinyworld_mc
from trimdm.data.tinyworld.scenes import Scene, caption_errors
from trimdm.eval.multiple_choice import read_questions, run_multiple_choice
from trimdm.train.run import load_run


# -- the reader ----------------------------------------------------------------------------------------
def _write(tmp_path, *records, name="q.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


GOOD = {"context": "the sky is", "options": [" blue", " green"], "answer": 0}


@pytest.mark.parametrize("record,message", [
    ({"options": ["a", "b"], "answer": 0}, "missing key.*context"),
    ({"context": "c", "options": ["a", "b"]}, "missing key.*answer"),
    ({**GOOD, "answer": 2}, r"'answer' must be an int in \[0, 2\)"),
    ({**GOOD, "answer": -1}, "'answer' must be"),
    ({**GOOD, "answer": True}, "'answer' must be"),
    ({**GOOD, "options": ["only one"]}, "at least 2 non-empty"),
    ({**GOOD, "options": ["a", ""]}, "at least 2 non-empty"),
    ({**GOOD, "options": "a b"}, "at least 2 non-empty"),
    ({**GOOD, "context": 3}, "'context' must be a string"),
    ({**GOOD, "image": "missing.png"}, "image file .*missing.png not found"),
    ({**GOOD, "image": "x.png", "audio": "y.wav"}, "at most one"),
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_reader_names_file_and_line(tmp_path, record, message):
    path = _write(tmp_path, GOOD, "", record)  # the bad record is on line 3
    with pytest.raises(ValueError, match=message) as err:
        read_questions(path)
    assert f"{path}:3" in str(err.value)


def test_reader_rejects_unreadable_media_and_empty_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match=r"q.jsonl:1: .*bad.png: not a readable image"):
        read_questions(_write(tmp_path, {**GOOD, "image": "bad.png"}))
    with pytest.raises(ValueError, match=r"q.jsonl:2: .*bad.wav: not a readable audio file"):
        read_questions(_write(tmp_path, GOOD, {**GOOD, "audio": "bad.wav"}))
    with pytest.raises(ValueError, match="no questions"):
        read_questions(_write(tmp_path, "", "  "))
    with pytest.raises(ValueError, match="cannot read"):
        read_questions(tmp_path / "absent.jsonl")


def test_reader_resolves_media_relative_to_the_file(tmp_path):
    (tmp_path / "media").mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "media" / "a.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    q = read_questions(_write(sub, {**GOOD, "image": "../media/a.png"}))[0]
    assert q.kind == "image" and q.media.shape == (8, 8, 3) and q.media.flags.writeable


# -- a tiny trained tri-modal run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_tri_run):
    data_dir, run = tiny_tri_run
    return data_dir, load_run(run)


def test_write_tinyworld_mc_is_deterministic_with_checked_distractors(tiny_run, tmp_path):
    data_dir, _ = tiny_run
    path = write_tinyworld_mc(data_dir, tmp_path / "a" / "mc.jsonl", n_image=10, n_audio=6, seed=3)
    again = write_tinyworld_mc(data_dir, tmp_path / "a" / "mc2.jsonl", n_image=10, n_audio=6, seed=3)
    other = write_tinyworld_mc(data_dir, tmp_path / "a" / "mc3.jsonl", n_image=10, n_audio=6, seed=4)
    assert path.read_text() == again.read_text() != other.read_text()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [("image" in r, "audio" in r) for r in records] == [(True, False)] * 10 + [(False, True)] * 6
    scenes = {json.loads(line)["file"]: Scene.from_json(json.loads(line)["scene"])
              for line in (data_dir / "raw" / "images_val" / "captions.jsonl").read_text().splitlines()}
    for r in records:
        assert len(r["options"]) == 4 == len(set(r["options"])) and 0 <= r["answer"] < 4
        assert (path.parent / r.get("image", r.get("audio"))).is_file()
        if "image" in r:
            scene = scenes[str(Path(r["image"]).relative_to(Path(r["image"]).parents[1]))]
            assert not caption_errors(r["options"][r["answer"]], scene)
            assert all(caption_errors(o, scene) for k, o in enumerate(r["options"]) if k != r["answer"])
    with pytest.raises(ValueError, match="asked for 99 image questions"):
        write_tinyworld_mc(data_dir, tmp_path / "b.jsonl", n_image=99)


def test_run_multiple_choice_on_a_tiny_checkpoint(tiny_run, tmp_path):
    data_dir, loaded = tiny_run
    path = write_tinyworld_mc(data_dir, tmp_path / "mc.jsonl", seed=0)
    n_questions = len(path.read_text().splitlines())
    result = run_multiple_choice(loaded, path, n_samples=8, seed=0, batch_size=64)
    assert result["questions"] == n_questions and result["chance"] == 0.25 and result["n_samples"] == 8
    assert set(result["by_kind"]) == {"image", "audio"}
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["accuracy_per_token"] <= 1
    for p in result["per_question"]:
        assert p["prediction"] == int(np.argmax(p["loglik"])) and p["correct"] == (p["prediction"] == p["answer"])
        assert np.isfinite(p["loglik"]).all() and max(p["loglik"]) < 0 and np.all(np.array(p["stderr"]) > 0)
    assert np.mean([p["correct"] for p in result["per_question"]]) == result["accuracy"]
    again = run_multiple_choice(loaded, path, n_samples=8, seed=0, batch_size=64)
    assert [p["loglik"] for p in again["per_question"]] == [p["loglik"] for p in result["per_question"]]


def test_run_multiple_choice_on_text_questions_and_its_errors(tiny_run, tmp_path):
    data_dir, loaded = tiny_run
    text = _write(tmp_path, {"context": "In the beginning God created", "options": [" the heaven", " a red circle",
                                                                                   " the heaven and the earth"],
                             "answer": 2}, GOOD, name="text.jsonl")
    result = run_multiple_choice(loaded, text, n_samples=4)
    assert set(result["by_kind"]) == {"text"} and result["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert [p["answer_tokens"][0] for p in result["per_question"]][1] == len(loaded.tokenizer.encode(" blue")) + 1
    too_long = _write(tmp_path, GOOD, {**GOOD, "options": ["a", "word " * 400]}, name="long.jsonl")
    with pytest.raises(ValueError, match=r"long.jsonl:2: option 1 gives a text row of \d+ tokens.*seq_len=384"):
        run_multiple_choice(loaded, too_long, n_samples=4)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    wrong_size = _write(tmp_path, {**GOOD, "image": "small.png"}, name="size.jsonl")
    with pytest.raises(ValueError, match=r"size.jsonl:1: image small.png"):
        run_multiple_choice(loaded, wrong_size, n_samples=4)
    wav = sorted((data_dir / "raw" / "speech_val" / "wavs").glob("*.wav"))[0]
    shutil.copy(wav, tmp_path / "u.wav")
    long_audio = _write(tmp_path, {**GOOD, "options": ["a", "word " * 300], "audio": "u.wav"}, name="la.jsonl")
    with pytest.raises(ValueError, match=r"la.jsonl:1: option 1: paired audio row needs"):
        run_multiple_choice(loaded, long_audio, n_samples=4)



def test_the_world_of_a_data_set_comes_from_its_spec(tmp_path):
    from trimdm.data.tinyworld.questions import _world
    from trimdm.data.tinyworld.scenes import COLORS, SIZES

    assert _world(tmp_path) == {"colors": tuple(COLORS), "sizes": SIZES}  # no spec: the whole vocabulary
    (tmp_path / "spec.json").write_text('{"tinyworld": {"colors": ["red", "blue"], "sizes": ["large"]}}')
    assert _world(tmp_path) == {"colors": ("red", "blue"), "sizes": ("large",)}
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(ValueError, match="spec.json: not a prepared data set's spec"):
        _world(tmp_path)
