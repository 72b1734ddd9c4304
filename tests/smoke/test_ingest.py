"""`trimdm prepare --text/--image-text/--audio-text`: a corpus of the user's own data, end to end.

Fixtures are written by tests/corpora.py (webdataset tars, an image folder of mixed modes and sizes, a
LibriSpeech tree and a manifest of eSpeak speech, text files), with corrupt members. Checked: counts per
kind, every reject reason, a split that stays put when data is added, resuming to byte-identical shards,
the same shards for any worker count, errors before any work, training on the corpus and generating
from the run (an input photo of any size)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import corpora
from trimdm import cli
from trimdm.config import CorpusConfig
from trimdm.data import records
from trimdm.data.corpus import load_corpus
from trimdm.data.ingest import prepare_corpus
from trimdm.eval.run import evaluate_run
from trimdm.recipes import get_recipe
from trimdm.sample.run import generate
from trimdm.train.trainer import train

# small and fast: 16 px images as 4×4 tokens, a 2-level codec, a 300-token BPE, shards of 4 samples
TINY = ["tokenizers.image.resolution=16", "tokenizers.image.downsample=4", "tokenizers.image.steps=3",
        "tokenizers.image.batch=4", "tokenizers.audio.steps=2", "tokenizers.audio.batch=2",
        "tokenizers.audio.levels=2", "tokenizers.text.vocab=300", "ingest.shard_samples=4",
        "ingest.val_fraction=0.25"]


def settings(*extra: str) -> CorpusConfig:
    return CorpusConfig().override([*TINY, *extra])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    text = corpora.write_text_files(root / "text")
    many = root / "text" / "many.jsonl"  # enough text for a few rows
    many.write_text("".join(json.dumps({"text": corpora.document(i)}) + "\n" for i in range(200)))
    hf = corpora.write_hf_text_dataset(root / "hf", splits=True)
    return {"text": [str(text["jsonl"]), str(text["json"]), str(text["parquet"]), str(root / "text" / "notes"),
                     str(many), str(hf)],
            "image_text": [str(root / "tars" / "shard-{000..001}.tar"), str(root / "folder"),
                           str(corpora.write_image_parquet(root / "pq", 5))],
            "audio_text": [str(root / "libri"), str(root / "manifest" / "manifest.csv"),
                           str(root / "speech" / "speech-*.tar")],
            "_make": (corpora.write_image_tars(root / "tars", 6, 2, corrupt=True),
                      corpora.write_imagefolder(root / "folder", 6, corrupt=True),
                      corpora.write_librispeech(root / "libri", speakers=2, utterances=3, corrupt=True),
                      corpora.write_audio_manifest(root / "manifest", fmt="csv", n=4, corrupt=True),
                      corpora.write_audio_tars(root / "speech", 3, 2, corrupt=True))}


def specs(sources) -> dict:
    return {k: v for k, v in sources.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def corpus(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    prepare_corpus(out, specs(sources), settings(), log=lambda *a: None)
    return out


def shard_bytes(corpus_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((corpus_dir / "shards").iterdir()) if p.suffix != ".json"}


def test_counts_and_every_reject_reason(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    samples = manifest["samples"]
    rejects = [json.loads(line) for line in (corpus / "rejects.jsonl").read_text().splitlines()]
    for kind, n in samples.items():
        kind_rejects = [r for r in rejects if any(r["source"] == s for s in specs_of(corpus)[kind])]
        assert n["train"] + n["val"] + len(kind_rejects) == n["read"], kind
        assert n["train"] > 0 and n["val"] > 0, kind
    reasons = {r["reason"].split(":")[0] for r in rejects}
    expected = {"corrupt image", "empty caption", "non-UTF-8 text", "corrupt tar", "missing caption",
                "corrupt audio", "missing audio file", "missing transcript", "empty transcript",
                "missing audio field", "empty document", "missing document"}
    assert expected <= reasons, expected - reasons
    assert all(r["key"] and r["source"] for r in rejects)
    assert sum(manifest["rejects"].values()) == manifest["rejected"] == len(rejects)
    report = (corpus / "prepare_report.md").read_text()
    assert "corrupt image" in report and "Rejected" in report
    # every shard file is listed with its SHA-256 and the corpus opens
    data = load_corpus(corpus)
    assert set(data.manifest["files"]) == {f"shards/{p.name}" for p in (corpus / "shards").iterdir()
                                           if not p.name.endswith(".json")}
    assert data.vocab().n_image == data.tokenizers["image"].codebook_sizes[0]
    formats = {s["format"] for group in manifest["sources"].values() for s in group}
    assert formats == {"jsonl", "json", "parquet", "txt", "hf-dataset", "webdataset", "imagefolder", "librispeech",
                       "manifest"}
    assert all(s["fingerprint"]["n_files"] for group in manifest["sources"].values() for s in group)


def test_a_text_tokenizer_from_a_tokenizer_json(corpus, sources, tmp_path):
    path = corpus / "tokenizers" / "text" / "tokenizer.json"
    out = tmp_path / "t"
    prepare_corpus(out, {"text": specs(sources)["text"]}, settings("tokenizers.text.kind=file",
                   f"tokenizers.text.path={path}", "tokenizers.text.vocab=999"), log=lambda *a: None)
    assert (out / "tokenizers" / "text" / "tokenizer.json").read_bytes() == path.read_bytes()
    assert load_corpus(out).vocab().n_text == load_corpus(corpus).vocab().n_text


def specs_of(corpus: Path) -> dict:
    return json.loads((corpus / "corpus.json").read_text())["sources"]


def test_the_split_stays_put_when_data_is_added(tmp_path):
    corpora.write_image_tars(tmp_path / "tars", 8, 3)
    keys = {}
    for name, shards in (("small", "shard-{000..001}.tar"), ("large", "shard-{000..002}.tar")):
        out = tmp_path / name
        prepare_corpus(out, {"image_text": [str(tmp_path / "tars" / shards)]}, settings("ingest.val_fraction=0.3"),
                       log=lambda *a: None)
        infos = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("*.json"))]
        keys[name] = {split: {k for i in infos for k in i["keys"][split]} for split in ("train", "val")}
    assert keys["small"]["val"] and keys["small"]["val"] <= keys["large"]["val"]
    assert keys["small"]["train"] <= keys["large"]["train"]
    assert len(keys["large"]["val"]) > len(keys["small"]["val"])


def test_an_interrupted_prepare_resumes_to_byte_identical_shards(sources, corpus, tmp_path, monkeypatch):
    out = tmp_path / "c"
    real, calls = records.ChunkWriter.write, []

    def dies_on_the_fourth(self, directory, name, kind, recs):
        calls.append(name)
        if len(calls) == 4:  # half-written: its data files are there, its NAME.json is not
            real(self, directory, name, kind, recs)
            (directory / f"{name}.json").unlink()
            raise KeyboardInterrupt
        return real(self, directory, name, kind, recs)

    monkeypatch.setattr(records.ChunkWriter, "write", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(out, specs(sources), settings(), log=lambda *a: None)
    with pytest.raises(ValueError, match="incomplete"):
        load_corpus(out)  # nothing half-written is ever read
    monkeypatch.setattr(records.ChunkWriter, "write", real)
    rewritten = []
    monkeypatch.setattr(records.ChunkWriter, "write",
                        lambda self, d, name, kind, recs: rewritten.append(name) or real(self, d, name, kind, recs))
    prepare_corpus(out, specs(sources), settings(), log=lambda *a: None)
    assert calls[3] == rewritten[0] and calls[0] not in rewritten  # complete shards are not redone
    assert shard_bytes(out) == shard_bytes(corpus)
    assert (out / "rejects.jsonl").read_bytes() == (corpus / "rejects.jsonl").read_bytes()


def test_two_workers_write_the_same_shards(sources, corpus, tmp_path):
    out = tmp_path / "w2"
    prepare_corpus(out, {"image_text": specs(sources)["image_text"]}, settings("ingest.workers=2"),
                   log=lambda *a: None)
    one = tmp_path / "w1"
    prepare_corpus(one, {"image_text": specs(sources)["image_text"]}, settings(), log=lambda *a: None)
    assert shard_bytes(out) == shard_bytes(one)


def test_errors_before_any_work(sources, corpus, tmp_path):
    missing = tmp_path / "nope" / "docs.jsonl"
    with pytest.raises(ValueError, match="nope"):
        prepare_corpus(tmp_path / "x", {"text": [str(missing)]}, settings(), log=lambda *a: None)
    assert not (tmp_path / "x").exists()
    (tmp_path / "odd.xyz").write_text("?")
    with pytest.raises(ValueError, match="odd.xyz"):
        prepare_corpus(tmp_path / "x", {"text": [str(tmp_path / "odd.xyz")]}, settings(), log=lambda *a: None)
    with pytest.raises(ValueError, match="another corpus"):
        prepare_corpus(corpus, {"text": specs(sources)["text"][:1]}, settings(), log=lambda *a: None)
    with pytest.raises(ValueError, match="another corpus"):
        prepare_corpus(corpus, specs(sources), settings("tokenizers.text.vocab=301"), log=lambda *a: None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        prepare_corpus(tmp_path / "full", {"text": specs(sources)["text"]}, settings(), log=lambda *a: None)
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_on_error_fail_stops_at_the_first_bad_sample(sources, tmp_path):
    with pytest.raises(ValueError, match="on_error=fail") as e:
        prepare_corpus(tmp_path / "f", {"audio_text": specs(sources)["audio_text"]}, settings("ingest.on_error=fail"),
                       log=lambda *a: None)
    assert "libri" in str(e.value) or "manifest" in str(e.value)


def test_cli_prepare_takes_settings_after_the_sources(sources, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["prepare", "--text", *specs(sources)["text"], *TINY, "--out", str(out), "--lowercase"])
    assert code == 0, capsys.readouterr().err
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["settings"]["tokenizers"]["text"]["vocab"] == 300 and corpus["settings"]["ingest"]["lowercase"]
    assert "train on it: trimdm train --recipe custom" in capsys.readouterr().out


def test_train_on_the_corpus_and_generate(corpus, tmp_path):
    cfg = get_recipe("custom").override([
        f"data.corpus={corpus}", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=256",
        "train.batch_size=8", f"train.tokens={6 * 8 * 256}", "optim.base.batch=8", f"optim.base.tokens={6 * 8 * 256}",
        "optim.base.warmup_tokens=0", "train.threads=1", "train.log_every=1", "eval.max_rows=8",
        "sample.image.steps=2", "sample.audio.steps=2", "sample.text.steps=2", "sample.gen_len=8"]).derive()
    run = tmp_path / "run"
    result = train(cfg, run, log=lambda *a: None, progress=False)
    assert result["step"] == 6
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    # a photo of any size: fitted to the tokenizer's 16×16 as the training images were
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 640, 3), dtype=np.uint8)).save(photo)
    for task, kwargs in (("t2i", {"prompt": "picture number 1"}), ("i2t", {"input_path": str(photo)}),
                         ("t2s", {"prompt": "the cat sat"}), ("text", {"prompt": "document"})):
        sidecars = generate(run, task, kwargs.get("prompt", ""), 1, 0, [], input_path=kwargs.get("input_path"),
                            out=tmp_path / task, log=lambda *a: None)
        assert len(sidecars) == 1 and (tmp_path / task / sidecars[0]["output"]).exists(), task
    wav = next((tmp_path / "t2s").glob("*.wav"))
    sidecars = generate(run, "s2t", "", 1, 0, [], input_path=str(wav), out=tmp_path / "s2t", log=lambda *a: None)
    assert isinstance(sidecars[0]["text"], str)
    # eval: held-out NELBO per modality on the corpus's val split, next to its unigram baseline
    result = evaluate_run(run, log=lambda *a: None)
    assert {"text", "image", "audio"} <= set(result["nelbo"]) and "generation" not in result
    assert np.isfinite(result["baselines"]["text_unigram_bits"])


def test_pretrained_tokenizers_from_a_local_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vq = diffusers.VQModel(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                           up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                           num_vq_embeddings=64, norm_num_groups=4, sample_size=32)
    vq.save_pretrained(str(tmp_path / "vq"))
    dac = transformers.DacModel(transformers.DacConfig(  # hop 8·8·5 = 320 samples: 50 frames/s at 16 kHz
        encoder_hidden_size=4, downsampling_ratios=[8, 8, 5], decoder_hidden_size=16, n_codebooks=4,
        codebook_size=16, codebook_dim=4, sampling_rate=16_000))
    dac.save_pretrained(str(tmp_path / "dac"))
    folder = corpora.write_imagefolder(tmp_path / "images", 8)
    libri = corpora.write_librispeech(tmp_path / "libri", speakers=2, utterances=2)
    pretrained = [f"tokenizers.image.kind=vqmodel", f"tokenizers.image.path={tmp_path / 'vq'}",
                  "tokenizers.image.resolution=32", "tokenizers.audio.kind=dac", f"tokenizers.audio.path={tmp_path / 'dac'}"]
    with pytest.raises(ValueError, match="nowhere"):  # a missing folder: an error before any work
        prepare_corpus(tmp_path / "x", {"image_text": [str(folder)]}, settings("tokenizers.image.kind=vqmodel",
                       f"tokenizers.image.path={tmp_path / 'nowhere'}"), log=lambda *a: None)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "corpus"
    prepare_corpus(out, {"image_text": [str(folder)], "audio_text": [str(libri)]}, settings(*pretrained),
                   log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    n_images = sum(manifest["samples"]["image_text"][s] for s in ("train", "val"))
    assert manifest["tokens"]["image_text.train.image"] + manifest["tokens"]["image_text.val.image"] == 64 * n_images
    assert json.loads((out / "tokenizers" / "audio" / "trimdm_tokenizer.json").read_text())["kind"] == "dac"
    data = load_corpus(out)
    assert data.vocab().n_image == 64 and data.vocab().audio_levels == 2 and data.vocab().audio_codebook == 16
    cfg = get_recipe("custom").override([
        f"data.corpus={out}", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=384",
        "train.batch_size=4", f"train.tokens={2 * 4 * 384}", "optim.base.batch=4", f"optim.base.tokens={2 * 4 * 384}",
        "optim.base.warmup_tokens=0", "train.threads=1", "sample.image.steps=2", "sample.audio.steps=2"]).derive()
    run = tmp_path / "run"
    train(cfg, run, log=lambda *a: None, progress=False)
    assert (run / "tokenizers" / "image" / "trimdm_tokenizer.json").exists()  # the run carries its tokenizers
    for task in ("t2i", "t2s"):
        [side] = generate(run, task, "picture number 1", 1, 0, [], out=tmp_path / task, log=lambda *a: None)
        assert (tmp_path / task / side["output"]).exists()


def test_fewer_images_than_a_tokenizer_batch(tmp_path):
    folder = corpora.write_imagefolder(tmp_path / "few", 3)
    out = tmp_path / "c"
    prepare_corpus(out, {"image_text": [str(folder)]}, settings("tokenizers.image.batch=32", "ingest.val_fraction=0"),
                   log=lambda *a: None)
    assert load_corpus(out).manifest["samples"]["image_text"]["train"] == 3
    assert not list(tmp_path.glob("c/*.tmp-*"))
