"""Smoke tier for the tri-modal path: tinyworld prepare (stages, caching, rebuilds, bad input) and a
tiny tri-modal run with per-modality and conditional NELBOs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trimdm.data.prepare import prepare
from trimdm.recipes import tiny_tri
from trimdm.train.metrics import read_metrics
from trimdm.train.trainer import train


def cfg_for(root, *overrides):
    return tiny_tri().override([f"data.root={root}", *overrides]).derive()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tw")
    logs = []
    data = prepare(cfg_for(root).data, log=logs.append)
    return root, data, logs


def test_prepare_builds_three_stages_and_a_report(prepared):
    root, data, logs = prepared
    for stage in ("raw", "tokenizers", "shards"):
        assert (data.directory / stage / "manifest.json").exists()
    report = json.loads((data.directory / "prepare_report.json").read_text())
    assert report["raw"]["images"]["train"] == 200
    assert report["tokenizers"]["audio"]["frames_per_second"] == 25.0
    assert set(report["tokens_per_row"]) == {"image_text", "audio_text"}
    vocab = data.vocab()
    assert vocab.n_image == data.tokenizers["image"].codebook_sizes[0]
    assert (vocab.audio_levels, vocab.audio_codebook) == (4, data.tokenizers["audio"].codebook_sizes[0])


def test_prepare_is_idempotent(prepared):
    root, data, _ = prepared
    stamp = {p: p.stat().st_mtime_ns for p in data.directory.rglob("manifest.json")}
    logs = []
    again = prepare(cfg_for(root).data, log=logs.append)
    assert not [line for line in logs if "built" in line or "rebuilding" in line]
    assert {p: p.stat().st_mtime_ns for p in again.directory.rglob("manifest.json")} == stamp


def test_a_deleted_shard_is_detected_and_rebuilt_identically(prepared, tmp_path):
    root, data, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    directory = copy / data.directory.name
    before = json.loads((directory / "shards" / "manifest.json").read_text())["files"]
    (directory / "shards" / "train.image_text.image.tokens.bin").unlink()
    logs = []
    rebuilt = prepare(cfg_for(copy).data, log=logs.append)
    assert any("rebuilding" in line and "shards" in line for line in logs)
    assert not any("tokenizers" in line and "built" in line for line in logs)  # earlier stages kept
    after = json.loads((rebuilt.directory / "shards" / "manifest.json").read_text())["files"]
    assert after == before  # deterministic: the same bytes come back



def test_a_copy_without_training_media_loads_without_rebuilding(prepared, tmp_path):
    """Only raw/manifest.json and the val folders travel (e.g. to a GPU machine): nothing is rebuilt."""
    root, data, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    raw = copy / data.directory.name / "raw"
    for folder in raw.iterdir():
        if folder.is_dir() and not folder.name.endswith("_val"):
            shutil.rmtree(folder)
    logs = []
    loaded = prepare(cfg_for(copy).data, log=logs.append)
    assert not [line for line in logs if "built" in line or "rebuilding" in line]
    assert loaded.manifest == data.manifest
    # a stage that must be rebuilt needs the training media: the error names what is missing
    (copy / data.directory.name / "shards" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="images_train.*not found"):
        prepare(cfg_for(copy).data)

def _user_folders(data_dir: Path, tmp: Path) -> tuple[Path, Path]:
    images, speech = tmp / "images", tmp / "speech"
    shutil.copytree(data_dir / "raw" / "images_train", images)
    shutil.copytree(data_dir / "raw" / "speech_train", speech)
    png = images / "images" / "000003.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated PNG
    lines = (images / "captions.jsonl").read_text().splitlines()
    rec = json.loads(lines[5])
    rec["caption"] = " "
    lines[5] = json.dumps(rec)  # empty caption
    (images / "captions.jsonl").write_text("\n".join(lines) + "\n")
    wav = speech / "wavs" / "000001.wav"
    wav.write_bytes(wav.read_bytes()[:200])  # truncated WAV
    return images, speech


def test_bad_user_files_are_skipped_and_counted(prepared, tmp_path):
    root, data, _ = prepared
    images, speech = _user_folders(data.directory, tmp_path)
    cfg = cfg_for(tmp_path / "data", f"data.tinyworld.images_dir={images}", f"data.tinyworld.speech_dir={speech}",
                  "data.tinyworld.max_seconds=2.0")
    out = prepare(cfg.data, log=lambda *a: None)
    read = json.loads((out.directory / "prepare_report.json").read_text())["read"]["train"]
    assert read["images"]["skipped_corrupt"] == 1 and read["images"]["skipped_empty_caption"] == 1
    assert read["images"]["read"] == 198
    assert read["speech"]["skipped_corrupt"] == 1 and read["speech"]["skipped_too_long"] >= 1


def test_strict_stops_with_the_file_named_and_keeps_what_was_prepared(prepared, tmp_path):
    root, data, _ = prepared
    images, speech = _user_folders(data.directory, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    # same data set, now pointed at the damaged user folders: the tokenizers stage must rebuild, and fails
    cfg = cfg_for(copy, f"data.tinyworld.images_dir={images}", "data.strict=true")
    directory = copy / prepare(cfg_for(copy).data, log=lambda *a: None).directory.name
    manifests = {p: p.read_bytes() for p in directory.rglob("manifest.json")}
    with pytest.raises(ValueError, match="000003.png"):
        prepare(cfg.data, log=lambda *a: None)
    other = copy / prepare(cfg_for(copy).data, log=lambda *a: None).directory.name
    assert other == directory and {p: p.read_bytes() for p in directory.rglob("manifest.json")} == manifests


def test_tri_modal_training_and_conditional_eval(prepared, tmp_path):
    root, _, _ = prepared
    run = tmp_path / "run"
    train(cfg_for(root, "train.eval_every=10"), run, log=lambda *a: None)
    records = read_metrics(run / "metrics.jsonl")
    assert all(k in records[-1] for k in ("nelbo_text", "nelbo_image", "nelbo_audio", "val_nelbo_image",
                                          "val_nelbo_audio"))
    out = subprocess.run([sys.executable, "-m", "trimdm", "eval", "--run", str(run)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads((run / "eval.json").read_text())
    assert set(result["nelbo"]) == {"text", "image", "audio"}
    assert set(result["conditional_nelbo"]) == {"image|text", "text|image", "audio|text", "text|audio"}
    assert np.isfinite([v["bits_per_token"] for v in result["conditional_nelbo"].values()]).all()


def test_a_failing_tokenizers_stage_stops_both_workers(prepared, tmp_path, monkeypatch):
    from trimdm.data.tinyworld import dataset
    from trimdm.tokenizers.text import TextTokenizer

    root, data, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / data.directory.name / "tokenizers" / "manifest.json").unlink()
    started = []
    start = dataset._start_worker
    monkeypatch.setattr(dataset, "_start_worker", lambda *a, **k: started.append(start(*a, **k)) or started[-1])

    def broken(*args, **kwargs):
        raise RuntimeError("BPE broke")

    monkeypatch.setattr(TextTokenizer, "train", broken)  # fails while the image and audio workers train
    with pytest.raises(RuntimeError, match="BPE broke"):
        prepare(cfg_for(copy).data, log=lambda *a: None)
    assert len(started) == 2 and all(proc.returncode is not None for proc in started)


def test_fewer_codec_levels_in_the_token_stream(prepared, tmp_path):
    """data.tinyworld.audio_emit_levels=2: the codec's two coarsest levels are the audio tokens (its own
    directory; all levels, or the default, keep the default's), half the tokens per frame."""
    root, data, _ = prepared
    assert prepare(cfg_for(root, "data.tinyworld.audio_emit_levels=4").data, log=lambda *a: None).directory == \
        data.directory
    two = prepare(cfg_for(root, "data.tinyworld.audio_emit_levels=2").data, log=lambda *a: None)
    assert two.directory != data.directory
    assert two.vocab().audio_levels == 2 and data.vocab().audio_levels == 4
    for split in ("train", "val"):
        a, b = two._shard(f"{split}.audio_text.audio"), data._shard(f"{split}.audio_text.audio")
        for i in range(3):
            full, coarse = b.doc(i).reshape(-1, 4), a.doc(i).reshape(-1, 2)
            assert np.array_equal(coarse, full[:, :2])  # the same codec, its coarsest two levels


def test_prepare_writes_a_multiple_choice_file_and_refuses_to_overwrite(prepared, tmp_path, capsys):
    from trimdm.cli import main

    root, data, _ = prepared
    path = tmp_path / "mc.jsonl"
    args = ["prepare", "--recipe", "tiny_tri", "--mc", str(path), "--mc-questions", "3", f"data.root={root}"]
    assert main(args) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [("image" in r, "audio" in r) for r in rows] == [(True, False)] * 3 + [(False, True)] * 3
    for r in rows:
        assert len(r["options"]) == 4 and 0 <= r["answer"] < 4 and (path.parent / (r.get("image") or r["audio"])).exists()
    before = path.read_bytes()
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert path.read_bytes() == before  # nothing already written is lost
    assert main(["prepare", "--recipe", "tiny", "--mc", str(tmp_path / "x.jsonl"), f"data.root={root}"]) == 2
    assert "tinyworld" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()
